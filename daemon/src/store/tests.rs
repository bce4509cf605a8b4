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
