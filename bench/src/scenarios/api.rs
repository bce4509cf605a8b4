//! 3. API overhead: `daemon.status` round trips over the socket, one connection, one call
//!    at a time. Baseline: the same client code against a line-echo server on a Unix
//!    socket served by a plain thread in this process (the floor of a round trip).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::UnixStream;

use super::Ctx;
use crate::procs::Daemon;
use crate::progress;
use crate::report::{Row, ratio};
use crate::stats::{Samples, fmt_rate, fmt_us};

const REQUEST: &[u8] = b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"daemon.status\"}\n";

/// `n` write-a-line/read-a-line round trips on `path`: (samples, round trips per second).
pub async fn round_trips(path: &Path, n: usize) -> anyhow::Result<(Samples, f64)> {
    let stream = UnixStream::connect(path)
        .await
        .with_context(|| format!("connecting to {}", path.display()))?;
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut line = String::new();
    let mut samples = Samples::with_capacity(n);
    for _ in 0..n / 10 {
        w.write_all(REQUEST).await?;
        line.clear();
        r.read_line(&mut line).await?;
    }
    let all = Instant::now();
    for _ in 0..n {
        let start = Instant::now();
        w.write_all(REQUEST).await?;
        line.clear();
        let got = tokio::time::timeout(Duration::from_secs(30), r.read_line(&mut line))
            .await
            .context("no answer in time")??;
        anyhow::ensure!(got > 0, "the server closed the connection");
        samples.push(start.elapsed());
    }
    let per_sec = n as f64 / all.elapsed().as_secs_f64();
    Ok((samples, per_sec))
}

/// A line-echo server on `path`: plain blocking threads, one per connection.
pub fn echo_server(path: &Path) -> anyhow::Result<()> {
    let listener = std::os::unix::net::UnixListener::bind(path)?;
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(s) = s else { break };
            std::thread::spawn(move || {
                use std::io::{BufRead as _, Write as _};
                let Ok(mut w) = s.try_clone() else { return };
                let mut r = std::io::BufReader::new(s);
                let mut line = String::new();
                loop {
                    line.clear();
                    match r.read_line(&mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            if w.write_all(line.as_bytes()).is_err() {
                                break;
                            }
                        }
                    }
                }
            });
        }
    });
    Ok(())
}

pub async fn run(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let n = ctx.pick(2_000, 20_000);
    let daemon = Daemon::start()?;
    progress!("{n} daemon.status round trips");
    let (ours, ours_rate) = round_trips(&daemon.socket(), n).await?;

    progress!("baseline: {n} round trips to a line-echo Unix socket server");
    let dir = tempfile::Builder::new()
        .prefix("sotto-bench-echo")
        .tempdir()?;
    let path = dir.path().join("echo.sock");
    echo_server(&path)?;
    let (base, base_rate) = round_trips(&path, n).await?;

    let within = |o: f64, b: f64| ratio(o, b).is_some_and(|r| r <= 10.0);
    Ok(vec![
        Row::new(
            format!("3 API daemon.status round trips (n={n})"),
            fmt_rate(ours_rate, "rt"),
        )
        .baseline(fmt_rate(base_rate, "rt"), ratio(base_rate, ours_rate))
        .target("≤ 10× raw", within(base_rate, ours_rate)),
        Row::new("3 API daemon.status p50", fmt_us(ours.p50()))
            .baseline(fmt_us(base.p50()), ratio(ours.p50(), base.p50()))
            .target("≤ 10× raw", within(ours.p50(), base.p50())),
        Row::new("3 API daemon.status p99", fmt_us(ours.p99()))
            .baseline(fmt_us(base.p99()), ratio(ours.p99(), base.p99()))
            .target("≤ 10× raw", within(ours.p99(), base.p99())),
    ])
}
