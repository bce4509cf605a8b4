//! The post writer: group appends and mailbox posts in the order they were called, in
//! batches of one transaction each.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;

use sotto_protocol::relay::content_type;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::conn::{i64_of, u64_of};
use super::{CHANNEL, Inner, OP_TIMEOUT, db, is_serialization, payload};
use crate::storage::{
    AppendOutcome, Change, MailboxOutcome, NewGroupEntry, NewMailboxPost, StoreError,
};

/// The most posts folded into one transaction.
const MAX_BATCH: usize = 512;
/// Attempts of a batch that lost a deadlock or serialization race.
const ATTEMPTS: usize = 4;

/// `sotto_append_group` behind the order precondition of `PostGroupAfter` (schema V6;
/// a NULL `after` is the plain append).
const APPEND: &str = "SELECT outcome, r_seq, r_epoch FROM sotto_append_group_after($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";
const MAILBOX: &str =
    "SELECT unknown, seqs, keys FROM sotto_post_mailbox($1, $2, $3, $4, $5, $6, $7)";

/// A queued post.
#[derive(Debug)]
pub(in crate::storage) enum Job {
    Append(
        NewGroupEntry,
        oneshot::Sender<Result<AppendOutcome, StoreError>>,
    ),
    Mailbox(
        NewMailboxPost,
        oneshot::Sender<Result<MailboxOutcome, StoreError>>,
    ),
}

enum Outcome {
    Append(AppendOutcome),
    Mailbox(MailboxOutcome),
}

/// Runs until every sender is gone.
pub(super) async fn run(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<Job>) {
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let results = commit_with_retries(&inner, &jobs).await;
        let results = match results {
            Ok(r) => r,
            Err(e) if jobs.len() > 1 && !matches!(e, StoreError::Unavailable { .. }) => {
                // Something in the batch is refused: isolate it, commit the others.
                tracing::warn!(cause = %e, posts = jobs.len(), "batch failed; retrying its posts one by one");
                let mut each = Vec::with_capacity(jobs.len());
                for job in &jobs {
                    each.push(
                        commit_with_retries(&inner, std::slice::from_ref(job))
                            .await
                            .and_then(|mut v| v.pop().ok_or(StoreError::Closed)),
                    );
                }
                finish_each(&inner, jobs, each);
                continue;
            }
            Err(e) => {
                inner.metrics.errors.fetch_add(1, Ordering::Relaxed);
                fail_all(jobs, &e);
                continue;
            }
        };
        inner.metrics.batches.fetch_add(1, Ordering::Relaxed);
        inner
            .metrics
            .batch_posts
            .fetch_add(jobs.len() as u64, Ordering::Relaxed);
        finish_each(&inner, jobs, results.into_iter().map(Ok).collect());
    }
}

fn same(e: &StoreError) -> StoreError {
    match e {
        StoreError::Unavailable { context, reason } => StoreError::Unavailable {
            context,
            reason: reason.clone(),
        },
        StoreError::Postgres { context, reason } => StoreError::Postgres {
            context,
            reason: reason.clone(),
        },
        other => StoreError::Unavailable {
            context: "committing posts",
            reason: other.to_string(),
        },
    }
}

fn fail_all(jobs: Vec<Job>, e: &StoreError) {
    for job in jobs {
        match job {
            Job::Append(_, tx) => {
                let _ = tx.send(Err(same(e)));
            }
            Job::Mailbox(_, tx) => {
                let _ = tx.send(Err(same(e)));
            }
        }
    }
}

fn finish_each(
    inner: &Inner,
    jobs: Vec<Job>,
    results: Vec<Result<(Outcome, Vec<Change>), StoreError>>,
) {
    for (job, result) in jobs.into_iter().zip(results) {
        let changes = match &result {
            Ok((_, c)) => c.clone(),
            Err(_) => Vec::new(),
        };
        for c in changes {
            let _ = inner.changes.send(c);
        }
        match (job, result) {
            (Job::Append(_, tx), Ok((Outcome::Append(o), _))) => {
                let _ = tx.send(Ok(o));
            }
            (Job::Mailbox(_, tx), Ok((Outcome::Mailbox(o), _))) => {
                let _ = tx.send(Ok(o));
            }
            (Job::Append(_, tx), Err(e)) => {
                let _ = tx.send(Err(e));
            }
            (Job::Mailbox(_, tx), Err(e)) => {
                let _ = tx.send(Err(e));
            }
            (Job::Append(_, tx), Ok(_)) => {
                let _ = tx.send(Err(StoreError::Closed));
            }
            (Job::Mailbox(_, tx), Ok(_)) => {
                let _ = tx.send(Err(StoreError::Closed));
            }
        }
    }
}

