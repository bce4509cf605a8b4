//! An unauthenticated (and an authenticated) flood against the relay while two connected
//! clients exchange mailbox messages: connection churn past the per-IP limit, bursts of
//! registration frames with bad proofs, a key-package claim storm. The limits engage
//! (refusals are counted) and the connected clients keep working; their post → push
//! latency is measured without and during the flood and printed side by side (a
//! measurement, not a timed assertion: the figures depend on the machine's load).

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use sotto_protocol::relay::{DeviceRef, Push, RelayErrorKind, Request, Response, ServerFrame};

use crate::client::{Client, Device, Incoming, post_id};
use crate::harness::Relay;

/// Post → push latencies of `n` mailbox messages from `a` to `b`.
async fn latencies(a: &mut Client, b: &mut Client, bob: &DeviceRef, n: usize) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let started = Instant::now();
        let r = a
            .request(Request::PostMailbox {
                post_id: post_id(),
                recipients: vec![bob.clone()],
                payload: format!("latency {i}").into_bytes(),
            })
            .await;
        assert!(
            matches!(r, Ok(Response::Posted { .. })),
            "a connected client is served: {r:?}"
        );
        loop {
            let Push::Mailbox { entries } = b.push().await else {
                continue;
            };
            if entries
                .iter()
                .any(|e| e.payload == format!("latency {i}").into_bytes())
            {
                break;
            }
        }
        out.push(started.elapsed());
    }
    out
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn summary(mut v: Vec<Duration>) -> String {
    v.sort();
    format!(
        "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile(&v, 0.5).as_secs_f64() * 1e3,
        percentile(&v, 0.99).as_secs_f64() * 1e3,
        v.last().unwrap().as_secs_f64() * 1e3
    )
}

/// Sends `n` registrations with a bad proof back to back on one unauthenticated
/// connection `c`, then counts the answers: (rate limited, refused otherwise).
async fn frame_flood(mut c: Client, n: usize) -> (usize, usize) {
    let dev = Device::new("flood@nowhere.invalid");
    for _ in 0..n {
        c.send(Client::auth_request(&dev, vec![0; 64], true)).await;
    }
    let (mut limited, mut other) = (0, 0);
    while limited + other < n {
        match c.recv().await {
            Incoming::Frame(ServerFrame::Response { result: Err(e), .. }) => {
                if matches!(e.kind, RelayErrorKind::RateLimited { .. }) {
                    limited += 1;
                } else {
                    other += 1;
                }
            }
            Incoming::Frame(_) => other += 1,
            Incoming::Closed(_) => break,
        }
    }
    (limited, other)
}

/// Opens up to `n` connections (each registering a fresh name on the connection it
/// opened) and holds them; returns how many the relay refused and the ones it accepted.
/// The upgraded connection itself is registered: dropping it and connecting again would
/// race the frame floods for the freed slot.
async fn connection_flood(
    relay: std::net::SocketAddr,
    n: usize,
    host: &str,
) -> (usize, Vec<Client>) {
    let mut refused = 0;
    let mut held = Vec::new();
    for i in 0..n {
        let Ok(mut c) = Client::try_connect(relay).await else {
            refused += 1;
            continue;
        };
        let dev = Device::new(&format!("flood{i}@{host}"));
        let r = c.try_auth(&dev, true).await;
        assert!(
            matches!(r, Ok(Response::Authenticated { local: true })),
            "an accepted connection registers: {r:?}"
        );
        held.push(c);
    }
    (refused, held)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_is_limited_and_connected_clients_keep_working() {
    const SAMPLES: usize = 100;
    let relay = Relay::start();
    let alice = Device::new(&relay.address("alice"));
    let bob = Device::new(&relay.address("bob"));
    let eve = Device::new(&relay.address("eve"));
    let mut a = Client::registered(relay.addr, &alice).await;
    let mut b = Client::registered(relay.addr, &bob).await;
    b.subscribe_mailbox(&bob, 0).await;
    let mut e = Client::registered(relay.addr, &eve).await;

    let bob_ref = bob.device_ref();
    let quiet = latencies(&mut a, &mut b, &bob_ref, SAMPLES).await;

    let addr = relay.addr;
    let host = relay.authority();
    // The frame floods' connections are open before the connection flood starts: racing
    // it for the per-IP slots, one could be refused (and `Client::connect` panics).
    let mut flooders = Vec::new();
    for _ in 0..3 {
        flooders.push(Client::connect(addr).await);
    }
    let frames = tokio::spawn(async move {
        let floods: Vec<_> = flooders
            .into_iter()
            .map(|c| tokio::spawn(frame_flood(c, 2000)))
            .collect();
        let mut total = (0, 0);
        for f in floods {
            let (l, o) = f.await.unwrap();
            total = (total.0 + l, total.1 + o);
        }
        total
    });
    let claims = tokio::spawn(async move {
        let mut limited = 0;
        for _ in 0..400 {
            let r = e
                .request(Request::ClaimKeyPackage {
                    device: bob.device_ref(),
                    ciphersuite: 1,
                })
                .await;
            if let Err(err) = r
                && matches!(err.kind, RelayErrorKind::RateLimited { .. })
            {
                limited += 1;
            }
        }
        (limited, e)
    });
    let conns = tokio::spawn(async move { connection_flood(addr, 120, &host).await });
    let loud = latencies(&mut a, &mut b, &bob_ref, SAMPLES).await;
    let (frames_limited, frames_other) = frames.await.unwrap();
    let (claims_limited, mut e) = claims.await.unwrap();
    let (refused, held) = conns.await.unwrap();

    eprintln!(
        "mailbox post → push latency of connected clients: without a flood {}; during the flood {}",
        summary(quiet),
        summary(loud)
    );
    eprintln!(
        "flood: {frames_limited} of {} registration frames rate-limited ({frames_other} answered otherwise); {claims_limited} of 400 claims rate-limited; {refused} of 120 connections refused, {} held",
        frames_limited + frames_other,
        held.len()
    );
    assert!(
        frames_limited > 0,
        "the per-connection request limit engaged"
    );
    assert!(claims_limited > 0, "the per-claimer claim limit engaged");
    assert!(refused > 0, "the per-IP connection limit engaged");
    drop(held);
    // Everyone connected before is still served.
    a.ping_ok().await;
    b.ping_ok().await;
    e.ping_ok().await;
}
