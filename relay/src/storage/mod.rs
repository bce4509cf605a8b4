//! The relay's storage: a trait the protocol handlers use, and its SQLite implementation.
//!
//! The trait is shaped so that a PostgreSQL implementation can keep every guarantee
//! across several relay processes: each method is one transaction; the group append is
//! a conditional update (`UPDATE groups SET epoch = .., head = head + 1 WHERE id = ? AND
//! epoch = ?` must touch exactly one row) in the same transaction as the insert and the
//! access-list delta; key-package claims delete exactly one row; and [`Store::changes`]
//! is a wake-up stream only (LISTEN/NOTIFY there, an in-process channel here) — the
//! tables stay the truth, so a lagging listener just reads again.
//!
//! [`PgStore`] (module `postgres`) is that implementation, for several relay processes
//! on one PostgreSQL database.

pub mod postgres;
#[cfg(test)]
mod proptests;
mod schema;
mod sql_directory;
mod sql_groups;
mod sqlite;
mod sqlite_store;

use std::future::Future;

use sotto_protocol::relay::{
    ClaimedKeyPackage, GroupEntry, GroupState, InstallId, KeyPackageCount, MailboxEntry, PostId,
    Principal,
};
use tokio::sync::broadcast;

pub use postgres::{PgStore, PgUrl};
pub use sqlite::SqliteStore;

/// A storage failure (not a protocol-level refusal: those are outcomes).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite reported an error.
    #[error("sqlite error during {context}")]
    Sqlite {
        /// What was being done.
        context: &'static str,
        /// The cause.
        #[source]
        source: rusqlite::Error,
    },
    /// The batch transaction holding this write failed to commit.
    #[error("commit failed: {message}")]
    Commit {
        /// SQLite's message.
        message: String,
    },
    /// The database is unreachable, timed out or lost a race; the request may be retried.
    #[error("database unavailable during {context}: {reason}")]
    Unavailable {
        /// What was being done.
        context: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// PostgreSQL refused a statement.
    #[error("postgres error during {context}: {reason}")]
    Postgres {
        /// What was being done.
        context: &'static str,
        /// PostgreSQL's message and SQLSTATE.
        reason: String,
    },
    /// The database cannot be used by this relay (bad URL, schema too new, ...).
    #[error("{0}")]
    Setup(String),
    /// The storage worker has stopped.
    #[error("storage worker stopped")]
    Closed,
    /// Opening the database failed.
    #[error("cannot open database {path}")]
    Open {
        /// The database path.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: rusqlite::Error,
    },
}

/// A wake-up for listeners: something was appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A device's mailbox got entries.
    Mailbox {
        /// The device key.
        device: Principal,
    },
    /// A group log got an entry.
    Group {
        /// The group id.
        group_id: Vec<u8>,
        /// The new head seq.
        head: u64,
    },
    /// Wake-ups may have been missed (e.g. the cross-process listener reconnected):
    /// every watcher reads again from its cursor.
    Everything,
    /// Another install took a device over: its other installs' connections check the
    /// active install (in the store) and close.
    Revoked {
        /// The device key.
        device: Principal,
    },
}

/// The result of presenting an install id for a registered device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstallOutcome {
    /// This is the device's active install (now recorded, if none was).
    Active,
    /// This install took the device over (it was not the active one, or none was
    /// recorded): every other install is revoked, the device's key packages are gone.
    TookOver {
        /// The install that was active before, if any.
        previous: Option<InstallId>,
    },
    /// Another install is the active one: this one is revoked.
    Revoked,
}

/// The result of a registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterOutcome {
    /// Newly registered.
    Registered,
    /// Already registered with this key and device.
    AlreadyRegistered,
    /// The name (or the device key) belongs to someone else.
    NameTaken,
    /// The invitation's uses are all taken; nothing was registered.
    InviteUsedUp,
}

/// One use of an invitation, counted with a registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InviteUse {
    /// The invitation's nonce (its identity).
    pub nonce: [u8; 16],
    /// How many registrations it allows in all.
    pub max_uses: u32,
}

/// A key package ready to store.
#[derive(Debug, Clone)]
pub struct NewKeyPackage {
    /// TLS bytes.
    pub data: Vec<u8>,
    /// Lifetime start, Unix seconds.
    pub not_before: u64,
    /// Lifetime end, Unix seconds.
    pub not_after: u64,
}

/// A mailbox post.
#[derive(Debug, Clone)]
pub struct NewMailboxPost {
    /// The sender principal.
    pub sender: Principal,
    /// The sender's claimed address.
    pub sender_address: String,
    /// Idempotency key.
    pub post_id: PostId,
    /// The recipients on this relay as `(name, device_id)`; resolved in the transaction.
    pub recipients: Vec<(String, String)>,
    /// The payload.
    pub payload: Vec<u8>,
    /// Now, Unix seconds.
    pub now: u64,
}

