//! The SQLite implementation of [`Store`]: one writer thread that batches every queued
//! write into one transaction, a syncer thread that makes each committed batch durable
//! (one `fdatasync` of the WAL per batch) before any of its writes is answered, and a
//! small pool of reader connections (WAL lets them run beside the writer).
//!
//! **The pipeline.** The writer commits batch *n* without syncing (its connection runs
//! `synchronous = NORMAL`) and hands it to the syncer, then runs the writes of batch
//! *n + 1* while the syncer's `fdatasync` of the WAL is on the disk. It commits batch
//! *n + 1* only after batch *n* is synced, so at most one committed batch is ever not
//! durable, and the writes of a batch are answered (and their wake-ups sent) only after
//! its own sync: an acknowledged write is durable, as with `synchronous = FULL`.
//!
//! **Visibility.** A committed batch is visible to other connections as soon as the
//! COMMIT returns, before its sync. No reader may see it then: a member that read an
//! entry a crash then erases could fork its group. So every read runs in a read
//! transaction whose snapshot is taken only while no committed batch waits for its sync
//! (the [`Gate`]): the writer closes the gate just before each COMMIT (after letting the
//! readers already waiting take their snapshots) and the syncer opens it after the
//! `fdatasync`. A read snapshot therefore holds only durable rows. The writer itself
//! (the epoch compare-and-set, idempotent retries, key-package claims) sees the pending
//! batch: it is the single serial authority, its answers wait for their own batch's
//! sync (which comes after the pending one's), and a crash before a sync loses that
//! batch whole, with nobody told about it.
//!
//! **Checkpoints** run on their own connection at `synchronous = FULL`, so SQLite syncs
//! the WAL before copying any frame (synced or not) into the database file. **A failed
//! `fdatasync`** stops the store (fail-stop, as PostgreSQL does): after such an error
//! Linux may have dropped the dirty pages, so nothing later can be trusted to be durable;
//! every write and read then fails as retryable, `/healthz` reports it, and a restart
//! recovers from what is on the disk (no client was told about the unsynced batch).

use std::collections::VecDeque;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, mpsc};
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::{broadcast, oneshot};

use super::{Change, StoreError, schema};

/// The most writes folded into one transaction.
const MAX_BATCH: usize = 1024;
const READERS: usize = 2;
/// How often, at most, the checkpointer copies the WAL back into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// One queued write: run (possibly twice, see [`Batch::run`]) inside the batch
/// transaction, then answered after its batch is durable.
trait WriteJob: Send {
    /// Runs the job on the writer's connection; `true` when it succeeded.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Whether the job's last run failed because the disk is full (or read-only).
    fn failed_disk_full(&self) -> bool;
    /// Answers the caller: with the job's own result if the batch committed and was
    /// synced (its changes go to `notify` first), else with the failure.
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

/// The message of every failure after a failed `fdatasync` (see the module docs).
const SYNC_FAILED: &str = "an fdatasync of the relay's WAL failed: the relay stopped writing \
    (nothing after it can be trusted to reach the disk); restart it";

fn sync_failed() -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR_FSYNC),
        Some(SYNC_FAILED.into()),
    )
}

