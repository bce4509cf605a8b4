//! Faults: the relay's disk fills up (SQLite backend; a small tmpfs mounted by the test
//! holds its data directory). Posts are refused with a retryable error — never `internal`,
//! which clients treat as final — reads keep working, nothing acknowledged is lost, and the
//! same post id succeeds once space returns, exactly once.

#![allow(clippy::unwrap_used)]

use sotto_protocol::relay::{Push, RelayErrorKind, Request, Response};
use sotto_testkit::tmpfs::Tmpfs;

use crate::client::{Client, Device};
use crate::harness::Relay;

fn post(bob: &Device, i: u32) -> Request {
    let mut post_id = [0u8; 16];
    post_id[..4].copy_from_slice(&i.to_be_bytes());
    Request::PostMailbox {
        post_id,
        recipients: vec![bob.device_ref()],
        payload: payload(i),
    }
}

/// Large enough that the disk fills after a few thousand posts.
fn payload(i: u32) -> Vec<u8> {
    let mut p = format!("entry {i} ").into_bytes();
    p.resize(4000, b'.');
    p
}

async fn mailbox(b: &mut Client, bob: &Device, n: usize) -> Vec<Vec<u8>> {
    b.subscribe_mailbox(bob, 0).await;
    let mut all = Vec::new();
    while all.len() < n {
        let Push::Mailbox { entries } = b.push().await else {
            panic!("expected a mailbox push")
        };
        all.extend(entries.into_iter().map(|e| e.payload));
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_posts_as_retryable_and_loses_nothing() {
    let mut fs = None;
    let relay = Relay::start_prepared(|dir| fs = Some(Tmpfs::mount(dir, "16m")));
    let Some(Some(fs)) = fs else { return };
    let alice = Device::new(&relay.address("alice"));
    let bob = Device::new(&relay.address("bob"));
    drop(Client::registered(relay.addr, &bob).await);
    let mut a = Client::registered(relay.addr, &alice).await;
    let mut acked = Vec::new();
    for i in 0..5 {
        assert!(matches!(
            a.request(post(&bob, i)).await,
            Ok(Response::Posted { .. })
        ));
        acked.push(i);
    }

    fs.fill();
    // The WAL may still hold room for some posts: post until one is refused.
    let mut refused = None;
    for i in 5..20_000 {
        match a.request(post(&bob, i)).await {
            Ok(Response::Posted { .. }) => acked.push(i),
            Ok(other) => panic!("unexpected answer {other:?}"),
            Err(e) => {
                assert!(
                    matches!(e.kind, RelayErrorKind::RateLimited { .. }),
                    "a full disk is retryable (rate_limited), not {:?}: {e}",
                    e.kind
                );
                refused = Some(i);
                break;
            }
        }
    }
    let refused = refused.expect("a full disk refuses a post within 20000 attempts");
    // The connection stays usable and reads keep working: everything acknowledged is there.
    a.ping_ok().await;
    let mut b = Client::authenticated(relay.addr, &bob).await;
    let want: Vec<Vec<u8>> = acked.iter().map(|i| payload(*i)).collect();
    assert_eq!(mailbox(&mut b, &bob, want.len()).await, want);

    fs.free();
    // The same post id is accepted now, once; a repeat answers the same.
    let first = a.request(post(&bob, refused)).await;
    assert!(matches!(first, Ok(Response::Posted { .. })), "{first:?}");
    assert_eq!(a.request(post(&bob, refused)).await, first);
    let mut b = Client::authenticated(relay.addr, &bob).await;
    let mut want = want;
    want.push(payload(refused));
    let got = mailbox(&mut b, &bob, want.len()).await;
    assert!(
        got == want,
        "exactly once, in order ({} entries, {} expected)",
        got.len(),
        want.len()
    );
}
