//! This install's standing with its home relay, kept in the `meta` table: its install id
//! (`install_id`, 32 hex digits), a pending take-over after a restore (`take_over`), and
//! the revocation once another install took the account over (`revoked`, the relay's
//! explanation). The revocation is never undone on this data directory.

use rusqlite::{Connection, OptionalExtension as _, params};
use sotto_protocol::api::EventPayload;
use sotto_protocol::relay::InstallId;

use crate::store::{StoreError, Tx};

/// The `meta` keys.
const INSTALL_ID: &str = "install_id";
const TAKE_OVER: &str = "take_over";
const REVOKED: &str = "revoked";

/// What the engine needs to speak for this install.
#[derive(Debug, Clone)]
pub struct Standing {
    /// The install id.
    pub install_id: InstallId,
    /// The next home registration takes the account over.
    pub take_over: bool,
    /// Revoked, with the reason.
    pub revoked: Option<String>,
}

fn get(conn: &Connection, key: &str) -> Result<Option<String>, StoreError> {
    Ok(conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()?)
}

fn set(conn: &Connection, key: &str, value: &str) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )?;
    Ok(())
}

/// A fresh random install id, as stored.
pub fn new_install_id() -> String {
    hex::encode(rand::random::<InstallId>())
}

/// Records `install_id` for a new account (`account.create`).
pub fn record_new(conn: &Connection, install_id: &str) -> Result<(), StoreError> {
    set(conn, INSTALL_ID, install_id)
}

/// Records a restore: a fresh install id that takes the account over at its first
/// registration; a revocation the backed-up install had is not this install's.
pub fn record_restore(conn: &Connection, install_id: &str) -> Result<(), StoreError> {
    set(conn, INSTALL_ID, install_id)?;
    set(conn, TAKE_OVER, "1")?;
    // Once running, the engine looks for groups the backup does not know (engine::resync).
    set(conn, "discover_groups", "1")?;
    conn.execute("DELETE FROM meta WHERE key = ?1", [REVOKED])?;
    Ok(())
}

/// After a restore, queues a key update (`rotate_keys`, a commit with an update path) at
/// the front of every active conversation's outbox, so the restored install's first post
/// in each is a commit that replaces every secret the backup file holds
/// (post-compromise security: the file may leak later). What the old install had prepared
/// is prepared again after it, in the new epoch (message envelopes keep their ids, so a
/// message the old install did send is not shown twice). Returns how many were queued.
pub fn queue_key_updates(conn: &Connection, now: &str) -> Result<usize, StoreError> {
    let ids: Vec<String> = conn
        .prepare("SELECT id FROM conversations WHERE state = 'active' ORDER BY id")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for id in &ids {
        conn.execute(
            "UPDATE outbox SET post_id = NULL, mls_message = NULL, added = NULL, removed = NULL,
                 welcome = NULL, welcome_to = NULL, done_epoch = NULL, group_info = NULL
             WHERE conversation = ?1 AND join_seq IS NULL",
            [id],
        )?;
        // Outbox rows run in id order: below every other id puts it first.
        conn.execute(
            "INSERT INTO outbox (id, conversation, op, payload, created_at)
             VALUES ((SELECT COALESCE(MIN(id), 1) - 1 FROM outbox), ?1, 'rotate_keys', '{}', ?2)",
            params![id, now],
        )?;
    }
    Ok(ids.len())
}

/// Loads this install's standing, creating its install id if it has none (an account
/// made before install ids existed).
pub fn load(conn: &Connection) -> Result<Standing, StoreError> {
    let install_id = match get(conn, INSTALL_ID)?.and_then(|h| parse(&h)) {
        Some(id) => id,
        None => {
            let id = new_install_id();
            set(conn, INSTALL_ID, &id)?;
            parse(&id).ok_or_else(|| StoreError::Decode("install id".into()))?
        }
    };
    Ok(Standing {
        install_id,
        take_over: get(conn, TAKE_OVER)?.is_some(),
        revoked: get(conn, REVOKED)?,
    })
}

/// Whether this install is revoked (for `daemon.status` before the engine runs).
pub fn revoked(conn: &Connection) -> Result<Option<String>, StoreError> {
    get(conn, REVOKED)
}

/// The home relay accepted the take-over.
pub fn took_over(conn: &Connection) -> Result<(), StoreError> {
    conn.execute("DELETE FROM meta WHERE key = ?1", [TAKE_OVER])?;
    Ok(())
}

/// Records the revocation and emits `account.revoked`, once.
pub fn revoke(tx: &mut Tx<'_>, reason: &str) -> Result<(), StoreError> {
    if get(tx.conn(), REVOKED)?.is_some() {
        return Ok(());
    }
    set(tx.conn(), REVOKED, reason)?;
    tx.emit(EventPayload::AccountRevoked {
        reason: reason.to_owned(),
    })?;
    Ok(())
}

fn parse(hex_id: &str) -> Option<InstallId> {
    hex::decode(hex_id).ok()?.try_into().ok()
}
