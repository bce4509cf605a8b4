//! 12. One client pipelining `message.send`: a single connection on daemon A keeps up to
//!     WINDOW calls in flight (never more than BACKLOG ahead of what B received) for D
//!     seconds; daemon B counts `message.received` and checks every message arrived
//!     exactly once and in the order it was sent. This is what a bot or a bridge does, and
//!     what the daemon's read-ahead (rpc/conn.rs) and group commit (store) are for.
//!     Baseline: the raw relay path for the same time with the same window (one raw
//!     client posting 1 KiB MLS application messages, a second connection receiving).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
use tokio::sync::Semaphore;

use super::sustained::raw_path;
use super::{Ctx, Pair, padded, received_text};
use crate::procs::{CpuMeter, Relay, unlimited_flags};
use crate::progress;
use crate::report::{Row, ratio};
use crate::rpc::CALL_TIMEOUT;
use crate::stats::{Samples, fmt_rate, fmt_us};

const TEXT_BYTES: usize = 1024;
/// `message.send` calls in flight on the one connection (issue 12's target case).
const WINDOW: usize = 256;
/// The sender pauses while this many sent messages are not yet received.
const BACKLOG: usize = 2_000;
/// How long the receiver may lag behind the last send before we call it lost.
const DRAIN: Duration = Duration::from_secs(120);

pub async fn run(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let secs = ctx.pick(5, 20);
    let relay = Relay::start(&unlimited_flags()?)?;
    let pair = Pair::start(&relay).await?;
    let mut b = pair.b.client().await?;
    b.subscribe().await?;
    // Another connection on A answers daemon.status while the pipeline runs.
    let mut status = pair.a.client().await?;
    progress!("one connection on A with {WINDOW} message.send in flight for {secs} s");
    let cpu = CpuMeter::start(&[
        ("A", pair.a.pid()),
        ("relay", relay.pid()),
        ("B", pair.b.pid()),
    ]);
    let (mut reader, mut writer) = pair.a.client().await?.into_split();
    let permits = Arc::new(Semaphore::new(WINDOW));
    let received = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let bob = pair.bob.clone();
    let (p, r) = (permits.clone(), received.clone());
    let sender = tokio::spawn(async move {
        let mut sent = 0usize;
        while Instant::now() < deadline {
            if sent >= r.load(Ordering::SeqCst) + BACKLOG {
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
            p.acquire().await?.forget();
            let text = padded(&format!("pipe-{sent}"), TEXT_BYTES);
            let mut line = json!({"jsonrpc": "2.0", "id": sent, "method": "message.send",
                "params": {"conversation": bob, "text": text}})
            .to_string();
            line.push('\n');
            writer.write_all(line.as_bytes()).await?;
            sent += 1;
        }
        Ok::<_, anyhow::Error>((sent, writer))
    });
    let p = permits.clone();
    let answers = tokio::spawn(async move {
        let mut line = String::new();
        let mut answered = 0usize;
        let mut failed = 0usize;
        loop {
            line.clear();
            let n = match tokio::time::timeout(CALL_TIMEOUT, reader.read_line(&mut line)).await {
                Ok(n) => n?,
                Err(_) => anyhow::bail!("no answer from A in time"),
            };
            if n == 0 {
                return Ok::<_, anyhow::Error>((answered, failed));
            }
            let v: Value = serde_json::from_str(&line)?;
            if v.get("error").is_some() {
                failed += 1;
            }
            answered += 1;
            p.add_permits(1);
        }
    });
    // daemon.status round trips on another connection of A, while the pipeline runs.
    let status_task = tokio::spawn(async move {
        let mut samples = Samples::with_capacity(1024);
        while Instant::now() < deadline {
            let t = Instant::now();
            status.ok("daemon.status", json!({})).await?;
            samples.push(t.elapsed());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok::<_, anyhow::Error>(samples)
    });
    let mut seen = vec![false; 0];
    let (mut dupes, mut out_of_order, mut last_n) = (0usize, 0usize, None::<usize>);
    let mut got = 0usize;
    let mut last_rx = start;
    let mut sender = Some(sender);
    let mut total_sent = None;
    let mut writer_half = None;
    loop {
        if let Some(s) = sender.take_if(|s| s.is_finished()) {
            let (n, w) = s.await??;
            total_sent = Some(n);
            writer_half = Some(w);
        }
        if let Some(n) = total_sent
            && (got >= n || Instant::now() > deadline + DRAIN)
        {
            break;
        }
        let wait = tokio::time::timeout(Duration::from_millis(200), b.event()).await;
        let Ok(e) = wait else { continue };
        let e = e?;
        let Some(t) = received_text(&e) else { continue };
        let Some(n) = t
            .split(' ')
            .next()
            .and_then(|tag| tag.strip_prefix("pipe-"))
            .and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        if seen.len() <= n {
            seen.resize(n + 1, false);
        }
        if seen[n] {
            dupes += 1;
            continue;
        }
        seen[n] = true;
        if last_n.is_some_and(|l| n < l) {
            out_of_order += 1;
        }
        last_n = Some(n);
        got += 1;
        received.store(got, Ordering::SeqCst);
        last_rx = Instant::now();
    }
    // Closing the writer ends A's answers once every call is answered.
    if let Some(mut w) = writer_half {
        w.shutdown().await?;
    }
    let (answered, failed) = answers.await??;
    let status = status_task.await??;
    let cpu = cpu.report();
    let sent = total_sent.unwrap_or(0);
    let lost = sent.saturating_sub(got);
    let rx_rate = got as f64 / (last_rx - start).as_secs_f64().max(1e-9);

    progress!("baseline: raw relay path for {secs} s, {WINDOW} in flight");
    let base = raw_path(&relay, secs, WINDOW).await?;
    Ok(vec![
        Row::new(
            format!(
                "12 pipelined, one client, {WINDOW} message.send in flight: A→B received/s over {secs} s (sent {sent}, lost {lost}, dup {dupes}, out of order {out_of_order})"
            ),
            fmt_rate(rx_rate, "msg"),
        )
        .baseline(
            format!("{} raw relay path, {WINDOW} in flight", fmt_rate(base, "msg")),
            ratio(rx_rate, base),
        )
        .target(
            "≥ 3k msg/s, ≥ 0.6× raw, exactly once, in order",
            lost == 0 && dupes == 0 && out_of_order == 0 && rx_rate >= 3000.0 && rx_rate >= 0.6 * base,
        ),
        Row::new(
            "12 (detail) calls answered / failed",
            format!("{answered} / {failed}"),
        ),
        Row::new(
            "12 daemon.status on another connection of A during the run, p50 / p99",
            format!("{} / {}", fmt_us(status.p50()), fmt_us(status.p99())),
        )
        .target("p99 < 5 ms", status.p99() < 5000.0),
        Row::new("12 (detail) CPU during the run (2 cores in all)", cpu),
    ])
}