fn is_sync_failed(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(_, Some(m)) if m == SYNC_FAILED)
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

    fn failed_disk_full(&self) -> bool {
        matches!(&self.result, Some(Err(e)) if disk_full(e))
    }

    fn finish(
        self: Box<Self>,
        committed: Result<(), &rusqlite::Error>,
        notify: &broadcast::Sender<Change>,
    ) {
        // A full disk is retryable (the client resends the same post id); found by the
        // faults suite: it used to answer `internal`, which clients treat as final.
        let answer = match (self.result, committed) {
            (_, Err(e)) if is_sync_failed(e) => Err(StoreError::Unavailable {
                context: self.context,
                reason: SYNC_FAILED.into(),
            }),
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

/// What the writer thread receives.
enum Msg {
    /// A write for the next batch.
    Job(Job),
    /// The syncer finished a batch. Only a wake-up: [`Gate::synced`] is the count.
    Synced,
    /// The store was dropped: finish what is queued, then stop.
    Shutdown,
}

/// A batch on its way from the writer to the syncer: committed (`Ok`, to be synced) or
/// failed (nothing of it is visible; answered with the failure, in batch order).
struct Done {
    jobs: Vec<Job>,
    committed: Result<(), rusqlite::Error>,
}

/// Runs before the syncer's `fdatasync` (tests hold the sync back or make it fail).
pub(super) type SyncHook = Arc<dyn Fn() -> std::io::Result<()> + Send + Sync>;

/// When readers may take a snapshot: only while every committed batch is durable.
#[derive(Debug, Default)]
struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
    /// Batches the syncer has finished (synced, or answered as failed).
    synced: AtomicU64,
}

#[derive(Debug, Default)]
struct GateState {
    /// A committed batch waits for its `fdatasync`: no new read snapshot now.
    unsynced: bool,
    /// Readers waiting to take a snapshot; the writer lets them in before it commits.
    waiting: usize,
    /// An `fdatasync` failed: nothing is read or written any more.
    failed: bool,
}

impl Gate {
    fn lock(&self) -> MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait<'a>(&self, guard: MutexGuard<'a, GateState>) -> MutexGuard<'a, GateState> {
        self.changed.wait(guard).unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a read transaction on `conn` whose snapshot holds only durable rows: waits
    /// until no committed batch is unsynced, and takes the snapshot (the first read of
    /// the transaction) before the writer can commit again.
    fn begin_read(&self, conn: &Connection) -> Result<(), rusqlite::Error> {
        if !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        let mut s = self.lock();
        s.waiting += 1;
        while s.unsynced && !s.failed {
            s = self.wait(s);
        }
        s.waiting -= 1;
        let begun = if s.failed {
            Err(sync_failed())
        } else {
            run(conn, "BEGIN").and_then(|()| {
                // Any read of the database takes the snapshot in WAL mode.
                conn.prepare_cached("PRAGMA schema_version")?
                    .query_row([], |_| Ok(()))
            })
        };
        drop(s);
        self.changed.notify_all();
        if begun.is_err() && !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        begun
    }

    /// Called by the writer just before a COMMIT (the previous batch is synced): lets
    /// the readers already waiting take their snapshots, then closes the gate until the
    /// syncer opens it. `false` after a failed sync (then nothing may commit).
    fn close(&self) -> bool {
        let mut s = self.lock();
        while s.waiting > 0 && !s.failed {
            s = self.wait(s);
        }
        s.unsynced = true;
        !s.failed
    }

    /// The syncer finished the batch the gate was closed for.
    fn open(&self) {
        self.lock().unsynced = false;
        self.changed.notify_all();
    }

    fn fail(&self) {
        self.lock().failed = true;
        self.changed.notify_all();
    }

    fn failed(&self) -> bool {
        self.lock().failed
    }
}

/// The WAL file, synced by the syncer through its own descriptor (`fdatasync` flushes
/// the file's pages whichever descriptor wrote them).
struct Wal {
    path: PathBuf,
    dir: PathBuf,
    file: std::fs::File,
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

impl Wal {
    /// Opens the WAL of the database at `db` (it exists while a connection is open) and
    /// syncs the directory once, so the WAL's directory entry is durable too (SQLite
    /// does that at its first sync of a new WAL, which the writer no longer makes).
    fn open(db: &Path) -> std::io::Result<Wal> {
        let mut name = db.as_os_str().to_owned();
        name.push("-wal");
        let path = PathBuf::from(name);
        let dir = match db.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        let file = std::fs::File::open(&path)?;
        sync_dir(&dir)?;
        Ok(Wal { path, dir, file })
    }

