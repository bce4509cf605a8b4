//! The SQLite implementation of [`Store`]: one writer thread that batches every queued
//! write into one transaction (one fsync for the batch, each write acknowledged only
//! after COMMIT), plus a small pool of reader connections (WAL lets them run beside the
//! writer).

use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use rusqlite::Connection;
use tokio::sync::{broadcast, oneshot};

use super::{Change, StoreError, schema};

/// The most writes folded into one transaction.
const MAX_BATCH: usize = 1024;
const READERS: usize = 2;

type Done = Box<dyn FnOnce(Result<(), String>) + Send>;
type Job = Box<dyn FnOnce(&Connection) -> JobOut + Send>;

struct JobOut {
    keep: bool,
    changes: Vec<Change>,
    done: Done,
}

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

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and starts the writer thread.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let writer_conn = open(path)?;
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
        std::thread::Builder::new()
            .name("sotto-relay-writer".into())
            .spawn(move || writer_loop(&writer_conn, &rx, &notify))
            .map_err(|e| StoreError::Commit {
                message: format!("cannot start writer thread: {e}"),
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
    /// returns a future that resolves after COMMIT.
    pub(super) fn write<T, F>(
        &self,
        context: &'static str,
        f: F,
    ) -> impl Future<Output = Result<T, StoreError>> + Send + use<T, F>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &mut Vec<Change>) -> rusqlite::Result<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<Result<T, StoreError>>();
        let job: Job = Box::new(move |conn| {
            let mut changes = Vec::new();
            match f(conn, &mut changes) {
                Ok(value) => JobOut {
                    keep: true,
                    changes,
                    done: Box::new(move |committed| {
                        let _ = tx.send(
                            committed
                                .map(|()| value)
                                .map_err(|message| StoreError::Commit { message }),
                        );
                    }),
                },
                Err(source) => JobOut {
                    keep: false,
                    changes: Vec::new(),
                    done: Box::new(move |_| {
                        let _ = tx.send(Err(StoreError::Sqlite { context, source }));
                    }),
                },
            }
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

fn writer_loop(conn: &Connection, rx: &mpsc::Receiver<Job>, notify: &broadcast::Sender<Change>) {
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
        let mut outs = Vec::with_capacity(batch.len());
        for job in batch {
            let sp = run(conn, "SAVEPOINT job").is_ok();
            let out = job(conn);
            if sp {
                let end = if out.keep {
                    run(conn, "RELEASE job")
                } else {
                    run(conn, "ROLLBACK TO job").and_then(|()| run(conn, "RELEASE job"))
                };
                if let Err(e) = end {
                    tracing::error!(cause = %e, "savepoint end failed");
                }
            }
            outs.push(out);
        }
        let committed = match run(conn, "COMMIT") {
            Ok(()) => Ok(()),
            Err(e) => {
                tracing::error!(cause = %e, "batch commit failed");
                let _ = conn.execute_batch("ROLLBACK");
                Err(e.to_string())
            }
        };
        for out in outs {
            if committed.is_ok() && out.keep {
                for change in out.changes {
                    let _ = notify.send(change);
                }
            }
            (out.done)(committed.clone());
        }
    }
}
