//! Scenario 10, the cost of encryption at rest (SQLCipher, issue 15), each beside the same
//! work on a plain SQLite database in the same run:
//!
//! - (a) the MLS step of `mls_step` (N=10), the daemon's way, with both databases keyed as
//!   the daemon keys its own, against the same unkeyed (synchronous=FULL, then OFF);
//! - (b) one durable message-row insert transaction (the daemon's pragmas), keyed against
//!   plain;
//! - (c) daemon start-up (spawn → first served `daemon.status`) with a history of 100,000
//!   messages (10,000 in quick mode) in its encrypted database — the start runs
//!   `PRAGMA quick_check`, which reads every page — against a fresh daemon; and the open +
//!   key + quick_check of that database in-process, against a plain copy.
//!
//! The end-to-end latency with and without is the `latency` scenario run on this build and
//! on the build before encryption (docs/performance.md says how).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rusqlite::Connection;
use serde_json::json;
use sotto_protocol::api::KeyStoreKind;
use sottod::keys::DbKey;

use super::mls_step::{self, Sync};
use super::{Ctx, Pair};
use crate::procs::{Daemon, Relay, unlimited_flags};
use crate::progress;
use crate::report::{Row, ratio};
use crate::stats::fmt_us;

fn ms(d: Duration) -> String {
    fmt_us(d.as_secs_f64() * 1e6)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

pub async fn run(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    rows.extend(mls(ctx).await?);
    rows.push(insert(ctx).await?);
    rows.extend(startup(ctx).await?);
    Ok(rows)
}

async fn mls(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let n = 10;
    let reps = ctx.pick(1, 5);
    progress!("MLS step N={n}: {reps} run(s) each, SQLCipher-keyed and plain, FULL then OFF");
    let results = tokio::task::spawn_blocking(move || {
        let others = mls_step::other_key_packages(n - 1)?;
        let mut out = Vec::new();
        for sync in [Sync::Full, Sync::Off] {
            let (mut keyed, mut plain) = (Vec::new(), Vec::new());
            for _ in 0..reps {
                let a = tempfile::Builder::new()
                    .prefix("sotto-bench-ar")
                    .tempdir()?;
                let b = tempfile::Builder::new()
                    .prefix("sotto-bench-ar")
                    .tempdir()?;
                plain.push(mls_step::ours_keyed(a.path(), &others, sync, None)?);
                let key = DbKey::generate();
                keyed.push(mls_step::ours_keyed(b.path(), &others, sync, Some(&key))?);
            }
            out.push((
                mls_step::total(&mls_step::median(&keyed)),
                mls_step::total(&mls_step::median(&plain)),
            ));
        }
        Ok::<_, anyhow::Error>(out)
    })
    .await??;
    let mut rows = Vec::new();
    for ((keyed, plain), label) in results
        .into_iter()
        .zip(["synchronous=FULL", "CPU only, synchronous=OFF"])
    {
        rows.push(
            Row::new(
                format!("10 at rest: MLS step N={n}, SQLCipher ({label}, sum of 5 steps)"),
                ms(keyed),
            )
            .baseline(
                format!("{} plain SQLite", ms(plain)),
                ratio(keyed.as_secs_f64(), plain.as_secs_f64()),
            ),
        );
    }
    Ok(rows)
}

/// A database with the daemon's pragmas, keyed when `key` is given, and a message table.
fn open(path: &Path, key: Option<&DbKey>) -> anyhow::Result<Connection> {
    let conn = Connection::open(path)?;
    if let Some(key) = key {
        sottod::store::cipher::key(&conn, key)?;
    }
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "secure_delete", "ON")?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS m (rowid INTEGER PRIMARY KEY, id TEXT, text TEXT, sent_at TEXT)",
    )?;
    Ok(conn)
}

async fn insert(ctx: &Ctx) -> anyhow::Result<Row> {
    let n = ctx.pick(200, 1000);
    progress!("{n} durable 1 KiB message-row inserts, one transaction each, keyed and plain");
    let (keyed, plain) = tokio::task::spawn_blocking(move || {
        let dir = tempfile::Builder::new()
            .prefix("sotto-bench-ar")
            .tempdir()?;
        let text = "x".repeat(1024);
        let mut times = Vec::new();
        for key in [Some(DbKey::generate()), None] {
            let path = dir.path().join(if key.is_some() {
                "keyed.db"
            } else {
                "plain.db"
            });
            let mut conn = open(&path, key.as_ref())?;
            let mut samples = Vec::with_capacity(n);
            for i in 0..n {
                let start = Instant::now();
                let tx =
                    conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                tx.execute(
                    "INSERT INTO m (id, text, sent_at) VALUES (?1, ?2, '2026-01-01T00:00:00Z')",
                    rusqlite::params![format!("m{i}"), text],
                )?;
                tx.commit()?;
                samples.push(start.elapsed());
            }
            times.push(median(samples));
        }
        Ok::<_, anyhow::Error>((times[0], times[1]))
    })
    .await??;
    Ok(Row::new(
        "10 at rest: one durable message insert, SQLCipher, p50".to_owned(),
        ms(keyed),
    )
    .baseline(
        format!("{} plain SQLite", ms(plain)),
        ratio(keyed.as_secs_f64(), plain.as_secs_f64()),
    ))
}

