//! `sotto-bench`: measures Sotto against the targets in DESIGN.md ("Scale and cost
//! targets"), each figure beside a baseline taken in the same run. Progress goes to
//! stderr, one Markdown table to stdout. `--quick` is the CI smoke run: it never fails on
//! a figure, only when a scenario cannot run at all.

mod children;
mod procs;
mod relay_client;
mod report;
mod rpc;
mod scenarios;
mod stats;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Instant;

use clap::{Parser, ValueEnum};

use report::Row;
use scenarios::Ctx;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// 1. message.send on A → message.received on B through a relay.
    Latency,
    /// 2. Durable relay posts per second with K raw clients.
    Throughput,
    /// 3. daemon.status round trips over the socket.
    Api,
    /// 4. Group scaling: the MLS step against raw openmls, and end to end.
    Groups,
    /// 5. Idle RSS, ready time, relay bytes per idle connection.
    Footprint,
    /// 6. A sustained conversation without loss.
    Sustained,
    /// 7. 100 msg/s through a relay at its default limits, against limits lifted.
    Paced,
    /// 8. What a client waits for: conversation.list of 1,000, a message.list page of 100,000.
    Client,
    /// 9. The cost of the post-quantum ciphersuite beside 0x0001.
    Pq,
    /// 10. Relay throughput on PostgreSQL, one and two relay processes, beside SQLite.
    RelayPg,
    /// 11. Encryption at rest: SQLCipher against plain SQLite, start-up with a big history.
    AtRest,
    /// 12. One client with 256 message.send in flight, against the raw relay path.
    Pipelined,
    /// 13. Daemon RSS with 1,000 conversations under the pipelined load.
    Memory,
}

/// Sotto's benchmark harness (release builds give the real figures).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Smaller counts and shorter runs (under 2 minutes; the CI smoke test).
    #[arg(long)]
    quick: bool,
    /// Run only these scenarios (repeatable); default: all, in order.
    #[arg(long, value_enum)]
    scenario: Vec<Scenario>,
    /// Internal: hold idle connections to --relay (the footprint scenario's client process).
    #[arg(long, hide = true)]
    connections_client: bool,
    #[arg(long, hide = true)]
    relay: Option<SocketAddr>,
    #[arg(long, hide = true, default_value_t = 0)]
    count: usize,
    #[arg(long, hide = true)]
    plain: bool,
    /// Internal: a line-echo Unix socket server (the footprint baseline).
    #[arg(long, hide = true)]
    echo_child: Option<PathBuf>,
    /// Internal: a bare WebSocket echo server (the footprint baseline).
    #[arg(long, hide = true)]
    ws_echo_server: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    if args.connections_client {
        let relay = args
            .relay
            .ok_or_else(|| anyhow::anyhow!("--connections-client needs --relay"))?;
        rt.block_on(children::connections_client(relay, args.count, args.plain));
        return Ok(());
    }
    if let Some(path) = &args.echo_child {
        return rt.block_on(children::echo_child(path));
    }
    if args.ws_echo_server {
        return rt.block_on(children::ws_echo_server());
    }
    let ctx = Ctx { quick: args.quick };
    let chosen = if args.scenario.is_empty() {
        Scenario::value_variants().to_vec()
    } else {
        args.scenario.clone()
    };
    let started = Instant::now();
    let mut rows: Vec<Row> = Vec::new();
    let mut failed = Vec::new();
    for s in chosen {
        let name = format!("{s:?}").to_lowercase();
        eprintln!("[{:>6.1}s] {name}", started.elapsed().as_secs_f64());
        let result = rt.block_on(async {
            match s {
                Scenario::Latency => scenarios::latency::run(&ctx).await,
                Scenario::Throughput => scenarios::throughput::run(&ctx).await,
                Scenario::Api => scenarios::api::run(&ctx).await,
                Scenario::Groups => scenarios::groups::run(&ctx).await,
                Scenario::Footprint => scenarios::footprint::run(&ctx).await,
                Scenario::Sustained => scenarios::sustained::run(&ctx).await,
                Scenario::Paced => scenarios::paced::run(&ctx).await,
                Scenario::Client => scenarios::client::run(&ctx).await,
                Scenario::Pq => scenarios::pq::run(&ctx).await,
                Scenario::RelayPg => scenarios::relay_pg::run(&ctx).await,
                Scenario::AtRest => scenarios::at_rest::run(&ctx).await,
                Scenario::Pipelined => scenarios::pipelined::run(&ctx).await,
                Scenario::Memory => scenarios::memory::run(&ctx).await,
            }
        });
        match result {
            Ok(r) => {
                for row in &r {
                    eprintln!(
                        "    {} = {} (baseline {})",
                        row.scenario, row.ours, row.baseline
                    );
                }
                rows.extend(r);
            }
            Err(e) => {
                eprintln!("    {name} FAILED: {e:#}");
                rows.push(Row::new(
                    format!("{name}: FAILED"),
                    format!("{e:#}").replace('|', "/"),
                ));
                failed.push(name);
            }
        }
    }
    eprintln!(
        "[{:>6.1}s] done ({} profile{})",
        started.elapsed().as_secs_f64(),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        if ctx.quick { ", --quick" } else { "" }
    );
    println!("{}", report::render(&rows));
    if !failed.is_empty() {
        anyhow::bail!("scenarios that could not run: {}", failed.join(", "));
    }
    Ok(())
}
