//! One conversation's actor: reads its log in order, then works its outbox head, strictly
//! one thing at a time, so an incoming commit and an outgoing change never interleave.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::inbound;
use super::outbound::{self, Claimed, MembersPayload, OutboxRow, PrepareError};
use super::resync;
use super::{Engine, Inbox};
use crate::keys::DeviceKey;
use crate::model;
use crate::relay::{RelayCallError, RelayConn};
use crate::store::{StoreError, Tx};
use sha2::{Digest as _, Sha256};
use sotto_protocol::api::{EventPayload, MessageState};
use sotto_protocol::relay::{
    DeviceRef, MAX_MAILBOX_RECIPIENTS, MailboxPayload, RelayErrorKind, Request, Response,
    WelcomeEnvelope,
};
use sotto_protocol::{Address, RelayUrl, wire};

/// How many log entries one read asks for.
const READ_BATCH: u32 = 256;
/// The idle wait between checks when nothing wakes the actor.
const IDLE: Duration = Duration::from_secs(30);
/// The most consecutive queued messages prepared in one transaction and in flight at once.
const PIPELINE: usize = 256;
/// How long an acknowledgement to the relay may wait to be folded with later ones.
const ACK_DELAY: Duration = Duration::from_secs(1);
/// Acknowledge at once when this many processed entries are unacknowledged.
const ACK_EVERY: u64 = 128;
/// How long an accepted post waits for its own entry to be pushed before the actor reads
/// the log itself.
const OWN_ENTRY_WAIT: Duration = Duration::from_secs(2);
const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// How long the relay may answer `internal` to every attempt of one post before the actor
/// gives up on it (`SOTTO_RELAY_INTERNAL_GIVE_UP`, seconds, changes it). `internal` is a
/// relay failure that is neither a full disk nor an unreachable database (those answer
/// `rate_limited` and are retried for as long as they last): it may pass, so it is
/// retried with the backoff, but a post it refuses for ten minutes is most likely one the
/// relay can never take, and it would block everything queued behind it in the
/// conversation. It is then given up like any other refusal: a message becomes `failed`,
/// a change `change_failed`, each with the relay's reason.
const INTERNAL_GIVE_UP: Duration = Duration::from_secs(600);
/// ...and at least this many attempts.
const INTERNAL_MIN_ATTEMPTS: u32 = 5;

fn internal_give_up() -> Duration {
    static VALUE: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *VALUE.get_or_init(|| {
        std::env::var("SOTTO_RELAY_INTERNAL_GIVE_UP")
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map_or(INTERNAL_GIVE_UP, Duration::from_secs_f64)
    })
}

/// The `internal` answers one outbox row has had in a row.
struct InternalStreak {
    since: Instant,
    attempts: u32,
}

enum Step {
    /// Something happened; run again at once.
    Again,
    /// Nothing to do until woken.
    Idle,
    /// A transient failure; retry after a backoff.
    Retry(String),
    /// The relay asked us to wait (`rate_limited`): retry after exactly this long,
    /// without growing the backoff or re-reading the log.
    RetryIn(Duration, String),
    /// The conversation is finished (left, removed, broken).
    Done,
}

/// What the actor remembers between steps.
#[derive(Default)]
struct State {
    /// The connection our log subscription lives on: while it is the current one, the
    /// relay pushes every entry after our cursor, in order.
    subscribed: Option<Arc<RelayConn>>,
    /// Post ids the relay accepted from us whose entries are still to be processed.
    accepted: HashSet<[u8; 16]>,
    /// Read the log instead of trusting the pushes (after an idle period or a wait for
    /// our own entry that ran out): a safety net, never needed on a healthy connection.
    verify: bool,
    /// When to verify if no push came.
    verify_at: Option<Instant>,
    /// When the pending acknowledgement is due.
    ack_due: Option<Instant>,
    /// Whether a resync is pending (`None`: not checked yet; see `engine::resync`).
    resync: Option<bool>,
    /// Outbox rows (by id) the relay answered `internal` on every attempt so far.
    internal: std::collections::HashMap<i64, InternalStreak>,
    /// No posts before this instant: the relay answered `rate_limited` with a retry time.
    post_not_before: Option<Instant>,
    /// Do not prepare messages inside the next catch-up's transaction (the last one that
    /// did failed).
    no_fold: bool,
    /// How many queued messages the next run posts at most ([`PIPELINE`] until the relay
    /// rate-limits a run: then the number it accepted, at least one; doubled by every
    /// run accepted whole).
    window: Option<usize>,
}

impl State {
    /// Records an `internal` answer to outbox row `row`: `Some(reason)` when it is time to
    /// give up on it ([`INTERNAL_GIVE_UP`]).
    fn internal_failure(&mut self, row: i64, e: &impl std::fmt::Display) -> Option<String> {
        let s = self.internal.entry(row).or_insert_with(|| InternalStreak {
            since: Instant::now(),
            attempts: 0,
        });
        s.attempts += 1;
        let elapsed = s.since.elapsed();
        (s.attempts >= INTERNAL_MIN_ATTEMPTS && elapsed >= internal_give_up()).then(|| {
            self.internal.remove(&row);
            format!(
                "the relay failed internally on every attempt for {} s; given up: {e}",
                elapsed.as_secs()
            )
        })
    }
}