async fn startup(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let count: usize = ctx.pick(10_000, 100_000);
    let reps = ctx.pick(1, 3);
    progress!("a daemon with a direct conversation; {count} messages written into its database");
    let relay = Relay::start(&unlimited_flags()?)?;
    let Pair { a, b, bob, .. } = Pair::start(&relay).await?;
    let conv = a
        .client()
        .await?
        .ok("conversation.get", json!({"conversation": bob}))
        .await?["id"]
        .as_str()
        .context("conversation id")?
        .to_owned();
    drop(b);
    let mut a = a;
    a.stop()?;
    let data = a.data_dir();
    let db = data.join("sotto.db");
    let key = sottod::keys::database_key(KeyStoreKind::File, &data, &db).await?;
    let (db2, key2) = (db.clone(), key.clone());
    tokio::task::spawn_blocking(move || write_history(&db2, &key2, &conv, count)).await??;
    let size = std::fs::metadata(&db)?.len();

    progress!("{reps} start(s) with the history, {reps} of a fresh daemon");
    let (mut with, mut fresh) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        a.start_again()?;
        with.push(a.ready_after);
        a.stop()?;
        let f = Daemon::start()?;
        fresh.push(f.ready_after);
    }
    let (with, fresh) = (median(with), median(fresh));

    progress!("in-process open + key + quick_check, encrypted and a plain copy");
    let (keyed, plain) = tokio::task::spawn_blocking(move || {
        let plain_path = a.root.path().join("plain-copy.db");
        {
            let conn = Connection::open(&db)?;
            sottod::store::cipher::key(&conn, &key)?;
            conn.execute(
                "ATTACH DATABASE ?1 AS plain KEY ''",
                [plain_path.to_str().context("utf-8 path")?],
            )?;
            conn.query_row("SELECT sqlcipher_export('plain')", [], |_| Ok(()))?;
            conn.execute_batch("DETACH DATABASE plain")?;
        }
        let check = |path: &Path, key: Option<&DbKey>| -> anyhow::Result<Duration> {
            let mut samples = Vec::new();
            for _ in 0..3 {
                let start = Instant::now();
                let conn = Connection::open(path)?;
                if let Some(key) = key {
                    sottod::store::cipher::key(&conn, key)?;
                }
                let ok: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
                anyhow::ensure!(ok == "ok", "quick_check: {ok}");
                samples.push(start.elapsed());
            }
            Ok(median(samples))
        };
        let keyed = check(&db, Some(&key))?;
        let plain = check(&plain_path, None)?;
        drop(a);
        Ok::<_, anyhow::Error>((keyed, plain))
    })
    .await??;
    Ok(vec![
        Row::new(
            format!(
                "10 at rest: sottod start with {count} messages ({:.0} MiB encrypted), spawn → status",
                size as f64 / (1024.0 * 1024.0)
            ),
            ms(with),
        )
        .baseline(
            format!("{} fresh daemon", ms(fresh)),
            ratio(with.as_secs_f64(), fresh.as_secs_f64()),
        ),
        Row::new(
            format!("10 (detail) open + key + quick_check of those {count} messages"),
            ms(keyed),
        )
        .baseline(
            format!("{} plain copy", ms(plain)),
            ratio(keyed.as_secs_f64(), plain.as_secs_f64()),
        ),
    ])
}

/// Writes `count` received 1 KiB-ish messages into conversation `conv` of the stopped
/// daemon's database, in one transaction.
fn write_history(db: &Path, key: &DbKey, conv: &str, count: usize) -> anyhow::Result<()> {
    let mut conn = Connection::open(db)?;
    sottod::store::cipher::key(&conn, key)?;
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare(
            "INSERT INTO messages (id, conversation, sender, kind, text, sent_at, received_at, state, position)
             VALUES (?1, ?2, 'bob@bench.invalid', 'text', ?3, '2026-01-01T00:00:00Z', '2026-01-01T00:00:01Z', 'received', ?4)",
        )?;
        for i in 0..count {
            let text = format!("history message {i:06} {}", "lorem ipsum ".repeat(20));
            stmt.execute(rusqlite::params![
                format!("{:032x}", i),
                conv,
                text,
                i as i64 + 1
            ])?;
        }
    }
    tx.commit()?;
    Ok(())
}
