//! The daemon's SQLite database behind one writer connection.
//!
//! One thread owns the connection; everything else sends it closures ([`Store::call`]).
//! Writes go through [`Db::write`], an IMMEDIATE transaction that also collects the
//! events the change implies: they are persisted in the same transaction and broadcast to
//! subscribers only after COMMIT. Later MLS code borrows the same connection inside its
//! own transaction, so an MLS state change and the rows it implies commit together.
//!
//! Group commit: writes submitted with [`Store::write`] / [`Store::submit_write`] that are
//! queued together share one transaction (one fsync): the writer takes every such write
//! waiting behind the first (up to [`GROUP_MAX`], stopping at any other job, so the queue's
//! order is kept), runs each in its own SAVEPOINT (a failing one rolls back alone), commits
//! once, and only then answers each caller and broadcasts the events. If that COMMIT fails,
//! every write in it gets the error and every object kept for later transactions is dropped.
//!
//! A write queued with [`Store::submit_write_atomic`] runs without a SAVEPOINT of its own
//! (a savepoint is not free here: SQLCipher encrypts every page the write touches into the
//! sub-journal, and FTS5 flushes its pending terms into a new segment at every savepoint).
//! Such a write promises to fail only before its first change: if it fails after changing
//! rows (`total_changes` moved: an I/O error, a full disk), the whole shared transaction
//! is rolled back and every write in it gets that error, as if the COMMIT had failed.

pub mod cipher;
mod events;
mod migrations;
mod snapshot;

use std::any::Any;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags};
use sotto_protocol::api::{Event, EventPayload};
use tokio::sync::{broadcast, oneshot};

use crate::keys::DbKey;

pub use events::EventPage;
pub use snapshot::image_connection;

/// The newest schema version of this build's own tables.
pub const SCHEMA_VERSION: i64 = migrations::LATEST;

/// The most objects [`Tx::keep`] holds between transactions (each conversation's
/// `MlsGroup`); past it, arbitrary ones are dropped and loaded again when next needed.
const CACHE_CAPACITY: usize = 256;

/// Objects derived from the database and kept in memory between transactions.
type Cache = HashMap<String, Box<dyn Any + Send>>;

/// The most writes one group commit folds into one transaction.
pub const GROUP_MAX: usize = 256;

/// The SQLite page cache of the writer's connection, in KiB (decrypted pages).
const CACHE_KIB: i64 = 8 * 1024;

/// Prepared statements kept by the writer's connection.
const STATEMENT_CACHE: usize = 256;

/// How often the writer truncates the WAL so deleted secrets do not linger in it.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(60);

/// A database failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Opening the file failed (missing dir, corrupt file, ...).
    #[error("cannot open the database {path}: {source}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// Why.
        source: rusqlite::Error,
    },
    /// The file is not a database or is damaged, or the key from the key store is not its key.
    #[error(
        "the database {path} cannot be read with the key from the key store ({detail}): the file is damaged, or the key store entry named in sotto.db.keyref is not this database's key; it has been left untouched: restore the right key or a backup"
    )]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        detail: String,
    },
    /// The database was written by a newer sottod.
    #[error(
        "the database {path} was written by a newer sottod (schema {found}, this one knows {known}); it has been left untouched: upgrade sottod"
    )]
    TooNew {
        /// The database file.
        path: PathBuf,
        /// The schema version in the file.
        found: i64,
        /// The newest this build knows.
        known: i64,
    },
    /// Stored data could not be decoded.
    #[error("stored data is invalid: {0}")]
    Decode(String),
    /// The writer thread is gone (the daemon is stopping).
    #[error("the database is closed")]
    Closed,
}

impl StoreError {
    /// The disk holding the database is full, or the file system went read-only
    /// (`SQLITE_FULL`, `SQLITE_READONLY`): the transaction was rolled back, nothing was
    /// written, and the same write can succeed once space returns.
    pub fn is_full(&self) -> bool {
        use rusqlite::ErrorCode::{DiskFull, ReadOnly};
        match self {
            StoreError::Sqlite(e) | StoreError::Open { source: e, .. } => {
                matches!(e.sqlite_error_code(), Some(DiskFull | ReadOnly))
            }
            _ => false,
        }
    }
}

/// What the writer thread runs, in queue order.
enum Job {
    /// A closure on the database, alone, outside any transaction of the writer's.
    Call(Box<dyn FnOnce(&mut Db) + Send>),
    /// A transaction body that may share one transaction with the writes queued beside it.
    Write(Box<dyn WriteJob>),
}