    fn sync(&mut self) -> std::io::Result<()> {
        use std::os::unix::fs::MetadataExt as _;
        // The WAL stays one file while connections are open; should it ever have been
        // replaced, sync the new one and its directory entry.
        let (now, ours) = (std::fs::metadata(&self.path)?, self.file.metadata()?);
        if (now.dev(), now.ino()) != (ours.dev(), ours.ino()) {
            tracing::warn!(path = %self.path.display(), "the WAL file was replaced; syncing the new one");
            self.file = std::fs::File::open(&self.path)?;
            self.file.sync_data()?;
            return sync_dir(&self.dir);
        }
        self.file.sync_data()
    }
}

/// SQLite-backed storage.
#[derive(Debug)]
pub struct SqliteStore {
    writer: mpsc::Sender<Msg>,
    readers: Arc<Vec<Mutex<Connection>>>,
    next_reader: AtomicUsize,
    gate: Arc<Gate>,
    pub(super) changes: broadcast::Sender<Change>,
    pub(super) durability: &'static str,
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        let _ = self.writer.send(Msg::Shutdown);
    }
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
        Self::open_with(path, None)
    }

    /// [`SqliteStore::open`] with `hook` run before every `fdatasync` of the syncer.
    #[cfg(test)]
    pub(super) fn open_with_sync_hook(path: &Path, hook: SyncHook) -> Result<Self, StoreError> {
        Self::open_with(path, Some(hook))
    }

    fn open_with(path: &Path, hook: Option<SyncHook>) -> Result<Self, StoreError> {
        let opening = |source| StoreError::Open {
            path: path.to_owned(),
            source,
        };
        let writer_conn = open(path)?;
        // Checkpoints run on their own thread (`checkpointer_loop`), never in a commit.
        writer_conn
            .execute_batch("PRAGMA wal_autocheckpoint = 0;")
            .map_err(opening)?;
        schema::migrate(&writer_conn).map_err(opening)?;
        // What an answer means: the connection settings' `synchronous` (FULL). The
        // syncer provides it for the writer's commits (module docs), so the writer's
        // own COMMIT does not sync.
        let durability = schema::synchronous(&writer_conn).map_err(opening)?;
        writer_conn
            .execute_batch("PRAGMA synchronous = NORMAL;")
            .map_err(opening)?;
        let wal = Wal::open(path).map_err(|e| {
            StoreError::Setup(format!("cannot open the WAL of {}: {e}", path.display()))
        })?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            readers.push(Mutex::new(open(path)?));
        }
        let (changes, _) = broadcast::channel(4096);
        let (tx, rx) = mpsc::channel::<Msg>();
        let (to_sync, synced) = mpsc::channel::<Done>();
        let gate = Arc::new(Gate::default());
        let notify = changes.clone();
        let checkpoint_conn = open(path)?;
        // The checkpointer must sync the WAL before copying frames the syncer may not
        // have synced yet, and the database after: FULL (per connection).
        if !matches!(schema::synchronous(&checkpoint_conn), Ok("full" | "extra")) {
            return Err(StoreError::Setup(
                "the checkpointer's connection does not run synchronous=FULL".into(),
            ));
        }
        let (wake, woken) = mpsc::sync_channel::<()>(1);
        spawn("sotto-relay-checkpoint", move || {
            checkpointer_loop(&checkpoint_conn, &woken);
        })?;
        let (g, back) = (Arc::clone(&gate), tx.clone());
        spawn("sotto-relay-sync", move || {
            syncer_loop(wal, &synced, &g, &back, &notify, hook.as_deref());
        })?;
        let g = Arc::clone(&gate);
        spawn("sotto-relay-writer", move || {
            writer_loop(&writer_conn, &rx, &to_sync, &g, &wake);
        })?;
        Ok(SqliteStore {
            writer: tx,
            readers: Arc::new(readers),
            next_reader: AtomicUsize::new(0),
            gate,
            changes,
            durability,
        })
    }

    /// Whether the store still works (false after a failed `fdatasync`).
    pub(super) fn working(&self) -> bool {
        !self.gate.failed()
    }

    /// Readers waiting at the gate for a durable snapshot (tests).
    #[cfg(test)]
    pub(super) fn readers_waiting(&self) -> usize {
        self.gate.lock().waiting
    }

    /// Queues a write now (its place in the commit order is fixed by this call) and
    /// returns a future that resolves after its batch is committed and synced. `f` may
    /// run twice (the first run rolled back) when another write of its batch failed
    /// half-way.
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
        let queued = self.writer.send(Msg::Job(job)).is_ok();
        async move {
            if !queued {
                return Err(StoreError::Closed);
            }
            rx.await.map_err(|_| StoreError::Closed)?
        }
    }

    /// Runs `f` on a reader connection, in one read transaction whose snapshot holds
    /// only durable rows (see [`Gate`]).
    pub(super) async fn read<T, F>(&self, context: &'static str, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let readers = Arc::clone(&self.readers);
        let gate = Arc::clone(&self.gate);
        let i = self.next_reader.fetch_add(1, Ordering::Relaxed) % readers.len();
        tokio::task::spawn_blocking(move || {
            let conn = readers[i].lock().unwrap_or_else(|e| e.into_inner());
            gate.begin_read(&conn).map_err(|source| {
                if is_sync_failed(&source) {
                    StoreError::Unavailable {
                        context,
                        reason: SYNC_FAILED.into(),
                    }
                } else {
                    StoreError::Sqlite { context, source }
                }
            })?;
            let out = f(&conn);
            // Ends the read transaction (it changed nothing).
            if run(&conn, "COMMIT").is_err() && !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            out.map_err(|source| StoreError::Sqlite { context, source })
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }
}

/// Runs a parameterless statement from the statement cache.
fn run(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// Runs one job in its own savepoint of the open transaction.
fn run_in_savepoint(conn: &Connection, job: &mut Job) {
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

/// The writes of one transaction, run as they arrive.
#[derive(Default)]
struct Batch {
    jobs: Vec<Job>,
    /// A write failed half-way: every write of this batch runs in its own savepoint.
    savepoints: bool,
    /// The transaction is gone (SQLite rolled it back, or it could not restart): the
    /// batch fails and no further write of it runs.
    broken: Option<rusqlite::Error>,
}

impl Batch {
    /// Runs `job` in the open transaction. Jobs run without savepoints (no sub-journal,
    /// no extra statements); a job that fails without having changed a row needs no
    /// undo. Only when a job fails half-way is the transaction rolled back and every job
    /// of the batch so far run again with a savepoint each (and the later ones too), so
    /// the others still commit and the failed one leaves nothing behind.
    fn run(&mut self, conn: &Connection, job: Job) {
        self.jobs.push(job);
        if self.broken.is_some() {
            return;
        }
        let last = self.jobs.len() - 1;
        if self.savepoints {
            run_in_savepoint(conn, &mut self.jobs[last]);
        } else {
            let before = conn.total_changes();
            if !self.jobs[last].run(conn) && conn.total_changes() != before && !conn.is_autocommit()
            {
                tracing::warn!("a write failed half-way; running its batch again with savepoints");
                if let Err(e) = run(conn, "ROLLBACK").and_then(|()| run(conn, "BEGIN IMMEDIATE")) {
                    self.broken = Some(e);
                    return;
                }
                self.savepoints = true;
                for job in &mut self.jobs {
                    run_in_savepoint(conn, job);
                }
            }
        }
        // SQLite rolls a transaction back by itself on some errors (full disk, I/O,
        // out of memory): the writes after it must not run in autocommit (each would
        // be visible before any sync).
        if conn.is_autocommit() {
            self.broken = Some(if self.jobs[last].failed_disk_full() {
                rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
                    Some("the disk is full: the batch was rolled back".into()),
                )
            } else {
                rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ABORT),
                    Some("SQLite rolled the batch transaction back".into()),
                )
            });
        }
    }

    /// Commits the batch (without syncing), or rolls it back when it is broken.
    fn commit(&mut self, conn: &Connection, gate: &Gate) -> Result<(), rusqlite::Error> {
        let result = match self.broken.take() {
            Some(e) => Err(e),
            None if !gate.close() => Err(sync_failed()),
            None => run(conn, "COMMIT"),
        };
        if let Err(e) = &result {
            tracing::error!(cause = %e, "batch commit failed");
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
        }
        result
    }
}

