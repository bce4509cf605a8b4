//! The SQLite schema and connection settings.

use rusqlite::Connection;

/// Schema version recorded in `PRAGMA user_version`.
pub const SCHEMA_VERSION: i64 = 4;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS devices (
    key BLOB PRIMARY KEY,
    name TEXT NOT NULL,
    device_id TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (name, device_id)
);
CREATE TABLE IF NOT EXISTS key_packages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device BLOB NOT NULL,
    ciphersuite INTEGER NOT NULL,
    last_resort INTEGER NOT NULL,
    data BLOB NOT NULL,
    not_before INTEGER NOT NULL,
    not_after INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS key_packages_by_device
    ON key_packages (device, ciphersuite, last_resort, id);
CREATE TABLE IF NOT EXISTS mailbox_blobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sender BLOB NOT NULL,
    sender_address TEXT NOT NULL,
    post_id BLOB NOT NULL,
    payload BLOB NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS mailbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    device BLOB NOT NULL,
    blob INTEGER NOT NULL REFERENCES mailbox_blobs (id),
    created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS mailbox_by_device ON mailbox (device, seq);
CREATE INDEX IF NOT EXISTS mailbox_by_blob ON mailbox (blob);
CREATE TABLE IF NOT EXISTS groups (
    id BLOB PRIMARY KEY,
    epoch INTEGER NOT NULL,
    head INTEGER NOT NULL,
    pruned_through INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS group_members (
    group_id BLOB NOT NULL,
    principal BLOB NOT NULL,
    added_seq INTEGER NOT NULL,
    removed_seq INTEGER,
    cursor INTEGER NOT NULL,
    PRIMARY KEY (group_id, principal)
);
CREATE TABLE IF NOT EXISTS group_log (
    group_id BLOB NOT NULL,
    seq INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    content_type INTEGER NOT NULL,
    sender BLOB NOT NULL,
    post_id BLOB NOT NULL,
    message BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (group_id, seq)
);
CREATE TABLE IF NOT EXISTS invite_uses (
    nonce BLOB PRIMARY KEY,
    uses INTEGER NOT NULL,
    last_used_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS posts (
    principal BLOB NOT NULL,
    kind INTEGER NOT NULL,
    scope BLOB NOT NULL,
    post_id BLOB NOT NULL,
    result BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (principal, kind, scope, post_id)
);
";

/// Version 3: the active install of each device (the takeover of issue 15).
const V3: &str = "
CREATE TABLE IF NOT EXISTS installs (
    device BLOB PRIMARY KEY,
    install_id BLOB NOT NULL,
    since INTEGER NOT NULL
);
";

/// Version 4: each group's latest GroupInfo, posted with a commit (the resync of issue 15).
const V4: &str = "
CREATE TABLE IF NOT EXISTS group_infos (
    group_id BLOB PRIMARY KEY,
    epoch INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    data BLOB NOT NULL
);
";

/// Applies the connection settings every connection needs.
pub fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    // Every hot statement stays prepared (rusqlite keeps 16 by default).
    conn.set_prepared_statement_cache_capacity(128);
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA foreign_keys = ON;
         PRAGMA temp_store = MEMORY;
         PRAGMA journal_size_limit = 67108864;",
    )
}

/// Creates or checks the schema.
pub fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        // Never run an older schema over a newer one's data (found by the faults suite:
        // a newer database used to be opened and written as if it were this version's).
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_MISMATCH),
            Some(format!(
                "the database was written by a newer sotto-relay (schema {version}, this one knows {SCHEMA_VERSION}); upgrade sotto-relay"
            )),
        ));
    }
    if version < SCHEMA_VERSION {
        // Every step is idempotent (`IF NOT EXISTS`), so a database of any older version
        // (or none) gets what it lacks, in one transaction with the version bump.
        conn.execute_batch(&format!(
            "BEGIN; {SCHEMA} {V3} {V4} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
        ))?;
    }
    Ok(())
}

/// The effective `PRAGMA synchronous` as a word.
pub fn synchronous(conn: &Connection) -> rusqlite::Result<&'static str> {
    let n: i64 = conn.query_row("PRAGMA synchronous", [], |r| r.get(0))?;
    Ok(match n {
        0 => "off",
        1 => "normal",
        2 => "full",
        3 => "extra",
        _ => "unknown",
    })
}
