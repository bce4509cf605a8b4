//! Preparing the outbox head: the exact bytes of a post (and its Welcome) are stored with a
//! fresh `post_id` before the first attempt, in the same transaction as the MLS state
//! change that produced them.

use openmls::messages::group_info::GroupInfo;
use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::*;
use rusqlite::params;
use serde::{Deserialize, Serialize};
use sotto_protocol::envelope::Envelope;

use crate::keys::DeviceKey;
use crate::mls::{self, Provider};
use crate::model;
use crate::store::{StoreError, Tx};

/// An outbox row as the actor sees it.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    /// Row id (FIFO order).
    pub id: i64,
    /// `create`, `add` or `message`.
    pub op: String,
    /// The op's JSON payload.
    pub payload: String,
    /// The post id of the prepared bytes.
    pub post_id: Option<[u8; 16]>,
    /// The prepared MLS message.
    pub mls_message: Option<Vec<u8>>,
    /// Principals the commit adds.
    pub added: Vec<[u8; 32]>,
    /// The Welcome (for create/add).
    pub welcome: Option<Vec<u8>>,
    /// Who the Welcome goes to.
    pub welcome_to: Vec<Recipient>,
    /// Set once the commit was accepted: the joiners' first seq.
    pub join_seq: Option<u64>,
    /// The message id for `message` rows.
    pub message_id: Option<String>,
    /// Principals the commit removes.
    pub removed: Vec<[u8; 32]>,
    /// For a `leave` proposal: the epoch in which the relay accepted it.
    pub done_epoch: Option<u64>,
    /// For a commit: the new epoch's GroupInfo (with the ratchet tree), posted with it so
    /// an install of a member's device can rejoin by external commit.
    pub group_info: Option<Vec<u8>>,
}

/// The payload of `rename` rows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RenamePayload {
    /// The new name (empty: no name).
    pub name: String,
}

/// A Welcome recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    /// Address.
    pub address: String,
    /// Device id.
    pub device_id: String,
    /// Their home relay URL (where their mailbox is).
    pub relay: String,
}

/// The payload of `create` and `add` rows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MembersPayload {
    /// Addresses to add.
    pub members: Vec<String>,
}

/// The payload of `message` rows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MessagePayload {
    /// Envelope id (hex).
    pub id: String,
    /// Text.
    pub text: String,
    /// Reply-to id (hex).
    pub reply_to: Option<String>,
    /// Unix seconds.
    pub sent_at: i64,
}

/// A key package claimed for a member.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// Address.
    pub address: String,
    /// Device id.
    pub device_id: String,
    /// The key the relay lists for the device (pinned on first use).
    pub identity_key: [u8; 32],
    /// Their relay URL.
    pub relay: String,
    /// The serialized key package.
    pub key_package: Vec<u8>,
}

/// The head of a conversation's outbox.
pub fn head(conn: &rusqlite::Connection, conv: &str) -> Result<Option<OutboxRow>, StoreError> {
    Ok(rows(conn, conv, 1)?.into_iter().next())
}

/// The run of consecutive `message` rows at the head of the outbox, at most `limit`.
pub fn message_run(
    conn: &rusqlite::Connection,
    conv: &str,
    limit: usize,
) -> Result<Vec<OutboxRow>, StoreError> {
    let mut run = rows(conn, conv, limit)?;
    let end = run
        .iter()
        .position(|r| r.op != "message" || r.join_seq.is_some())
        .unwrap_or(run.len());
    run.truncate(end);
    Ok(run)
}

/// The columns of an [`OutboxRow`], in [`read_rows`]' order.
const ROW_COLUMNS: &str = "id, op, payload, post_id, mls_message, added, welcome, welcome_to, join_seq, message_id, removed, done_epoch, group_info";

/// The first `limit` outbox rows in the order the actor works them: a `commit_pending`
/// row first (others' proposals block new messages), then the rest in FIFO order. Two
/// index range reads (`outbox_commit_pending`, `outbox_fifo`) that stop at `limit`, not
/// a sort of the conversation's whole outbox (issue 12: a pipelining client keeps
/// hundreds of rows queued, and this runs at every actor step).
fn rows(
    conn: &rusqlite::Connection,
    conv: &str,
    limit: usize,
) -> Result<Vec<OutboxRow>, StoreError> {
    let mut out = read_rows(
        conn,
        &format!(
            "SELECT {ROW_COLUMNS} FROM outbox WHERE conversation = ?1 AND op = 'commit_pending' ORDER BY id LIMIT ?2"
        ),
        conv,
        limit,
    )?;
    if out.len() < limit {
        out.extend(read_rows(
            conn,
            &format!(
                "SELECT {ROW_COLUMNS} FROM outbox WHERE conversation = ?1 AND op <> 'commit_pending' ORDER BY id LIMIT ?2"
            ),
            conv,
            limit - out.len(),
        )?);
    }
    Ok(out)
}