/// The outcome of a mailbox post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailboxOutcome {
    /// Stored (or found stored under the same post id): each recipient's mailbox seq.
    Posted(Vec<u64>),
    /// The recipient at this index is not registered; nothing was stored.
    UnknownRecipient(usize),
}

/// A group-log append.
#[derive(Debug, Clone)]
pub struct NewGroupEntry {
    /// The group id (from the MLS framing).
    pub group_id: Vec<u8>,
    /// The posting principal.
    pub sender: Principal,
    /// Idempotency key.
    pub post_id: PostId,
    /// The message's epoch (from the MLS framing).
    pub epoch: u64,
    /// The content type (from the MLS framing).
    pub content_type: u8,
    /// The message bytes.
    pub message: Vec<u8>,
    /// Access-list additions (commits only).
    pub added: Vec<Principal>,
    /// Access-list removals (commits only).
    pub removed: Vec<Principal>,
    /// The new epoch's GroupInfo (commits only): when the entry is stored, it replaces the
    /// group's stored GroupInfo in the same transaction.
    pub group_info: Option<Vec<u8>>,
    /// The order precondition (`PostGroupAfter`): stored only if the sender's post with
    /// this id is already in the group's log (checked after the idempotency lookup, so a
    /// retry of a stored post answers its original result, and before the epoch rule).
    pub after: Option<PostId>,
    /// Now, Unix seconds.
    pub now: u64,
}

/// The outcome of asking for a group's GroupInfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupInfoOutcome {
    /// The latest stored GroupInfo.
    Found {
        /// The epoch it describes.
        epoch: u64,
        /// The seq of the commit it came with.
        seq: u64,
        /// The `MlsMessage` bytes.
        data: Vec<u8>,
    },
    /// The group exists but no commit has carried a GroupInfo yet.
    None,
    /// The reader is not a current member.
    NotMember,
    /// No such group.
    UnknownGroup,
}

/// The outcome of a group append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendOutcome {
    /// Stored (or found stored under the same post id).
    Accepted {
        /// The entry's seq.
        seq: u64,
        /// The group's epoch after it.
        epoch: u64,
    },
    /// The epoch did not match.
    Conflict {
        /// The current epoch.
        current_epoch: u64,
        /// The head seq.
        head_seq: u64,
    },
    /// The sender is not a current member.
    NotMember,
    /// No such group.
    UnknownGroup,
    /// The entry's order precondition ([`NewGroupEntry::after`]) does not hold: the
    /// sender's post it names is not in the group's log. Nothing was stored.
    OutOfOrder,
}

/// The outcome of creating a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateOutcome {
    /// Created, or it already existed with the caller as a current member.
    Ok(GroupState),
    /// It exists and the caller is not a member.
    Exists,
}

/// The outcome of a group read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadOutcome {
    /// Entries the caller may read.
    Entries {
        /// In seq order.
        entries: Vec<GroupEntry>,
        /// The caller's removal commit, if removed.
        removed_at: Option<u64>,
        /// The log's head.
        head_seq: u64,
    },
    /// Retention dropped entries after the cursor.
    Gap {
        /// The oldest retained seq.
        oldest_seq: u64,
    },
    /// Never a member (or removed and re-read is not allowed).
    NotMember,
    /// No such group.
    UnknownGroup,
}

