use sotto_protocol::api::EventPayload;
use tokio::sync::broadcast;

use super::*;

fn relay_event(n: u32) -> EventPayload {
    EventPayload::RelayConnected {
        url: format!("ws://127.0.0.1:{n}/sotto/v1"),
    }
}

#[tokio::test]
async fn events_are_persisted_broadcast_after_commit_and_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, mut rx) = broadcast::channel(16);
    let store = Store::open(
        &dir.path().join("db.sqlite"),
        &crate::keys::DbKey::generate(),
        tx,
        3,
    )
    .unwrap();
    for n in 1..=5 {
        let ev = store
            .call(move |db| db.write(|tx| tx.emit(relay_event(n))))
            .await
            .unwrap();
        assert_eq!(ev.seq, u64::from(n));
        assert_eq!(rx.recv().await.unwrap().seq, u64::from(n));
    }
    // A failed transaction neither persists nor broadcasts.
    let err = store
        .call(|db| {
            db.write(|tx| {
                tx.emit(relay_event(9))?;
                Err::<(), _>(StoreError::Decode("boom".into()))
            })
        })
        .await;
    assert!(err.is_err());
    assert!(rx.try_recv().is_err());
    let (last, pruned, page) = store
        .call(|db| {
            Ok((
                db.last_event_seq()?,
                db.events_pruned_through()?,
                db.events_after(0, 100)?,
            ))
        })
        .await
        .unwrap();
    assert_eq!(last, 5);
    assert_eq!(
        store.last_event_seq(),
        5,
        "the in-memory copy follows commits, not rollbacks"
    );
    assert_eq!(pruned, 2);
    let seqs: Vec<u64> = page.events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [3, 4, 5]);
}

#[tokio::test]
async fn pragmas_are_durable_and_secure() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, _rx) = broadcast::channel(1);
    let store = Store::open(
        &dir.path().join("db.sqlite"),
        &crate::keys::DbKey::generate(),
        tx,
        10,
    )
    .unwrap();
    let (sync, secure, journal): (i64, i64, String) = store
        .call(|db| {
            let c = db.conn();
            Ok((
                c.query_row("PRAGMA synchronous", [], |r| r.get(0))?,
                c.query_row("PRAGMA secure_delete", [], |r| r.get(0))?,
                c.query_row("PRAGMA journal_mode", [], |r| r.get(0))?,
            ))
        })
        .await
        .unwrap();
    assert_eq!(sync, 2, "synchronous=FULL");
    assert_eq!(secure, 1);
    assert_eq!(journal, "wal");
}

#[test]
fn a_corrupt_file_is_reported_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let garbage = vec![0x5au8; 8192];
    std::fs::write(&path, &garbage).unwrap();
    let (tx, _rx) = broadcast::channel(1);
    let err = Store::open(&path, &crate::keys::DbKey::generate(), tx, 10).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("damaged"), "{err}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        garbage,
        "the file must not be touched"
    );
}

/// A database from before migration 4 (read markers, activity, full-text index) gets them
/// back-filled: old messages are searchable, unread counts and the order are right.
#[tokio::test]
async fn migration_4_back_fills_an_existing_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    {
        let mut conn = rusqlite::Connection::open(&path).unwrap();
        migrations::apply_through(&mut conn, 3).unwrap();
        conn.execute_batch(
            "INSERT INTO conversations (id, name, kind, state, relay, ciphersuite, created_at)
             VALUES ('c_old', 'old', 'group', 'active', 'ws://r', 1, '2026-01-01T00:00:00Z'),
                    ('c_new', 'new', 'group', 'active', 'ws://r', 1, '2026-01-02T00:00:00Z');
             INSERT INTO messages (id, conversation, sender, kind, text, sent_at, received_at, state, position)
             VALUES ('m1', 'c_old', 'bob@r.example', 'text', 'the quick brown fox', '2026-01-03T00:00:00Z', '2026-01-03T00:00:01Z', 'received', 1),
                    ('m2', 'c_old', 'bob@r.example', 'text', 'jumps over', '2026-01-03T00:00:02Z', '2026-01-03T00:00:03Z', 'received', 2),
                    ('m3', 'c_new', 'alice@r.example', 'text', 'lazy dog', '2026-01-02T00:00:05Z', NULL, 'sent', 1);",
        )
        .unwrap();
    }
    let (tx, _rx) = broadcast::channel(4);
    let store = Store::open(&path, &crate::keys::DbKey::generate(), tx, 10).unwrap();
    store
        .call(|db| {
            let c = db.conn();
            let found = |q: &str| -> Vec<String> {
                let mut stmt = c
                    .prepare(
                        "SELECT m.id FROM messages_fts JOIN messages m ON m.rowid = messages_fts.rowid
                         WHERE messages_fts MATCH ?1 ORDER BY m.id",
                    )
                    .unwrap();
                stmt.query_map([q], |r| r.get(0))
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap()
            };
            assert_eq!(found("fox"), ["m1"]);
            assert_eq!(found("dog"), ["m3"]);
            let rows = crate::model::conversations(c)?;
            let old = rows.iter().find(|r| r.id == "c_old").unwrap();
            let new = rows.iter().find(|r| r.id == "c_new").unwrap();
            assert!(
                old.activity > new.activity,
                "c_old has the newest message: {} vs {}",
                old.activity,
                new.activity
            );
            let api = crate::model::conversation_api(c, old)?;
            assert_eq!(api.unread, 2);
            assert_eq!(api.last_message.as_ref().map(|m| m.id.as_str()), Some("m2"));
            assert_eq!(api.last_activity_at, "2026-01-03T00:00:03Z");
            let api = crate::model::conversation_api(c, new)?;
            assert_eq!(api.unread, 0, "sent messages are never unread");
            assert_eq!(api.last_activity_at, "2026-01-02T00:00:05Z");

            // The triggers keep the index: insert, edit, delete.
            c.execute_batch(
                "INSERT INTO messages (id, conversation, sender, kind, text, sent_at, state)
                 VALUES ('m4', 'c_new', 'alice@r.example', 'text', 'a new fox', '2026-01-04T00:00:00Z', 'queued');",
            )?;
            assert_eq!(found("fox"), ["m1", "m4"]);
            let bumped = crate::model::conversation(c, "c_new")?.unwrap();
            assert!(bumped.activity > old.activity, "a new message moves c_new up");
            c.execute("UPDATE messages SET text = 'a new cat' WHERE id = 'm4'", [])?;
            assert_eq!(found("fox"), ["m1"]);
            assert_eq!(found("cat"), ["m4"]);
            c.execute("DELETE FROM messages WHERE id = 'm1'", [])?;
            assert!(found("fox").is_empty());
            // FTS5 checks the index against the messages table (an error if they differ).
            c.execute(
                "INSERT INTO messages_fts (messages_fts, rank) VALUES ('integrity-check', 1)",
                [],
            )?;
            Ok(())
        })
        .await
        .unwrap();
}