fn read_rows(
    conn: &rusqlite::Connection,
    sql: &str,
    conv: &str,
    limit: usize,
) -> Result<Vec<OutboxRow>, StoreError> {
    let mut st = conn.prepare_cached(sql)?;
    let raw = st.query_map(params![conv, limit as i64], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, Option<Vec<u8>>>(3)?,
            r.get::<_, Option<Vec<u8>>>(4)?,
            r.get::<_, Option<String>>(5)?,
            r.get::<_, Option<Vec<u8>>>(6)?,
            r.get::<_, Option<String>>(7)?,
            r.get::<_, Option<i64>>(8)?,
            r.get::<_, Option<String>>(9)?,
            r.get::<_, Option<String>>(10)?,
            r.get::<_, Option<i64>>(11)?,
            r.get::<_, Option<Vec<u8>>>(12)?,
        ))
    })?;
    let keys = |json: Option<String>| -> Vec<[u8; 32]> {
        json.and_then(|a| serde_json::from_str::<Vec<String>>(&a).ok())
            .unwrap_or_default()
            .iter()
            .filter_map(|h| hex::decode(h).ok()?.try_into().ok())
            .collect()
    };
    let mut out = Vec::new();
    for row in raw {
        let (
            id,
            op,
            payload,
            post_id,
            mls_message,
            added,
            welcome,
            welcome_to,
            join_seq,
            message_id,
            removed,
            done_epoch,
            group_info,
        ) = row?;
        out.push(OutboxRow {
            id,
            op,
            payload,
            post_id: post_id.and_then(|p| p.try_into().ok()),
            mls_message,
            added: keys(added),
            removed: keys(removed),
            done_epoch: done_epoch.map(|e| e as u64),
            welcome,
            welcome_to: welcome_to
                .and_then(|w| serde_json::from_str::<Vec<Recipient>>(&w).ok())
                .unwrap_or_default(),
            join_seq: join_seq.map(|j| j as u64),
            message_id,
            group_info,
        });
    }
    Ok(out)
}

/// The cache key of a conversation's `MlsGroup` (see [`Tx::keep`]).
pub(super) fn group_key(conv: &str) -> String {
    format!("mls-group:{conv}")
}

/// The conversation's `MlsGroup`: the copy kept in memory by the last committed
/// transaction that used it, else loaded from storage. `None` when there is no state.
/// Give it back with [`keep_group`] once it matches what this transaction wrote; a group
/// not given back (an error, a rollback) is loaded from storage next time.
pub(super) fn take_group(tx: &mut Tx<'_>, conv: &str) -> Result<Option<MlsGroup>, StoreError> {
    if let Some(group) = tx.take_kept::<MlsGroup>(&group_key(conv)) {
        return Ok(Some(group));
    }
    let gid =
        GroupId::from_slice(&hex::decode(conv).map_err(|e| StoreError::Decode(e.to_string()))?);
    let provider = Provider::new(tx.conn());
    MlsGroup::load(provider.storage(), &gid).map_err(StoreError::Sqlite)
}

/// Keeps `group` in memory for the next transaction, if this one commits.
pub(super) fn keep_group(tx: &mut Tx<'_>, conv: &str, group: MlsGroup) {
    tx.keep(&group_key(conv), group);
}

fn load_group(tx: &mut Tx<'_>, conv: &str) -> Result<MlsGroup, StoreError> {
    take_group(tx, conv)?.ok_or_else(|| StoreError::Decode(format!("no MLS state for {conv}")))
}

/// Why preparing failed in a way that retrying cannot fix.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// The database failed (retry later).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The change itself is impossible (fail it).
    #[error("{0}")]
    Invalid(String),
}

impl From<rusqlite::Error> for PrepareError {
    fn from(e: rusqlite::Error) -> Self {
        PrepareError::Store(StoreError::Sqlite(e))
    }
}

/// Prepares a `message` row: encrypts its envelope in the current epoch.
pub fn prepare_message(
    tx: &mut Tx<'_>,
    conv: &str,
    row: &OutboxRow,
    key: &DeviceKey,
) -> Result<(), PrepareError> {
    let payload: MessagePayload =
        serde_json::from_str(&row.payload).map_err(|e| PrepareError::Invalid(e.to_string()))?;
    let id: [u8; 16] = hex::decode(&payload.id)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| PrepareError::Invalid("bad message id".into()))?;
    let envelope = Envelope {
        id,
        kind: "text".into(),
        body: payload.text,
        sent_at: payload.sent_at,
        reply_to: payload
            .reply_to
            .and_then(|r| hex::decode(r).ok()?.try_into().ok()),
    };
    let sealed = envelope
        .seal()
        .map_err(|e| PrepareError::Invalid(e.to_string()))?;
    let mut group = load_group(tx, conv)?;
    let provider = Provider::new(tx.conn());
    let out = group
        .create_message(&provider, key, &sealed)
        .map_err(|e| PrepareError::Invalid(format!("encrypting: {e}")))?;
    let bytes = out
        .tls_serialize_detached()
        .map_err(|e| PrepareError::Invalid(e.to_string()))?;
    let post_id = crate::clock::ordered_id();
    tx.conn()
        .prepare_cached("UPDATE outbox SET post_id = ?2, mls_message = ?3 WHERE id = ?1")?
        .execute(params![row.id, &post_id[..], bytes])?;
    keep_group(tx, conv, group);
    Ok(())
}

