//! Versioned schema migrations, recorded in `sotto_migrations` (apart from openmls's tables).

use rusqlite::Connection;

use super::StoreError;

/// Each migration's SQL, applied in order in one transaction each. Never edit a shipped one.
const MIGRATIONS: &[(i64, &str)] = &[(
    1,
    "CREATE TABLE account (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        address TEXT NOT NULL,
        device_id TEXT NOT NULL,
        relay TEXT NOT NULL,
        key_store TEXT NOT NULL,
        public_key BLOB NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        type TEXT NOT NULL,
        payload TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );",
)];

/// The newest schema version this build knows.
pub const LATEST: i64 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// Applies every migration newer than the database's version.
pub fn apply(conn: &mut Connection) -> Result<(), rusqlite::Error> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS sotto_migrations (
            version INTEGER PRIMARY KEY,
            applied_at TEXT NOT NULL
        )",
    )?;
    let current: i64 = conn.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM sotto_migrations",
        [],
        |r| r.get(0),
    )?;
    if current > LATEST {
        // Reported by `check_version` with a clear message.
        return Ok(());
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.execute(
            "INSERT INTO sotto_migrations (version, applied_at) VALUES (?1, ?2)",
            rusqlite::params![version, crate::service::now_rfc3339()],
        )?;
        tx.commit()?;
        tracing::info!(version, "applied database migration");
    }
    Ok(())
}

/// Refuses a database written by a newer daemon.
pub fn check_version(conn: &Connection) -> Result<(), StoreError> {
    let current: i64 = conn.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM sotto_migrations",
        [],
        |r| r.get(0),
    )?;
    if current > LATEST {
        return Err(StoreError::TooNew {
            found: current,
            known: LATEST,
        });
    }
    Ok(())
}
