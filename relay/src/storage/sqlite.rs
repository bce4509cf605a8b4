//! The SQLite implementation of [`Store`]: one writer thread that batches every queued
//! write into one transaction (one fsync for the batch, each write acknowledged only
//! after COMMIT), plus a small pool of reader connections (WAL lets them run beside the
//! writer).

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use rusqlite::Connection;
use sotto_protocol::relay::{
    ClaimedKeyPackage, GroupState, KeyPackageCount, MailboxEntry, Principal,
};
use tokio::sync::{broadcast, oneshot};

use super::{
    AppendOutcome, Change, CreateOutcome, NewGroupEntry, NewKeyPackage, NewMailboxPost,
    ReadOutcome, RegisterOutcome, Store, StoreError, schema, sql_directory as dir,
    sql_groups as grp,
};

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
    changes: broadcast::Sender<Change>,
    durability: &'static str,
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

    async fn write<T, F>(&self, context: &'static str, f: F) -> Result<T, StoreError>
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
        self.writer.send(job).map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn read<T, F>(&self, context: &'static str, f: F) -> Result<T, StoreError>
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

fn writer_loop(conn: &Connection, rx: &mpsc::Receiver<Job>, notify: &broadcast::Sender<Change>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            tracing::error!(cause = %e, "cannot begin write transaction");
            continue; // dropping the jobs fails their callers with `Closed`
        }
        let mut outs = Vec::with_capacity(batch.len());
        for job in batch {
            let sp = conn.execute_batch("SAVEPOINT job").is_ok();
            let out = job(conn);
            if sp {
                let end = if out.keep {
                    "RELEASE job"
                } else {
                    "ROLLBACK TO job; RELEASE job"
                };
                if let Err(e) = conn.execute_batch(end) {
                    tracing::error!(cause = %e, "savepoint end failed");
                }
            }
            outs.push(out);
        }
        let committed = match conn.execute_batch("COMMIT") {
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

impl Store for SqliteStore {
    async fn register(
        &self,
        name: String,
        device_id: String,
        key: Principal,
        now: u64,
    ) -> Result<RegisterOutcome, StoreError> {
        self.write("register", move |c, _| {
            dir::register(c, &name, &device_id, &key, now)
        })
        .await
    }

    async fn device_key(
        &self,
        name: String,
        device_id: String,
    ) -> Result<Option<Principal>, StoreError> {
        self.read("device key", move |c| dir::device_key(c, &name, &device_id))
            .await
    }

    async fn devices(&self, name: String) -> Result<Vec<(String, Principal)>, StoreError> {
        self.read("devices", move |c| dir::devices(c, &name)).await
    }

    async fn publish_key_packages(
        &self,
        device: Principal,
        ciphersuite: u16,
        pool: Vec<NewKeyPackage>,
        last_resort: Option<NewKeyPackage>,
        now: u64,
    ) -> Result<KeyPackageCount, StoreError> {
        self.write("publish key packages", move |c, _| {
            dir::publish(c, &device, ciphersuite, &pool, last_resort.as_ref())?;
            dir::count(c, &device, ciphersuite, now)
        })
        .await
    }

    async fn count_key_packages(
        &self,
        device: Principal,
        ciphersuite: u16,
        now: u64,
    ) -> Result<KeyPackageCount, StoreError> {
        self.read("count key packages", move |c| {
            dir::count(c, &device, ciphersuite, now)
        })
        .await
    }

    async fn claim_key_package(
        &self,
        device: Principal,
        ciphersuite: u16,
        now: u64,
    ) -> Result<Option<ClaimedKeyPackage>, StoreError> {
        self.write("claim key package", move |c, _| {
            dir::claim(c, &device, ciphersuite, now)
        })
        .await
    }

    async fn post_mailbox(&self, post: NewMailboxPost) -> Result<Vec<u64>, StoreError> {
        self.write("post mailbox", move |c, changes| {
            dir::post_mailbox(c, &post, changes)
        })
        .await
    }

    async fn read_mailbox(
        &self,
        device: Principal,
        after: u64,
        limit: u32,
    ) -> Result<Vec<MailboxEntry>, StoreError> {
        self.read("read mailbox", move |c| {
            dir::read_mailbox(c, &device, after, limit)
        })
        .await
    }

    async fn ack_mailbox(&self, device: Principal, up_to: u64) -> Result<(), StoreError> {
        self.write("ack mailbox", move |c, _| {
            dir::ack_mailbox(c, &device, up_to)
        })
        .await
    }

    async fn create_group(
        &self,
        group_id: Vec<u8>,
        creator: Principal,
        now: u64,
    ) -> Result<CreateOutcome, StoreError> {
        self.write("create group", move |c, _| {
            grp::create(c, &group_id, &creator, now)
        })
        .await
    }

    async fn append_group(&self, entry: NewGroupEntry) -> Result<AppendOutcome, StoreError> {
        self.write("append group entry", move |c, changes| {
            grp::append(c, &entry, changes)
        })
        .await
    }

    async fn read_group(
        &self,
        group_id: Vec<u8>,
        reader: Principal,
        after: u64,
        limit: u32,
    ) -> Result<ReadOutcome, StoreError> {
        self.read("read group", move |c| {
            grp::read(c, &group_id, &reader, after, limit)
        })
        .await
    }

    async fn ack_group(
        &self,
        group_id: Vec<u8>,
        member: Principal,
        seq: u64,
    ) -> Result<(), StoreError> {
        self.write("ack group", move |c, _| {
            grp::ack(c, &group_id, &member, seq)
        })
        .await
    }

    async fn group_state(&self, group_id: Vec<u8>) -> Result<Option<GroupState>, StoreError> {
        self.read("group state", move |c| grp::state(c, &group_id))
            .await
    }

    async fn prune(&self, now: u64, max_age_secs: u64) -> Result<u64, StoreError> {
        self.write("prune", move |c, _| {
            let cutoff = now.saturating_sub(max_age_secs);
            Ok(grp::prune(c, cutoff)? + dir::prune(c, now, cutoff)?)
        })
        .await
    }

    fn changes(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    fn durability(&self) -> &str {
        self.durability
    }
}
