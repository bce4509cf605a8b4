//! 8. What a client waits for: `conversation.list` with 1,000 conversations, and one
//!    `message.list` page (100, what `sotto chat` asks for when it opens a conversation)
//!    from a conversation of 100,000 messages — the newest page and one from the middle.
//!    Baseline: the same rows read by a raw SQLite query on the same (SQLCipher) database
//!    file, in this process, while the daemon runs.
//!
//! Seeding 100,000 messages through a relay would measure the relay, not the client path,
//! and take minutes, so the rows are written straight into the daemon's database while it
//! is stopped — with the daemon's own key, found the way the daemon finds it (the `file`
//! key store) — and the daemon is started again on it. The seeded conversations are in
//! state `left`: they have no MLS group state, and a `left` conversation gets no actor
//! that would try to follow a group log at the relay. `conversation.list` and
//! `message.list` read the same tables whatever the state.

use std::path::Path;
use std::time::Instant;

use anyhow::Context as _;
use rusqlite::{Connection, params};
use serde_json::{Value, json};
use sotto_protocol::api::KeyStoreKind;

use super::Ctx;
use crate::procs::{Daemon, Relay};
use crate::progress;
use crate::report::{Row, ratio};
use crate::stats::{Samples, fmt_us};

/// What `sotto chat` asks for when it opens a conversation.
const PAGE: u32 = 100;
/// The last screen must show within this (issue 9).
const TARGET_MS: f64 = 100.0;

/// The daemon's order for one page (`model::messages`): log position, queued ones last.
const ORDER_KEY: &str = "COALESCE(position, 4503599627370496 + rowid)";

fn rfc3339(base: i64, secs: i64) -> String {
    sottod::clock::rfc3339_from_unix(base + secs).unwrap_or_else(|| "2026-01-01T00:00:00Z".into())
}

/// Writes `convs` conversations (the first holding `messages` messages, every other one
/// message) into the stopped daemon's database. Returns the big conversation's id and
/// the id of the message in its middle.
async fn seed(
    data_dir: &Path,
    me: &str,
    relay: &Relay,
    convs: usize,
    messages: usize,
) -> anyhow::Result<(String, String)> {
    let db = data_dir.join("sotto.db");
    let key = sottod::keys::database_key(KeyStoreKind::File, data_dir, &db)
        .await
        .context("the daemon's database key")?;
    let mut conn = Connection::open(&db)?;
    sottod::store::cipher::key(&conn, &key)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    let relay_url = format!("ws://{}/sotto/v1", relay.host());
    let base = 1_780_000_000;
    let tx = conn.transaction()?;
    {
        let mut conv = tx.prepare(
            "INSERT INTO conversations (id, name, kind, state, relay, ciphersuite, epoch, peer, created_at)
             VALUES (?1, NULL, 'direct', 'left', ?2, 1, 1, ?3, ?4)",
        )?;
        let mut member = tx.prepare(
            "INSERT INTO members (conversation, address, device_id) VALUES (?1, ?2, 'bench')",
        )?;
        let mut msg = tx.prepare(
            "INSERT INTO messages (id, conversation, sender, kind, text, sent_at, received_at, state, position)
             VALUES (?1, ?2, ?3, 'text', ?4, ?5, ?6, ?7, ?8)",
        )?;
        for c in 0..convs {
            let id = format!("{:032x}", 0xb0_0000 + c);
            let peer = relay.address(&format!("peer{c}"));
            conv.execute(params![id, relay_url, peer, rfc3339(base, c as i64)])?;
            member.execute(params![id, me])?;
            member.execute(params![id, peer])?;
            let count = if c == 0 { messages } else { 1 };
            for n in 0..count {
                let mine = n % 3 == 0;
                let at = rfc3339(base + 1_000_000, n as i64);
                msg.execute(params![
                    format!("{:016x}{:016x}", c, n),
                    id,
                    if mine { me } else { peer.as_str() },
                    format!(
                        "message {n} of conversation {c}: some words to make it a realistic line"
                    ),
                    at,
                    if mine { None } else { Some(at.clone()) },
                    if mine { "sent" } else { "received" },
                    n as i64 + 1,
                ])?;
            }
        }
    }
    tx.commit()?;
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?;
    Ok((
        format!("{:032x}", 0xb0_0000),
        format!("{:016x}{:016x}", 0, messages / 2),
    ))
}

/// `reps` calls of `method`; checks each answer with `check`.
async fn time_calls(
    daemon: &Daemon,
    method: &str,
    params: Value,
    reps: usize,
    check: impl Fn(&Value) -> anyhow::Result<()>,
) -> anyhow::Result<Samples> {
    let mut c = daemon.client().await?;
    check(&c.ok(method, params.clone()).await?)?;
    let mut samples = Samples::with_capacity(reps);
    for _ in 0..reps {
        let start = Instant::now();
        let v = c.ok(method, params.clone()).await?;
        samples.push(start.elapsed());
        check(&v)?;
    }
    Ok(samples)
}

