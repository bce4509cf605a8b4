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

fn open_store(dir: &std::path::Path) -> (Store, broadcast::Receiver<sotto_protocol::api::Event>) {
    let (tx, rx) = broadcast::channel(64);
    let store = Store::open(
        &dir.join("db.sqlite"),
        &crate::keys::DbKey::generate(),
        tx,
        100,
    )
    .unwrap();
    (store, rx)
}

/// Holds the writer thread until the returned sender is dropped, so the writes submitted
/// meanwhile queue up together.
async fn hold_writer(store: &Store) -> std::sync::mpsc::Sender<()> {
    let (gate, wait) = std::sync::mpsc::channel::<()>();
    let (entered, writer_held) = tokio::sync::oneshot::channel();
    let store = store.clone();
    tokio::spawn(async move {
        store
            .call(move |_db| {
                let _ = entered.send(());
                let _ = wait.recv();
                Ok(())
            })
            .await
    });
    writer_held.await.unwrap();
    gate
}

async fn commits(store: &Store) -> u64 {
    store.call(|db| Ok(db.commits())).await.unwrap()
}

fn insert_meta(tx: &mut Tx<'_>, key: &str) -> Result<(), StoreError> {
    tx.conn()
        .execute("INSERT INTO meta (key, value) VALUES (?1, 'v')", [key])?;
    Ok(())
}

async fn meta_keys(store: &Store) -> Vec<String> {
    store
        .call(|db| {
            let mut stmt = db
                .conn()
                .prepare("SELECT key FROM meta WHERE key LIKE 'g%' ORDER BY key")?;
            let keys = stmt
                .query_map([], |r| r.get(0))?
                .collect::<Result<Vec<String>, _>>()?;
            Ok(keys)
        })
        .await
        .unwrap()
}

/// Writes queued together share one COMMIT; one that fails rolls back alone (its rows,
/// its event, what it kept), the others are answered only after the COMMIT, in order,
/// with their events broadcast after it.
#[tokio::test]
async fn writes_queued_together_share_one_commit_and_fail_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut rx) = open_store(dir.path());
    let before = commits(&store).await;
    let gate = hold_writer(&store).await;
    let mut pending = Vec::new();
    for i in 0..5u32 {
        let w = store
            .submit_write(move |tx| {
                insert_meta(tx, &format!("g{i}"))?;
                tx.emit(relay_event(i))?;
                tx.keep(&format!("obj{i}"), i);
                if i == 2 {
                    return Err(StoreError::Decode("write 2 fails".into()));
                }
                Ok(i)
            })
            .unwrap();
        pending.push(w);
    }
    // Nothing is answered while the writer is held.
    assert!(rx.try_recv().is_err());
    drop(gate);
    let mut results = Vec::new();
    for w in pending {
        results.push(w.await);
    }
    assert!(
        matches!(results[2], Err(StoreError::Decode(_))),
        "{:?}",
        results[2]
    );
    let ok: Vec<u32> = results
        .iter()
        .filter_map(|r| r.as_ref().ok().copied())
        .collect();
    assert_eq!(ok, [0, 1, 3, 4]);
    assert_eq!(
        commits(&store).await,
        before + 1,
        "one COMMIT for the five writes"
    );
    assert_eq!(meta_keys(&store).await, ["g0", "g1", "g3", "g4"]);
    let seqs: Vec<u64> = (0..4).map(|_| rx.try_recv().unwrap().seq).collect();
    assert_eq!(
        seqs,
        [1, 2, 3, 4],
        "the failed write's event is gone, seqs stay dense"
    );
    assert!(rx.try_recv().is_err());
    // After a failed write nothing kept survives (the next transactions reload).
    let kept = store
        .write(|tx| {
            Ok((0..5)
                .filter(|i| tx.take_kept::<u32>(&format!("obj{i}")).is_some())
                .count())
        })
        .await
        .unwrap();
    assert_eq!(kept, 0);
    // Without a failure, what the writes kept is there for the next transaction.
    let gate = hold_writer(&store).await;
    let a = store
        .submit_write(|tx| {
            tx.keep("a", 1u8);
            Ok(())
        })
        .unwrap();
    let b = store
        .submit_write(|tx| Ok(tx.take_kept::<u8>("a")))
        .unwrap();
    drop(gate);
    a.await.unwrap();
    assert_eq!(
        b.await.unwrap(),
        Some(1),
        "a later write of the same group sees what an earlier one kept"
    );
}

