//! The SQLite implementation of [`Store`]: one writer thread that batches every queued
//! write into one transaction (one fsync for the batch, each write acknowledged only
//! after COMMIT), plus a small pool of reader connections (WAL lets them run beside the
//! writer).

use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::{broadcast, oneshot};

use super::{Change, StoreError, schema};

/// The most writes folded into one transaction.
const MAX_BATCH: usize = 1024;
const READERS: usize = 2;
/// How often, at most, the checkpointer copies the WAL back into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// One queued write: run (possibly twice, see [`writer_loop`]) inside the batch
/// transaction, then answered after COMMIT.
trait WriteJob: Send {
    /// Runs the job on the writer's connection; `true` when it succeeded.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answers the caller: with the job's own result if the batch committed (its changes
    /// go to `notify` first), else with the commit failure.
    fn finish(
        self: Box<Self>,
        committed: Result<(), &rusqlite::Error>,
        notify: &broadcast::Sender<Change>,
    );
}

/// The disk is full or the file system read-only (`SQLITE_FULL`, `SQLITE_READONLY`):
/// the write was rolled back and may be retried once space returns.
fn disk_full(e: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode::{DiskFull, ReadOnly};
    matches!(e.sqlite_error_code(), Some(DiskFull | ReadOnly))
}

struct Pending<T, F> {
    f: F,
    context: &'static str,
    result: Option<rusqlite::Result<T>>,
    changes: Vec<Change>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> WriteJob for Pending<T, F>
where
    T: Send,
    F: Fn(&Connection, &mut Vec<Change>) -> rusqlite::Result<T> + Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        self.changes.clear();
        let result = (self.f)(conn, &mut self.changes);
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn finish(
        self: Box<Self>,
        committed: Result<(), &rusqlite::Error>,
        notify: &broadcast::Sender<Change>,
    ) {
        // A full disk is retryable (the client resends the same post id); found by the
        // faults suite: it used to answer `internal`, which clients treat as final.
        let answer = match (self.result, committed) {
            (Some(Err(source)), _) if disk_full(&source) => Err(StoreError::Unavailable {
                context: self.context,
                reason: format!("the disk is full or read-only ({source})"),
            }),
            (Some(Err(source)), _) => Err(StoreError::Sqlite {
                context: self.context,
                source,
            }),
            (_, Err(e)) if disk_full(e) => Err(StoreError::Unavailable {
                context: self.context,
                reason: format!("the disk is full or read-only ({e})"),
            }),
            (Some(Ok(value)), Ok(())) => {
                for change in self.changes {
                    let _ = notify.send(change);
                }
                Ok(value)
            }
            (_, Err(e)) => Err(StoreError::Commit {
                message: e.to_string(),
            }),
            (None, Ok(())) => Err(StoreError::Closed),
        };
        let _ = self.reply.send(answer);
    }
}

type Job = Box<dyn WriteJob>;

/// SQLite-backed storage.
#[derive(Debug)]
pub struct SqliteStore {
    writer: mpsc::Sender<Job>,
    readers: Arc<Vec<Mutex<Connection>>>,
    next_reader: AtomicUsize,
    pub(super) changes: broadcast::Sender<Change>,
    pub(super) durability: &'static str,
}

