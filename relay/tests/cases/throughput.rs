//! A rough throughput figure (ignored by default; run with `--ignored --nocapture`).

use std::time::Instant;

use sotto_protocol::relay::{Request, Response};

use crate::client::{Client, Device, post_id};
use crate::harness::Relay;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check; run with --ignored --nocapture"]
async fn durable_mailbox_posts_per_second() {
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let (clients, per_client, window) = (
        env("CLIENTS", 8),
        env("PER_CLIENT", 4000),
        env("WINDOW", 128),
    );
    let relay = Relay::start_with(&[
        "--rate",
        "1000000",
        "--burst",
        "1000000",
        "--mailbox-posts-per-min",
        "10000000",
        "--connections-per-ip",
        "100000",
    ]);
    let bob = Device::new(&relay.address("bob"));
    drop(Client::registered(relay.addr, &bob).await);
    let mut tasks = Vec::new();
    let start = Instant::now();
    for i in 0..clients {
        let dev = Device::new(&format!("sender{i}@elsewhere.example"));
        let target = bob.device_ref();
        let addr = relay.addr;
        tasks.push(tokio::spawn(async move {
            let mut c = Client::authenticated(addr, &dev).await;
            let mut sent = 0;
            while sent < per_client {
                let mut ids = Vec::new();
                for _ in 0..window.min(per_client - sent) {
                    let req = Request::PostMailbox {
                        post_id: post_id(),
                        recipients: vec![target.clone()],
                        payload: vec![0u8; 256],
                    };
                    ids.push(c.send(req).await);
                }
                sent += ids.len();
                for id in ids {
                    assert!(matches!(c.response(id).await, Ok(Response::Posted { .. })));
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("client");
    }
    let secs = start.elapsed().as_secs_f64();
    let n = clients * per_client;
    println!(
        "{n} durable mailbox posts in {secs:.2}s = {:.0}/s (sqlite synchronous=full, batched commits)",
        n as f64 / secs
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check; run with --ignored --nocapture"]
async fn memory_per_idle_connection() {
    let n: usize = std::env::var("CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let relay = Relay::start_with(&["--connections-per-ip", "1000000"]);
    // Warm up the runtime and the store with a few connections first.
    let mut warm = Vec::new();
    for i in 0..10 {
        let dev = Device::new(&relay.address(&format!("warm{i}")));
        warm.push(Client::registered(relay.addr, &dev).await);
    }
    let before = relay.rss_kib();
    let mut idle = Vec::with_capacity(n);
    for i in 0..n {
        let dev = Device::new(&format!("idle{i}@elsewhere.example"));
        let mut c = Client::authenticated(relay.addr, &dev).await;
        c.ping_ok().await;
        idle.push(c);
    }
    let after = relay.rss_kib();
    println!(
        "{n} idle authenticated connections: {} KiB more RSS = {:.1} KiB each",
        after.saturating_sub(before),
        after.saturating_sub(before) as f64 / n as f64
    );
}
