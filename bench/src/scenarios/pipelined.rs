//! 12. One client pipelining `message.send`: a single connection on daemon A keeps up to
//!     WINDOW calls in flight (never more than BACKLOG ahead of what B received) for D
//!     seconds; daemon B counts `message.received` and checks every message arrived
//!     exactly once and in the order it was sent. This is what a bot or a bridge does, and
//!     what the daemon's read-ahead (rpc/conn.rs) and group commit (store) are for.
//!     Meanwhile another connection on A times `daemon.status` every 5 ms, and the bench
//!     samples A's RSS (`VmRSS`, /proc) every 100 ms. The sender also times what held it
//!     back: A's answers (WINDOW in flight) or delivery (BACKLOG sent and not received
//!     by B yet, wherever they are: A's outbox, the relay, B).
//!     Baseline: the raw relay path for the same time with the same window (one raw
//!     client posting 1 KiB MLS application messages, a second connection receiving).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
use tokio::sync::Semaphore;

use super::sustained::raw_path;
use super::{Ctx, Pair, padded, received_text};
use crate::procs::{CpuMeter, Relay, rss_bytes, unlimited_flags};
use crate::progress;
use crate::report::{Row, ratio};
use crate::rpc::CALL_TIMEOUT;
use crate::stats::{Samples, fmt_bytes, fmt_rate, fmt_us};

const TEXT_BYTES: usize = 1024;
/// `message.send` calls in flight on the one connection (issue 12's target case).
const WINDOW: usize = 256;
/// The sender pauses while this many sent messages are not yet received.
const BACKLOG: usize = 2_000;
/// How long the receiver may lag behind the last send before we call it lost.
const DRAIN: Duration = Duration::from_secs(120);
/// How often A's RSS is read during the load.
const RSS_EVERY: Duration = Duration::from_millis(100);

/// What one pipelined run measured.
#[derive(Debug)]
pub struct Load {
    /// Messages received per second on B.
    pub rate: f64,
    pub sent: usize,
    pub lost: usize,
    pub dupes: usize,
    pub out_of_order: usize,
    pub answered: usize,
    pub failed: usize,
    /// `daemon.status` round trips on another connection of A meanwhile.
    pub status: Samples,
    /// CPU of A, the relay and B.
    pub cpu: String,
    /// A's RSS (bytes): the largest and the median sample.
    pub rss_peak: f64,
    pub rss_median: f64,
    /// What held the sender back, as shares of its run: waiting for A to answer (all
    /// WINDOW calls in flight), and waiting for delivery (BACKLOG answered but not yet
    /// received by B: queued in A's outbox, at the relay or in B). A high share of the
    /// second says A accepts calls faster than the path behind it delivers them.
    pub waited_on_answers: f64,
    pub waited_on_delivery: f64,
}

pub async fn run(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let secs = ctx.pick(5, 20);
    let relay = Relay::start(&unlimited_flags()?)?;
    let pair = Pair::start(&relay).await?;
    progress!("one connection on A with {WINDOW} message.send in flight for {secs} s");
    let load = pipeline(&pair, &relay, secs).await?;
    progress!("baseline: raw relay path for {secs} s, {WINDOW} in flight");
    let base = raw_path(&relay, secs, WINDOW).await?;
    let Load {
        rate,
        sent,
        lost,
        dupes,
        out_of_order,
        ..
    } = load;
    Ok(vec![
        Row::new(
            format!(
                "12 pipelined, one client, {WINDOW} message.send in flight: A→B received/s over {secs} s (sent {sent}, lost {lost}, dup {dupes}, out of order {out_of_order})"
            ),
            fmt_rate(rate, "msg"),
        )
        .baseline(
            format!("{} raw relay path, {WINDOW} in flight", fmt_rate(base, "msg")),
            ratio(rate, base),
        )
        .target(
            "≥ 3k msg/s, ≥ 0.6× raw, exactly once, in order",
            lost == 0 && dupes == 0 && out_of_order == 0 && rate >= 3000.0 && rate >= 0.6 * base,
        ),
        Row::new(
            "12 (detail) calls answered / failed",
            format!("{} / {}", load.answered, load.failed),
        ),
        Row::new(
            "12 daemon.status on another connection of A during the run, p50 / p99",
            format!("{} / {}", fmt_us(load.status.p50()), fmt_us(load.status.p99())),
        )
        .target("p99 < 5 ms", load.status.p99() < 5000.0),
        Row::new(
            "12 daemon A RSS during the run, peak / median",
            format!("{} / {}", fmt_bytes(load.rss_peak), fmt_bytes(load.rss_median)),
        )
        .target("< 64 MiB", load.rss_peak < 64.0 * 1024.0 * 1024.0),
        Row::new("12 (detail) CPU during the run (2 cores in all)", load.cpu),
        Row::new(
            format!(
                "12 (detail) the sender waited for A's answers ({WINDOW} in flight) / for delivery ({BACKLOG} sent, not yet received)"
            ),
            format!(
                "{:.0} % / {:.0} % of the run",
                load.waited_on_answers * 100.0,
                load.waited_on_delivery * 100.0
            ),
        ),
    ])
}

