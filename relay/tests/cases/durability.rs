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
    let stored = a.read_whole_group(&group_id).await;
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

/// What one flooding client saw before the kill.
#[derive(Default)]
struct Seen {
    /// seq -> post id of every acknowledged group post.
    acked_group: std::collections::BTreeMap<u64, [u8; 16]>,
    /// Tags of every acknowledged mailbox post.
    acked_mail: Vec<u32>,
    /// seq -> post id of every group entry pushed to this client.
    pushed: std::collections::BTreeMap<u64, [u8; 16]>,
}

/// Posts as fast as the relay answers (group and mailbox posts alternating, `window` in
/// flight), watching its own group, until the connection dies.
async fn flood(
    addr: std::net::SocketAddr,
    dev: Device,
    index: u32,
    window: usize,
    mailbox: sotto_protocol::relay::DeviceRef,
    acks: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> (Device, Vec<u8>, Seen) {
    use crate::mls;
    use sotto_protocol::relay::ServerFrame;
    enum Sent {
        Group([u8; 16]),
        Mail(u32),
    }
    let mut c = Client::registered(addr, &dev).await;
    let mut g = mls::new_group(&dev);
    let group_id = mls::gid(&g);
    let r = c
        .request(Request::CreateGroup {
            group_id: group_id.clone(),
        })
        .await;
    assert!(matches!(r, Ok(Response::Group(_))), "{r:?}");
    let r = c
        .request(Request::SubscribeGroup {
            group_id: group_id.clone(),
            after: 0,
        })
        .await;
    assert_eq!(r, Ok(Response::Ok));
    let pool: Vec<Vec<u8>> = (0..16)
        .map(|_| mls::app_message(&mut g, &dev, b"flood"))
        .collect();
    let mut sent = std::collections::HashMap::new();
    let mut seen = Seen::default();
    let mut next = 0u32;
    let mut alive = true;
    loop {
        while alive && sent.len() < window {
            let tag = (index << 24) | next;
            let (request, what) = if next.is_multiple_of(2) {
                let pid = crate::client::post_id();
                let message = pool[next as usize / 2 % pool.len()].clone();
                let request = Request::PostGroup {
                    post_id: pid,
                    group_id: group_id.clone(),
                    message,
                    added: vec![],
                    removed: vec![],
                };
                (request, Sent::Group(pid))
            } else {
                let request = Request::PostMailbox {
                    post_id: crate::client::post_id(),
                    recipients: vec![mailbox.clone()],
                    payload: tag.to_be_bytes().to_vec(),
                };
                (request, Sent::Mail(tag))
            };
            match c.try_send(request).await {
                Some(id) => {
                    sent.insert(id, what);
                    next += 1;
                }
                None => alive = false,
            }
        }
        match c.recv().await {
            Incoming::Frame(ServerFrame::Response { id, result }) => {
                let what = sent.remove(&id).expect("an answer to a request sent");
                match (what, result) {
                    (Sent::Group(pid), Ok(Response::Accepted { seq, .. })) => {
                        seen.acked_group.insert(seq, pid);
                    }
                    (Sent::Mail(tag), Ok(Response::Posted { .. })) => seen.acked_mail.push(tag),
                    (_, other) => panic!("a post was refused: {other:?}"),
                }
                acks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Incoming::Frame(ServerFrame::Push(Push::Group { entries, .. })) => {
                for e in entries {
                    seen.pushed.insert(e.seq, e.post_id);
                }
            }
            Incoming::Frame(other) => panic!("unexpected {other:?}"),
            Incoming::Closed(_) => break,
        }
    }
    (dev, group_id, seen)
}

/// Several clients flood pipelined group and mailbox posts (32 in flight each), each
/// watching its own group while another member watches the mailbox, and the relay is
/// killed -9 in the middle: after the restart every acknowledged post is stored exactly
/// once and in order, and so is every entry pushed before the kill (a push never carries
/// a row before it is durable; the SQLite writer syncs batches in a pipeline, see
/// docs/relay-protocol.md, Durability).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_flood_killed_9_keeps_every_acknowledged_and_every_pushed_post() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    const POSTERS: u32 = 4;
    const WINDOW: usize = 32;
    const BEFORE_KILL: usize = 1200;
    let mut relay = Relay::start_with(&[
        "--rate",
        "1000000",
        "--burst",
        "1000000",
        "--mailbox-posts-per-min",
        "10000000",
    ]);
    let bob = Device::new(&relay.address("bob"));
    let mut watcher = Client::registered(relay.addr, &bob).await;
    watcher.subscribe_mailbox(&bob, 0).await;
    let watching = tokio::spawn(async move {
        let mut pushed = Vec::new();
        loop {
            match watcher.recv().await {
                Incoming::Frame(sotto_protocol::relay::ServerFrame::Push(Push::Mailbox {
                    entries,
                })) => {
                    for e in entries {
                        let tag = u32::from_be_bytes(e.payload[..4].try_into().expect("4 bytes"));
                        pushed.push(tag);
                    }
                }
                Incoming::Closed(_) => return pushed,
                other => panic!("unexpected {other:?}"),
            }
        }
    });
    let acks = Arc::new(AtomicUsize::new(0));
    let mut posters = Vec::new();
    for i in 0..POSTERS {
        let dev = Device::new(&relay.address(&format!("poster{i}")));
        posters.push(tokio::spawn(flood(
            relay.addr,
            dev,
            i,
            WINDOW,
            bob.device_ref(),
            acks.clone(),
        )));
    }
    crate::harness::eventually("acknowledged posts before the kill", async || {
        (acks.load(Ordering::Relaxed) >= BEFORE_KILL).then_some(())
    })
    .await;
    relay.kill9();
    let mut seen = Vec::new();
    for p in posters {
        seen.push(p.await.expect("poster"));
    }
    let bob_pushed = watching.await.expect("watcher");
    assert!(acks.load(Ordering::Relaxed) >= BEFORE_KILL);

    relay.restart();
    let mut acked_mail = std::collections::HashSet::new();
    for (dev, group_id, s) in &seen {
        let mut c = Client::authenticated(relay.addr, dev).await;
        let stored = c.read_whole_group(group_id).await;
        for (i, e) in stored.iter().enumerate() {
            assert_eq!(e.seq, i as u64 + 1, "seqs have no holes");
        }
        let ids: HashSet<[u8; 16]> = stored.iter().map(|e| e.post_id).collect();
        assert_eq!(ids.len(), stored.len(), "no post stored twice");
        for (what, entries) in [("acknowledged", &s.acked_group), ("pushed", &s.pushed)] {
            for (seq, pid) in entries {
                let e = stored
                    .get(*seq as usize - 1)
                    .unwrap_or_else(|| panic!("{what} seq {seq} lost after kill -9"));
                assert_eq!(&e.post_id, pid, "seq {seq} holds the {what} post");
            }
        }
        acked_mail.extend(s.acked_mail.iter().copied());
    }
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
            stored.push(u32::from_be_bytes(
                e.payload[..4].try_into().expect("4 bytes"),
            ));
        }
    }
    let stored_set: HashSet<u32> = stored.iter().copied().collect();
    assert_eq!(
        stored.len(),
        stored_set.len(),
        "no mailbox post stored twice"
    );
    let lost: Vec<_> = acked_mail.difference(&stored_set).collect();
    assert!(
        lost.is_empty(),
        "acknowledged but lost after kill -9: {lost:?}"
    );
    let lost: Vec<_> = bob_pushed
        .iter()
        .filter(|t| !stored_set.contains(t))
        .collect();
    assert!(lost.is_empty(), "pushed but lost after kill -9: {lost:?}");
}