/// Prepares a `create`/`add` row: validates the claimed key packages against pinned keys
/// and builds the commit and its Welcome. Returns false when there is nothing to add.
pub fn prepare_add(
    tx: &mut Tx<'_>,
    conv: &str,
    row: &OutboxRow,
    key: &DeviceKey,
    claims: &[Claimed],
) -> Result<bool, PrepareError> {
    let mut group = load_group(tx, conv)?;
    let provider = Provider::new(tx.conn());
    let existing: Vec<String> = mls::members(&group)
        .into_iter()
        .map(|m| m.address)
        .collect();
    let mut packages = Vec::new();
    let mut recipients = Vec::new();
    let mut added = Vec::new();
    for c in claims.iter().filter(|c| !existing.contains(&c.address)) {
        let kp_in = KeyPackageIn::tls_deserialize_exact(&c.key_package).map_err(|e| {
            PrepareError::Invalid(format!("{}'s key package is undecodable: {e}", c.address))
        })?;
        let kp = kp_in
            .validate(provider.crypto(), ProtocolVersion::Mls10)
            .map_err(|e| {
                PrepareError::Invalid(format!("{}'s key package is invalid: {e}", c.address))
            })?;
        let leaf = kp.leaf_node();
        let identity = mls::parse_identity(leaf.credential());
        if identity != Some((c.address.clone(), c.device_id.clone()))
            || leaf.signature_key().as_slice() != c.identity_key
        {
            return Err(PrepareError::Invalid(format!(
                "{}'s key package does not carry its identity key",
                c.address
            )));
        }
        match model::contact(tx.conn(), &c.address)? {
            Some((_, _, pinned)) if pinned != c.identity_key => {
                return Err(PrepareError::Invalid(format!(
                    "{}'s relay offers a key that differs from the pinned one; verify or trust the new key first",
                    c.address
                )));
            }
            Some(_) => {}
            None => {
                tx.conn().execute(
                    "INSERT INTO contacts (address, alias, device_id, identity_key, verified, created_at) VALUES (?1, NULL, ?2, ?3, 0, ?4)",
                    params![c.address, c.device_id, &c.identity_key[..], crate::clock::now_rfc3339()],
                )?;
            }
        }
        packages.push(kp);
        added.push(hex::encode(c.identity_key));
        recipients.push(Recipient {
            address: c.address.clone(),
            device_id: c.device_id.clone(),
            relay: c.relay.clone(),
        });
    }
    if packages.is_empty() {
        return Ok(false);
    }
    let (commit, welcome, info) = group
        .add_members(&provider, key, &packages)
        .map_err(|e| PrepareError::Invalid(format!("building the commit: {e}")))?;
    let info = group_info_bytes(info)?;
    let commit = commit
        .tls_serialize_detached()
        .map_err(|e| PrepareError::Invalid(e.to_string()))?;
    let welcome = welcome
        .tls_serialize_detached()
        .map_err(|e| PrepareError::Invalid(e.to_string()))?;
    let post_id = crate::clock::ordered_id();
    tx.conn().execute(
        "UPDATE outbox SET post_id = ?2, mls_message = ?3, added = ?4, welcome = ?5, welcome_to = ?6, group_info = ?7 WHERE id = ?1",
        params![
            row.id,
            &post_id[..],
            commit,
            serde_json::to_string(&added).unwrap_or_default(),
            welcome,
            serde_json::to_string(&recipients).unwrap_or_default(),
            info
        ],
    )?;
    keep_group(tx, conv, group);
    Ok(true)
}