/// The storage operations of the relay. Every method is atomic and durable when its
/// future resolves `Ok` (durable before any acknowledgement reaches a client).
///
/// [`Store::append_group`] and [`Store::post_mailbox`] take their place in the commit
/// order when they are *called*, not when their future is first polled: a connection that
/// starts two posts in a row gets them stored in that order even while both are pending.
pub trait Store: Send + Sync + 'static {
    /// Registers `name` for a device key.
    fn register(
        &self,
        name: String,
        device_id: String,
        key: Principal,
        now: u64,
    ) -> impl Future<Output = Result<RegisterOutcome, StoreError>> + Send;

    /// Registers like [`Store::register`] and, in the same transaction, counts one use of
    /// `invite`: [`RegisterOutcome::InviteUsedUp`] (and nothing stored) when its uses are
    /// all taken. Re-registering a device already registered with this key uses nothing.
    fn register_invited(
        &self,
        name: String,
        device_id: String,
        key: Principal,
        now: u64,
        invite: InviteUse,
    ) -> impl Future<Output = Result<RegisterOutcome, StoreError>> + Send;

    /// The key of a registered device.
    fn device_key(
        &self,
        name: String,
        device_id: String,
    ) -> impl Future<Output = Result<Option<Principal>, StoreError>> + Send;

    /// Presents `install` for the registered device `key`, in one transaction: when no
    /// install is recorded it becomes the active one; with `take_over` it replaces the
    /// active one, the device's key packages (whose secrets the other install may hold)
    /// are deleted and [`Change::Revoked`] is announced after COMMIT (across processes).
    fn claim_install(
        &self,
        key: Principal,
        install: InstallId,
        take_over: bool,
        now: u64,
    ) -> impl Future<Output = Result<InstallOutcome, StoreError>> + Send;

    /// The active install of a device, if one is recorded.
    fn active_install(
        &self,
        key: Principal,
    ) -> impl Future<Output = Result<Option<InstallId>, StoreError>> + Send;

    /// Every device of an account (empty if unknown).
    fn devices(
        &self,
        name: String,
    ) -> impl Future<Output = Result<Vec<(String, Principal)>, StoreError>> + Send;

    /// Adds single-use packages and replaces the last-resort one, then counts.
    fn publish_key_packages(
        &self,
        device: Principal,
        ciphersuite: u16,
        pool: Vec<NewKeyPackage>,
        last_resort: Option<NewKeyPackage>,
        now: u64,
    ) -> impl Future<Output = Result<KeyPackageCount, StoreError>> + Send;

    /// Counts valid packages.
    fn count_key_packages(
        &self,
        device: Principal,
        ciphersuite: u16,
        now: u64,
    ) -> impl Future<Output = Result<KeyPackageCount, StoreError>> + Send;

    /// Removes and returns one valid single-use package, else returns the valid
    /// last-resort one; each single-use package is returned at most once.
    fn claim_key_package(
        &self,
        device: Principal,
        ciphersuite: u16,
        now: u64,
    ) -> impl Future<Output = Result<Option<ClaimedKeyPackage>, StoreError>> + Send;

    /// Stores a payload once and references it from each recipient's mailbox; a repeated
    /// post id from the same sender returns the original seqs.
    fn post_mailbox(
        &self,
        post: NewMailboxPost,
    ) -> impl Future<Output = Result<MailboxOutcome, StoreError>> + Send + use<Self>;

    /// Mailbox entries with `seq > after`.
    fn read_mailbox(
        &self,
        device: Principal,
        after: u64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<MailboxEntry>, StoreError>> + Send;

    /// Deletes mailbox entries with `seq <= up_to`.
    fn ack_mailbox(
        &self,
        device: Principal,
        up_to: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Creates a group log at epoch 0 with `creator` as its only member.
    fn create_group(
        &self,
        group_id: Vec<u8>,
        creator: Principal,
        now: u64,
    ) -> impl Future<Output = Result<CreateOutcome, StoreError>> + Send;

    /// Appends under the epoch rule: the conditional update, the insert, the access-list
    /// delta and the idempotency record in one transaction.
    fn append_group(
        &self,
        entry: NewGroupEntry,
    ) -> impl Future<Output = Result<AppendOutcome, StoreError>> + Send + use<Self>;

    /// Reads entries with `seq > after` that `reader` may see.
    fn read_group(
        &self,
        group_id: Vec<u8>,
        reader: Principal,
        after: u64,
        limit: u32,
    ) -> impl Future<Output = Result<ReadOutcome, StoreError>> + Send;

    /// Records a member's read cursor for retention.
    fn ack_group(
        &self,
        group_id: Vec<u8>,
        member: Principal,
        seq: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The groups whose access list holds `member` as a current member (not removed), by
    /// group id, at most `limit`.
    fn member_groups(
        &self,
        member: Principal,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<GroupState>, StoreError>> + Send;

    /// The group's latest GroupInfo, for a current member (on the access list, not
    /// removed) only.
    fn group_info(
        &self,
        group_id: Vec<u8>,
        reader: Principal,
    ) -> impl Future<Output = Result<GroupInfoOutcome, StoreError>> + Send;

    /// The group's state, if it exists.
    fn group_state(
        &self,
        group_id: Vec<u8>,
    ) -> impl Future<Output = Result<Option<GroupState>, StoreError>> + Send;

    /// Drops what retention allows: group entries every member has acknowledged, anything
    /// older than `max_age_secs`, expired key packages, old idempotency records.
    fn prune(
        &self,
        now: u64,
        max_age_secs: u64,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// The wake-up stream.
    fn changes(&self) -> broadcast::Receiver<Change>;

    /// A description of the durability setting, e.g. `"full"`.
    fn durability(&self) -> &str;

    /// Whether the database answers (drives `/healthz`). Never blocks.
    fn healthy(&self) -> bool {
        true
    }

    /// Appends backend metrics (Prometheus text) to `out`.
    fn render_metrics(&self, out: &mut String) {
        let _ = out;
    }

    /// Takes one token from the shared bucket `bucket`/`key` (`per_min` tokens a minute,
    /// a burst of `per_min`), for limits that must hold across relay processes on one
    /// database. `Ok(None)`: this backend has no shared state (one process owns the
    /// database), so the caller uses its in-process bucket. `Ok(Some(Err(wait)))`: refused,
    /// retry after `wait`.
    fn take_shared_token(
        &self,
        bucket: &'static str,
        key: Principal,
        per_min: f64,
    ) -> impl Future<Output = Result<Option<Result<(), std::time::Duration>>, StoreError>> + Send
    {
        let _ = (bucket, key, per_min);
        std::future::ready(Ok(None))
    }
}
