//! 4. Group scaling. (a) The MLS step, ours against raw openmls (see `mls_step`).
//!    (b) End to end: a real sottod creates a named group with 3 real daemons (time until
//!    all joined), then groups of N members on a real relay whose members are raw
//!    protocol clients that registered and published one key package each (N real
//!    daemons do not fit on 2 cores). Times: `conversation.create` → the first
//!    member's mailbox push of the Welcome, → `conversation.changed` with nothing pending
//!    (claims, commit, Welcomes all done), and that member's join from the Welcome.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use openmls::prelude::tls_codec::Deserialize as _;
use openmls::prelude::*;
use serde_json::json;
use sotto_protocol::relay::{MailboxPayload, Push, Request, Response};

use super::Ctx;
use super::mls_step::{self, STEPS, Sync};
use crate::procs::{Daemon, Relay, unlimited_flags};
use crate::progress;
use crate::relay_client::members_with_key_packages;
use crate::report::{Row, ratio};
use crate::stats::fmt_us;

/// The message and `cause=` of a daemon log line, without timestamps and ids.
fn log_cause(line: &str) -> String {
    let text = line.split_once(" WARN ").map_or(line, |(_, rest)| rest);
    let message = text.split(" conversation=").next().unwrap_or(text);
    match text.split_once(" cause=") {
        Some((_, cause)) => format!("{message} ({cause})"),
        None => message.to_owned(),
    }
}

/// How long the daemon may take to create one group.
const GROUP_DEADLINE: Duration = Duration::from_secs(300);

fn ms(d: Duration) -> String {
    fmt_us(d.as_secs_f64() * 1e6)
}

fn breakdown(s: &mls_step::Steps) -> String {
    STEPS
        .iter()
        .zip(s)
        .map(|(n, d)| format!("{n} {}", ms(*d)))
        .collect::<Vec<_>>()
        .join(", ")
}

pub async fn run(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    let sizes: &[(usize, usize)] = ctx.pick(&[(10, 3), (100, 1)], &[(10, 7), (100, 5), (1000, 3)]);
    for &(n, reps) in sizes {
        progress!(
            "MLS step, N={n}: {reps} run(s) each of ours and raw openmls, synchronous=FULL then OFF"
        );
        let [(ours, raw), (ours_off, raw_off)] = tokio::task::spawn_blocking(move || {
            let others = mls_step::other_key_packages(n - 1)?;
            let mut out = Vec::new();
            for sync in [Sync::Full, Sync::Off] {
                let (mut ours, mut raw) = (Vec::new(), Vec::new());
                for _ in 0..reps {
                    let dir = tempfile::Builder::new()
                        .prefix("sotto-bench-mls")
                        .tempdir()?;
                    raw.push(mls_step::raw(dir.path(), &others, sync)?);
                    ours.push(mls_step::ours(dir.path(), &others, sync)?);
                }
                out.push((mls_step::median(&ours), mls_step::median(&raw)));
            }
            let [full, off]: [_; 2] = out.try_into().map_err(|_| anyhow::anyhow!("two passes"))?;
            Ok::<_, anyhow::Error>([full, off])
        })
        .await??;
        progress!("ours, FULL: {}", breakdown(&ours));
        progress!("raw,  FULL: {}", breakdown(&raw));
        progress!("ours, OFF:  {}", breakdown(&ours_off));
        progress!("raw,  OFF:  {}", breakdown(&raw_off));
        let (o, r) = (mls_step::total(&ours), mls_step::total(&raw));
        let rt = ratio(o.as_secs_f64(), r.as_secs_f64());
        rows.push(
            Row::new(
                format!("4 MLS step N={n} (sum of 5 steps, synchronous=FULL)"),
                ms(o),
            )
            .baseline(format!("{} raw openmls", ms(r)), rt)
            .target("≤ 1.3× raw", rt.is_some_and(|x| x <= 1.3)),
        );
        let (o, r) = (mls_step::total(&ours_off), mls_step::total(&raw_off));
        rows.push(
            Row::new(
                format!("4 (detail) N={n} CPU only (synchronous=OFF)"),
                ms(o),
            )
            .baseline(
                format!("{} raw openmls", ms(r)),
                ratio(o.as_secs_f64(), r.as_secs_f64()),
            ),
        );
        for (i, step) in STEPS.iter().enumerate() {
            let rt = ratio(ours[i].as_secs_f64(), raw[i].as_secs_f64());
            rows.push(
                Row::new(
                    format!("4 (detail) N={n} {step}"),
                    format!("{} (off: {})", ms(ours[i]), ms(ours_off[i])),
                )
                .baseline(format!("{} (off: {})", ms(raw[i]), ms(raw_off[i])), rt),
            );
        }
    }

    let e2e_sizes: &[usize] = ctx.pick(&[10], &[10, 100, 1000]);
    let relay = Relay::start(&unlimited_flags()?)?;
    let owner = Daemon::start()?;
    owner.account(&relay, "owner").await?;
    match real_daemons(&relay, &owner, REAL_MEMBERS).await {
        Ok(r) => rows.push(r),
        Err(e) => rows.push(Row::new(
            format!("4 e2e group of {REAL_MEMBERS} real daemons: FAILED"),
            format!("{e:#}").replace('|', "/"),
        )),
    }
    for &n in e2e_sizes {
        match end_to_end(&relay, &owner, n).await {
            Ok(r) => rows.extend(r),
            Err(e) => rows.push(Row::new(
                format!("4 e2e group of {n}: FAILED"),
                format!("{e:#}").replace('|', "/"),
            )),
        }
    }
    Ok(rows)
}