/// Prepares a membership or key change other than adding: `remove`, `rename`,
/// `rotate_keys`, `commit_pending` (commit proposals others posted) and `leave` (a Remove
/// proposal of ourselves, re-posted each epoch until someone commits it). Returns false
/// when there is nothing to do.
pub fn prepare_change(
    tx: &mut Tx<'_>,
    conv: &str,
    row: &OutboxRow,
    key: &DeviceKey,
) -> Result<bool, PrepareError> {
    let mut group = load_group(tx, conv)?;
    let provider = Provider::new(tx.conn());
    let members = mls::members(&group);
    let invalid = |e: &dyn std::fmt::Display| PrepareError::Invalid(e.to_string());
    let (message, removed, info): (MlsMessageOut, Vec<Vec<u8>>, Option<GroupInfo>) =
        match row.op.as_str() {
            "remove" => {
                let payload: MembersPayload =
                    serde_json::from_str(&row.payload).map_err(|e| invalid(&e))?;
                let gone: Vec<&mls::MemberInfo> = members
                    .iter()
                    .filter(|m| payload.members.contains(&m.address))
                    .collect();
                if gone.is_empty() {
                    return Ok(false);
                }
                let leaves: Vec<LeafNodeIndex> =
                    gone.iter().map(|m| LeafNodeIndex::new(m.leaf)).collect();
                let (commit, _, info) = group
                    .remove_members(&provider, key, &leaves)
                    .map_err(|e| invalid(&e))?;
                (
                    commit,
                    gone.iter().map(|m| m.public_key.clone()).collect(),
                    info,
                )
            }
            "rename" => {
                let payload: RenamePayload =
                    serde_json::from_str(&row.payload).map_err(|e| invalid(&e))?;
                let name = Some(payload.name.as_str()).filter(|n| !n.is_empty());
                if mls::group_name(&group).as_deref() == name {
                    return Ok(false);
                }
                let (commit, _, info) = group
                    .update_group_context_extensions(&provider, mls::name_extensions(name), key)
                    .map_err(|e| invalid(&e))?;
                (commit, Vec::new(), info)
            }
            "rotate_keys" => {
                // After a restore, the backed-up state may hold a commit the old install had
                // prepared; it is prepared again after this one (see relay::install).
                if group.pending_commit().is_some() {
                    group
                        .clear_pending_commit(provider.storage())
                        .map_err(|e| invalid(&e))?;
                }
                let bundle = group
                    .self_update(&provider, key, LeafNodeParameters::default())
                    .map_err(|e| invalid(&e))?;
                let (commit, _, info) = bundle.into_contents();
                (commit, Vec::new(), info)
            }
            "commit_pending" => {
                let pending_removes: Vec<Vec<u8>> = group
                    .pending_proposals()
                    .filter_map(|p| match p.proposal() {
                        Proposal::Remove(r) => members
                            .iter()
                            .find(|m| m.leaf == r.removed().u32())
                            .map(|m| m.public_key.clone()),
                        _ => None,
                    })
                    .collect();
                if group.pending_proposals().next().is_none() {
                    return Ok(false);
                }
                let (commit, _, info) = group
                    .commit_to_pending_proposals(&provider, key)
                    .map_err(|e| invalid(&e))?;
                (commit, pending_removes, info)
            }
            "leave" => {
                let proposal = group.leave_group(&provider, key).map_err(|e| invalid(&e))?;
                (proposal, Vec::new(), None)
            }
            other => return Err(PrepareError::Invalid(format!("unknown change {other}"))),
        };
    let bytes = message.tls_serialize_detached().map_err(|e| invalid(&e))?;
    let info = group_info_bytes(info)?;
    let removed: Vec<String> = removed.iter().map(hex::encode).collect();
    let post_id = crate::clock::ordered_id();
    tx.conn().execute(
        "UPDATE outbox SET post_id = ?2, mls_message = ?3, removed = ?4, done_epoch = NULL, group_info = ?5 WHERE id = ?1",
        params![row.id, &post_id[..], bytes, serde_json::to_string(&removed).unwrap_or_default(), info],
    )?;
    keep_group(tx, conv, group);
    Ok(true)
}

/// The largest GroupInfo posted with a commit (the relay's default limit on a group
/// message is 2 MiB, on a frame 4 MiB: a commit and its GroupInfo must fit in one frame).
const MAX_GROUP_INFO: usize = 1024 * 1024;

/// The TLS bytes (an `MlsMessage`) of a commit's new-epoch GroupInfo. Every group uses the
/// ratchet-tree extension, so openmls builds one (tree and external public key included)
/// with every commit. A GroupInfo over [`MAX_GROUP_INFO`] (a huge group) is left out: the
/// commit is posted without one (no resync from that epoch), never refused.
pub(super) fn group_info_bytes(info: Option<GroupInfo>) -> Result<Option<Vec<u8>>, PrepareError> {
    let bytes = info
        .map(|i| {
            MlsMessageOut::from(i)
                .tls_serialize_detached()
                .map_err(|e| PrepareError::Invalid(format!("encoding the GroupInfo: {e}")))
        })
        .transpose()?;
    Ok(bytes.filter(|b| {
        let fits = b.len() <= MAX_GROUP_INFO;
        if !fits {
            tracing::warn!(
                bytes = b.len(),
                "a GroupInfo too large to post; the commit goes without it"
            );
        }
        fits
    }))
}
