//! 5. Footprint. The idle daemon's RSS and its time from spawn to a served
//!    `daemon.status`, beside a minimal tokio process of ours (this binary as a line-echo
//!    Unix socket server). The relay's RSS with 1,000 and 10,000 idle authenticated
//!    connections held by another process (this binary, `--connections-client`), beside a
//!    bare tokio-tungstenite echo server holding the same number of plain WebSockets.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use super::Ctx;
use crate::procs::{Daemon, Relay, first_line, raise_nofile, rss_bytes, unlimited_flags};
use crate::progress;
use crate::report::{Row, ratio};
use crate::stats::{fmt_bytes, fmt_us};

const SETTLE: Duration = Duration::from_secs(2);

fn self_exe() -> anyhow::Result<std::path::PathBuf> {
    std::env::current_exe().context("locating sotto-bench")
}

/// A child that exits when its stdin closes; killed on drop.
struct Held(Child);

impl Drop for Held {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_self(args: &[String]) -> anyhow::Result<Held> {
    let child = Command::new(self_exe()?)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("re-executing sotto-bench")?;
    Ok(Held(child))
}

/// Baseline process: ready time and RSS of this binary serving a line-echo socket.
fn echo_child(dir: &Path) -> anyhow::Result<(Duration, u64)> {
    let path = dir.join("idle.sock");
    let start = Instant::now();
    let held = spawn_self(&["--echo-child".into(), path.display().to_string()])?;
    let ready = loop {
        if let Ok(mut s) = std::os::unix::net::UnixStream::connect(&path) {
            use std::io::{BufRead as _, Write as _};
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(b"ping\n")?;
            let mut line = String::new();
            std::io::BufReader::new(s).read_line(&mut line)?;
            break start.elapsed();
        }
        if start.elapsed() > Duration::from_secs(30) {
            bail!("the echo child never answered");
        }
        std::thread::sleep(Duration::from_micros(500));
    };
    std::thread::sleep(SETTLE);
    let rss = rss_bytes(held.0.id())?;
    Ok((ready, rss))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// Holds `count` connections to `addr` from another process; returns the server's RSS
/// growth per connection (bytes) or why it failed.
fn per_connection(
    pid: u32,
    addr: SocketAddr,
    count: usize,
    plain: bool,
) -> anyhow::Result<(f64, u64)> {
    let before = rss_bytes(pid)?;
    let mut args = vec![
        "--connections-client".into(),
        "--relay".into(),
        addr.to_string(),
        "--count".into(),
        count.to_string(),
    ];
    if plain {
        args.push("--plain".into());
    }
    let mut held = spawn_self(&args)?;
    let line = first_line(&mut held.0, Duration::from_secs(600))?;
    let mut parts = line.splitn(4, ' ');
    let ok: usize = parts.nth(1).and_then(|v| v.parse().ok()).unwrap_or(0);
    let failed: usize = parts.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    let why = parts.next().unwrap_or_default();
    if failed > 0 {
        bail!("{ok} of {count} connected, {failed} failed; first error: {why}");
    }
    std::thread::sleep(SETTLE);
    let after = rss_bytes(pid)?;
    Ok((after.saturating_sub(before) as f64 / count as f64, after))
}

fn ws_echo_server() -> anyhow::Result<(Held, SocketAddr)> {
    let mut held = spawn_self(&["--ws-echo-server".into()])?;
    let line = first_line(&mut held.0, Duration::from_secs(30))?;
    let addr = line
        .split_whitespace()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .with_context(|| format!("unexpected line {line:?}"))?;
    Ok((held, addr))
}

pub async fn run(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    tokio::task::spawn_blocking({
        let ctx = *ctx;
        move || run_blocking(&ctx)
    })
    .await?
}

fn run_blocking(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let nofile = raise_nofile();
    let mut rows = Vec::new();
    let reps = ctx.pick(3, 10);
    progress!("daemon spawn → served daemon.status, {reps} fresh daemons; and the baseline");
    let dir = tempfile::Builder::new()
        .prefix("sotto-bench-fp")
        .tempdir()?;
    let mut ready = Vec::new();
    let mut idle_rss = 0;
    for i in 0..reps {
        let d = Daemon::start()?;
        ready.push(d.ready_after);
        if i == 0 {
            std::thread::sleep(SETTLE);
            idle_rss = rss_bytes(d.pid())?;
        }
    }
    let mut base_ready = Vec::new();
    let mut base_rss = 0;
    for i in 0..reps {
        let (r, rss) = echo_child(dir.path())?;
        std::fs::remove_file(dir.path().join("idle.sock")).ok();
        base_ready.push(r);
        if i == 0 {
            base_rss = rss;
        }
    }
    let (ready, base_ready) = (median(ready), median(base_ready));

    progress!("an idle daemon with an account connected to a relay");
    let relay = Relay::start(&unlimited_flags()?)?;
    let d = Daemon::start()?;
    tokio::runtime::Handle::current().block_on(d.account(&relay, "idle"))?;
    std::thread::sleep(SETTLE);
    let account_rss = rss_bytes(d.pid())?;
    drop(d);
    drop(relay);

    let us = |d: Duration| fmt_us(d.as_secs_f64() * 1e6);
    let mib20 = 20.0 * 1024.0 * 1024.0;
    rows.push(
        Row::new("5 idle daemon RSS (no account)", fmt_bytes(idle_rss as f64))
            .baseline(
                format!("{} tokio echo proc", fmt_bytes(base_rss as f64)),
                ratio(idle_rss as f64, base_rss as f64),
            )
            .target("< 20 MiB", (idle_rss as f64) < mib20),
    );
    rows.push(
        Row::new(
            "5 idle daemon RSS (account, relay connected)",
            fmt_bytes(account_rss as f64),
        )
        .baseline(
            format!("{} tokio echo proc", fmt_bytes(base_rss as f64)),
            ratio(account_rss as f64, base_rss as f64),
        )
        .target("< 20 MiB", (account_rss as f64) < mib20),
    );
    rows.push(
        Row::new(
            format!("5 daemon spawn → served daemon.status (median of {reps})"),
            us(ready),
        )
        .baseline(
            format!("{} tokio echo proc", us(base_ready)),
            ratio(ready.as_secs_f64(), base_ready.as_secs_f64()),
        )
        .target("< 200 ms", ready < Duration::from_millis(200)),
    );

    let counts: &[usize] = ctx.pick(&[1000], &[1000, 10_000]);
    for &count in counts {
        progress!(
            "relay with {count} idle authenticated connections from another process (RLIMIT_NOFILE {nofile})"
        );
        let relay = Relay::start(&unlimited_flags()?)?;
        std::thread::sleep(Duration::from_millis(500));
        let ours = per_connection(relay.pid(), relay.addr, count, false);
        drop(relay);
        progress!("baseline: a bare tokio-tungstenite echo server with {count} plain WebSockets");
        let (server, addr) = ws_echo_server()?;
        std::thread::sleep(Duration::from_millis(500));
        let base = per_connection(server.0.id(), addr, count, true);
        drop(server);
        let base_text = match &base {
            Ok((b, _)) => format!("{}/conn bare ws", fmt_bytes(*b)),
            Err(e) => format!("failed: {e:#}"),
        };
        match ours {
            Ok((per, total)) => {
                rows.push(
                    Row::new(
                        format!(
                            "5 relay RSS per idle authed connection, {count} conns (total {})",
                            fmt_bytes(total as f64)
                        ),
                        format!("{}/conn", fmt_bytes(per)),
                    )
                    .baseline(
                        base_text,
                        base.as_ref().ok().and_then(|(b, _)| ratio(per, *b)),
                    )
                    .target("≤ 64 KiB/conn", per <= 64.0 * 1024.0),
                );
            }
            Err(e) => rows.push(
                Row::new(
                    format!("5 relay with {count} idle authed connections"),
                    format!("FAILED: {e:#}").replace('|', "/"),
                )
                .baseline(base_text, None)
                .target("10,000 connections", false),
            ),
        }
    }
    Ok(rows)
}
