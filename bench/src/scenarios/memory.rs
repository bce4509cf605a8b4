//! 13. Memory with many conversations: daemon A first creates CONVERSATIONS direct
//!     conversations (each with a raw protocol member that registered and published one
//!     key package; they never join, so each conversation is an active group on A with an
//!     actor and a log subscription), then sustains the pipelined load of scenario 12 in
//!     its conversation with daemon B while the bench samples A's RSS (`VmRSS`) from
//!     /proc every 100 ms and times `daemon.status` on another connection of A.
//!     Target (issue 12): A's RSS under 64 MiB throughout, `daemon.status` p99 < 5 ms.
//!     Baseline: A's RSS right after its account was made (one conversation, idle).

use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::json;

use super::pipelined;
use super::{Ctx, Pair};
use crate::procs::{Relay, rss_bytes, unlimited_flags};
use crate::progress;
use crate::relay_client::members_with_key_packages;
use crate::report::{Row, ratio};
use crate::stats::{fmt_bytes, fmt_us};

/// The RSS target of issue 12.
const RSS_TARGET: f64 = 64.0 * 1024.0 * 1024.0;

pub async fn run(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let convs = ctx.pick(50, 1000);
    let secs = ctx.pick(3, 20);
    let relay = Relay::start(&unlimited_flags()?)?;
    let pair = Pair::start(&relay).await?;
    let idle = rss_bytes(pair.a.pid())? as f64;
    progress!("{convs} more conversations on A, each with a raw member");
    let t = Instant::now();
    create_conversations(&relay, &pair, convs).await?;
    let created_in = t.elapsed();
    let after_create = rss_bytes(pair.a.pid())? as f64;
    progress!("pipelined load in one conversation for {secs} s, A's RSS sampled");
    let load = pipelined::pipeline(&pair, &relay, secs).await?;
    let peak = load.rss_peak.max(after_create);
    Ok(vec![
        Row::new(
            format!(
                "13 daemon A RSS, peak during {secs} s of pipelined load, {} conversations",
                convs + 1
            ),
            fmt_bytes(peak),
        )
        .baseline(
            format!("{} idle, 1 conversation", fmt_bytes(idle)),
            ratio(peak, idle),
        )
        .target("< 64 MiB", peak < RSS_TARGET),
        Row::new(
            format!(
                "13 (detail) A's RSS after creating {convs} conversations (in {:.1} s), median during the load",
                created_in.as_secs_f64()
            ),
            format!(
                "{} / {}",
                fmt_bytes(after_create),
                fmt_bytes(load.rss_median)
            ),
        ),
        Row::new(
            format!(
                "13 (detail) pipelined received/s meanwhile (sent {}, lost {}, dup {}, out of order {})",
                load.sent, load.lost, load.dupes, load.out_of_order
            ),
            crate::stats::fmt_rate(load.rate, "msg"),
        ),
        Row::new(
            "13 daemon.status on another connection of A during the load, p50 / p99",
            format!(
                "{} / {}",
                fmt_us(load.status.p50()),
                fmt_us(load.status.p99())
            ),
        )
        .target("p99 < 5 ms", load.status.p99() < 5000.0),
    ])
}

/// Registers `n` raw members (each publishing one key package) and creates a direct
/// conversation with each on A; returns once A reports every one active.
async fn create_conversations(relay: &Relay, pair: &Pair, n: usize) -> anyhow::Result<()> {
    // Their connections are not needed once the key packages are published.
    let addresses: Vec<String> = members_with_key_packages(relay, "m", n)
        .await?
        .into_iter()
        .map(|(dev, _)| dev.address)
        .collect();
    let mut a = pair.a.client().await?;
    for address in addresses {
        a.ok("conversation.create", json!({"members": [address]}))
            .await?;
    }
    // Every conversation is active once A's actor processed its own commit.
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let list = a.ok("conversation.list", json!({})).await?;
        let active = list
            .as_array()
            .context("conversation.list is not a list")?
            .iter()
            .filter(|c| c["state"] == "active")
            .count();
        if active > n {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {active} of {} conversations active in time",
            n + 1
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
