//! 1. End-to-end latency: `message.send` on daemon A → `message.received` on daemon B
//!    through a local relay, 1 KiB text. Baseline: a relay `Ping` round trip over the same
//!    loopback WebSocket (an authenticated raw client).

use std::time::Instant;

use serde_json::json;
use sotto_protocol::relay::{Request, Response};

use super::{Ctx, Pair, padded, received_text};
use crate::procs::{CpuMeter, Relay, unlimited_flags};
use crate::progress;
use crate::relay_client::{Client, Device};
use crate::report::{Row, ratio};
use crate::stats::{Samples, fmt_us};

const TEXT_BYTES: usize = 1024;
const WARMUP: usize = 20;
/// The first messages of the fresh conversation, warm-up included, measured on their own
/// (issue 12: the targets hold from the first message on).
const FRESH: usize = 300;

pub async fn run(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let n = ctx.pick(100, 1000);
    let relay = Relay::start(&unlimited_flags()?)?;
    progress!("two daemons, accounts, a direct conversation");
    let pair = Pair::start(&relay).await?;
    let mut a = pair.a.client().await?;
    let mut b = pair.b.client().await?;
    b.subscribe().await?;

    progress!("{n} sequential 1 KiB messages A → relay → B (after {WARMUP} warm-up)");
    let cpu = CpuMeter::start(&[
        ("A", pair.a.pid()),
        ("relay", relay.pid()),
        ("B", pair.b.pid()),
    ]);
    let mut e2e = Samples::with_capacity(n);
    let mut accept = Samples::with_capacity(n);
    let mut fresh = Samples::with_capacity(FRESH);
    for i in 0..WARMUP + n {
        let tag = format!("lat-{i:06}");
        let text = padded(&tag, TEXT_BYTES);
        let start = Instant::now();
        a.ok(
            "message.send",
            json!({"conversation": pair.bob, "text": text}),
        )
        .await?;
        let accepted = start.elapsed();
        b.event_where(|e| received_text(e).is_some_and(|t| t.starts_with(&tag)))
            .await?;
        let took = start.elapsed();
        if i < FRESH {
            fresh.push(took);
        }
        if i >= WARMUP {
            e2e.push(took);
            accept.push(accepted);
        }
    }

    let cpu = cpu.report();
    progress!("baseline: {n} relay Ping round trips on one WebSocket");
    let dev = Device::new("pinger@elsewhere.example");
    let mut c = Client::authed(relay.addr, &dev, false).await?;
    let mut ping = Samples::with_capacity(n);
    for i in 0..WARMUP + n {
        let start = Instant::now();
        let r = c.request(Request::Ping).await?;
        anyhow::ensure!(matches!(r, Response::Pong), "ping answered {r:?}");
        if i >= WARMUP {
            ping.push(start.elapsed());
        }
    }

    progress!(
        "the disk's durable-commit floor: 200 one-row SQLite transactions (WAL, synchronous=FULL)"
    );
    let (_, commit) =
        tokio::task::spawn_blocking(|| super::throughput::sqlite_commits(200, 1)).await??;

    // Issue 12: on a disk slower than this one, within 3× one durable commit + 0.5 ms
    // (p50) and 3× its p99 + 2 ms (p99): the path has three durable commits in a row.
    let p50_bound = 3.0 * commit.p50() + 500.0;
    let p99_bound = 3.0 * commit.p99() + 2000.0;
    let row = |what: &str, ours: f64, base: f64| {
        Row::new(format!("1 e2e latency {what} (n={n})"), fmt_us(ours))
            .baseline(format!("{} ws ping", fmt_us(base)), ratio(ours, base))
    };
    Ok(vec![
        row("p50", e2e.p50(), ping.p50()).target(
            format!("< 2 ms (slow disk: ≤ {})", fmt_us(p50_bound)),
            e2e.p50() < p50_bound.max(2000.0),
        ),
        row("p95", e2e.p95(), ping.p95()),
        row("p99", e2e.p99(), ping.p99()).target(
            format!("< 10 ms (slow disk: ≤ {})", fmt_us(p99_bound)),
            e2e.p99() < p99_bound.max(10_000.0),
        ),
        Row::new(
            format!(
                "1 e2e latency, the first {} messages of the fresh conversation, p50 / p99",
                fresh.len()
            ),
            format!("{} / {}", fmt_us(fresh.p50()), fmt_us(fresh.p99())),
        )
        .baseline(
            format!("{} / {} ws ping", fmt_us(ping.p50()), fmt_us(ping.p99())),
            ratio(fresh.p50(), ping.p50()),
        )
        .target(
            "< 2 ms / < 10 ms (or the slow-disk bounds)",
            fresh.p50() < p50_bound.max(2000.0) && fresh.p99() < p99_bound.max(10_000.0),
        ),
        Row::new(
            "1 (detail) message.send reply on A, p50 / p99",
            format!("{} / {}", fmt_us(accept.p50()), fmt_us(accept.p99())),
        ),
        Row::new("1 (detail) CPU during the messages (2 cores in all)", cpu),
        Row::new(
            "1 (detail) one durable SQLite commit on this disk, p50 / p99",
            format!("{} / {}", fmt_us(commit.p50()), fmt_us(commit.p99())),
        ),
        Row::new(
            "1 (detail) direct conversation: create on A → joined on B",
            fmt_us(pair.create_to_joined.as_secs_f64() * 1e6),
        ),
    ])
}
