//! Versioned schema migrations, recorded in `sotto_migrations` (apart from openmls's tables).

use rusqlite::Connection;

use super::StoreError;

/// Each migration's SQL, applied in order in one transaction each. Never edit a shipped one.
const MIGRATIONS: &[(i64, &str)] = &[
    (
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
    ),
    (
        2,
        "CREATE TABLE contacts (
        address TEXT PRIMARY KEY,
        alias TEXT,
        device_id TEXT NOT NULL,
        identity_key BLOB NOT NULL,
        verified INTEGER NOT NULL DEFAULT 0,
        blocked_key BLOB,
        created_at TEXT NOT NULL
    );
    CREATE TABLE conversations (
        id TEXT PRIMARY KEY,
        name TEXT,
        kind TEXT NOT NULL,
        state TEXT NOT NULL,
        relay TEXT NOT NULL,
        ciphersuite INTEGER NOT NULL,
        epoch INTEGER NOT NULL DEFAULT 0,
        cursor INTEGER NOT NULL DEFAULT 0,
        acked INTEGER NOT NULL DEFAULT 0,
        peer TEXT,
        created_at TEXT NOT NULL
    );
    CREATE TABLE members (
        conversation TEXT NOT NULL REFERENCES conversations(id),
        address TEXT NOT NULL,
        device_id TEXT NOT NULL,
        PRIMARY KEY (conversation, address, device_id)
    );
    CREATE TABLE messages (
        rowid INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL,
        conversation TEXT NOT NULL REFERENCES conversations(id),
        sender TEXT NOT NULL,
        kind TEXT NOT NULL,
        text TEXT NOT NULL,
        reply_to TEXT,
        sent_at TEXT NOT NULL,
        received_at TEXT,
        state TEXT NOT NULL,
        error TEXT,
        position INTEGER,
        UNIQUE (conversation, sender, id)
    );
    CREATE INDEX messages_by_position ON messages (conversation, position);
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        conversation TEXT NOT NULL REFERENCES conversations(id),
        op TEXT NOT NULL,
        payload TEXT NOT NULL,
        message_id TEXT,
        post_id BLOB,
        mls_message BLOB,
        added BLOB,
        removed BLOB,
        welcome BLOB,
        welcome_to TEXT,
        join_seq INTEGER,
        done_epoch INTEGER,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        created_at TEXT NOT NULL
    );
    CREATE INDEX outbox_fifo ON outbox (conversation, id);
    CREATE TABLE relay_cursors (
        url TEXT PRIMARY KEY,
        mailbox_cursor INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE idempotency (
        key TEXT PRIMARY KEY,
        params TEXT NOT NULL,
        message_id TEXT NOT NULL,
        conversation TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE seen_welcomes (
        group_id TEXT PRIMARY KEY,
        epoch INTEGER NOT NULL
    );",
    ),
    (
        // One `message.list` page in O(page), not O(history): an index on the exact order
        // key `model::messages` sorts by (log position, queued ones last), so a page is a
        // range read instead of a sort of the whole conversation; and the `before` message
        // found by id without scanning the conversation.
        3,
        "CREATE INDEX messages_by_order ON messages (conversation, COALESCE(position, 4503599627370496 + rowid));
    CREATE INDEX messages_by_id ON messages (conversation, id);",
    ),
];

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
            rusqlite::params![version, crate::clock::now_rfc3339()],
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::model::MESSAGE_ORDER_KEY;

    fn plan(conn: &Connection, sql: &str) -> String {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let rows = stmt
            .query_map(rusqlite::params!["c", 5], |r| r.get::<_, String>(3))
            .unwrap();
        rows.map(Result::unwrap).collect::<Vec<_>>().join("; ")
    }

    #[test]
    fn a_history_page_is_a_range_read_not_a_sort_of_the_whole_conversation() {
        let mut conn = Connection::open_in_memory().unwrap();
        apply(&mut conn).unwrap();
        let page = format!(
            "SELECT id FROM messages WHERE conversation = ?1 AND {MESSAGE_ORDER_KEY} < ?2
             ORDER BY {MESSAGE_ORDER_KEY} DESC LIMIT 100"
        );
        let p = plan(&conn, &page);
        assert!(p.contains("messages_by_order"), "{p}");
        assert!(!p.contains("TEMP B-TREE"), "{p}");
        let before =
            format!("SELECT {MESSAGE_ORDER_KEY} FROM messages WHERE conversation = ?1 AND id = ?2");
        let p = plan(&conn, &before);
        assert!(p.contains("messages_by_id"), "{p}");
    }
}