/// What the writer got from its channel.
enum Next {
    Job(Job),
    /// A wake-up from the syncer.
    Synced,
    /// Nothing queued (non-blocking only).
    Empty,
    /// The store was dropped.
    Shutdown,
    /// Every sender is gone (the syncer died): stop.
    Closed,
}

fn next(rx: &mpsc::Receiver<Msg>, block: bool) -> Next {
    let msg = if block {
        rx.recv().map_err(|_| mpsc::TryRecvError::Disconnected)
    } else {
        rx.try_recv()
    };
    match msg {
        Ok(Msg::Job(job)) => Next::Job(job),
        Ok(Msg::Synced) => Next::Synced,
        Ok(Msg::Shutdown) => Next::Shutdown,
        Err(mpsc::TryRecvError::Empty) => Next::Empty,
        Err(mpsc::TryRecvError::Disconnected) => Next::Closed,
    }
}

/// The writer: takes every queued write (up to [`MAX_BATCH`]) into one IMMEDIATE
/// transaction, and keeps taking the writes that arrive while the previous batch is
/// being synced; commits once that sync is done (see the module docs) and hands the
/// batch to the syncer.
fn writer_loop(
    conn: &Connection,
    rx: &mpsc::Receiver<Msg>,
    to_sync: &mpsc::Sender<Done>,
    gate: &Gate,
    checkpoint: &mpsc::SyncSender<()>,
) {
    // Batches handed to the syncer; one is in flight while the syncer has done fewer.
    let mut handed = 0u64;
    let in_flight = |handed: u64| gate.synced.load(Ordering::Acquire) < handed;
    // Writes received while waiting for a sync with a full batch.
    let mut queue: VecDeque<Job> = VecDeque::new();
    let mut stopping = false;
    loop {
        let first = match queue.pop_front() {
            Some(job) => job,
            None => match next(rx, !stopping) {
                Next::Job(job) => job,
                Next::Synced => continue,
                Next::Shutdown => {
                    stopping = true;
                    continue;
                }
                Next::Empty | Next::Closed => return,
            },
        };
        let mut batch = Batch::default();
        if gate.failed() {
            batch.jobs.push(first);
            batch.jobs.extend(queue.drain(..));
            batch.broken = Some(sync_failed());
        } else if let Err(e) = run(conn, "BEGIN IMMEDIATE") {
            tracing::error!(cause = %e, "cannot begin write transaction");
            batch.jobs.push(first);
            batch.broken = Some(e);
        } else {
            batch.run(conn, first);
            while batch.jobs.len() < MAX_BATCH {
                let got = match queue.pop_front() {
                    Some(job) => Next::Job(job),
                    // While the previous batch syncs, wait for more writes (or the sync).
                    None => next(rx, in_flight(handed)),
                };
                match got {
                    Next::Job(job) => batch.run(conn, job),
                    Next::Synced => {}
                    Next::Shutdown => stopping = true,
                    Next::Empty => break,
                    Next::Closed => return,
                }
            }
        }
        // This batch becomes visible only after the previous one is durable.
        while in_flight(handed) {
            match next(rx, true) {
                Next::Job(job) => queue.push_back(job),
                Next::Synced | Next::Empty => {}
                Next::Shutdown => stopping = true,
                Next::Closed => return,
            }
        }
        let committed = batch.commit(conn, gate);
        handed += 1;
        if to_sync
            .send(Done {
                jobs: batch.jobs,
                committed,
            })
            .is_err()
        {
            return;
        }
        let _ = checkpoint.try_send(());
    }
}