async fn commit_with_retries(
    inner: &Inner,
    jobs: &[Job],
) -> Result<Vec<(Outcome, Vec<Change>)>, StoreError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let r = match tokio::time::timeout(OP_TIMEOUT, commit(inner, jobs)).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Unavailable {
                context: "committing posts",
                reason: format!("no answer from the database within {OP_TIMEOUT:?}"),
            }),
        };
        match r {
            Err(e) if is_serialization(&e) && attempt < ATTEMPTS => {
                tracing::debug!(cause = %e, attempt, "post batch lost a race; retrying");
            }
            other => return other,
        }
    }
}

type Pending<'a> = Pin<Box<dyn Future<Output = Result<Row, tokio_postgres::Error>> + Send + 'a>>;

/// Owned SQL parameters of one job.
enum Params<'a> {
    Append {
        group: &'a [u8],
        sender: &'a [u8],
        post: &'a [u8],
        epoch: i64,
        ct: i16,
        msg: &'a [u8],
        added: Vec<&'a [u8]>,
        removed: Vec<&'a [u8]>,
        now: i64,
        is_commit: bool,
        after: Option<&'a [u8]>,
    },
    Mailbox {
        sender: &'a [u8],
        address: &'a str,
        post: &'a [u8],
        names: Vec<&'a str>,
        devices: Vec<&'a str>,
        payload: &'a [u8],
        now: i64,
    },
}

impl<'a> Params<'a> {
    fn of(job: &'a Job) -> Params<'a> {
        match job {
            Job::Append(e, _) => Params::Append {
                group: &e.group_id,
                sender: &e.sender,
                post: &e.post_id,
                epoch: i64_of(e.epoch),
                ct: i16::from(e.content_type),
                msg: &e.message,
                added: e.added.iter().map(|p| &p[..]).collect(),
                removed: e.removed.iter().map(|p| &p[..]).collect(),
                now: i64_of(e.now),
                is_commit: e.content_type == content_type::COMMIT,
                after: e.after.as_ref().map(|a| &a[..]),
            },
            Job::Mailbox(p, _) => Params::Mailbox {
                sender: &p.sender,
                address: &p.sender_address,
                post: &p.post_id,
                names: p.recipients.iter().map(|(n, _)| n.as_str()).collect(),
                devices: p.recipients.iter().map(|(_, d)| d.as_str()).collect(),
                payload: &p.payload,
                now: i64_of(p.now),
            },
        }
    }

    fn list(&self) -> Vec<&(dyn ToSql + Sync)> {
        match self {
            Params::Append {
                group,
                sender,
                post,
                epoch,
                ct,
                msg,
                added,
                removed,
                now,
                is_commit,
                after,
            } => vec![
                group, sender, post, epoch, ct, msg, added, removed, now, is_commit, after,
            ],
            Params::Mailbox {
                sender,
                address,
                post,
                names,
                devices,
                payload,
                now,
            } => vec![sender, address, post, names, devices, payload, now],
        }
    }
}

/// Sends every query of `pending` in order (each future's first poll writes its
/// request), then waits for the answers. tokio-postgres answers in request order.
async fn pipeline(mut pending: Vec<Pending<'_>>) -> Vec<Result<Row, tokio_postgres::Error>> {
    let mut done: Vec<Option<Result<Row, tokio_postgres::Error>>> =
        pending.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        for (f, slot) in pending.iter_mut().zip(done.iter_mut()) {
            if let Poll::Ready(r) = f.as_mut().poll(cx) {
                *slot = Some(r);
            }
        }
        Poll::Ready(())
    })
    .await;
    let mut out = Vec::with_capacity(done.len());
    for (f, slot) in pending.into_iter().zip(done) {
        out.push(match slot {
            Some(r) => r,
            None => f.await,
        });
    }
    out
}

