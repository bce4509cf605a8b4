//! 2. Relay throughput: K authenticated raw clients each posting M durable messages, half
//!    to its group log and half to a mailbox, W requests in flight per client. Baseline:
//!    raw rusqlite inserts of the same rows into a WAL database with `synchronous=FULL`,
//!    one transaction per insert and batched.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use sotto_protocol::relay::{Request, Response, ServerFrame};
use tokio::sync::Semaphore;

use super::{Ctx, app_messages};
use crate::procs::{CpuMeter, Relay, relay_supports, unlimited_flags};
use crate::progress;
use crate::relay_client::{Client, Device, post_id};
use crate::report::{Row, ratio};
use crate::stats::{Samples, fmt_rate, fmt_us};

const PAYLOAD: usize = 1024;
const WINDOW: usize = 64;
const POOL: usize = 256;
const BATCH: usize = 256;

/// One client's run: its ack latencies.
pub(crate) async fn client_run(
    relay: std::net::SocketAddr,
    dev: Device,
    sink: sotto_protocol::relay::DeviceRef,
    m: usize,
    mailbox: bool,
) -> anyhow::Result<Samples> {
    let (group_id, pool) = app_messages(&dev, POOL.min(m).max(1), PAYLOAD)?;
    let mut c = Client::authed(relay, &dev, true).await?;
    match c
        .request(Request::CreateGroup {
            group_id: group_id.clone(),
        })
        .await?
    {
        Response::Group(_) => {}
        other => anyhow::bail!("create group: {other:?}"),
    }
    let (mut tx, mut rx) = c.split();
    let window = Arc::new(Semaphore::new(WINDOW));
    let sent: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let (w2, s2) = (window.clone(), sent.clone());
    let reader = tokio::spawn(async move {
        let mut samples = Samples::with_capacity(m);
        while samples.len() < m {
            if let ServerFrame::Response { id, result } = rx.next().await? {
                let r = result.map_err(|e| anyhow::anyhow!("relay refused a post: {e:?}"))?;
                anyhow::ensure!(
                    matches!(r, Response::Posted { .. } | Response::Accepted { .. }),
                    "unexpected answer {r:?}"
                );
                let start = s2
                    .lock()
                    .map_err(|_| anyhow::anyhow!("poisoned"))?
                    .remove(&id)
                    .context("an answer to an unknown id")?;
                samples.push(start.elapsed());
                w2.add_permits(1);
            }
        }
        Ok::<_, anyhow::Error>(samples)
    });
    let payload = vec![7u8; PAYLOAD];
    for i in 0..m {
        window.acquire().await?.forget();
        let req = if mailbox && i % 2 == 1 {
            Request::PostMailbox {
                post_id: post_id(),
                recipients: vec![sink.clone()],
                payload: payload.clone(),
            }
        } else {
            Request::PostGroup {
                post_id: post_id(),
                group_id: group_id.clone(),
                message: pool[i % pool.len()].clone(),
                added: vec![],
                removed: vec![],
            }
        };
        // Record before sending: the reader may see the answer first.
        let now = Instant::now();
        let id = tx.send(req).await?;
        sent.lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .insert(id, now);
    }
    reader.await?
}