/// A queued write: its body runs inside a (possibly shared) transaction; its caller is
/// answered only once that transaction's fate is known.
trait WriteJob: Send {
    /// Runs the body; true when it succeeded (its changes are to be kept).
    fn run(&mut self, tx: &mut Tx<'_>) -> bool;
    /// Answers the caller: with the body's result, or with `commit_failed`.
    fn finish(self: Box<Self>, commit_failed: Option<StoreError>);
    /// Whether the body runs in a savepoint of its own when it shares a transaction.
    fn savepoint(&self) -> bool;
    /// The body's error, for the other writes of a transaction it doomed.
    fn error(&self) -> Option<StoreError>;
}

struct PendingWrite<T, F> {
    body: Option<F>,
    result: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
    savepoint: bool,
}

impl<T, F> WriteJob for PendingWrite<T, F>
where
    T: Send + 'static,
    F: FnOnce(&mut Tx<'_>) -> Result<T, StoreError> + Send + 'static,
{
    fn run(&mut self, tx: &mut Tx<'_>) -> bool {
        let Some(body) = self.body.take() else {
            return false;
        };
        let result = body(tx);
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn finish(self: Box<Self>, commit_failed: Option<StoreError>) {
        let answer = match (self.result, commit_failed) {
            (Some(Err(e)), _) => Err(e),
            (_, Some(e)) => Err(e),
            (Some(Ok(v)), None) => Ok(v),
            (None, None) => Err(StoreError::Closed),
        };
        let _ = self.reply.send(answer);
    }

    fn savepoint(&self) -> bool {
        self.savepoint
    }

    fn error(&self) -> Option<StoreError> {
        match &self.result {
            Some(Err(e)) => Some(replicate(e)),
            _ => None,
        }
    }
}

/// The same failure again, for every caller of a shared transaction that failed (SQLite
/// errors keep their code, so `storage_full` and friends still map the same way).
fn replicate(e: &StoreError) -> StoreError {
    match e {
        StoreError::Sqlite(rusqlite::Error::SqliteFailure(code, msg)) => {
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(*code, msg.clone()))
        }
        StoreError::Closed => StoreError::Closed,
        other => StoreError::Decode(other.to_string()),
    }
}

/// A handle to the writer thread. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    jobs: mpsc::Sender<Job>,
    last_seq: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// What the writer thread owns: the connection and the live event channel.
#[derive(Debug)]
pub struct Db {
    conn: Connection,
    cache: Cache,
    path: PathBuf,
    /// The SQLCipher key; `None` for the in-memory database of `--ephemeral`.
    key: Option<DbKey>,
    events: broadcast::Sender<Event>,
    event_retention: u64,
    last_seq: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Write transactions committed (a group commit counts once).
    commits: u64,
}

/// A write transaction (or one write's part of a shared one) that can emit events.
#[derive(Debug)]
pub struct Tx<'a> {
    conn: &'a Connection,
    emitted: Vec<Event>,
    event_retention: u64,
    /// Objects matching committed state.
    cache: &'a mut Cache,
    /// Objects kept by the earlier writes of this shared transaction (not committed yet).
    batch: &'a mut Cache,
    /// Objects kept by this write.
    kept: Cache,
}

impl Store {
    /// Opens (creating if needed) `path` encrypted under `key` (migrating a plain database
    /// first), applies pragmas and migrations, starts the writer.
    pub fn open(
        path: &Path,
        key: &DbKey,
        events: broadcast::Sender<Event>,
        event_retention: u64,
    ) -> Result<Store, StoreError> {
        cipher::migrate_if_plain(path, key)?;
        let sidecars = absent_sidecars(path);
        let opened = open_connection(path, key)
            .and_then(|conn| Store::start(conn, path, Some(key), events, event_retention));
        if opened.is_err() {
            // Every connection is closed by now.
            remove_new_sidecars(&sidecars);
        }
        opened
    }