/// Members that are real daemons in the small end-to-end group.
const REAL_MEMBERS: usize = 3;

/// `owner` creates a named group with `n` real daemons; time until every one of them has
/// joined (its `conversation.joined` event).
async fn real_daemons(relay: &Relay, owner: &Daemon, n: usize) -> anyhow::Result<Row> {
    progress!("e2e group of {n} real daemons");
    let mut daemons = Vec::new();
    let mut addresses = Vec::new();
    let mut events = Vec::new();
    for i in 0..n {
        let d = Daemon::start()?;
        addresses.push(d.account(relay, &format!("real{i}")).await?);
        let mut e = d.client().await?;
        e.subscribe().await?;
        events.push(e);
        daemons.push(d);
    }
    let mut c = owner.client().await?;
    let start = Instant::now();
    let conv = c
        .ok(
            "conversation.create",
            json!({"members": addresses, "name": "real daemons"}),
        )
        .await?;
    let id = conv["id"].as_str().context("no id")?.to_owned();
    for e in &mut events {
        tokio::time::timeout(
            GROUP_DEADLINE,
            e.event_where(|ev| {
                ev["type"] == "conversation.joined" && ev["conversation"]["id"] == id.as_str()
            }),
        )
        .await
        .context("a member daemon did not join in time")??;
    }
    Ok(Row::new(
        format!("4 e2e group of {n} real daemons: create → every member joined"),
        ms(start.elapsed()),
    ))
}