async fn commit(inner: &Inner, jobs: &[Job]) -> Result<Vec<(Outcome, Vec<Change>)>, StoreError> {
    let mut client = inner.client().await?;
    let tx = client
        .transaction()
        .await
        .map_err(|e| db("beginning a post batch", e))?;
    // Lock what the batch writes in one global order: groups by id, then the
    // recipients' devices by key. Batches of different processes cannot deadlock.
    let mut groups = BTreeSet::new();
    let mut names = BTreeSet::new();
    for job in jobs {
        match job {
            Job::Append(e, _) => {
                groups.insert(&e.group_id[..]);
            }
            Job::Mailbox(p, _) => names.extend(p.recipients.iter().map(|(n, _)| n.as_str())),
        }
    }
    if !groups.is_empty() {
        let ids: Vec<&[u8]> = groups.into_iter().collect();
        tx.query(
            "SELECT 1 FROM groups WHERE id = ANY ($1) ORDER BY id FOR UPDATE",
            &[&ids],
        )
        .await
        .map_err(|e| db("locking groups", e))?;
    }
    if !names.is_empty() {
        let names: Vec<&str> = names.into_iter().collect();
        tx.query(
            "SELECT 1 FROM devices WHERE name = ANY ($1) ORDER BY key FOR UPDATE",
            &[&names],
        )
        .await
        .map_err(|e| db("locking mailboxes", e))?;
    }
    let append = tx
        .prepare_cached(APPEND)
        .await
        .map_err(|e| db("preparing the group append", e))?;
    let mailbox = tx
        .prepare_cached(MAILBOX)
        .await
        .map_err(|e| db("preparing the mailbox post", e))?;
    let params: Vec<Params<'_>> = jobs.iter().map(Params::of).collect();
    let lists: Vec<Vec<&(dyn ToSql + Sync)>> = params.iter().map(Params::list).collect();
    let pending: Vec<Pending<'_>> = params
        .iter()
        .zip(&lists)
        .map(|(p, list)| {
            let st = match p {
                Params::Append { .. } => &append,
                Params::Mailbox { .. } => &mailbox,
            };
            Box::pin(tx.query_one(st, list)) as Pending<'_>
        })
        .collect();
    let rows = pipeline(pending).await;
    let mut out = Vec::with_capacity(jobs.len());
    let mut notes = BTreeSet::new();
    for (job, row) in jobs.iter().zip(rows) {
        let row = row.map_err(|e| db("storing a post", e))?;
        let (outcome, changes) = decode(job, &row).map_err(|e| db("reading a post result", e))?;
        for c in &changes {
            notes.insert(payload(&inner.origin, c));
        }
        // A commit stored now (not a repeat: that one changes nothing) brings the new
        // epoch's GroupInfo, kept in the same transaction.
        if let (Job::Append(e, _), Outcome::Append(AppendOutcome::Accepted { seq, epoch })) =
            (job, &outcome)
            && let Some(info) = &e.group_info
            && !changes.is_empty()
        {
            tx.execute(
                "INSERT INTO group_infos (group_id, epoch, seq, data) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (group_id) DO UPDATE
                 SET epoch = excluded.epoch, seq = excluded.seq, data = excluded.data
                 WHERE excluded.seq > group_infos.seq",
                &[&e.group_id, &i64_of(*epoch), &i64_of(*seq), info],
            )
            .await
            .map_err(|e| db("storing a group info", e))?;
        }
        out.push((outcome, changes));
    }
    if !notes.is_empty() {
        let notes: Vec<String> = notes.into_iter().collect();
        tx.execute(
            &format!("SELECT pg_notify('{CHANNEL}', n) FROM unnest($1::text[]) n"),
            &[&notes],
        )
        .await
        .map_err(|e| db("announcing posts", e))?;
    }
    tx.commit().await.map_err(|e| db("committing posts", e))?;
    Ok(out)
}

fn decode(job: &Job, row: &Row) -> Result<(Outcome, Vec<Change>), tokio_postgres::Error> {
    Ok(match job {
        Job::Append(e, _) => {
            let code: i16 = row.try_get(0)?;
            let a = u64_of(row.try_get(1)?);
            let b = u64_of(row.try_get(2)?);
            match code {
                4 => (
                    Outcome::Append(AppendOutcome::Accepted { seq: a, epoch: b }),
                    Vec::new(),
                ),
                0 => {
                    let changes = vec![Change::Group {
                        group_id: e.group_id.clone(),
                        head: a,
                    }];
                    (
                        Outcome::Append(AppendOutcome::Accepted { seq: a, epoch: b }),
                        changes,
                    )
                }
                1 => (
                    Outcome::Append(AppendOutcome::Conflict {
                        current_epoch: b,
                        head_seq: a,
                    }),
                    Vec::new(),
                ),
                2 => (Outcome::Append(AppendOutcome::NotMember), Vec::new()),
                5 => (Outcome::Append(AppendOutcome::OutOfOrder), Vec::new()),
                _ => (Outcome::Append(AppendOutcome::UnknownGroup), Vec::new()),
            }
        }
        Job::Mailbox(..) => {
            let unknown: i32 = row.try_get(0)?;
            let seqs: Vec<i64> = row.try_get(1)?;
            let keys: Vec<Vec<u8>> = row.try_get(2)?;
            if unknown >= 0 {
                let i = usize::try_from(unknown).unwrap_or(0);
                (
                    Outcome::Mailbox(MailboxOutcome::UnknownRecipient(i)),
                    Vec::new(),
                )
            } else {
                let changes = keys
                    .into_iter()
                    .filter_map(|k| <[u8; 32]>::try_from(k).ok())
                    .map(|device| Change::Mailbox { device })
                    .collect();
                (
                    Outcome::Mailbox(MailboxOutcome::Posted(
                        seqs.into_iter().map(u64_of).collect(),
                    )),
                    changes,
                )
            }
        }
    })
}