    /// Opens a fresh database that lives only in this process's memory (`sottod
    /// --ephemeral`): SQLite's `memdb` VFS under a unique name, so every connection of this
    /// process shares it (`:memory:` would be private to one connection). No file, no
    /// journal, temporary tables in memory; it is gone when the writer thread drops it.
    pub fn open_ephemeral(
        events: broadcast::Sender<Event>,
        event_retention: u64,
    ) -> Result<Store, StoreError> {
        let name = format!(
            "file:/sotto-ephemeral-{}-{}?vfs=memdb",
            std::process::id(),
            hex::encode(rand::random::<[u8; 8]>())
        );
        let path = PathBuf::from(&name);
        let conn = Connection::open_with_flags(
            &name,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_URI
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| StoreError::Open {
            path: path.clone(),
            source,
        })?;
        let setup = || -> rusqlite::Result<()> {
            conn.pragma_update(None, "temp_store", "MEMORY")?;
            conn.pragma_update(None, "journal_mode", "MEMORY")?;
            conn.pragma_update(None, "secure_delete", "ON")?;
            conn.pragma_update(None, "foreign_keys", "ON")?;
            Ok(())
        };
        setup().map_err(|e| classify(&path, e))?;
        Store::start(conn, &path, None, events, event_retention)
    }

    /// Migrates the opened database and starts the writer thread.
    fn start(
        conn: Connection,
        path: &Path,
        key: Option<&DbKey>,
        events: broadcast::Sender<Event>,
        event_retention: u64,
    ) -> Result<Store, StoreError> {
        let mut db = Db {
            conn,
            cache: Cache::new(),
            path: path.to_owned(),
            key: key.cloned(),
            events,
            event_retention,
            last_seq: Default::default(),
            commits: 0,
        };
        db.prepare()?;
        let last_seq = db.last_seq.clone();
        let (jobs, rx) = mpsc::channel::<Job>();
        let writer = std::thread::Builder::new()
            .name("sottod-db".into())
            .spawn(move || writer_loop(db, rx))
            .map_err(|e| StoreError::Decode(format!("cannot start the database thread: {e}")))?;
        WRITERS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(writer);
        Ok(Store { jobs, last_seq })
    }

    /// The newest committed event's seq, without a trip to the writer thread.
    pub fn last_event_seq(&self) -> u64 {
        self.last_seq.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Runs `f` on the writer thread and returns its result.
    pub async fn call<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Db) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send(Job::Call(Box::new(move |db| {
                let _ = tx.send(f(db));
            })))
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs `f` in a write transaction on the writer thread (possibly shared with other
    /// writes queued at the same time: group commit) and returns its result once the
    /// transaction committed. An error from `f` rolls back `f`'s changes only.
    pub async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        self.submit_write(f)?.await
    }

    /// Queues `f` as [`Store::write`] does, at once (before the returned future is first
    /// polled): anything queued after this call runs after it. The future resolves once
    /// the transaction is durable.
    pub fn submit_write<T, F>(
        &self,
        f: F,
    ) -> Result<
        impl std::future::Future<Output = Result<T, StoreError>> + Send + use<T, F>,
        StoreError,
    >
    where
        T: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        self.queue_write(f, true)
    }

    /// Queues `f` as [`Store::submit_write`] does, but without a savepoint of its own in a
    /// shared transaction (module doc). `f` must return an error only before its first
    /// change (an `Ok` value may still carry a refusal): an error after it fails every
    /// write of the shared transaction.
    pub fn submit_write_atomic<T, F>(
        &self,
        f: F,
    ) -> Result<
        impl std::future::Future<Output = Result<T, StoreError>> + Send + use<T, F>,
        StoreError,
    >
    where
        T: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        self.queue_write(f, false)
    }

    fn queue_write<T, F>(
        &self,
        f: F,
        savepoint: bool,
    ) -> Result<
        impl std::future::Future<Output = Result<T, StoreError>> + Send + use<T, F>,
        StoreError,
    >
    where
        T: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        self.jobs
            .send(Job::Write(Box::new(PendingWrite {
                body: Some(f),
                result: None,
                reply,
                savepoint,
            })))
            .map_err(|_| StoreError::Closed)?;
        Ok(async move { rx.await.map_err(|_| StoreError::Closed)? })
    }
}

/// Every writer thread started in this process, joined by [`wait_for_writers`].
static WRITERS: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>> =
    std::sync::Mutex::new(Vec::new());