async fn end_to_end(relay: &Relay, owner: &Daemon, n: usize) -> anyhow::Result<Vec<Row>> {
    progress!("e2e group of {n}: registering {n} raw members with key packages");
    let members = members_with_key_packages(relay, "g", n).await?;
    let mut devices = Vec::with_capacity(n);
    let mut first = None;
    for (i, (dev, c)) in members.into_iter().enumerate() {
        if i == 0 {
            first = Some((dev.device_ref(), c));
        }
        devices.push(dev);
    }
    let (first_ref, mut first_conn) = first.context("no members")?;
    let r = first_conn
        .request(Request::SubscribeMailbox {
            device: first_ref,
            after: 0,
        })
        .await?;
    anyhow::ensure!(matches!(r, Response::Ok), "subscribe: {r:?}");
    let mut events = owner.client().await?;
    events.subscribe().await?;
    let mut c = owner.client().await?;
    let addresses: Vec<&str> = devices.iter().map(|d| d.address.as_str()).collect();

    progress!("e2e group of {n}: conversation.create on the daemon");
    let start = Instant::now();
    let welcome_wait = tokio::spawn(async move {
        loop {
            if let Push::Mailbox { entries } = first_conn.push().await? {
                let at = start.elapsed();
                let entry = entries.first().context("empty push")?;
                let payload: MailboxPayload = sotto_protocol::wire::decode(&entry.payload)?;
                let MailboxPayload::Welcome(env) = payload else {
                    anyhow::bail!("not a welcome")
                };
                return Ok::<_, anyhow::Error>((at, env.welcome));
            }
        }
    });
    let conv = c
        .ok(
            "conversation.create",
            json!({"members": addresses, "name": format!("bench-{n}")}),
        )
        .await?;
    let id = conv["id"].as_str().context("no id")?.to_owned();
    let done = tokio::time::timeout(
        GROUP_DEADLINE,
        events.event_where(|e| {
            let same = e["conversation"]["id"] == id.as_str();
            same && (e["type"] == "conversation.change_failed"
                || (e["type"] == "conversation.changed"
                    && e["conversation"]["pending"]
                        .as_array()
                        .is_some_and(|p| p.is_empty())))
        }),
    )
    .await
    .with_context(|| format!("the daemon did not finish within {GROUP_DEADLINE:?}"))??;
    let all_done = start.elapsed();
    anyhow::ensure!(
        done["type"] == "conversation.changed",
        "the daemon gave up: {}",
        done["conversation"]
    );
    let mut rows = vec![
        Row::new(
            format!("4 e2e group of {n}: create → daemon done (claims, commit, Welcomes)"),
            ms(all_done),
        )
        .note_target(if n == 1000 {
            "reported (absolute)"
        } else {
            "—"
        }),
    ];
    let welcome = tokio::time::timeout(Duration::from_secs(30), welcome_wait).await;
    let (welcome_at, welcome) = match welcome {
        Ok(Ok(Ok(w))) => w,
        other => {
            let why = match other {
                Ok(Ok(Err(e))) => format!("{e:#}"),
                Ok(Err(e)) => e.to_string(),
                _ => "no push within 30 s of the daemon finishing".into(),
            };
            let log = owner.log();
            let cause = log
                .lines()
                .rev()
                .find(|l| l.contains("Welcome"))
                .map_or_else(|| "nothing in the daemon's log".to_owned(), log_cause);
            rows.push(Row::new(
                format!("4 e2e group of {n}: Welcome NOT delivered to a member"),
                format!("{why}; the daemon logged: {cause}").replace('|', "/"),
            ));
            return Ok(rows);
        }
    };
    let t = Instant::now();
    let dev = devices.first().context("no members")?;
    let MlsMessageBodyIn::Welcome(w) = MlsMessageIn::tls_deserialize_exact(&welcome)?.extract()
    else {
        anyhow::bail!("not a welcome");
    };
    StagedWelcome::new_from_welcome(&dev.provider, &sottod::mls::join_config(), w, None)?
        .into_group(&dev.provider)?;
    let join = t.elapsed();

    rows.insert(
        0,
        Row::new(
            format!("4 e2e group of {n}: create → Welcome pushed to a member"),
            ms(welcome_at),
        ),
    );
    rows.push(Row::new(
        format!("4 e2e group of {n}: member joins from the Welcome (raw openmls, in memory)"),
        ms(join),
    ));
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::log_cause;

    #[test]
    fn log_cause_keeps_the_message_and_the_cause() {
        let line = "2026-11-22T03:47:19.556036Z  WARN a Welcome was refused; those members cannot join conversation=24fe relay=ws://127.0.0.1:1/sotto/v1 cause=bad_request: a mailbox post needs 1 to 256 recipients";
        assert_eq!(
            log_cause(line),
            "a Welcome was refused; those members cannot join (bad_request: a mailbox post needs 1 to 256 recipients)"
        );
        assert_eq!(log_cause("plain"), "plain");
    }
}