/// Runs the actor of conversation `conv` until it is finished or the daemon stops.
pub async fn run(engine: Arc<Engine>, conv: String, inbox: Arc<Inbox>) {
    let mut shutdown = engine.shutdown.clone();
    let mut state = State::default();
    let mut backoff = RETRY_MIN;
    loop {
        if *shutdown.borrow() {
            return;
        }
        tracing::trace!(conversation = %conv, "actor step");
        let step = match step(&engine, &conv, &mut state, &inbox).await {
            Ok(s) => s,
            Err(e) => Step::Retry(e.to_string()),
        };
        // A wait that runs out re-reads the log next time (the safety net), except a
        // wait the relay asked for: reading would spend a request of the rate limit.
        let verify_on_timeout = !matches!(step, Step::RetryIn(..));
        let wait = match step {
            Step::Again => {
                backoff = RETRY_MIN;
                continue;
            }
            Step::Done => return,
            Step::Idle => {
                backoff = RETRY_MIN;
                IDLE
            }
            Step::Retry(why) => {
                tracing::debug!(conversation = %conv, cause = %why, "will retry");
                let d = backoff;
                backoff = (backoff * 2).min(RETRY_MAX);
                state.verify = true;
                d
            }
            Step::RetryIn(d, why) => {
                tracing::debug!(conversation = %conv, cause = %why, wait = ?d, "will retry");
                d
            }
        };
        let now = Instant::now();
        let deadline = [state.ack_due, state.verify_at]
            .into_iter()
            .flatten()
            .min()
            .map(|t| t.saturating_duration_since(now));
        let timed = deadline.is_some_and(|d| d < wait);
        tokio::select! {
            () = inbox.notify.notified() => {}
            () = tokio::time::sleep(deadline.filter(|_| timed).unwrap_or(wait)) => {
                let now = Instant::now();
                if (!timed && verify_on_timeout) || state.verify_at.is_some_and(|t| t <= now) {
                    state.verify = true;
                    state.verify_at = None;
                }
            }
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

async fn step(
    engine: &Arc<Engine>,
    conv: &str,
    state: &mut State,
    inbox: &Inbox,
) -> Result<Step, StoreError> {
    // The conversation row and the outbox head in one trip to the store's thread.
    let id = conv.to_owned();
    let (row, head) = engine
        .store
        .call(move |db| {
            let row = model::conversation(db.conn(), &id)?;
            let head = match &row {
                Some(_) => outbound::head(db.conn(), &id)?,
                None => None,
            };
            Ok((row, head))
        })
        .await?;
    let Some(row) = row else {
        return Ok(Step::Done);
    };
    if !matches!(row.state.as_str(), "pending" | "active") {
        return Ok(Step::Done);
    }
    let group_id = hex::decode(conv).map_err(|e| StoreError::Decode(e.to_string()))?;
    let conn = match engine.relays.get(&row.relay).await {
        Ok(c) => c,
        Err(e) => return Ok(Step::Retry(e.to_string())),
    };
    if let Some(step) = resync_hook(engine, conv, &conn, &group_id, state).await? {
        return Ok(step);
    }
    // A new group is created at the relay before anything else happens to it.
    if row.state == "pending"
        && let Some(h) = &head
        && h.op == "create"
        && h.mls_message.is_none()
        && h.join_seq.is_none()
    {
        match conn
            .request(Request::CreateGroup {
                group_id: group_id.clone(),
            })
            .await
        {
            Ok(_) => {
                state.internal.remove(&h.id);
            }
            Err(RelayCallError::Refused(e)) if matches!(e.kind, RelayErrorKind::GroupExists) => {}
            Err(RelayCallError::Refused(e)) if retryable(&e.kind) => {
                let Some(why) = internal_verdict(state, h.id, &e) else {
                    return Ok(Step::Retry(e.to_string()));
                };
                fail_change(engine, conv, h, &why).await?;
                return Ok(Step::Again);
            }
            Err(RelayCallError::Refused(e)) => {
                fail_change(
                    engine,
                    conv,
                    h,
                    &format!("the relay refused to create the group: {e}"),
                )
                .await?;
                return Ok(Step::Again);
            }
            Err(e) => return Ok(Step::Retry(e.to_string())),
        }
    }
    // A freshly prepared post goes out before reading the log: if the epoch moved meanwhile
    // the relay answers `conflict` and it is prepared again after catching up. Once
    // accepted, the log is read to process it as our own entry.
    if row.state == "active"
        && let Some(h) = &head
        && h.mls_message.is_some()
        && h.join_seq.is_none()
        && h.done_epoch.is_none()
        && h.op != "message"
        && h.post_id.is_some_and(|p| !state.accepted.contains(&p))
    {
        return post(engine, conv, &conn, &group_id, h, state).await;
    }
    if row.state == "active"
        || head
            .as_ref()
            .is_some_and(|h| h.mls_message.is_some() || h.join_seq.is_some())
        || row.cursor > 0
    {
        if !state
            .subscribed
            .as_ref()
            .is_some_and(|s| Arc::ptr_eq(s, &conn))
        {
            state.subscribed = None;
            match conn
                .request(Request::SubscribeGroup {
                    group_id: group_id.clone(),
                    after: row.cursor,
                })
                .await
            {
                Ok(_) => state.subscribed = Some(conn.clone()),
                Err(RelayCallError::Refused(e))
                    if matches!(e.kind, RelayErrorKind::UnknownGroup) && row.state == "pending" => {
                }
                Err(RelayCallError::Refused(e)) if matches!(e.kind, RelayErrorKind::Gap { .. }) => {
                    // The log since our cursor is gone: rejoin by external commit.
                    if let RelayErrorKind::Gap { oldest_seq } = e.kind {
                        schedule_resync(engine, conv, &gap_reason(oldest_seq)).await?;
                    }
                    state.resync = Some(true);
                    return Ok(Step::Again);
                }
                Err(e) => return Ok(Step::Retry(e.to_string())),
            }
        }
        // 1. Catch up with the log: from the pushes while the subscription is live, else
        // (and as a periodic safety net) by reading it.
        let trusted = state.subscribed.is_some() && !std::mem::take(&mut state.verify);
        // Preparing the next messages rides in the processing transaction, unless that
        // failed last time (then the standalone prepare_run sorts out which row fails).
        let fold = row.state == "active" && !std::mem::take(&mut state.no_fold);
        let caught = catch_up(
            engine, conv, &conn, &group_id, row.cursor, inbox, trusted, fold,
        )
        .await;
        if caught.is_err() && fold {
            state.no_fold = true;
        }
        match caught? {
            CatchUp::Finished => return Ok(Step::Done),
            CatchUp::Progress => {
                state.verify_at = None;
                return Ok(Step::Again);
            }
            CatchUp::UpToDate => {}
            CatchUp::Resync => {
                state.resync = Some(true);
                return Ok(Step::Again);
            }
            CatchUp::Failed(why) => return Ok(Step::Retry(why)),
        }
        // Acknowledgements are folded: one per ACK_EVERY entries or ACK_DELAY.
        if row.cursor > row.acked {
            let now = Instant::now();
            let due = *state.ack_due.get_or_insert(now + ACK_DELAY);
            if row.cursor - row.acked >= ACK_EVERY || now >= due {
                let cursor = row.cursor;
                if conn
                    .request(Request::AckGroup {
                        group_id: group_id.clone(),
                        seq: cursor,
                    })
                    .await
                    .is_ok()
                {
                    state.ack_due = None;
                    let id = conv.to_owned();
                    engine
                        .store
                        .call(move |db| {
                            db.conn()
                                .prepare_cached(
                                    "UPDATE conversations SET acked = ?2 WHERE id = ?1",
                                )?
                                .execute(rusqlite::params![id, cursor as i64])?;
                            Ok(())
                        })
                        .await?;
                }
            }
        } else {
            state.ack_due = None;
        }
    }
    // 2. The outbox head.
    let Some(head) = head else {
        return Ok(Step::Idle);
    };
    tracing::debug!(conversation = %conv, op = %head.op, prepared = head.mls_message.is_some(), "outbox head");
    if let Some(join_seq) = head.join_seq {
        return send_welcomes(engine, conv, &row.relay, &group_id, &head, join_seq, state).await;
    }
    if head.op == "message" && row.state == "active" {
        return messages(engine, conv, &conn, &group_id, state).await;
    }
    if head.mls_message.is_none() {
        return prepare(engine, conv, &head).await;
    }
    if head.op == "leave" && head.done_epoch == Some(row.epoch) {
        // Our Remove proposal is in the log for this epoch; wait for someone to commit it.
        return Ok(Step::Idle);
    }
    if head.post_id.is_some_and(|p| state.accepted.contains(&p)) && state.subscribed.is_some() {
        return Ok(await_own_entries(state));
    }
    state.verify_at = None;
    post(engine, conv, &conn, &group_id, &head, state).await
}

/// Everything we posted was accepted: our own entries are on their way as pushes. Read the
/// log only if they are late.
fn await_own_entries(state: &mut State) -> Step {
    if state.verify_at.is_none() {
        state.verify_at = Some(Instant::now() + OWN_ENTRY_WAIT);
    }
    Step::Idle
}

/// The pipelined outbox: the run of consecutive `message` rows at the head (at most
/// [`PIPELINE`]) is prepared in ONE transaction, and its posts go out back to back on one
/// connection without waiting for each answer (the relay appends one connection's posts
/// in order). Rows stay in the outbox until their own entries come back, so the next
/// run is prepared and posted while the previous one is still in flight. A conflict
/// forgets the prepared bytes from the first unaccepted row on; they are prepared again
/// in the new epoch after the winning commit is processed.
async fn messages(
    engine: &Arc<Engine>,
    conv: &str,
    conn: &RelayConn,
    group_id: &[u8],
    state: &mut State,
) -> Result<Step, StoreError> {
    let id = conv.to_owned();
    let run = engine
        .store
        .call(move |db| outbound::message_run(db.conn(), &id, PIPELINE))
        .await?;
    state
        .accepted
        .retain(|p| run.iter().any(|r| r.post_id == Some(*p)));
    // The prepared prefix of the run, each row with its predecessor in the outbox (whose
    // post must be in the log before this one is: `PostGroupAfter`). The outbox head has
    // none: every row before it was processed as our own entry, so is in the log.
    let window = state.window.unwrap_or(PIPELINE);
    let unposted: Vec<(&OutboxRow, Option<[u8; 16]>)> = run
        .iter()
        .enumerate()
        .take_while(|(_, r)| r.mls_message.is_some() && r.post_id.is_some())
        .filter(|(_, r)| r.post_id.is_some_and(|p| !state.accepted.contains(&p)))
        .map(|(i, r)| (r, i.checked_sub(1).and_then(|j| run[j].post_id)))
        .take(window)
        .collect();
    if !unposted.is_empty() {
        if let Some(wait) = state
            .post_not_before
            .map(|t| t.saturating_duration_since(Instant::now()))
            .filter(|d| !d.is_zero())
        {
            return Ok(Step::RetryIn(wait, "rate-limited by the relay".into()));
        }
        state.post_not_before = None;
        return post_run(engine, conv, conn, group_id, &unposted, state).await;
    }
    let unprepared: Vec<OutboxRow> = run
        .iter()
        .filter(|r| r.mls_message.is_none())
        .cloned()
        .collect();
    if !unprepared.is_empty() {
        return prepare_run(engine, conv, unprepared).await;
    }
    if run.is_empty() {
        return Ok(Step::Idle);
    }
    if state.subscribed.is_some() {
        return Ok(await_own_entries(state));
    }
    // Not subscribed (cannot happen for an active conversation): poll.
    Ok(Step::Retry(
        "waiting for our own entries without a subscription".into(),
    ))
}

/// Inside a transaction that processed entries: prepares the unprepared queued messages
/// of the conversation's pipelined run (an active conversation whose outbox head is a
/// message run). Stops before a message that cannot be encrypted (left for
/// [`prepare_run`], which fails it on its own); a store error fails the transaction.
fn prepare_ahead(tx: &mut Tx<'_>, conv: &str, key: &DeviceKey) -> Result<(), StoreError> {
    if model::conversation(tx.conn(), conv)?.is_none_or(|c| c.state != "active") {
        return Ok(());
    }
    let run = outbound::message_run(tx.conn(), conv, PIPELINE)?;
    for row in run.iter().filter(|r| r.mls_message.is_none()) {
        match outbound::prepare_message(tx, conv, row, key) {
            Ok(()) => {}
            Err(PrepareError::Store(e)) => return Err(e),
            Err(PrepareError::Invalid(_)) => break,
        }
    }
    Ok(())
}

/// Prepares `rows` (queued messages, in outbox order) in one transaction. A message that
/// cannot be encrypted fails on its own; the ones before it stay prepared.
async fn prepare_run(
    engine: &Arc<Engine>,
    conv: &str,
    rows: Vec<OutboxRow>,
) -> Result<Step, StoreError> {
    let (id, key) = (conv.to_owned(), engine.key.clone());
    let failed = engine
        .store
        .call(move |db| {
            db.write(|tx| {
                for row in rows {
                    match outbound::prepare_message(tx, &id, &row, &key) {
                        Ok(()) => {}
                        Err(PrepareError::Store(e)) => return Err(e),
                        Err(PrepareError::Invalid(why)) => return Ok(Some((row, why))),
                    }
                }
                Ok(None)
            })
        })
        .await?;
    if let Some((row, why)) = failed {
        fail_change(engine, conv, &row, &why).await?;
    }
    Ok(Step::Again)
}

/// Posts `rows` back to back and then reads their answers in order. Each row names its
/// predecessor in the outbox (`PostGroupAfter`), so when the relay refuses one in the
/// middle of the run (`rate_limited`, `internal`, a storage failure) it stores none of
/// the later ones (`out_of_order`): the run is posted again from its first unaccepted
/// row, in order, and every member sees our messages in the order they were sent.
async fn post_run(
    engine: &Arc<Engine>,
    conv: &str,
    conn: &RelayConn,
    group_id: &[u8],
    rows: &[(&OutboxRow, Option<[u8; 16]>)],
    state: &mut State,
) -> Result<Step, StoreError> {
    state.verify_at = None;
    let posts = rows
        .iter()
        .map(|(r, after)| {
            let (post_id, message) = (
                r.post_id.unwrap_or_default(),
                r.mls_message.clone().unwrap_or_default(),
            );
            match after {
                Some(after) => Request::PostGroupAfter {
                    post_id,
                    group_id: group_id.to_vec(),
                    message,
                    after: *after,
                },
                None => Request::PostGroup {
                    post_id,
                    group_id: group_id.to_vec(),
                    message,
                    added: Vec::new(),
                    removed: Vec::new(),
                },
            }
        })
        .collect();
    // Written in this order (`request_all`): each post names the one before it.
    let answers = conn.request_all(posts).await;
    let mut step = Step::Again;
    let mut refused = false;
    let mut accepted = 0usize;
    let rows: Vec<&OutboxRow> = rows.iter().map(|(r, _)| *r).collect();
    for (i, (row, answer)) in rows.iter().zip(answers).enumerate() {
        match answer {
            Ok(_) => {
                state.internal.remove(&row.id);
                if let Some(p) = row.post_id {
                    state.accepted.insert(p);
                }
                accepted += 1;
            }
            // An earlier post of this run was refused (or is not stored for another
            // reason): this one waits for it. If nothing earlier in this run was refused,
            // the predecessor's fate is unknown here: read the log (Retry verifies).
            Err(RelayCallError::Refused(e)) if matches!(e.kind, RelayErrorKind::OutOfOrder) => {
                if !refused {
                    step = Step::Retry(e.to_string());
                }
                refused = true;
            }
            Err(RelayCallError::Refused(e))
                if matches!(e.kind, RelayErrorKind::RateLimited { .. }) =>
            {
                if let RelayErrorKind::RateLimited { retry_after_ms } = e.kind
                    && !refused
                {
                    let wait = Duration::from_millis(retry_after_ms.clamp(1, 30_000));
                    state.post_not_before = Some(Instant::now() + wait);
                    // Post no more next time than the relay took this time.
                    state.window = Some(accepted.max(1));
                    step = Step::RetryIn(wait, e.to_string());
                }
                refused = true;
            }
            Err(RelayCallError::Refused(e))
                if matches!(e.kind, RelayErrorKind::Conflict { .. }) =>
            {
                // The epoch moved: this post and every later one lost.
                let (id, ids) = (
                    conv.to_owned(),
                    rows[i..].iter().map(|r| r.id).collect::<Vec<_>>(),
                );
                engine
                    .store
                    .call(move |db| {
                        db.write(|tx| {
                            for row_id in ids {
                                inbound::forget_prepared(tx, &id, row_id)?;
                            }
                            Ok(())
                        })
                    })
                    .await?;
                return Ok(Step::Again);
            }
            Err(RelayCallError::Refused(e)) if retryable(&e.kind) => {
                // Retried later with the same bytes and post ids (idempotent), unless the
                // relay has failed internally on it for too long.
                match internal_verdict(state, row.id, &e) {
                    None if !refused => step = Step::Retry(e.to_string()),
                    None => {}
                    Some(why) => fail_change(engine, conv, row, &why).await?,
                }
                refused = true;
            }
            Err(RelayCallError::Refused(e)) => {
                fail_change(
                    engine,
                    conv,
                    row,
                    &format!("the relay refused the post: {e}"),
                )
                .await?;
                // The later posts of the run named this one and were refused
                // `out_of_order`: they go again at once, after its predecessor.
                refused = true;
            }
            Err(e) => {
                step = Step::Retry(e.to_string());
                refused = true;
            }
        }
    }
    if !refused && accepted == rows.len() {
        state.window = state
            .window
            .map(|w| (w * 2).min(PIPELINE))
            .filter(|&w| w < PIPELINE);
    }
    Ok(step)
}

/// A refusal that says "try again later" (a rate limit, or a relay whose storage failed
/// or is full): the post is retried with the same bytes and post id. Found by the faults
/// suite: a relay with a full disk answered `internal` and the daemon marked the message
/// `failed` although the relay had stored nothing. `rate_limited` (what a full disk or an
/// unreachable database answers now) is never given up; `internal` is, after
/// [`INTERNAL_GIVE_UP`] ([`internal_verdict`]).
fn retryable(kind: &RelayErrorKind) -> bool {
    matches!(
        kind,
        RelayErrorKind::RateLimited { .. } | RelayErrorKind::Internal
    )
}

/// For a retryable refusal of outbox row `row`: `Some(reason)` to give the row up (the
/// relay answered `internal` to every attempt for [`INTERNAL_GIVE_UP`]), `None` to retry.
fn internal_verdict(
    state: &mut State,
    row: i64,
    e: &sotto_protocol::relay::RelayError,
) -> Option<String> {
    if matches!(e.kind, RelayErrorKind::Internal) {
        state.internal_failure(row, e)
    } else {
        None
    }
}

enum CatchUp {
    UpToDate,
    Progress,
    Finished,
    /// This install cannot follow the log any more: a resync is scheduled.
    Resync,
    Failed(String),
}

/// While a resync is pending the actor does nothing else (`engine::resync`). `None`: go on.
async fn resync_hook(
    engine: &Arc<Engine>,
    conv: &str,
    conn: &RelayConn,
    group_id: &[u8],
    state: &mut State,
) -> Result<Option<Step>, StoreError> {
    if state.resync.is_none() {
        let id = conv.to_owned();
        let pending = engine
            .store
            .call(move |db| resync::pending(db.conn(), &id))
            .await?;
        state.resync = Some(pending);
    }
    if state.resync != Some(true) {
        return Ok(None);
    }
    Ok(Some(
        match resync::run(engine, conv, conn, group_id).await? {
            resync::Outcome::Done => {
                state.resync = Some(false);
                state.accepted.clear();
                state.verify = true;
                Step::Again
            }
            resync::Outcome::Again => Step::Again,
            resync::Outcome::Retry(why) => Step::Retry(why),
            resync::Outcome::Finished => Step::Done,
        },
    ))
}

fn gap_reason(oldest_seq: u64) -> String {
    format!("the relay no longer has the log entries before {oldest_seq} (retention)")
}

async fn schedule_resync(engine: &Arc<Engine>, conv: &str, why: &str) -> Result<(), StoreError> {
    let (id, why) = (conv.to_owned(), why.to_owned());
    engine
        .store
        .call(move |db| db.write(|tx| resync::schedule(tx, &id, &why)))
        .await
}

#[allow(clippy::too_many_arguments)]
async fn catch_up(
    engine: &Arc<Engine>,
    conv: &str,
    conn: &RelayConn,
    group_id: &[u8],
    cursor: u64,
    inbox: &Inbox,
    trusted: bool,
    fold: bool,
) -> Result<CatchUp, StoreError> {
    let (mut pushed, reread) = inbox.take();
    pushed.retain(|e| e.seq > cursor);
    let contiguous = pushed
        .iter()
        .enumerate()
        .all(|(i, e)| e.seq == cursor + 1 + i as u64);
    let (entries, removed_at) = if trusted && !reread && contiguous {
        if pushed.is_empty() {
            return Ok(CatchUp::UpToDate);
        }
        (pushed, None)
    } else {
        match read_log(engine, conv, conn, group_id, cursor).await? {
            Ok(read) => read,
            Err(done) => return Ok(done),
        }
    };
    tracing::trace!(conversation = %conv, after = cursor, entries = entries.len(), ?removed_at, "read the log");
    if entries.is_empty() {
        if removed_at.is_some() {
            return Ok(CatchUp::Finished);
        }
        return Ok(CatchUp::UpToDate);
    }
    // The whole page in one transaction: one fsync for a burst, and still all-or-nothing
    // (a crash re-reads the page from the unchanged cursor).
    let (id, address, key) = (conv.to_owned(), engine.address.clone(), engine.key.clone());
    let outcome = engine
        .store
        .call(move |db| {
            db.write(|tx| {
                let mut last = inbound::Outcome::default();
                for entry in &entries {
                    last = inbound::process(tx, &id, &address, &key.public_key(), entry)?;
                    if last.removed || last.broken || last.resync {
                        break;
                    }
                }
                // Our own entries just freed room in the pipeline: prepare the messages
                // now in its window in this same transaction (one commit instead of two
                // per cycle). Their bytes are posted only after it committed.
                if fold && !(last.removed || last.broken || last.resync || last.stale_group) {
                    prepare_ahead(tx, &id, &key)?;
                }
                Ok(last)
            })
        })
        .await?;
    if outcome.resync {
        return Ok(CatchUp::Resync);
    }
    if outcome.removed || outcome.broken {
        tracing::debug!(conversation = %conv, ?outcome, "the conversation is finished");
        return Ok(CatchUp::Finished);
    }
    Ok(CatchUp::Progress)
}

/// Reads a page of the log after `cursor`: `Ok((entries, removed_at))`, or how the
/// catch-up ends when the relay refuses.
async fn read_log(
    engine: &Arc<Engine>,
    conv: &str,
    conn: &RelayConn,
    group_id: &[u8],
    cursor: u64,
) -> Result<Result<(Vec<sotto_protocol::relay::GroupEntry>, Option<u64>), CatchUp>, StoreError> {
    let answer = conn
        .request(Request::ReadGroup {
            group_id: group_id.to_vec(),
            after: cursor,
            limit: READ_BATCH,
        })
        .await;
    match answer {
        Ok(Response::GroupEntries {
            entries,
            removed_at,
            ..
        }) => Ok(Ok((entries, removed_at))),
        Ok(other) => Ok(Err(CatchUp::Failed(format!("unexpected answer {other:?}")))),
        Err(RelayCallError::Refused(e)) => {
            if let RelayErrorKind::Gap { oldest_seq } = e.kind {
                // The log since our cursor is gone: rejoin by external commit.
                schedule_resync(engine, conv, &gap_reason(oldest_seq)).await?;
                return Ok(Err(CatchUp::Resync));
            }
            Ok(Err(CatchUp::Failed(e.to_string())))
        }
        Err(e) => Ok(Err(CatchUp::Failed(e.to_string()))),
    }
}

async fn prepare(engine: &Arc<Engine>, conv: &str, head: &OutboxRow) -> Result<Step, StoreError> {
    let claims = if head.op != "create" && head.op != "add" {
        Vec::new()
    } else {
        let payload: MembersPayload =
            serde_json::from_str(&head.payload).map_err(|e| StoreError::Decode(e.to_string()))?;
        let id = conv.to_owned();
        let suite = engine
            .store
            .call(move |db| model::conversation(db.conn(), &id))
            .await?
            .map(|c| c.ciphersuite)
            .ok_or_else(|| StoreError::Decode(format!("conversation {conv} vanished")))?;
        match claim_all(engine, &payload.members, suite).await {
            Ok(c) => c,
            Err(Claim::Retry(why)) => return Ok(Step::Retry(why)),
            Err(Claim::Fail(why)) => {
                fail_change(engine, conv, head, &why).await?;
                return Ok(Step::Again);
            }
        }
    };
    let (id, h, key) = (conv.to_owned(), head.clone(), engine.key.clone());
    let result = engine
        .store
        .call(move |db| {
            let r = db.write(|tx| {
                let r = match h.op.as_str() {
                    "message" => outbound::prepare_message(tx, &id, &h, &key).map(|()| true),
                    "create" | "add" => outbound::prepare_add(tx, &id, &h, &key, &claims),
                    _ => outbound::prepare_change(tx, &id, &h, &key),
                };
                match r {
                    Ok(v) => Ok(Ok(v)),
                    Err(PrepareError::Store(e)) => Err(e),
                    Err(PrepareError::Invalid(why)) => Ok(Err(why)),
                }
            })?;
            Ok(r)
        })
        .await?;
    match result {
        Ok(true) => Ok(Step::Again),
        Ok(false) => {
            // Nothing to add (everyone is already a member): the change is complete.
            finish_noop(engine, conv, head).await?;
            Ok(Step::Again)
        }
        Err(why) => {
            fail_change(engine, conv, head, &why).await?;
            Ok(Step::Again)
        }
    }
}

enum Claim {
    Retry(String),
    Fail(String),
}

/// Claims one key package in ciphersuite `suite` for each of `members`' first device.
async fn claim_all(
    engine: &Arc<Engine>,
    members: &[String],
    suite: u16,
) -> Result<Vec<Claimed>, Claim> {
    let mut out = Vec::new();
    for member in members {
        let address = Address::parse(member).map_err(|e| Claim::Fail(e.to_string()))?;
        let relay = RelayUrl::parse(&address.host().to_string(), false)
            .map_err(|e| Claim::Fail(e.to_string()))?
            .to_string();
        let conn = engine
            .relays
            .get(&relay)
            .await
            .map_err(|e| Claim::Retry(e.to_string()))?;
        let account = match conn
            .request(Request::LookupAccount {
                address: member.clone(),
            })
            .await
        {
            Ok(Response::Account(a)) => a,
            Ok(_) => return Err(Claim::Retry("unexpected answer to a lookup".into())),
            Err(RelayCallError::Refused(e)) => return Err(Claim::Fail(format!("{member}: {e}"))),
            Err(e) => return Err(Claim::Retry(e.to_string())),
        };
        let Some(device) = account.devices.first() else {
            return Err(Claim::Fail(format!("{member} has no device")));
        };
        let claimed = conn
            .request(Request::ClaimKeyPackage {
                device: DeviceRef {
                    address: member.clone(),
                    device_id: device.device_id.clone(),
                },
                ciphersuite: suite,
            })
            .await;
        let kp = match claimed {
            Ok(Response::KeyPackage(k)) => k,
            Ok(_) => return Err(Claim::Retry("unexpected answer to a claim".into())),
            Err(RelayCallError::Refused(e))
                if matches!(e.kind, RelayErrorKind::RateLimited { .. }) =>
            {
                return Err(Claim::Retry(e.to_string()));
            }
            Err(RelayCallError::Refused(e)) if matches!(e.kind, RelayErrorKind::NoKeyPackage) => {
                return Err(Claim::Fail(format!(
                    "{member} has no key package for ciphersuite {} (their client may not support it yet); create the conversation with another ciphersuite",
                    suite_name(suite)
                )));
            }
            Err(RelayCallError::Refused(e)) => {
                return Err(Claim::Fail(format!("claiming {member}'s key package: {e}")));
            }
            Err(e) => return Err(Claim::Retry(e.to_string())),
        };
        out.push(Claimed {
            address: member.clone(),
            device_id: device.device_id.clone(),
            identity_key: device.identity_key,
            relay,
            key_package: kp.key_package,
        });
    }
    Ok(out)
}

fn suite_name(suite: u16) -> String {
    openmls::prelude::Ciphersuite::try_from(suite)
        .map(crate::mls::ciphersuite_name)
        .unwrap_or_else(|_| format!("{suite:#06x}"))
}

async fn post(
    engine: &Arc<Engine>,
    conv: &str,
    conn: &RelayConn,
    group_id: &[u8],
    head: &OutboxRow,
    state: &mut State,
) -> Result<Step, StoreError> {
    let (Some(post_id), Some(message)) = (head.post_id, head.mls_message.clone()) else {
        return Ok(Step::Again);
    };
    let answer = conn
        .request(post_request(group_id, head, post_id, message))
        .await;
    match answer {
        // Accepted: the entry is processed (as our own) when it is pushed or read next.
        Ok(_) => {
            state.internal.remove(&head.id);
            state.accepted.insert(post_id);
            Ok(Step::Again)
        }
        // The epoch moved: our post did not win. Forget it (a commit's pending state too);
        // catching up applies the winner, then the change or message is prepared again.
        Err(RelayCallError::Refused(e)) if matches!(e.kind, RelayErrorKind::Conflict { .. }) => {
            let (id, row_id) = (conv.to_owned(), head.id);
            engine
                .store
                .call(move |db| db.write(|tx| inbound::forget_prepared(tx, &id, row_id)))
                .await?;
            Ok(Step::Again)
        }
        Err(RelayCallError::Refused(e)) if retryable(&e.kind) => {
            let Some(why) = internal_verdict(state, head.id, &e) else {
                return Ok(Step::Retry(e.to_string()));
            };
            fail_change(engine, conv, head, &why).await?;
            Ok(Step::Again)
        }
        Err(RelayCallError::Refused(e)) => {
            fail_change(
                engine,
                conv,
                head,
                &format!("the relay refused the post: {e}"),
            )
            .await?;
            Ok(Step::Again)
        }
        Err(e) => Ok(Step::Retry(e.to_string())),
    }
}

/// A prepared change as posted: a commit with its new epoch's GroupInfo (`PostCommit`),
/// anything else (a proposal) as a plain `PostGroup`.
fn post_request(group_id: &[u8], head: &OutboxRow, post_id: [u8; 16], message: Vec<u8>) -> Request {
    match head.group_info.clone() {
        Some(group_info) => Request::PostCommit {
            post_id,
            group_id: group_id.to_vec(),
            message,
            added: head.added.clone(),
            removed: head.removed.clone(),
            group_info,
        },
        None => Request::PostGroup {
            post_id,
            group_id: group_id.to_vec(),
            message,
            added: head.added.clone(),
            removed: head.removed.clone(),
        },
    }
}

async fn send_welcomes(
    engine: &Arc<Engine>,
    conv: &str,
    relay: &str,
    group_id: &[u8],
    head: &OutboxRow,
    join_seq: u64,
    state: &mut State,
) -> Result<Step, StoreError> {
    let (Some(post_id), Some(welcome)) = (head.post_id, head.welcome.clone()) else {
        return finish_noop(engine, conv, head).await.map(|()| Step::Again);
    };
    let payload = wire::encode(&MailboxPayload::Welcome(WelcomeEnvelope {
        relay_url: relay.to_owned(),
        group_id: group_id.to_vec(),
        join_seq,
        welcome,
    }));
    let mut by_relay: std::collections::BTreeMap<String, Vec<DeviceRef>> = Default::default();
    for r in &head.welcome_to {
        by_relay
            .entry(r.relay.clone())
            .or_default()
            .push(DeviceRef {
                address: r.address.clone(),
                device_id: r.device_id.clone(),
            });
    }
    let mut gave_up = false;
    for (url, recipients) in by_relay {
        let conn = match engine.relays.get(&url).await {
            Ok(c) => c,
            Err(e) => return Ok(Step::Retry(e.to_string())),
        };
        // One post per chunk of recipients (the relay's limit), each with its own post id
        // derived from the commit's, so retries stay idempotent.
        for (chunk_no, chunk) in recipients.chunks(MAX_MAILBOX_RECIPIENTS).enumerate() {
            let derived: [u8; 16] = Sha256::new()
                .chain_update(post_id)
                .chain_update(url.as_bytes())
                .chain_update((chunk_no as u64).to_be_bytes())
                .finalize()[..16]
                .try_into()
                .unwrap_or(post_id);
            match conn
                .request(Request::PostMailbox {
                    post_id: derived,
                    recipients: chunk.to_vec(),
                    payload: payload.clone(),
                })
                .await
            {
                Ok(_) => {}
                Err(RelayCallError::Refused(e)) if retryable(&e.kind) => {
                    // Once given up, the row's other Welcome posts are not waited for.
                    let why = if gave_up && matches!(e.kind, RelayErrorKind::Internal) {
                        Some(e.to_string())
                    } else {
                        internal_verdict(state, head.id, &e)
                    };
                    let Some(why) = why else {
                        return Ok(Step::Retry(e.to_string()));
                    };
                    gave_up = true;
                    tracing::warn!(conversation = %conv, relay = %url, "a Welcome was not delivered; those members cannot join: {why}");
                }
                Err(RelayCallError::Refused(e)) => {
                    tracing::warn!(conversation = %conv, relay = %url, cause = %e, "a Welcome was refused; those members cannot join");
                }
                Err(e) => return Ok(Step::Retry(e.to_string())),
            }
        }
    }
    finish_noop(engine, conv, head).await?;
    Ok(Step::Again)
}

/// Deletes a completed outbox row and reports the conversation's new state.
async fn finish_noop(engine: &Arc<Engine>, conv: &str, head: &OutboxRow) -> Result<(), StoreError> {
    let (id, row_id) = (conv.to_owned(), head.id);
    engine
        .store
        .call(move |db| {
            db.write(|tx| {
                tx.conn()
                    .execute("DELETE FROM outbox WHERE id = ?1", [row_id])?;
                tx.conn().execute(
                    "UPDATE conversations SET state = 'active' WHERE id = ?1 AND state = 'pending'",
                    [&id],
                )?;
                let row = model::conversation(tx.conn(), &id)?
                    .ok_or_else(|| StoreError::Decode("conversation vanished".into()))?;
                let conversation = model::conversation_api(tx.conn(), &row)?;
                tx.emit(EventPayload::ConversationChanged { conversation })?;
                Ok(())
            })
        })
        .await
}

/// Gives up on the head: a message becomes `failed`, a change `change_failed`.
async fn fail_change(
    engine: &Arc<Engine>,
    conv: &str,
    head: &OutboxRow,
    why: &str,
) -> Result<(), StoreError> {
    tracing::warn!(conversation = %conv, op = %head.op, "giving up: {why}");
    let (id, h, why) = (conv.to_owned(), head.clone(), why.to_owned());
    engine
        .store
        .call(move |db| {
            db.write(|tx| {
                tx.conn().execute("DELETE FROM outbox WHERE id = ?1", [h.id])?;
                let error = sotto_protocol::api::ErrorInfo {
                    kind: "relay".into(),
                    message: why.clone(),
                };
                if let (true, Some(mid)) = (h.op == "message", h.message_id.clone()) {
                    tx.conn().execute(
                        "UPDATE messages SET state = 'failed', error = ?3 WHERE conversation = ?1 AND id = ?2 AND state = 'queued'",
                        rusqlite::params![id, mid, serde_json::to_string(&error).unwrap_or_default()],
                    )?;
                    tx.emit(EventPayload::MessageState {
                        conversation: id.clone(),
                        message_id: mid,
                        state: MessageState::Failed,
                        error: Some(error),
                    })?;
                } else {
                    if h.op == "create" {
                        tx.conn().execute("UPDATE conversations SET state = 'broken', state_reason = ?2 WHERE id = ?1", rusqlite::params![id, format!("the group could not be created: {why}")])?;
                    }
                    let row = model::conversation(tx.conn(), &id)?.ok_or_else(|| StoreError::Decode("conversation vanished".into()))?;
                    let conversation = model::conversation_api(tx.conn(), &row)?;
                    tx.emit(EventPayload::ConversationChangeFailed {
                        conversation,
                        error: Some(error),
                    })?;
                }
                Ok(())
            })
        })
        .await
}