/// Waits (at most `limit`) until every database writer thread has finished: its last
/// `Store` handle is gone, its final checkpoint done and its connection closed. `sottod`
/// calls it after the async runtime is dropped and before the process exits: a writer
/// still checkpointing while the process exits races the exit handlers of the crypto
/// library SQLCipher uses (seen as SIGSEGV / "double free" right after "sottod stopped"
/// when an engine task still held a `Store` at shutdown). Returns whether all finished.
pub fn wait_for_writers(limit: Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    let mut writers = std::mem::take(&mut *WRITERS.lock().unwrap_or_else(|e| e.into_inner()));
    loop {
        writers.retain(|w| !w.is_finished());
        if writers.is_empty() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            tracing::warn!(
                threads = writers.len(),
                "database writer still running at exit"
            );
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn writer_loop(mut db: Db, rx: mpsc::Receiver<Job>) {
    let mut next: Option<Job> = None;
    loop {
        let job = match next.take() {
            Some(job) => job,
            None => match rx.recv_timeout(CHECKPOINT_EVERY) {
                Ok(job) => job,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Err(e) = db.checkpoint() {
                        tracing::warn!(cause = %e, "WAL checkpoint failed");
                    }
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            },
        };
        match job {
            Job::Call(f) => f(&mut db),
            Job::Write(first) => {
                // Group commit: every write already waiting joins this transaction, up to
                // the first job of another kind (it runs next, keeping the queue's order).
                let mut group = vec![first];
                while group.len() < GROUP_MAX {
                    match rx.try_recv() {
                        Ok(Job::Write(w)) => group.push(w),
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                db.write_group(group);
            }
        }
    }
    if let Err(e) = db.checkpoint() {
        tracing::warn!(cause = %e, "final WAL checkpoint failed");
    }
}

fn open_connection(path: &Path, key: &DbKey) -> Result<Connection, StoreError> {
    let sidecars = absent_sidecars(path);
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|source| StoreError::Open {
        path: path.to_owned(),
        source,
    })?;
    let setup = || -> rusqlite::Result<()> {
        // Until the file has passed its checks, closing must not checkpoint: SQLite would
        // copy the WAL into a database it is about to refuse and delete the WAL (found by
        // the faults suite: a refused start changed the damaged file).
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)?;
        // The key first: every page, the WAL's included, is read and written through it.
        cipher::key(&conn, key)?;
        // A wrong key and a damaged file both fail here with NotADatabase.
        conn.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "secure_delete", "ON")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // Every page read from the file is decrypted (SQLCipher): a page cache larger
        // than the default 2 MiB keeps a busy conversation's outbox, indexes and MLS
        // state decrypted in memory (issue 12).
        conn.pragma_update(None, "cache_size", -CACHE_KIB)?;
        // The hot statements of the send and receive paths are prepared once (the default
        // cache of 16 was smaller than one message's distinct statements).
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        let ok: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
        if ok != "ok" {
            return Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
                Some(ok),
            ));
        }
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, false)?;
        Ok(())
    };
    if let Err(e) = setup() {
        drop(conn);
        remove_new_sidecars(&sidecars);
        return Err(classify(path, e));
    }
    Ok(conn)
}

/// The WAL and shared-memory files beside `path` that do not exist yet.
fn absent_sidecars(path: &Path) -> Vec<PathBuf> {
    ["-wal", "-shm"]
        .iter()
        .map(|suffix| {
            let mut s = path.as_os_str().to_owned();
            s.push(suffix);
            PathBuf::from(s)
        })
        .filter(|p| !p.exists())
        .collect()
}

/// Removes the empty WAL and the shared memory a refused open created (`created` did not
/// exist before it), so a damaged database is left exactly as it was found (found by the
/// faults suite: a refused start used to leave new `-wal`/`-shm` files beside it).
fn remove_new_sidecars(created: &[PathBuf]) {
    for p in created {
        let is_wal = p.to_string_lossy().ends_with("-wal");
        if is_wal && std::fs::metadata(p).is_ok_and(|m| m.len() > 0) {
            continue;
        }
        if let Err(e) = std::fs::remove_file(p)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %p.display(), cause = %e, "cannot remove");
        }
    }
}

