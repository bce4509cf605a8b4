//! Durability: synchronous=FULL, and everything acknowledged survives kill -9.

use std::collections::HashSet;

use sotto_protocol::relay::{Push, Request, Response};

use crate::client::{Client, Device, Incoming};
use crate::harness::{Backend, Relay, backend};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_posts_survive_kill_9() {
    const WINDOW: usize = 16;
    const BEFORE_KILL: usize = 200;
    let mut relay = Relay::start();
    let (_, metrics) = relay.http_get("/metrics");
    let durable = match backend() {
        Backend::Sqlite => "sotto_relay_storage_synchronous{mode=\"full\"} 1",
        Backend::Postgres => {
            "sotto_relay_storage_synchronous{mode=\"synchronous_commit=on fsync=on\"} 1"
        }
    };
    assert!(
        metrics.contains(durable),
        "the relay commits durably before acknowledging:\n{metrics}"
    );
    let alice = Device::new(&relay.address("alice"));
    let bob = Device::new(&relay.address("bob"));
    drop(Client::registered(relay.addr, &bob).await);
    let mut a = Client::registered(relay.addr, &alice).await;

    let post = |i: u32| Request::PostMailbox {
        post_id: {
            let mut id = [0u8; 16];
            id[..4].copy_from_slice(&i.to_be_bytes());
            id
        },
        recipients: vec![bob.device_ref()],
        payload: i.to_be_bytes().to_vec(),
    };
    let mut acked: HashSet<u32> = HashSet::new();
    let mut next = 0u32;
    // Windows of pipelined posts; the kill lands while a window is in flight.
    loop {
        let mut sent = Vec::new();
        for _ in 0..WINDOW {
            sent.push((a.send(post(next)).await, next));
            next += 1;
        }
        if acked.len() >= BEFORE_KILL {
            relay.kill9();
            // Whatever answers reached us before the kill were acknowledged.
            let mut by_id: std::collections::HashMap<u64, u32> = sent.into_iter().collect();
            loop {
                match a.recv().await {
                    Incoming::Frame(sotto_protocol::relay::ServerFrame::Response {
                        id,
                        result: Ok(Response::Posted { .. }),
                    }) => {
                        if let Some(i) = by_id.remove(&id) {
                            acked.insert(i);
                        }
                    }
                    Incoming::Closed(_) => break,
                    other => panic!("unexpected {other:?}"),
                }
            }
            break;
        }
        for (id, i) in sent {
            match a.response(id).await {
                Ok(Response::Posted { .. }) => {
                    acked.insert(i);
                }
                other => panic!("post {i}: {other:?}"),
            }
        }
    }

    relay.restart();
    let mut b = Client::authenticated(relay.addr, &bob).await;
    b.subscribe_mailbox(&bob, 0).await;
    // The backlog is pushed before the next request is answered.
    b.ping_ok().await;
    let mut stored = Vec::new();
    for p in b.queued() {
        let Push::Mailbox { entries } = p else {
            panic!("unexpected push {p:?}")
        };
        for e in entries {
            let i = u32::from_be_bytes(e.payload[..4].try_into().expect("4 bytes"));
            stored.push(i);
        }
    }
    let stored_set: HashSet<u32> = stored.iter().copied().collect();
    assert_eq!(stored.len(), stored_set.len(), "no duplicates");
    let missing: Vec<_> = acked.difference(&stored_set).collect();
    assert!(
        missing.is_empty(),
        "acked but lost after kill -9: {missing:?}"
    );
    assert!(acked.len() >= BEFORE_KILL);
    if backend() == Backend::Sqlite {
        let db = rusqlite::Connection::open(relay.database()).expect("open db");
        let mode: String = db
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .expect("journal mode");
        assert_eq!(mode, "wal");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_group_entries_survive_kill_9_in_order() {
    use crate::mls;
    const WINDOW: usize = 16;
    const BEFORE_KILL: usize = 160;
    let mut relay = Relay::start();
    let alice = Device::new(&relay.address("alice"));
    let mut a = Client::registered(relay.addr, &alice).await;
    let mut g = mls::new_group(&alice);
    let group_id = mls::gid(&g);
    let r = a
        .request(Request::CreateGroup {
            group_id: group_id.clone(),
        })
        .await;
    assert!(matches!(r, Ok(Response::Group(_))), "{r:?}");
    // seq -> post id of every acknowledged post.
    let mut acked: std::collections::BTreeMap<u64, [u8; 16]> = Default::default();
    loop {
        let mut sent = std::collections::HashMap::new();
        let mut order = Vec::new();
        for _ in 0..WINDOW {
            let pid = crate::client::post_id();
            let message = mls::app_message(&mut g, &alice, b"x");
            let id = a
                .send(Request::PostGroup {
                    post_id: pid,
                    group_id: group_id.clone(),
                    message,
                    added: vec![],
                    removed: vec![],
                })
                .await;
            sent.insert(id, pid);
            order.push(id);
        }
        let killing = acked.len() >= BEFORE_KILL;
        if killing {
            relay.kill9();
        }
        for id in order {
            let frame = if killing {
                match a.recv().await {
                    Incoming::Frame(f) => f,
                    Incoming::Closed(_) => break,
                }
            } else {
                sotto_protocol::relay::ServerFrame::Response {
                    id,
                    result: a.response(id).await,
                }
            };
            match frame {
                sotto_protocol::relay::ServerFrame::Response {
                    id,
                    result: Ok(Response::Accepted { seq, .. }),
                } => {
                    acked.insert(seq, sent[&id]);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        if killing {
            break;
        }
    }
    relay.restart();
    let mut a = Client::authenticated(relay.addr, &alice).await;
    let mut stored = Vec::new();
    loop {
        let r = a
            .request(Request::ReadGroup {
                group_id: group_id.clone(),
                after: stored.len() as u64,
                limit: 256,
            })
            .await;
        let Ok(Response::GroupEntries { entries, .. }) = r else {
            panic!("read: {r:?}")
        };
        if entries.is_empty() {
            break;
        }
        stored.extend(entries);
    }
    for (i, e) in stored.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1, "seqs have no holes");
    }
    for (seq, pid) in &acked {
        let e = stored
            .get(*seq as usize - 1)
            .unwrap_or_else(|| panic!("acked seq {seq} lost after kill -9"));
        assert_eq!(&e.post_id, pid, "seq {seq} holds the acknowledged post");
    }
}