/// When the shared COMMIT itself fails, every write in it gets the error, nothing of any
/// of them is stored or broadcast, and nothing they kept survives.
#[tokio::test]
async fn a_failed_group_commit_fails_every_write_in_it() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut rx) = open_store(dir.path());
    // A deferred foreign key: the violation is only found at COMMIT.
    store
        .call(|db| {
            db.conn().execute_batch(
                "CREATE TABLE deferred_check (meta_key TEXT REFERENCES meta(key) DEFERRABLE INITIALLY DEFERRED)",
            )?;
            Ok(())
        })
        .await
        .unwrap();
    let gate = hold_writer(&store).await;
    let first = store
        .submit_write(|tx| {
            insert_meta(tx, "g-first")?;
            tx.emit(relay_event(1))?;
            tx.keep("first", 1u8);
            Ok(())
        })
        .unwrap();
    let breaking = store
        .submit_write(|tx| {
            tx.conn()
                .execute("INSERT INTO deferred_check VALUES ('no such key')", [])?;
            Ok(())
        })
        .unwrap();
    drop(gate);
    let (first, breaking) = (first.await, breaking.await);
    for r in [&first, &breaking] {
        let e = r.as_ref().unwrap_err();
        assert!(e.to_string().contains("FOREIGN KEY"), "{e}");
    }
    assert!(meta_keys(&store).await.is_empty());
    assert!(
        rx.try_recv().is_err(),
        "no event of a failed commit is broadcast"
    );
    let kept = store
        .write(|tx| Ok(tx.take_kept::<u8>("first")))
        .await
        .unwrap();
    assert_eq!(kept, None);
    // The store works on afterwards.
    store.write(|tx| insert_meta(tx, "g-after")).await.unwrap();
    assert_eq!(meta_keys(&store).await, ["g-after"]);
}

/// A scope rolled back inside a write takes with it what it emitted and kept: the event's
/// seq is given again to the next event, so broadcasting the rolled-back one would show
/// clients two different events under one seq.
#[tokio::test]
async fn a_rolled_back_savepoint_forgets_its_events_and_kept_objects() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut rx) = open_store(dir.path());
    store
        .write(|tx| {
            tx.keep("before", 1u8);
            let skipped = tx.savepoint(
                |tx| {
                    insert_meta(tx, "g-skipped")?;
                    tx.emit(relay_event(1))?;
                    tx.keep("inside", 2u8);
                    Ok(None::<()>)
                },
                Option::is_some,
            )?;
            assert!(skipped.is_none());
            let failed = tx.savepoint(
                |tx| {
                    tx.emit(relay_event(2))?;
                    Err::<(), _>(StoreError::Decode("refused".into()))
                },
                |_| true,
            );
            assert!(failed.is_err());
            let kept = tx.savepoint(
                |tx| {
                    insert_meta(tx, "g-kept")?;
                    tx.emit(relay_event(3))
                },
                |_| true,
            )?;
            Ok(kept.seq)
        })
        .await
        .map(|seq| {
            let event = rx.try_recv().expect("the kept event is broadcast");
            assert_eq!(event.seq, seq);
            assert!(rx.try_recv().is_err(), "only the kept event is broadcast");
        })
        .unwrap();
    assert_eq!(meta_keys(&store).await, ["g-kept"]);
    let (inside, before) = store
        .write(|tx| Ok((tx.take_kept::<u8>("inside"), tx.take_kept::<u8>("before"))))
        .await
        .unwrap();
    assert_eq!(
        inside, None,
        "an object kept in a rolled-back scope is forgotten"
    );
    assert_eq!(
        before, None,
        "so is what the write kept before it (only a reload)"
    );
}