/// Runs a parameterless statement from the connection's statement cache (a transaction's
/// BEGIN, COMMIT and savepoints are not parsed again for every write).
fn run(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

fn classify(path: &Path, e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode::{DatabaseCorrupt, NotADatabase};
    match e.sqlite_error_code() {
        Some(DatabaseCorrupt | NotADatabase) => StoreError::Corrupt {
            path: path.to_owned(),
            detail: e.to_string(),
        },
        _ => StoreError::Open {
            path: path.to_owned(),
            source: e,
        },
    }
}

impl Db {
    /// Applies migrations (ours and openmls's) and loads the newest event seq.
    fn prepare(&mut self) -> Result<(), StoreError> {
        migrations::apply(&mut self.conn).map_err(|e| classify(&self.path, e))?;
        migrations::check_version(&self.conn, &self.path)?;
        crate::mls::run_migrations(&mut self.conn).map_err(StoreError::Decode)?;
        self.last_seq
            .store(self.last_event_seq()?, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// The connection, for reads.
    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Runs `f` in an IMMEDIATE transaction; on success commits, then broadcasts the
    /// events `f` emitted. On error nothing is committed and nothing is broadcast.
    pub fn write<T>(
        &mut self,
        f: impl FnOnce(&mut Tx<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        run(&self.conn, "BEGIN IMMEDIATE")?;
        let mut batch = Cache::new();
        let mut tx = Tx {
            conn: &self.conn,
            emitted: Vec::new(),
            event_retention: self.event_retention,
            cache: &mut self.cache,
            batch: &mut batch,
            kept: Cache::new(),
        };
        let value = f(&mut tx);
        let Tx { emitted, kept, .. } = tx;
        let value = match value {
            Ok(v) => v,
            Err(e) => {
                self.abort();
                return Err(e);
            }
        };
        if let Err(e) = run(&self.conn, "COMMIT") {
            self.abort();
            return Err(e.into());
        }
        self.committed(kept, emitted);
        Ok(value)
    }

    /// Runs queued writes in one transaction, each in its own savepoint when there are
    /// several, commits once, then answers every caller (module doc: group commit).
    fn write_group(&mut self, mut group: Vec<Box<dyn WriteJob>>) {
        let shared = group.len() > 1;
        let fail_all = |db: &mut Db, group: Vec<Box<dyn WriteJob>>, e: StoreError| {
            db.abort();
            for job in group {
                job.finish(Some(replicate(&e)));
            }
        };
        if let Err(e) = run(&self.conn, "BEGIN IMMEDIATE") {
            return fail_all(self, group, e.into());
        }
        let mut batch = Cache::new();
        let mut emitted_all = Vec::new();
        let mut failed_one = false;
        for i in 0..group.len() {
            let savepoint = shared && group[i].savepoint();
            let changes_before = self.conn.total_changes();
            if savepoint && let Err(e) = run(&self.conn, "SAVEPOINT sotto_write") {
                return fail_all(self, group, e.into());
            }
            let job = &mut group[i];
            let mut tx = Tx {
                conn: &self.conn,
                emitted: Vec::new(),
                event_retention: self.event_retention,
                cache: &mut self.cache,
                batch: &mut batch,
                kept: Cache::new(),
            };
            let ok = job.run(&mut tx);
            let Tx { emitted, kept, .. } = tx;
            if self.conn.is_autocommit() {
                // SQLite rolled the whole transaction back by itself (it may, on a full
                // disk, an I/O error or out of memory): nothing before this write remains,
                // and the writes after it would commit statement by statement. All of them
                // fail; none is half stored.
                let e = group[i].error().unwrap_or_else(|| {
                    StoreError::Decode("the shared transaction was rolled back".into())
                });
                return fail_all(self, group, e);
            }
            if ok {
                if savepoint && let Err(e) = run(&self.conn, "RELEASE sotto_write") {
                    return fail_all(self, group, e.into());
                }
                batch.extend(kept);
                emitted_all.extend(emitted);
            } else if shared && !savepoint {
                if self.conn.total_changes() != changes_before {
                    // An atomic write failed after changing rows: the transaction holds
                    // half of it, so all of it goes, and every write in it fails.
                    let e = job
                        .error()
                        .unwrap_or_else(|| StoreError::Decode("a shared write failed".into()));
                    self.abort();
                    for (j, job) in group.into_iter().enumerate() {
                        job.finish((j != i).then(|| replicate(&e)));
                    }
                    return;
                }
                // It failed before changing anything: nothing to undo.
                failed_one = true;
            } else if shared {
                // This write alone rolls back; what it kept is dropped with it, and so is
                // every object in memory (as after any failed transaction).
                if let Err(e) = self
                    .conn
                    .execute_batch("ROLLBACK TO sotto_write; RELEASE sotto_write")
                {
                    return fail_all(self, group, e.into());
                }
                failed_one = true;
            } else {
                self.abort();
                for job in group {
                    job.finish(None);
                }
                return;
            }
        }
        if failed_one {
            self.cache.clear();
            batch.clear();
        }
        if let Err(e) = run(&self.conn, "COMMIT") {
            return fail_all(self, group, e.into());
        }
        self.committed(batch, emitted_all);
        for job in group {
            job.finish(None);
        }
    }

    /// After a failed write: rolls back whatever is still open and forgets every object in
    /// memory, so the next transactions load fresh state from the database.
    fn abort(&mut self) {
        if !self.conn.is_autocommit()
            && let Err(e) = self.conn.execute_batch("ROLLBACK")
        {
            tracing::warn!(cause = %e, "ROLLBACK failed");
        }
        self.cache.clear();
    }

    /// Write transactions committed so far (a group commit counts once).
    pub fn commits(&self) -> u64 {
        self.commits
    }

    /// After COMMIT: keeps what the transaction kept and broadcasts its events.
    fn committed(&mut self, kept: Cache, emitted: Vec<Event>) {
        self.commits += 1;
        let cache = &mut self.cache;
        if cache.len() + kept.len() > CACHE_CAPACITY {
            let excess = cache.len() + kept.len() - CACHE_CAPACITY;
            let victims: Vec<String> = cache.keys().take(excess).cloned().collect();
            for k in victims {
                cache.remove(&k);
            }
        }
        cache.extend(kept);
        if let Some(last) = emitted.last() {
            self.last_seq
                .fetch_max(last.seq, std::sync::atomic::Ordering::Relaxed);
        }
        for event in emitted {
            // No receiver is fine: events are persisted and replayable.
            let _ = self.events.send(event);
        }
    }

    /// Truncates the WAL so deleted pages (old secrets) leave the disk.
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }
}

impl Tx<'_> {
    /// The transaction's connection.
    pub fn conn(&self) -> &Connection {
        self.conn
    }

    /// Runs `f` in a savepoint of its own, released when `keep` says so of its result and
    /// rolled back otherwise (an error always rolls back). A rollback also forgets what `f`
    /// left in memory: the events it emitted (their rows are gone and their seqs will be
    /// given again, so broadcasting them would show clients an event that never was) and
    /// every object this write kept (it may describe rolled-back state; forgetting it costs
    /// only a reload).
    pub fn savepoint<T>(
        &mut self,
        f: impl FnOnce(&mut Tx<'_>) -> Result<T, StoreError>,
        keep: impl FnOnce(&T) -> bool,
    ) -> Result<T, StoreError> {
        self.conn.execute_batch("SAVEPOINT sotto_scope")?;
        let emitted = self.emitted.len();
        let result = f(self);
        if matches!(&result, Ok(value) if keep(value)) {
            self.conn.execute_batch("RELEASE sotto_scope")?;
            return result;
        }
        self.conn
            .execute_batch("ROLLBACK TO sotto_scope; RELEASE sotto_scope")?;
        self.emitted.truncate(emitted);
        for key in self.kept.keys() {
            self.batch.remove(key);
            self.cache.remove(key);
        }
        self.kept.clear();
        result
    }

    /// Takes the object kept under `key` by an earlier [`Tx::keep`] (of this transaction,
    /// or of a committed one), if it is there and a `T`. Until it is kept again, it is
    /// gone from the cache: a rollback cannot leave a changed copy behind.
    pub fn take_kept<T: Any + Send>(&mut self, key: &str) -> Option<T> {
        let boxed = self
            .kept
            .remove(key)
            .or_else(|| self.batch.remove(key))
            .or_else(|| self.cache.remove(key))?;
        boxed.downcast::<T>().ok().map(|b| *b)
    }

    /// Keeps `value` under `key` for later transactions — only if this one commits.
    /// The caller keeps only state that matches what this transaction wrote.
    pub fn keep<T: Any + Send>(&mut self, key: &str, value: T) {
        self.kept.insert(key.to_owned(), Box::new(value));
    }

    /// Forgets whatever is kept under `key` (now and in the cache).
    pub fn forget_kept(&mut self, key: &str) {
        self.kept.remove(key);
        self.batch.remove(key);
        self.cache.remove(key);
    }

    /// Persists an event in this transaction; it is broadcast after COMMIT.
    pub fn emit(&mut self, payload: EventPayload) -> Result<Event, StoreError> {
        let event = events::append(self.conn, payload, self.event_retention)?;
        self.emitted.push(event.clone());
        Ok(event)
    }
}

#[cfg(test)]
mod tests;
