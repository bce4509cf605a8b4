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
    ),    (
        // One `message.list` page in O(page), not O(history): an index on the exact order
        // key `model::messages` sorts by (log position, queued ones last), so a page is a
        // range read instead of a sort of the whole conversation; and the `before` message
        // found by id without scanning the conversation.
        3,
        "CREATE INDEX messages_by_order ON messages (conversation, COALESCE(position, 4503599627370496 + rowid));
    CREATE INDEX messages_by_id ON messages (conversation, id);",
    ),
    (
        // Read state and activity order (docs/api.md, `conversation.mark_read`), and the
        // full-text index of `message.search`. Both are kept by triggers, so every path
        // that writes messages or conversations (the engine's receive path included)
        // keeps them in its own transaction. `activity` is a counter, not a time: the
        // conversation touched last (a message, a change) has the highest.
        4,
        "ALTER TABLE conversations ADD COLUMN read_position INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE conversations ADD COLUMN changed_at TEXT;
    ALTER TABLE conversations ADD COLUMN activity INTEGER NOT NULL DEFAULT 0;
    UPDATE conversations SET changed_at = created_at;
    UPDATE conversations SET activity = ranked.n FROM (
        SELECT c.id, ROW_NUMBER() OVER (ORDER BY MAX(c.created_at, COALESCE(
            (SELECT MAX(COALESCE(m.received_at, m.sent_at)) FROM messages m WHERE m.conversation = c.id),
            '')), c.id) AS n
        FROM conversations c
    ) AS ranked WHERE conversations.id = ranked.id;
    CREATE INDEX conversations_by_activity ON conversations (activity);
    CREATE TRIGGER conversations_activity_insert AFTER INSERT ON conversations BEGIN
        UPDATE conversations SET activity = (SELECT MAX(activity) FROM conversations) + 1
        WHERE id = NEW.id;
    END;
    CREATE TRIGGER conversations_changed_at AFTER UPDATE OF name, state, epoch ON conversations
    WHEN OLD.name IS NOT NEW.name OR OLD.state IS NOT NEW.state OR OLD.epoch IS NOT NEW.epoch
    BEGIN
        UPDATE conversations SET changed_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now'),
            activity = (SELECT MAX(activity) FROM conversations) + 1
        WHERE id = NEW.id;
    END;
    CREATE TRIGGER messages_activity AFTER INSERT ON messages BEGIN
        UPDATE conversations SET activity = (SELECT MAX(activity) FROM conversations) + 1
        WHERE id = NEW.conversation;
    END;
    CREATE INDEX messages_received ON messages (conversation, position)
        WHERE state = 'received';
    CREATE VIRTUAL TABLE messages_fts USING fts5(
        text, content = 'messages', content_rowid = 'rowid',
        tokenize = 'unicode61 remove_diacritics 2'
    );
    INSERT INTO messages_fts (messages_fts) VALUES ('rebuild');
    CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
        INSERT INTO messages_fts (rowid, text) VALUES (NEW.rowid, NEW.text);
    END;
    CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
        INSERT INTO messages_fts (messages_fts, rowid, text) VALUES ('delete', OLD.rowid, OLD.text);
    END;
    CREATE TRIGGER messages_fts_update AFTER UPDATE OF text ON messages BEGIN
        INSERT INTO messages_fts (messages_fts, rowid, text) VALUES ('delete', OLD.rowid, OLD.text);
        INSERT INTO messages_fts (rowid, text) VALUES (NEW.rowid, NEW.text);
    END;",
    ),
    (
        // The resync of a restored install (issue 15): a prepared commit's new-epoch
        // GroupInfo, posted with it; and the conversations that must rejoin their group by
        // external commit (another install committed after the backup, or the relay no
        // longer holds the log since our position), with the prepared external commit
        // once built (posted again with the same post id after a crash).
        5,
        "ALTER TABLE outbox ADD COLUMN group_info BLOB;
    CREATE TABLE resyncs (
        conversation TEXT PRIMARY KEY,
        reason TEXT NOT NULL,
        post_id BLOB,
        message BLOB,
        group_info BLOB,
        attempts INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL
    );",
    ),
    (
        // The outbox in O(what is asked for), not O(outbox): with hundreds of messages
        // queued in one conversation (a pipelining client), finding our own entry's row
        // by its post id scanned every queued row, and the head query sorted them all
        // (issue 12: both ran once per message). Own entries are found through
        // `outbox_by_post`; the `commit_pending` row that goes first is found through the
        // (tiny) partial index, the rest in `outbox_fifo` order.
        6,
        "CREATE INDEX outbox_by_post ON outbox (conversation, post_id) WHERE post_id IS NOT NULL;
    CREATE INDEX outbox_commit_pending ON outbox (conversation, id) WHERE op = 'commit_pending';",
    ),
    (
        // Why a conversation is broken (docs/api.md, `state_reason`): set with the state,
        // cleared when a resync brings it back to active.
        7,
        "ALTER TABLE conversations ADD COLUMN state_reason TEXT;",
    ),
];

/// The newest schema version this build knows.
pub const LATEST: i64 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// Applies every migration newer than the database's version.
pub fn apply(conn: &mut Connection) -> Result<(), rusqlite::Error> {
    apply_through(conn, LATEST)
}

/// Applies the migrations newer than the database's version up to `last` (tests build old
/// databases with it).
pub fn apply_through(conn: &mut Connection, last: i64) -> Result<(), rusqlite::Error> {
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
    for (version, sql) in MIGRATIONS
        .iter()
        .filter(|(v, _)| *v > current && *v <= last)
    {
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
pub fn check_version(conn: &Connection, path: &std::path::Path) -> Result<(), StoreError> {
    let current: i64 = conn.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM sotto_migrations",
        [],
        |r| r.get(0),
    )?;
    if current > LATEST {
        return Err(StoreError::TooNew {
            path: path.to_owned(),
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

    #[test]
    fn the_outbox_is_read_through_indexes_not_scanned_or_sorted() {
        let mut conn = Connection::open_in_memory().unwrap();
        apply(&mut conn).unwrap();
        let own = plan(
            &conn,
            "SELECT id FROM outbox WHERE conversation = ?1 AND post_id = ?2",
        );
        assert!(own.contains("outbox_by_post"), "{own}");
        let first = plan(
            &conn,
            "SELECT id, payload FROM outbox WHERE conversation = ?1 AND op = 'commit_pending' ORDER BY id LIMIT ?2",
        );
        assert!(first.contains("outbox_commit_pending"), "{first}");
        let rest = plan(
            &conn,
            "SELECT id, payload FROM outbox WHERE conversation = ?1 AND op <> 'commit_pending' ORDER BY id LIMIT ?2",
        );
        assert!(rest.contains("outbox_fifo"), "{rest}");
        for p in [own, first, rest] {
            assert!(!p.contains("TEMP B-TREE") && !p.contains("SCAN"), "{p}");
        }
    }
}
