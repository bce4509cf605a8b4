//! 6. A sustained conversation: two connections on daemon A send 1 KiB messages for D
//!    seconds, never more than BACKLOG ahead of B; daemon B counts `message.received` and
//!    checks none is lost or doubled.
//!    Baseline: the raw relay path for the same time: one raw client posts 1 KiB MLS
//!    application messages to its group log with the same number in flight, a second
//!    connection of the same member receives the pushes.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use sotto_protocol::relay::{Push, Request, Response};

use super::{Ctx, Pair, app_messages, padded, received_text};
use crate::procs::{CpuMeter, Relay, unlimited_flags};
use crate::progress;
use crate::relay_client::{Client, Device, post_id};
use crate::report::{Row, ratio};
use crate::stats::fmt_rate;

const TEXT_BYTES: usize = 1024;
const SENDERS: usize = 2;
/// Senders pause while this many sent messages are not yet received: the figure is the
/// rate the whole path sustains, not how fast A can queue.
const BACKLOG: usize = 200;
/// How long the receiver may lag behind the last send before we call it lost.
const DRAIN: Duration = Duration::from_secs(120);

pub async fn run(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let secs = ctx.pick(5, 30);
    let relay = Relay::start(&unlimited_flags()?)?;
    let pair = Pair::start(&relay).await?;
    let mut b = pair.b.client().await?;
    b.subscribe().await?;
    progress!("{SENDERS} senders on A for {secs} s, B receiving");
    let cpu = CpuMeter::start(&[
        ("A", pair.a.pid()),
        ("relay", relay.pid()),
        ("B", pair.b.pid()),
    ]);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let mut senders = Vec::new();
    let sent_all = Arc::new(AtomicUsize::new(0));
    let received = Arc::new(AtomicUsize::new(0));
    for s in 0..SENDERS {
        let mut a = pair.a.client().await?;
        let bob = pair.bob.clone();
        let (sent_all, received) = (sent_all.clone(), received.clone());
        senders.push(tokio::spawn(async move {
            let mut sent = 0usize;
            while Instant::now() < deadline {
                if sent_all.load(Ordering::SeqCst) >= received.load(Ordering::SeqCst) + BACKLOG {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
                sent_all.fetch_add(1, Ordering::SeqCst);
                let text = padded(&format!("sus-{s}-{sent}"), TEXT_BYTES);
                a.ok("message.send", json!({"conversation": bob, "text": text}))
                    .await?;
                sent += 1;
            }
            Ok::<_, anyhow::Error>(sent)
        }));
    }
    // Receive while sending; stop once every sent message arrived or the drain expires.
    let mut seen = HashSet::new();
    let mut dupes = 0usize;
    let mut total_sent = None;
    let mut last_rx = start;
    loop {
        if total_sent.is_none() && senders.iter().all(|t| t.is_finished()) {
            let mut n = 0;
            for t in senders.drain(..) {
                n += t.await??;
            }
            total_sent = Some(n);
        }
        if let Some(n) = total_sent
            && (seen.len() >= n || Instant::now() > deadline + DRAIN)
        {
            break;
        }
        let wait = tokio::time::timeout(Duration::from_millis(200), b.event()).await;
        if let Ok(e) = wait {
            let e = e?;
            if let Some(t) = received_text(&e) {
                let tag = t.split(' ').next().unwrap_or_default().to_owned();
                if seen.insert(tag) {
                    received.store(seen.len(), Ordering::SeqCst);
                } else {
                    dupes += 1;
                }
                last_rx = Instant::now();
            }
        }
    }
    let cpu = cpu.report();
    let sent = total_sent.unwrap_or(0);
    let lost = sent.saturating_sub(seen.len());
    let send_rate = sent as f64 / secs as f64;
    let rx_rate = seen.len() as f64 / (last_rx - start).as_secs_f64().max(1e-9);

    progress!("baseline: raw relay path for {secs} s, {SENDERS} in flight");
    let base = raw_path(&relay, secs, SENDERS).await?;

    Ok(vec![
        Row::new(
            format!(
                "6 sustained A→B received/s over {secs} s (sent {sent}, lost {lost}, dup {dupes})"
            ),
            fmt_rate(rx_rate, "msg"),
        )
        .baseline(
            format!("{} raw relay path", fmt_rate(base, "msg")),
            ratio(rx_rate, base),
        )
        .target("no loss", lost == 0 && dupes == 0),
        Row::new(
            "6 sustained message.send accepted/s on A",
            fmt_rate(send_rate, "msg"),
        ),
        Row::new("6 (detail) CPU during the run (2 cores in all)", cpu),
    ])
}

/// Posts for `secs` with `window` in flight; returns pushes received per second.
pub async fn raw_path(relay: &Relay, secs: u64, window: usize) -> anyhow::Result<f64> {
    let dev = Device::new(&relay.address("rawsender"));
    let (group_id, pool) = app_messages(&dev, 256, TEXT_BYTES)?;
    let mut c = Client::authed(relay.addr, &dev, true).await?;
    c.request(Request::CreateGroup {
        group_id: group_id.clone(),
    })
    .await?;
    let mut sub = Client::authed(relay.addr, &dev, false).await?;
    let r = sub
        .request(Request::SubscribeGroup {
            group_id: group_id.clone(),
            after: 0,
        })
        .await?;
    anyhow::ensure!(matches!(r, Response::Ok), "subscribe: {r:?}");
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let gid = group_id.clone();
    let mut poster = Some(tokio::spawn(async move {
        let (mut tx, mut rx) = c.split();
        let mut sent = 0usize;
        let mut in_flight = 0usize;
        while Instant::now() < deadline || in_flight > 0 {
            if in_flight < window && Instant::now() < deadline {
                tx.send(Request::PostGroup {
                    post_id: post_id(),
                    group_id: gid.clone(),
                    message: pool[sent % pool.len()].clone(),
                    added: vec![],
                    removed: vec![],
                })
                .await?;
                sent += 1;
                in_flight += 1;
            } else {
                rx.next().await?;
                in_flight -= 1;
            }
        }
        Ok::<_, anyhow::Error>(sent)
    }));
    let mut got = 0usize;
    let mut last = start;
    let mut sent = None;
    loop {
        if let Some(p) = poster.take_if(|p| p.is_finished()) {
            sent = Some(p.await??);
            if got >= sent.unwrap_or(0) {
                break;
            }
            continue;
        }
        if sent.is_some_and(|n| got >= n) || Instant::now() > deadline + DRAIN {
            break;
        }
        match tokio::time::timeout(Duration::from_millis(200), sub.push()).await {
            Ok(Ok(Push::Group { entries, .. })) => {
                got += entries.len();
                last = Instant::now();
            }
            Ok(Ok(_)) | Err(_) => {}
            Ok(Err(e)) => return Err(e),
        }
    }
    Ok(got as f64 / (last - start).as_secs_f64().max(1e-9))
}
