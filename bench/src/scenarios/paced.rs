//! 7. A busy conversation at the relay's DEFAULT limits: daemon A sends 1 KiB messages on a
//!    steady 100 msg/s schedule for D seconds; daemon B's `events.subscribe` stream gives
//!    each message's arrival. Latency is arrival − the message's scheduled send time (so a
//!    sender held back by throttling counts in full).
//!    Baseline: the identical run through a relay with its per-client limits lifted.
//!    Target: p99 at default limits within 2× the unthrottled p99.

use std::time::{Duration, Instant};

use serde_json::json;

use super::{Ctx, Pair, padded, received_text};
use crate::procs::{Relay, unlimited_flags};
use crate::progress;
use crate::report::{Row, ratio};
use crate::stats::{Samples, fmt_us};

const TEXT_BYTES: usize = 1024;
const RATE: u64 = 100;
/// How long after the last send the receiver may still wait.
const DRAIN: Duration = Duration::from_secs(60);

pub async fn run(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let secs = ctx.pick(3, 15);
    progress!("{RATE} msg/s for {secs} s through a relay at its default limits");
    let throttled = paced(&Relay::start(&[])?, secs).await?;
    progress!("the same through a relay with its limits lifted");
    let free = paced(&Relay::start(&unlimited_flags()?)?, secs).await?;
    let n = throttled.samples.len();
    Ok(vec![
        Row::new(
            format!("7 {RATE} msg/s at default relay limits, e2e p50 (n={n})"),
            fmt_us(throttled.samples.p50()),
        )
        .baseline(
            format!("{} limits lifted", fmt_us(free.samples.p50())),
            ratio(throttled.samples.p50(), free.samples.p50()),
        ),
        Row::new(
            format!("7 {RATE} msg/s at default relay limits, e2e p99 (n={n})"),
            fmt_us(throttled.samples.p99()),
        )
        .baseline(
            format!("{} limits lifted", fmt_us(free.samples.p99())),
            ratio(throttled.samples.p99(), free.samples.p99()),
        )
        .target(
            "≤ 2× unthrottled",
            throttled.lost == 0 && throttled.samples.p99() <= 2.0 * free.samples.p99(),
        ),
        Row::new(
            "7 (detail) worst e2e latency, lost messages (default / lifted)",
            format!(
                "{} / {}, lost {} / {}",
                fmt_us(throttled.samples.percentile(100.0)),
                fmt_us(free.samples.percentile(100.0)),
                throttled.lost,
                free.lost
            ),
        ),
    ])
}

struct Paced {
    samples: Samples,
    lost: usize,
}

async fn paced(relay: &Relay, secs: u64) -> anyhow::Result<Paced> {
    let pair = Pair::start(relay).await?;
    let mut a = pair.a.client().await?;
    let mut b = pair.b.client().await?;
    b.subscribe().await?;
    let n = (RATE * secs) as usize;
    let period = Duration::from_micros(1_000_000 / RATE);
    let start = Instant::now() + Duration::from_millis(50);
    let bob = pair.bob.clone();
    let sender = tokio::spawn(async move {
        for i in 0..n {
            tokio::time::sleep_until((start + period * i as u32).into()).await;
            let text = padded(&format!("pace-{i:06}"), TEXT_BYTES);
            a.ok("message.send", json!({"conversation": bob, "text": text}))
                .await?;
        }
        Ok::<_, anyhow::Error>(())
    });
    let mut arrived: Vec<Option<Duration>> = vec![None; n];
    let mut got = 0usize;
    let give_up = start + period * n as u32 + DRAIN;
    while got < n && Instant::now() < give_up {
        let Ok(e) = tokio::time::timeout(Duration::from_millis(200), b.event()).await else {
            continue;
        };
        let e = e?;
        let Some(i) = received_text(&e)
            .and_then(|t| t.split(' ').next())
            .and_then(|tag| tag.strip_prefix("pace-"))
            .and_then(|i| i.parse::<usize>().ok())
        else {
            continue;
        };
        if let Some(slot) = arrived.get_mut(i)
            && slot.is_none()
        {
            let scheduled = start + period * i as u32;
            *slot = Some(Instant::now().saturating_duration_since(scheduled));
            got += 1;
        }
    }
    sender.await??;
    let mut samples = Samples::with_capacity(n);
    for d in arrived.iter().flatten() {
        samples.push(*d);
    }
    Ok(Paced {
        samples,
        lost: n - got,
    })
}