/// The syncer: makes each committed batch durable (`fdatasync` of the WAL), opens the
/// gate for readers, then answers the batch's writes and sends their wake-ups. Batches
/// are answered in order, failed ones too. Stops when the writer does.
fn syncer_loop(
    mut wal: Wal,
    batches: &mpsc::Receiver<Done>,
    gate: &Gate,
    writer: &mpsc::Sender<Msg>,
    notify: &broadcast::Sender<Change>,
    hook: Option<&(dyn Fn() -> std::io::Result<()> + Send + Sync)>,
) {
    while let Ok(done) = batches.recv() {
        let mut committed = done.committed;
        if committed.is_ok() && !gate.failed() {
            let synced = hook.map_or(Ok(()), |h| h()).and_then(|()| wal.sync());
            if let Err(e) = synced {
                tracing::error!(cause = %e, "{SYNC_FAILED}");
                gate.fail();
            }
        }
        if gate.failed() {
            committed = Err(sync_failed());
        } else {
            gate.open();
        }
        gate.synced.fetch_add(1, Ordering::Release);
        let _ = writer.send(Msg::Synced);
        for job in done.jobs {
            job.finish(committed.as_ref().map(|_| ()), notify);
        }
    }
}

/// The checkpointer: copies the WAL back into the database on its own connection, so the
/// writer's commits never pay for it (the writer runs with `wal_autocheckpoint = 0`).
/// PASSIVE never blocks the writer or the readers; the WAL restarts from its beginning at
/// the first write after a complete checkpoint. Its connection runs `synchronous = FULL`:
/// SQLite syncs the WAL before copying frames into the database (also frames of a batch
/// the syncer has not synced yet) and the database after. Stops when the writer does.
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