/// `reps` runs of `f` on a read-only keyed connection to the daemon's database.
fn time_raw(
    data_dir: &Path,
    key: &sottod::keys::DbKey,
    reps: usize,
    f: impl Fn(&Connection) -> anyhow::Result<usize>,
    expect: usize,
) -> anyhow::Result<Samples> {
    let conn = Connection::open_with_flags(
        data_dir.join("sotto.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )?;
    sottod::store::cipher::key(&conn, key)?;
    anyhow::ensure!(
        f(&conn)? == expect,
        "the raw query found other rows than the daemon"
    );
    let mut samples = Samples::with_capacity(reps);
    for _ in 0..reps {
        let start = Instant::now();
        let n = f(&conn)?;
        samples.push(start.elapsed());
        anyhow::ensure!(n == expect, "the raw query found {n} rows, not {expect}");
    }
    Ok(samples)
}

/// The rows `conversation.list` shows: each conversation with its members.
fn raw_list(conn: &Connection) -> anyhow::Result<usize> {
    let mut stmt = conn.prepare_cached(
        "SELECT c.id, c.name, c.kind, c.state, c.relay, c.ciphersuite, c.epoch, group_concat(m.address)
         FROM conversations c LEFT JOIN members m ON m.conversation = c.id
         GROUP BY c.id ORDER BY c.created_at DESC, c.id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, Option<String>>(1)?,
            r.get::<_, String>(3)?,
            r.get::<_, Option<String>>(7)?,
        ))
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?.len())
}

/// One page of messages the way the daemon selects it.
fn raw_page(conn: &Connection, conv: &str, before: Option<&str>) -> anyhow::Result<usize> {
    let bound: i64 = match before {
        Some(id) => conn.query_row(
            &format!("SELECT {ORDER_KEY} FROM messages WHERE conversation = ?1 AND id = ?2"),
            params![conv, id],
            |r| r.get(0),
        )?,
        None => i64::MAX,
    };
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT id, conversation, sender, kind, text, reply_to, sent_at, received_at, state, error, position
         FROM messages WHERE conversation = ?1 AND {ORDER_KEY} < ?2 ORDER BY {ORDER_KEY} DESC LIMIT ?3"
    ))?;
    let rows = stmt.query_map(params![conv, bound, PAGE], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(4)?,
            r.get::<_, String>(6)?,
            r.get::<_, String>(8)?,
        ))
    })?;
    let mut page = rows.collect::<Result<Vec<_>, _>>()?;
    page.reverse();
    Ok(page.len())
}

fn ms(d: f64) -> f64 {
    d / 1000.0
}

pub async fn run(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let convs = 1_000;
    let messages = ctx.pick(20_000, 100_000);
    let reps = ctx.pick(20, 200);
    let relay = Relay::start(&[])?;
    let mut daemon = Daemon::start()?;
    let me = daemon.account(&relay, "alice").await?;
    daemon.stop()?;
    progress!(
        "seeding {convs} conversations, {messages} messages in one, into the stopped daemon's database"
    );
    let started = Instant::now();
    let data = daemon.data_dir();
    let (big, middle) = seed(&data, &me, &relay, convs, messages).await?;
    progress!(
        "seeded in {:.1} s; starting the daemon again",
        started.elapsed().as_secs_f64()
    );
    daemon.start_again()?;
    let key = sottod::keys::database_key(KeyStoreKind::File, &data, &data.join("sotto.db")).await?;

    progress!("{reps} × conversation.list ({convs} conversations)");
    let list = time_calls(&daemon, "conversation.list", json!({}), reps, |v| {
        let n = v.as_array().map_or(0, Vec::len);
        anyhow::ensure!(n == convs, "conversation.list returned {n}, not {convs}");
        Ok(())
    })
    .await?;
    let raw_l = time_raw(&data, &key, reps, raw_list, convs)?;

    let page_ok = |v: &Value| {
        let n = v.as_array().map_or(0, Vec::len);
        anyhow::ensure!(n == PAGE as usize, "message.list returned {n}, not {PAGE}");
        Ok(())
    };
    progress!("{reps} × message.list, the newest page of {PAGE} of {messages}");
    let newest = time_calls(
        &daemon,
        "message.list",
        json!({"conversation": big, "limit": PAGE}),
        reps,
        page_ok,
    )
    .await?;
    let raw_newest = time_raw(
        &data,
        &key,
        reps,
        |c| raw_page(c, &big, None),
        PAGE as usize,
    )?;
    progress!(
        "{reps} × message.list, a page from the middle (before message {})",
        messages / 2
    );
    let mid = time_calls(
        &daemon,
        "message.list",
        json!({"conversation": big, "limit": PAGE, "before": middle}),
        reps,
        page_ok,
    )
    .await?;
    let raw_mid = time_raw(
        &data,
        &key,
        reps,
        |c| raw_page(c, &big, Some(&middle)),
        PAGE as usize,
    )?;
    drop(relay);

    let row = |name: String, ours: f64, raw: f64| {
        Row::new(name, fmt_us(ours))
            .baseline(fmt_us(raw), ratio(ours, raw))
            .target(format!("< {TARGET_MS:.0} ms"), ms(ours) < TARGET_MS)
    };
    Ok(vec![
        row(
            format!("8 client conversation.list, {convs} conversations, p50"),
            list.p50(),
            raw_l.p50(),
        ),
        row(
            format!("8 client conversation.list, {convs} conversations, p99"),
            list.p99(),
            raw_l.p99(),
        ),
        row(
            format!("8 client message.list newest {PAGE} of {messages}, p50"),
            newest.p50(),
            raw_newest.p50(),
        ),
        row(
            format!("8 client message.list newest {PAGE} of {messages}, p99"),
            newest.p99(),
            raw_newest.p99(),
        ),
        row(
            format!("8 client message.list {PAGE} from the middle of {messages}, p50"),
            mid.p50(),
            raw_mid.p50(),
        ),
    ])
}
