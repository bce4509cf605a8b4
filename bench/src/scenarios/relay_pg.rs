//! 10. Relay throughput on PostgreSQL: the load of scenario 2 (K raw clients, half group
//!     log and half mailbox posts, W in flight each) against one relay process on
//!     PostgreSQL and against two processes on one database (clients alternate between
//!     them), beside the same load on the default SQLite backend, with the durability
//!     settings in force printed beside each figure.

use std::time::Instant;

use sotto_testkit::pg::Cluster;

use super::Ctx;
use super::throughput::{client_run, relay_durability};
use crate::procs::{CpuMeter, Relay, unlimited_flags};
use crate::progress;
use crate::relay_client::{Client, Device};
use crate::report::{Row, ratio};
use crate::stats::{Samples, fmt_rate, fmt_us};

/// K clients × M posts spread over `relays` (all on one database); posts per second and
/// the ack latencies.
async fn load(relays: &[Relay], k: usize, m: usize) -> anyhow::Result<(f64, Samples, String)> {
    let first = &relays[0];
    let sink = Device::new(&first.address("sink"));
    drop(Client::authed(first.addr, &sink, true).await?);
    let mut pids: Vec<(String, u32)> = relays
        .iter()
        .enumerate()
        .map(|(i, r)| (format!("relay {}", i + 1), r.pid()))
        .collect();
    pids.push(("bench clients".into(), std::process::id()));
    let named: Vec<(&str, u32)> = pids.iter().map(|(n, p)| (n.as_str(), *p)).collect();
    let cpu = CpuMeter::start(&named);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..k {
        let dev = Device::new(&first.address(&format!("load{i}")));
        let addr = relays[i % relays.len()].addr;
        tasks.push(tokio::spawn(client_run(
            addr,
            dev,
            sink.device_ref(),
            m,
            true,
        )));
    }
    let mut acks = Samples::with_capacity(k * m);
    for t in tasks {
        acks.extend(t.await??);
    }
    let rate = (k * m) as f64 / start.elapsed().as_secs_f64();
    Ok((rate, acks, cpu.report()))
}

pub async fn run(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let (k, m) = ctx.pick((4, 300), (8, 5_000));
    let flags = unlimited_flags()?;
    let cluster = tokio::task::spawn_blocking(Cluster::start_kept).await??;
    let pg_durability = cluster.durability()?;

    progress!("SQLite: {k} clients × {m} posts on one relay process");
    let sqlite = Relay::start(&flags)?;
    let sqlite_sync = relay_durability(&sqlite);
    let (sqlite_rate, _, _) = load(std::slice::from_ref(&sqlite), k, m).await?;
    drop(sqlite);

    let with_db = |url: &str| {
        let mut f = flags.clone();
        f.extend(["--database".to_owned(), url.to_owned()]);
        f
    };
    progress!("PostgreSQL ({pg_durability}): {k} clients × {m} posts on one relay process");
    let one = Relay::start(&with_db(&cluster.create_database()?))?;
    let one_sync = relay_durability(&one);
    let (one_rate, one_acks, one_cpu) = load(std::slice::from_ref(&one), k, m).await?;
    drop(one);

    progress!("PostgreSQL: {k} clients × {m} posts on two relay processes, one database");
    let url = cluster.create_database()?;
    let a = Relay::start(&with_db(&url))?;
    let mut f = with_db(&url);
    f.extend(["--public-url".to_owned(), a.url.clone()]);
    let b = Relay::start(&f)?;
    let relays = [a, b];
    let (two_rate, two_acks, two_cpu) = load(&relays, k, m).await?;

    Ok(vec![
        Row::new(
            format!("10 relay durable posts/s on PostgreSQL, 1 process, {k}×{m} ({one_sync})"),
            fmt_rate(one_rate, "msg"),
        )
        .baseline(
            format!(
                "{} on SQLite (synchronous={sqlite_sync})",
                fmt_rate(sqlite_rate, "msg")
            ),
            ratio(one_rate, sqlite_rate),
        ),
        Row::new(
            format!(
                "10 relay durable posts/s on PostgreSQL, 2 processes, {k}×{m} ({pg_durability})"
            ),
            fmt_rate(two_rate, "msg"),
        )
        .baseline(
            format!("{} with 1 process", fmt_rate(one_rate, "msg")),
            ratio(two_rate, one_rate),
        )
        .target("≥ 20k msg/s", two_rate >= 20_000.0),
        Row::new(
            "10 PostgreSQL ack latency p50 / p99, 1 process; 2 processes",
            format!(
                "{} / {}; {} / {}",
                fmt_us(one_acks.p50()),
                fmt_us(one_acks.p99()),
                fmt_us(two_acks.p50()),
                fmt_us(two_acks.p99())
            ),
        ),
        Row::new("10 (detail) CPU, 1 process", one_cpu),
        Row::new("10 (detail) CPU, 2 processes", two_cpu),
    ])
}