fn open(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(|source| StoreError::Open {
        path: path.to_owned(),
        source,
    })?;
    schema::configure(&conn).map_err(|source| StoreError::Open {
        path: path.to_owned(),
        source,
    })?;
    Ok(conn)
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<(), StoreError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map(drop)
        .map_err(|e| StoreError::Commit {
            message: format!("cannot start thread {name}: {e}"),
        })
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and starts the writer thread.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let writer_conn = open(path)?;
        // Checkpoints run on their own thread (`checkpointer_loop`), never in a commit.
        writer_conn
            .execute_batch("PRAGMA wal_autocheckpoint = 0;")
            .map_err(|source| StoreError::Open {
                path: path.to_owned(),
                source,
            })?;
        schema::migrate(&writer_conn).map_err(|source| StoreError::Open {
            path: path.to_owned(),
            source,
        })?;
        let durability = schema::synchronous(&writer_conn).map_err(|source| StoreError::Open {
            path: path.to_owned(),
            source,
        })?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            readers.push(Mutex::new(open(path)?));
        }
        let (changes, _) = broadcast::channel(4096);
        let (tx, rx) = mpsc::channel::<Job>();
        let notify = changes.clone();
        let checkpoint_conn = open(path)?;
        let (wake, woken) = mpsc::sync_channel::<()>(1);
        spawn("sotto-relay-checkpoint", move || {
            checkpointer_loop(&checkpoint_conn, &woken);
        })?;
        spawn("sotto-relay-writer", move || {
            writer_loop(&writer_conn, &rx, &notify, &wake);
        })?;
        Ok(SqliteStore {
            writer: tx,
            readers: Arc::new(readers),
            next_reader: AtomicUsize::new(0),
            changes,
            durability,
        })
    }

    /// Queues a write now (its place in the commit order is fixed by this call) and
    /// returns a future that resolves after COMMIT. `f` may run twice (the first run
    /// rolled back) when another write of its batch failed half-way.
    pub(super) fn write<T, F>(
        &self,
        context: &'static str,
        f: F,
    ) -> impl Future<Output = Result<T, StoreError>> + Send + use<T, F>
    where
        T: Send + 'static,
        F: Fn(&Connection, &mut Vec<Change>) -> rusqlite::Result<T> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel::<Result<T, StoreError>>();
        let job: Job = Box::new(Pending {
            f,
            context,
            result: None,
            changes: Vec::new(),
            reply,
        });
        let queued = self.writer.send(job).is_ok();
        async move {
            if !queued {
                return Err(StoreError::Closed);
            }
            rx.await.map_err(|_| StoreError::Closed)?
        }
    }

    pub(super) async fn read<T, F>(&self, context: &'static str, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let readers = Arc::clone(&self.readers);
        let i = self.next_reader.fetch_add(1, Ordering::Relaxed) % readers.len();
        tokio::task::spawn_blocking(move || {
            let conn = readers[i].lock().unwrap_or_else(|e| e.into_inner());
            f(&conn).map_err(|source| StoreError::Sqlite { context, source })
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }
}

/// Runs a parameterless statement from the statement cache.
fn run(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// Runs the batch's jobs in the open transaction, each in its own savepoint.
fn run_with_savepoints(conn: &Connection, batch: &mut [Job]) {
    for job in batch {
        let sp = run(conn, "SAVEPOINT job").is_ok();
        let ok = job.run(conn);
        if sp {
            let end = if ok {
                run(conn, "RELEASE job")
            } else {
                run(conn, "ROLLBACK TO job").and_then(|()| run(conn, "RELEASE job"))
            };
            if let Err(e) = end {
                tracing::error!(cause = %e, "savepoint end failed");
            }
        }
    }
}

/// Runs the batch's jobs in the open transaction without savepoints; `false` when a job
/// failed after changing rows (the transaction then holds half a job).
fn run_optimistic(conn: &Connection, batch: &mut [Job]) -> bool {
    for job in batch {
        let before = conn.total_changes();
        if !job.run(conn) && conn.total_changes() != before {
            return false;
        }
    }
    true
}

/// The writer: takes every queued write (up to [`MAX_BATCH`]) into one IMMEDIATE
/// transaction. Jobs run without savepoints (no sub-journal, no extra statements); a job
/// that fails without having changed a row needs no undo. Only when a job fails half-way
/// is the batch rolled back and run again with a savepoint per job, so the other writes
/// still commit and the failed one leaves nothing behind.
fn writer_loop(
    conn: &Connection,
    rx: &mpsc::Receiver<Job>,
    notify: &broadcast::Sender<Change>,
    checkpoint: &mpsc::SyncSender<()>,
) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if let Err(e) = run(conn, "BEGIN IMMEDIATE") {
            tracing::error!(cause = %e, "cannot begin write transaction");
            continue; // dropping the jobs fails their callers with `Closed`
        }
        let mut committed = Ok(());
        if !run_optimistic(conn, &mut batch) {
            tracing::warn!("a write failed half-way; running its batch again with savepoints");
            committed = run(conn, "ROLLBACK").and_then(|()| run(conn, "BEGIN IMMEDIATE"));
            if committed.is_ok() {
                run_with_savepoints(conn, &mut batch);
            }
        }
        let committed = committed.and_then(|()| run(conn, "COMMIT")).map_err(|e| {
            tracing::error!(cause = %e, "batch commit failed");
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            e
        });
        let _ = checkpoint.try_send(());
        for job in batch {
            job.finish(committed.as_ref().map(|_| ()), notify);
        }
    }
}

/// The checkpointer: copies the WAL back into the database on its own connection, so the
/// writer's commits never pay for it (the writer runs with `wal_autocheckpoint = 0`).
/// PASSIVE never blocks the writer or the readers; the WAL restarts from its beginning at
/// the first write after a complete checkpoint. Stops when the writer does.
fn checkpointer_loop(conn: &Connection, wake: &mpsc::Receiver<()>) {
    while wake.recv().is_ok() {
        // At most one checkpoint per period: the commits of the next period coalesce.
        std::thread::sleep(CHECKPOINT_EVERY);
        while wake.try_recv().is_ok() {}
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(cause = %e, "WAL checkpoint failed");
        }
    }
}