/// The relay's `synchronous` setting from its /metrics.
pub(crate) fn relay_durability(relay: &Relay) -> String {
    use std::io::{Read as _, Write as _};
    let get = || -> std::io::Result<String> {
        let mut s = std::net::TcpStream::connect(relay.addr)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    };
    get()
        .ok()
        .and_then(|body| {
            body.lines()
                .find(|l| l.starts_with("sotto_relay_storage_synchronous{"))
                .and_then(|l| l.split('"').nth(1).map(str::to_owned))
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Raw SQLite: `n` inserts, `per_txn` per transaction; returns inserts per second.
pub fn sqlite_inserts(n: usize, per_txn: usize) -> anyhow::Result<f64> {
    sqlite_commits(n, per_txn).map(|(rate, _)| rate)
}

/// Raw SQLite: `n` inserts, `per_txn` per transaction; returns inserts per second and the
/// latency of each transaction (BEGIN to COMMIT returned).
pub fn sqlite_commits(n: usize, per_txn: usize) -> anyhow::Result<(f64, Samples)> {
    let dir = tempfile::Builder::new()
        .prefix("sotto-bench-sql")
        .tempdir()?;
    let conn = rusqlite::Connection::open(dir.path().join("raw.sqlite3"))?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
         CREATE TABLE entries (group_id BLOB NOT NULL, seq INTEGER NOT NULL, sender BLOB NOT NULL,
           post_id BLOB NOT NULL UNIQUE, message BLOB NOT NULL, stored_at INTEGER NOT NULL,
           PRIMARY KEY (group_id, seq));",
    )?;
    let sync: i64 = conn.query_row("PRAGMA synchronous", [], |r| r.get(0))?;
    anyhow::ensure!(sync == 2, "synchronous is {sync}, not FULL");
    let message = vec![7u8; PAYLOAD];
    let mut commits = Samples::with_capacity(n / per_txn.max(1) + 1);
    let start = Instant::now();
    let mut i = 0;
    while i < n {
        let t = Instant::now();
        conn.execute_batch("BEGIN IMMEDIATE")?;
        {
            let mut stmt = conn.prepare_cached(
                "INSERT INTO entries (group_id, seq, sender, post_id, message, stored_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for _ in 0..per_txn.min(n - i) {
                stmt.execute(rusqlite::params![
                    &b"group"[..],
                    i as i64,
                    &[1u8; 32][..],
                    &post_id()[..],
                    &message,
                    0i64
                ])?;
                i += 1;
            }
        }
        conn.execute_batch("COMMIT")?;
        commits.push(t.elapsed());
    }
    Ok((n as f64 / start.elapsed().as_secs_f64(), commits))
}

pub async fn run(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let (k, m) = ctx.pick((4, 500), (8, 5_000));
    let relay = Relay::start(&unlimited_flags()?)?;
    let durability = relay_durability(&relay);
    let mailbox = relay_supports("--mailbox-posts-per-min")?;
    let sink = Device::new(&relay.address("sink"));
    drop(Client::authed(relay.addr, &sink, true).await?);
    let mix = if mailbox {
        "½ group log, ½ mailbox"
    } else {
        "group log only: this relay build has no --mailbox-posts-per-min, so mailbox posts stay rate-limited"
    };
    progress!(
        "{k} clients × {m} posts of {PAYLOAD} B, {WINDOW} in flight each ({mix}); relay synchronous={durability}"
    );
    let cpu = CpuMeter::start(&[
        ("relay", relay.pid()),
        ("bench clients", std::process::id()),
    ]);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..k {
        let dev = Device::new(&relay.address(&format!("load{i}")));
        tasks.push(tokio::spawn(client_run(
            relay.addr,
            dev,
            sink.device_ref(),
            m,
            mailbox,
        )));
    }
    let mut acks = Samples::with_capacity(k * m);
    for t in tasks {
        acks.extend(t.await??);
    }
    let ours = (k * m) as f64 / start.elapsed().as_secs_f64();
    let cpu = cpu.report();

    let single_n = ctx.pick(300, 2_000);
    progress!(
        "baseline: {single_n} raw SQLite inserts, one transaction each (WAL, synchronous=FULL)"
    );
    let single = tokio::task::spawn_blocking(move || sqlite_inserts(single_n, 1)).await??;
    let total = k * m;
    progress!(
        "baseline: {total} raw SQLite inserts, {BATCH} per transaction (WAL, synchronous=FULL)"
    );
    let batched = tokio::task::spawn_blocking(move || sqlite_inserts(total, BATCH)).await??;

    let label =
        format!("2 relay durable posts/s, {k}×{m}, window {WINDOW} (synchronous={durability})");
    Ok(vec![
        Row::new(label, fmt_rate(ours, "msg"))
            .baseline(
                format!("{} raw sqlite, {BATCH}/txn", fmt_rate(batched, "ins")),
                ratio(ours, batched),
            )
            .target(
                "≥ 40k msg/s, ≥ 0.5× raw",
                ours >= 40_000.0 && ours >= 0.5 * batched,
            ),
        Row::new(
            "2 relay durable posts/s vs one txn per insert",
            fmt_rate(ours, "msg"),
        )
        .baseline(
            format!("{} raw sqlite, 1/txn", fmt_rate(single, "ins")),
            ratio(ours, single),
        ),
        Row::new("2 (detail) CPU during the run (2 cores in all)", cpu),
        Row::new(
            "2 relay ack latency p50 / p99",
            format!("{} / {}", fmt_us(acks.p50()), fmt_us(acks.p99())),
        ),
    ])
}