/// When SQLite rolls a shared transaction back by itself (it may on a full disk, an I/O
/// error or out of memory), a write that changed nothing before failing cannot see it
/// through the change count: the writes after it must not run in autocommit, each stored
/// on its own while their callers are told the transaction failed. Simulated by a write
/// that ends the transaction itself, as SQLite would.
#[tokio::test]
async fn a_transaction_sqlite_rolled_back_by_itself_fails_every_write_in_it() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut rx) = open_store(dir.path());
    let gate = hold_writer(&store).await;
    let first = store
        .submit_write(|tx| {
            insert_meta(tx, "g-lost-first")?;
            tx.emit(relay_event(1))?;
            Ok(())
        })
        .unwrap();
    let doomed = store
        .submit_write_atomic(|tx| {
            tx.conn().execute_batch("ROLLBACK")?;
            Err::<(), _>(StoreError::Decode("rolled back by SQLite".into()))
        })
        .unwrap();
    let after = store
        .submit_write_atomic(|tx| insert_meta(tx, "g-lost-after"))
        .unwrap();
    drop(gate);
    for r in [first.await, doomed.await, after.await] {
        assert!(
            r.is_err(),
            "every write of the lost transaction fails: {r:?}"
        );
    }
    assert!(
        meta_keys(&store).await.is_empty(),
        "nothing of the lost transaction is stored, not even what came after it"
    );
    assert!(rx.try_recv().is_err(), "nothing of it broadcast");
    store.write(|tx| insert_meta(tx, "g-next")).await.unwrap();
    assert_eq!(meta_keys(&store).await, ["g-next"]);
}

/// Atomic writes (no savepoint of their own) share the COMMIT like the others; one that
/// refuses before changing anything fails alone, with the writes around it (atomic or
/// not) kept; one that fails after a change takes the whole shared transaction with it:
/// every write in it gets the error, nothing is stored, broadcast or kept.
#[tokio::test]
async fn atomic_writes_share_the_commit_and_a_half_done_one_fails_them_all() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut rx) = open_store(dir.path());
    let before = commits(&store).await;
    let gate = hold_writer(&store).await;
    let mut pending = Vec::new();
    for i in 0..4u32 {
        let w = store
            .submit_write_atomic(move |tx| {
                if i == 1 {
                    return Err(StoreError::Decode("refused before any change".into()));
                }
                insert_meta(tx, &format!("g{i}"))?;
                tx.emit(relay_event(i))?;
                tx.keep(&format!("obj{i}"), i);
                Ok(i)
            })
            .unwrap();
        pending.push(w);
    }
    // A write with a savepoint among them still fails alone.
    let shielded = store
        .submit_write(|tx| {
            insert_meta(tx, "g-shielded")?;
            Err::<(), _>(StoreError::Decode(
                "fails after a change, in its savepoint".into(),
            ))
        })
        .unwrap();
    drop(gate);
    let mut results = Vec::new();
    for w in pending {
        results.push(w.await);
    }
    assert!(shielded.await.is_err());
    assert!(
        matches!(results[1], Err(StoreError::Decode(_))),
        "{:?}",
        results[1]
    );
    let ok: Vec<u32> = results
        .iter()
        .filter_map(|r| r.as_ref().ok().copied())
        .collect();
    assert_eq!(ok, [0, 2, 3]);
    assert_eq!(
        commits(&store).await,
        before + 1,
        "one COMMIT for all of them"
    );
    assert_eq!(meta_keys(&store).await, ["g0", "g2", "g3"]);
    let seqs: Vec<u64> = (0..3).map(|_| rx.try_recv().unwrap().seq).collect();
    assert_eq!(seqs, [1, 2, 3]);
    assert!(rx.try_recv().is_err());

    // Now one that fails half-way: everything of the shared transaction goes.
    let gate = hold_writer(&store).await;
    let first = store
        .submit_write(|tx| {
            insert_meta(tx, "g-first")?;
            tx.keep("first", 1u8);
            Ok(())
        })
        .unwrap();
    let half = store
        .submit_write_atomic(|tx| {
            insert_meta(tx, "g-half")?;
            tx.emit(relay_event(7))?;
            Err::<(), _>(StoreError::Decode("failed half-way".into()))
        })
        .unwrap();
    let last = store
        .submit_write_atomic(|tx| insert_meta(tx, "g-last"))
        .unwrap();
    drop(gate);
    for r in [first.await, half.await, last.await] {
        let e = r.unwrap_err();
        assert!(e.to_string().contains("failed half-way"), "{e}");
    }
    assert_eq!(
        meta_keys(&store).await,
        ["g0", "g2", "g3"],
        "nothing of it stored"
    );
    assert!(rx.try_recv().is_err(), "nothing of it broadcast");
    let kept = store
        .write(|tx| Ok(tx.take_kept::<u8>("first")))
        .await
        .unwrap();
    assert_eq!(kept, None, "nothing kept survives the rollback");
    store.write(|tx| insert_meta(tx, "g-after")).await.unwrap();
    assert_eq!(meta_keys(&store).await, ["g-after", "g0", "g2", "g3"]);
}
