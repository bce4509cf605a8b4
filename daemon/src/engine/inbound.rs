//! Processing one group-log entry: MLS state, app rows, events and the cursor in ONE
//! transaction. Own entries are recognised by `post_id`; someone else's winning commit
//! clears our pending commit and resets our prepared post so it is re-applied.

use openmls::prelude::tls_codec::Deserialize as _;
use openmls::prelude::*;
use rusqlite::{OptionalExtension as _, params};
use sotto_protocol::api::{Conversation, EventPayload, MessageState};
use sotto_protocol::envelope::Envelope;
use sotto_protocol::relay::GroupEntry;

use super::outbound::{keep_group, take_group};
use crate::mls::{self, MemberInfo, Provider};
use crate::model;
use crate::store::{StoreError, Tx};

/// What processing an entry did, for the actor.
#[derive(Debug, Default)]
pub struct Outcome {
    /// This device was removed from the group.
    pub removed: bool,
    /// The conversation is now broken.
    pub broken: bool,
    /// openmls failed on the group part-way: do not keep the in-memory copy.
    pub stale_group: bool,
    /// This install cannot follow the group past this entry: a resync is scheduled
    /// (`engine::resync`).
    pub resync: bool,
}

/// Pins unknown members' keys (trust on first use) and reports changed ones.
pub fn check_member_keys(
    tx: &mut Tx<'_>,
    own_address: &str,
    members: &[MemberInfo],
) -> Result<(), StoreError> {
    for m in members.iter().filter(|m| m.address != own_address) {
        match model::contact(tx.conn(), &m.address)? {
            None => {
                tx.conn().execute(
                    "INSERT INTO contacts (address, alias, device_id, identity_key, verified, created_at)
                     VALUES (?1, NULL, ?2, ?3, 0, ?4)",
                    params![m.address, m.device_id, m.public_key, crate::clock::now_rfc3339()],
                )?;
            }
            Some((contact, _, key)) if key != m.public_key => {
                let new_fp = crate::keys::fingerprint(&m.public_key);
                tracing::warn!(contact = %m.address, old = %contact.fingerprint, new = %new_fp, "a contact's identity key changed");
                if contact.verified {
                    // Verified: keep the verified key pinned and block sending until the
                    // user verifies or trusts the new one.
                    tx.conn().execute(
                        "UPDATE contacts SET blocked_key = ?2 WHERE address = ?1",
                        params![m.address, m.public_key],
                    )?;
                } else {
                    tx.conn().execute(
                        "UPDATE contacts SET identity_key = ?2, device_id = ?3 WHERE address = ?1",
                        params![m.address, m.public_key, m.device_id],
                    )?;
                }
                tx.emit(EventPayload::ContactIdentityChanged {
                    address: contact.address.clone(),
                    old_fingerprint: contact.fingerprint.clone(),
                    new_fingerprint: new_fp,
                })?;
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Stores the group's epoch, name and members on the conversation row; returns its API shape.
pub fn refresh_conversation(
    tx: &mut Tx<'_>,
    conv: &str,
    group: &MlsGroup,
) -> Result<Conversation, StoreError> {
    let members = mls::members(group);
    model::set_members(tx.conn(), conv, &members)?;
    tx.conn().execute(
        "UPDATE conversations SET epoch = ?2, name = ?3 WHERE id = ?1",
        params![conv, group.epoch().as_u64() as i64, mls::group_name(group)],
    )?;
    let row = model::conversation(tx.conn(), conv)?
        .ok_or_else(|| StoreError::Decode(format!("conversation {conv} vanished")))?;
    model::conversation_api(tx.conn(), &row)
}

fn api(tx: &Tx<'_>, conv: &str) -> Result<Conversation, StoreError> {
    let row = model::conversation(tx.conn(), conv)?
        .ok_or_else(|| StoreError::Decode(format!("conversation {conv} vanished")))?;
    model::conversation_api(tx.conn(), &row)
}

/// Marks the conversation broken (with its event); `why` is kept as its `state_reason`
/// (readable, shown to clients: never key material).
pub fn mark_broken(tx: &mut Tx<'_>, conv: &str, why: &str) -> Result<(), StoreError> {
    tracing::error!(conversation = %conv, "conversation broken: {why}");
    tx.conn().execute(
        "UPDATE conversations SET state = 'broken', state_reason = ?2 WHERE id = ?1",
        params![conv, why],
    )?;
    let conversation = api(tx, conv)?;
    tx.emit(EventPayload::ConversationBroken { conversation })?;
    Ok(())
}

fn set_cursor(tx: &Tx<'_>, conv: &str, seq: u64) -> Result<(), StoreError> {
    tx.conn()
        .prepare_cached("UPDATE conversations SET cursor = ?2 WHERE id = ?1 AND cursor < ?2")?
        .execute(params![conv, seq as i64])?;
    Ok(())
}

/// Forgets the prepared bytes of the outbox head so it is prepared again in the new epoch.
/// The assignments that forget a row's prepared post (it is prepared again later).
const FORGET_PREPARED: &str = "post_id = NULL, mls_message = NULL, added = NULL, removed = NULL, \
     welcome = NULL, welcome_to = NULL, done_epoch = NULL, group_info = NULL";

fn reset_prepared(tx: &Tx<'_>, conv: &str) -> Result<(), StoreError> {
    tx.conn().execute(
        &format!(
            "UPDATE outbox SET {FORGET_PREPARED} WHERE conversation = ?1 AND join_seq IS NULL"
        ),
        [conv],
    )?;
    Ok(())
}

/// Forgets every prepared post of `conv` (after a resync replaced its group state).
pub fn forget_all_prepared(tx: &mut Tx<'_>, conv: &str) -> Result<(), StoreError> {
    reset_prepared(tx, conv)
}

/// After the relay refused our post with `conflict`: drops our pending commit (it did not
/// win) and the prepared bytes of the head, so it is prepared again after catching up.
pub fn forget_prepared(tx: &mut Tx<'_>, conv: &str, row_id: i64) -> Result<(), StoreError> {
    if let Some(mut group) = take_group(tx, conv)? {
        if group.pending_commit().is_some() {
            let provider = Provider::new(tx.conn());
            group
                .clear_pending_commit(provider.storage())
                .map_err(StoreError::Sqlite)?;
        }
        keep_group(tx, conv, group);
    }
    tx.conn().execute(
        &format!("UPDATE outbox SET {FORGET_PREPARED} WHERE id = ?1 AND join_seq IS NULL"),
        [row_id],
    )?;
    Ok(())
}

/// Processes one entry of conversation `conv`'s log.
pub fn process(
    tx: &mut Tx<'_>,
    conv: &str,
    own_address: &str,
    own_key: &[u8],
    entry: &GroupEntry,
) -> Result<Outcome, StoreError> {
    let row = model::conversation(tx.conn(), conv)?
        .ok_or_else(|| StoreError::Decode(format!("unknown conversation {conv}")))?;
    if entry.seq <= row.cursor {
        return Ok(Outcome::default());
    }
    let Some(mut group) = take_group(tx, conv)? else {
        mark_broken(tx, conv, "the MLS group state is missing")?;
        set_cursor(tx, conv, entry.seq)?;
        return Ok(Outcome {
            broken: true,
            ..Default::default()
        });
    };
    let mut outcome = Outcome::default();
    if entry.sender[..] == *own_key {
        outcome.resync = own_entry(tx, conv, &mut group, entry)?;
    } else {
        outcome = others_entry(tx, conv, own_address, &mut group, entry)?;
    }
    set_cursor(tx, conv, entry.seq)?;
    // The in-memory group matches what this transaction wrote, except after an
    // operation that failed half-way inside openmls: that one is loaded again.
    if !outcome.stale_group {
        keep_group(tx, conv, group);
    }
    Ok(outcome)
}

/// Processes an entry this device posted; `Ok(true)` when it schedules a resync.
fn own_entry(
    tx: &mut Tx<'_>,
    conv: &str,
    group: &mut MlsGroup,
    entry: &GroupEntry,
) -> Result<bool, StoreError> {
    let found: Option<(i64, String, Option<String>, bool)> = tx
        .conn()
        .prepare_cached(
            "SELECT id, op, message_id, welcome IS NOT NULL FROM outbox WHERE conversation = ?1 AND post_id = ?2",
        )?
        .query_row(
            params![conv, &entry.post_id[..]],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    let Some((row_id, op, message_id, has_welcome)) = found else {
        if entry.content_type == sotto_protocol::relay::content_type::COMMIT {
            // Another install of this device (the one a backup was taken from) committed
            // after the backup: this install never had that commit's secrets and cannot
            // follow the group past it. Never skip it (that would fork the group
            // silently): the group is rejoined by external commit (engine::resync).
            super::resync::schedule(
                tx,
                conv,
                &format!(
                    "another install of this account committed at seq {} (after the backup this install was restored from)",
                    entry.seq
                ),
            )?;
            return Ok(true);
        }
        // A message or proposal another install of this device posted (MLS cannot decrypt
        // its own sender's messages): skipped.
        tracing::warn!(conversation = %conv, seq = entry.seq, "an own entry with an unknown post id; skipped");
        return Ok(false);
    };
    if op == "leave" {
        // Our Remove proposal is in this epoch's log; someone commits it (or we re-post).
        tx.conn().execute(
            "UPDATE outbox SET done_epoch = ?2 WHERE id = ?1",
            params![row_id, group.epoch().as_u64() as i64],
        )?;
        return Ok(false);
    }
    if op == "message" {
        let Some(message_id) = message_id else {
            return Ok(false);
        };
        let own = tx
            .conn()
            .prepare_cached("SELECT address FROM account WHERE id = 1")?
            .query_row([], |r| r.get::<_, String>(0))?;
        tx.conn()
            .prepare_cached(
                "UPDATE messages SET state = 'sent', position = ?4 WHERE conversation = ?1 AND sender = ?2 AND id = ?3",
            )?
            .execute(params![conv, own, message_id, entry.seq as i64])?;
        tx.conn()
            .prepare_cached("DELETE FROM outbox WHERE id = ?1")?
            .execute([row_id])?;
        tx.emit(EventPayload::MessageState {
            conversation: conv.to_owned(),
            message_id,
            state: MessageState::Sent,
            error: None,
        })?;
        return Ok(false);
    }
    // Our commit won its epoch: merge it.
    let provider = Provider::new(tx.conn());
    if group.pending_commit().is_none() {
        mark_broken(tx, conv, "our accepted commit is no longer pending")?;
        tx.conn()
            .execute("DELETE FROM outbox WHERE id = ?1", [row_id])?;
        return Ok(false);
    }
    group
        .merge_pending_commit(&provider)
        .map_err(|e| StoreError::Decode(format!("merging our commit: {e}")))?;
    if has_welcome {
        tx.conn().execute(
            "UPDATE outbox SET join_seq = ?2 WHERE id = ?1",
            params![row_id, (entry.seq + 1) as i64],
        )?;
    } else {
        tx.conn()
            .execute("DELETE FROM outbox WHERE id = ?1", [row_id])?;
    }
    // Anything else prepared belonged to the old epoch.
    reset_prepared(tx, conv)?;
    tx.conn().execute(
        "UPDATE conversations SET state = 'active' WHERE id = ?1 AND state = 'pending'",
        [conv],
    )?;
    let conversation = refresh_conversation(tx, conv, group)?;
    tx.emit(EventPayload::ConversationChanged { conversation })?;
    Ok(false)
}

fn others_entry(
    tx: &mut Tx<'_>,
    conv: &str,
    own_address: &str,
    group: &mut MlsGroup,
    entry: &GroupEntry,
) -> Result<Outcome, StoreError> {
    let provider = Provider::new(tx.conn());
    let is_commit = entry.content_type == sotto_protocol::relay::content_type::COMMIT;
    let message = match MlsMessageIn::tls_deserialize_exact(&entry.message)
        .ok()
        .and_then(|m| m.try_into_protocol_message().ok())
    {
        Some(m) => m,
        None => {
            if is_commit {
                mark_broken(
                    tx,
                    conv,
                    &format!("the commit at seq {} is undecodable", entry.seq),
                )?;
                return Ok(Outcome {
                    broken: true,
                    ..Default::default()
                });
            }
            tracing::warn!(conversation = %conv, seq = entry.seq, "undecodable entry skipped");
            return Ok(Outcome::default());
        }
    };
    if is_commit {
        // Someone else's commit won this epoch: ours (if any) lost and is re-applied later;
        // a message prepared in this epoch is re-encrypted in the next.
        if group.pending_commit().is_some() {
            group
                .clear_pending_commit(provider.storage())
                .map_err(StoreError::Sqlite)?;
        }
        reset_prepared(tx, conv)?;
    }
    let processed = match group.process_message(&provider, message) {
        Ok(p) => p,
        // The database failed under openmls (a full disk): not the entry's fault. The
        // transaction rolls back and the entry is processed again later.
        Err(ProcessMessageError::StorageError(e)) => return Err(StoreError::Sqlite(e)),
        Err(e) => {
            if is_commit {
                mark_broken(
                    tx,
                    conv,
                    &format!(
                        "the winning commit at seq {} failed validation: {e}",
                        entry.seq
                    ),
                )?;
                return Ok(Outcome {
                    broken: true,
                    ..Default::default()
                });
            }
            tracing::warn!(conversation = %conv, seq = entry.seq, cause = %e, "an entry could not be processed; skipped");
            return Ok(Outcome {
                stale_group: true,
                ..Default::default()
            });
        }
    };
    let sender = mls::parse_identity(processed.credential()).map(|(a, _)| a);
    match processed.into_content() {
        ProcessedMessageContent::ApplicationMessage(app) => {
            let Some(sender) = sender else {
                return Ok(Outcome::default());
            };
            receive_message(tx, conv, &sender, entry.seq, &app.into_bytes())?;
            Ok(Outcome::default())
        }
        ProcessedMessageContent::StagedCommitMessage(staged) => {
            let adds: Vec<MemberInfo> = staged
                .add_proposals()
                .filter_map(|p| {
                    let leaf = p.add_proposal().key_package().leaf_node();
                    let (address, device_id) = mls::parse_identity(leaf.credential())?;
                    Some(MemberInfo {
                        address,
                        device_id,
                        public_key: leaf.signature_key().as_slice().to_vec(),
                        leaf: 0,
                    })
                })
                .collect();
            check_member_keys(tx, own_address, &adds)?;
            let removed = staged.self_removed();
            let provider = Provider::new(tx.conn());
            group
                .merge_staged_commit(&provider, *staged)
                .map_err(|e| StoreError::Decode(format!("merging a commit: {e}")))?;
            if removed {
                let leaving: bool = tx.conn().query_row(
                    "SELECT EXISTS (SELECT 1 FROM outbox WHERE conversation = ?1 AND op = 'leave')",
                    [conv],
                    |r| r.get(0),
                )?;
                let state = if leaving { "left" } else { "removed" };
                tx.conn().execute(
                    "UPDATE conversations SET state = ?2 WHERE id = ?1",
                    params![conv, state],
                )?;
                tx.conn()
                    .execute("DELETE FROM outbox WHERE conversation = ?1", [conv])?;
                let conversation = api(tx, conv)?;
                if leaving {
                    tx.emit(EventPayload::ConversationChanged { conversation })?;
                } else {
                    tx.emit(EventPayload::ConversationRemoved { conversation })?;
                }
                return Ok(Outcome {
                    removed: true,
                    ..Default::default()
                });
            }
            let conversation = refresh_conversation(tx, conv, group)?;
            tx.emit(EventPayload::ConversationChanged { conversation })?;
            Ok(Outcome::default())
        }
        ProcessedMessageContent::ProposalMessage(p) => {
            group
                .store_pending_proposal(provider.storage(), *p)
                .map_err(StoreError::Sqlite)?;
            // Whoever sees a pending proposal commits it (it blocks new messages meanwhile).
            tx.conn().execute(
                "INSERT INTO outbox (conversation, op, payload, created_at)
                 SELECT ?1, 'commit_pending', '{}', ?2
                 WHERE NOT EXISTS (SELECT 1 FROM outbox WHERE conversation = ?1 AND op = 'commit_pending')",
                params![conv, crate::clock::now_rfc3339()],
            )?;
            Ok(Outcome::default())
        }
        _ => Ok(Outcome::default()),
    }
}

fn receive_message(
    tx: &mut Tx<'_>,
    conv: &str,
    sender: &str,
    seq: u64,
    bytes: &[u8],
) -> Result<(), StoreError> {
    let envelope = match Envelope::open(bytes) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(conversation = %conv, seq, cause = %e, "an unreadable envelope was skipped");
            return Ok(());
        }
    };
    if envelope.kind != "text" {
        tracing::debug!(conversation = %conv, kind = %envelope.kind, "skipping a message kind this version does not know");
        return Ok(());
    }
    let id = hex::encode(envelope.id);
    let sent_at =
        crate::clock::rfc3339_from_unix(envelope.sent_at).unwrap_or_else(crate::clock::now_rfc3339);
    let inserted = tx.conn().prepare_cached(
        "INSERT OR IGNORE INTO messages (id, conversation, sender, kind, text, reply_to, sent_at, received_at, state, position)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'received', ?9)",
    )?.execute(params![
            id,
            conv,
            sender,
            envelope.kind,
            envelope.body,
            envelope.reply_to.map(hex::encode),
            sent_at,
            crate::clock::now_rfc3339(),
            seq as i64
        ],
    )?;
    if inserted == 0 {
        return Ok(()); // a duplicate envelope: delivered once only
    }
    if let Some(message) = model::message(tx.conn(), conv, sender, &id)? {
        tx.emit(EventPayload::MessageReceived { message })?;
    }
    Ok(())
}

/// Two direct conversations with the same peer in the same ciphersuite (both sides
/// created one at once): both sides keep the one with the lowest id. The others are left
/// locally: their queued messages move to the kept conversation and nothing more is posted
/// to them. Direct conversations in different ciphersuites (a classical and a
/// post-quantum one) are not duplicates.
pub fn settle_direct_duplicates(
    tx: &mut Tx<'_>,
    peer: &str,
    ciphersuite: u16,
) -> Result<(), StoreError> {
    let ids: Vec<String> = {
        let mut stmt = tx.conn().prepare(
            "SELECT id FROM conversations WHERE kind = 'direct' AND peer = ?1 AND ciphersuite = ?2 AND state IN ('active', 'pending') ORDER BY id",
        )?;
        let rows = stmt.query_map(params![peer, ciphersuite], |r| r.get::<_, String>(0))?;
        rows.collect::<Result<_, _>>()?
    };
    let Some((keep, losers)) = ids.split_first() else {
        return Ok(());
    };
    for loser in losers {
        tracing::info!(kept = %keep, left = %loser, peer, "two direct conversations with one peer; keeping the lowest id");
        tx.conn().execute(
            &format!("UPDATE outbox SET conversation = ?2, {FORGET_PREPARED} WHERE conversation = ?1 AND op = 'message'"),
            params![loser, keep],
        )?;
        tx.conn().execute(
            "UPDATE messages SET conversation = ?2 WHERE conversation = ?1 AND state = 'queued'",
            params![loser, keep],
        )?;
        tx.conn()
            .execute("DELETE FROM outbox WHERE conversation = ?1", [loser])?;
        tx.conn().execute(
            "UPDATE conversations SET state = 'left' WHERE id = ?1",
            [loser],
        )?;
        let conversation = api(tx, loser)?;
        tx.emit(EventPayload::ConversationChanged { conversation })?;
    }
    Ok(())
}