/// A's RSS every [`RSS_EVERY`] until `stop`; the samples in bytes.
fn sample_rss(pid: u32, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Vec<f64>> {
    tokio::spawn(async move {
        let mut out = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            if let Ok(b) = rss_bytes(pid) {
                out.push(b as f64);
            }
            tokio::time::sleep(RSS_EVERY).await;
        }
        out
    })
}

/// The pipelined load of this scenario in `pair`'s conversation for `secs` seconds.
pub async fn pipeline(pair: &Pair, relay: &Relay, secs: u64) -> anyhow::Result<Load> {
    let mut b = pair.b.client().await?;
    b.subscribe().await?;
    // Another connection on A answers daemon.status while the pipeline runs.
    let mut status = pair.a.client().await?;
    let cpu = CpuMeter::start(&[
        ("A", pair.a.pid()),
        ("relay", relay.pid()),
        ("B", pair.b.pid()),
    ]);
    let stop_rss = Arc::new(AtomicBool::new(false));
    let rss = sample_rss(pair.a.pid(), stop_rss.clone());
    let (mut reader, mut writer) = pair.a.client().await?.into_split();
    let permits = Arc::new(Semaphore::new(WINDOW));
    let received = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let bob = pair.bob.clone();
    let (p, r) = (permits.clone(), received.clone());
    let sender = tokio::spawn(async move {
        let mut sent = 0usize;
        let (mut on_answers, mut on_delivery) = (Duration::ZERO, Duration::ZERO);
        while Instant::now() < deadline {
            if sent >= r.load(Ordering::SeqCst) + BACKLOG {
                let t = Instant::now();
                tokio::time::sleep(Duration::from_millis(1)).await;
                on_delivery += t.elapsed();
                continue;
            }
            let t = Instant::now();
            p.acquire().await?.forget();
            on_answers += t.elapsed();
            let text = padded(&format!("pipe-{sent}"), TEXT_BYTES);
            let mut line = json!({"jsonrpc": "2.0", "id": sent, "method": "message.send",
                "params": {"conversation": bob, "text": text}})
            .to_string();
            line.push('\n');
            writer.write_all(line.as_bytes()).await?;
            sent += 1;
        }
        let run = start.elapsed().as_secs_f64().max(1e-9);
        let waited = (
            on_answers.as_secs_f64() / run,
            on_delivery.as_secs_f64() / run,
        );
        Ok::<_, anyhow::Error>((sent, writer, waited))
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
    let mut waited = (0.0, 0.0);
    loop {
        if let Some(s) = sender.take_if(|s| s.is_finished()) {
            let (n, w, shares) = s.await??;
            total_sent = Some(n);
            writer_half = Some(w);
            waited = shares;
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
    stop_rss.store(true, Ordering::SeqCst);
    let mut rss = rss.await?;
    rss.sort_by(f64::total_cmp);
    let cpu = cpu.report();
    let sent = total_sent.unwrap_or(0);
    Ok(Load {
        rate: got as f64 / (last_rx - start).as_secs_f64().max(1e-9),
        sent,
        lost: sent.saturating_sub(got),
        dupes,
        out_of_order,
        answered,
        failed,
        status,
        cpu,
        rss_peak: rss.last().copied().unwrap_or(0.0),
        rss_median: rss.get(rss.len() / 2).copied().unwrap_or(0.0),
        waited_on_answers: waited.0,
        waited_on_delivery: waited.1,
    })
}
