//! The mailbox follower: Welcomes arrive here; each is joined in one transaction with the
//! mailbox cursor, then acknowledged to the relay.

use std::sync::Arc;
use std::time::Duration;

use openmls::prelude::tls_codec::Deserialize as _;
use openmls::prelude::*;
use rusqlite::{OptionalExtension as _, params};
use sotto_protocol::api::EventPayload;
use sotto_protocol::relay::{DeviceRef, MailboxEntry, MailboxPayload, Request};
use sotto_protocol::wire;
use tokio::sync::mpsc;

use super::Engine;
use super::inbound::{check_member_keys, refresh_conversation};
use crate::mls::{self, Provider};
use crate::store::{StoreError, Tx};

/// Follows the home relay's mailbox for this device, forever.
pub async fn follow(engine: Arc<Engine>, mut entries: mpsc::UnboundedReceiver<Vec<MailboxEntry>>) {
    let mut shutdown = engine.shutdown.clone();
    let home = engine.relays.home().to_owned();
    loop {
        if *shutdown.borrow() {
            return;
        }
        let conn = match engine.relays.get(&home).await {
            Ok(c) => c,
            Err(_) => {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(500)) => continue,
                    _ = shutdown.wait_for(|s| *s) => return,
                }
            }
        };
        let url = home.clone();
        let cursor = engine
            .store
            .call(move |db| {
                Ok(db
                    .conn()
                    .query_row(
                        "SELECT mailbox_cursor FROM relay_cursors WHERE url = ?1",
                        [&url],
                        |r| r.get::<_, i64>(0),
                    )
                    .optional()?
                    .unwrap_or(0) as u64)
            })
            .await
            .unwrap_or(0);
        let me = DeviceRef {
            address: engine.address.clone(),
            device_id: engine.device_id.clone(),
        };
        if let Err(e) = conn
            .request(Request::SubscribeMailbox {
                device: me.clone(),
                after: cursor,
            })
            .await
        {
            tracing::warn!(cause = %e, "cannot follow the mailbox; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        let mut cursor = cursor;
        loop {
            let batch = tokio::select! {
                b = entries.recv() => match b { Some(b) => b, None => return },
                () = conn.closed() => break,
                _ = shutdown.wait_for(|s| *s) => return,
            };
            let mut joined = Vec::new();
            let mut failed = false;
            for entry in batch {
                if entry.seq <= cursor {
                    continue;
                }
                let seq = entry.seq;
                let (key, address) = (engine.key.clone(), engine.address.clone());
                let url = home.clone();
                let result = engine
                    .store
                    .call(move |db| {
                        db.write(|tx| {
                            let joined = join(tx, &address, &key.public_key(), &entry);
                            tx.conn().execute(
                                "INSERT INTO relay_cursors (url, mailbox_cursor) VALUES (?1, ?2)
                                 ON CONFLICT (url) DO UPDATE SET mailbox_cursor = excluded.mailbox_cursor",
                                params![url, seq as i64],
                            )?;
                            joined
                        })
                    })
                    .await;
                match result {
                    Ok(Some(id)) => joined.push(id),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::error!(cause = %e, seq, "processing a mailbox entry failed; will retry");
                        failed = true;
                        break;
                    }
                }
                cursor = seq;
            }
            if let Err(e) = conn
                .request(Request::AckMailbox {
                    device: me.clone(),
                    up_to: cursor,
                })
                .await
            {
                tracing::debug!(cause = %e, "mailbox ack failed; it is repeated later");
            }
            for id in joined {
                engine.wake(&id);
            }
            if let Err(e) = super::keypackages::refill(&engine).await {
                tracing::debug!(cause = %e, "key-package refill after a join failed");
            }
            if failed {
                // The failed entry and the rest of its batch are not pushed again: after a
                // pause, subscribe again from the cursor so the relay sends them anew.
                // (Found by the faults suite: a Welcome that arrived while the disk was
                // full was joined only after a reconnect.)
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.wait_for(|s| *s) => return,
                }
                break;
            }
        }
    }
}

/// Joins the group of a Welcome entry. `Ok(None)`: the entry was not for us, malformed, or
/// for a group we know (all recorded in the log and skipped, never retried forever).
///
/// A skipped Welcome leaves nothing behind: openmls consumes the key package a Welcome
/// names as soon as it stages it, before the daemon's own checks (who posted it, whether
/// the group holds this device); those changes are rolled back with everything else the
/// attempt wrote. (Found by the `mls_welcome` fuzz target: a genuine Welcome re-posted by
/// an outsider burned one of this device's single-use key packages.)
pub(super) fn join(
    tx: &mut Tx<'_>,
    own_address: &str,
    own_key: &[u8],
    entry: &MailboxEntry,
) -> Result<Option<String>, StoreError> {
    tx.savepoint(
        |tx| join_inner(tx, own_address, own_key, entry),
        Option::is_some,
    )
}

fn join_inner(
    tx: &mut Tx<'_>,
    own_address: &str,
    own_key: &[u8],
    entry: &MailboxEntry,
) -> Result<Option<String>, StoreError> {
    let skip = |why: &str| {
        tracing::warn!(seq = entry.seq, from = %entry.sender_address, "mailbox entry skipped: {why}");
        Ok(None)
    };
    let Ok(MailboxPayload::Welcome(env)) = wire::decode::<MailboxPayload>(&entry.payload) else {
        return skip("not a Welcome this version understands");
    };
    let conv_id = hex::encode(&env.group_id);
    if crate::model::conversation(tx.conn(), &conv_id)?.is_some() {
        return skip("a Welcome for a group already known");
    }
    let Ok(msg) = MlsMessageIn::tls_deserialize_exact(&env.welcome) else {
        return skip("undecodable Welcome");
    };
    let MlsMessageBodyIn::Welcome(welcome) = msg.extract() else {
        return skip("not a Welcome message");
    };
    let provider = Provider::new(tx.conn());
    let staged =
        match StagedWelcome::new_from_welcome(&provider, &mls::join_config(), welcome, None) {
            Ok(s) => s,
            Err(e) => return skip(&format!("cannot join: {e}")),
        };
    let members: Vec<_> = staged
        .members()
        .filter_map(|m| {
            let (address, device_id) = mls::parse_identity(&m.credential)?;
            Some(mls::MemberInfo {
                address,
                device_id,
                public_key: m.signature_key.clone(),
                leaf: m.index.u32(),
            })
        })
        .collect();
    if !members.iter().any(|m| m.public_key == entry.sender) {
        return skip("the Welcome was posted by someone outside the group");
    }
    if !members.iter().any(|m| m.public_key == own_key) {
        return skip("the Welcome's group does not contain this device");
    }
    // A leaf with our address and another key would hide from `check_member_keys`.
    if members
        .iter()
        .any(|m| m.address == own_address && m.public_key != own_key)
    {
        return skip("the Welcome's group has a leaf with this account's address and another key");
    }
    let group_id = staged.group_context().group_id().as_slice().to_vec();
    let epoch = staged.group_context().epoch().as_u64();
    if group_id != env.group_id {
        return skip("the envelope names another group than the Welcome");
    }
    check_member_keys(tx, own_address, &members)?;
    let provider = Provider::new(tx.conn());
    let group = match staged.into_group(&provider) {
        Ok(g) => g,
        Err(e) => return skip(&format!("cannot join: {e}")),
    };
    let name = mls::group_name(&group);
    let others: Vec<_> = members
        .iter()
        .filter(|m| m.address != own_address)
        .collect();
    let direct = name.is_none() && others.len() == 1;
    tx.conn().execute(
        "INSERT INTO conversations (id, name, kind, state, relay, ciphersuite, epoch, cursor, acked, peer, created_at)
         VALUES (?1, ?2, ?3, 'active', ?4, ?5, ?6, ?7, ?7, ?8, ?9)",
        params![
            conv_id,
            name,
            if direct { "direct" } else { "group" },
            env.relay_url,
            u16::from(group.ciphersuite()),
            epoch as i64,
            env.join_seq.saturating_sub(1) as i64,
            direct.then(|| others[0].address.clone()),
            crate::clock::now_rfc3339(),
        ],
    )?;
    tx.conn().execute(
        "INSERT OR REPLACE INTO seen_welcomes (group_id, epoch) VALUES (?1, ?2)",
        params![conv_id, epoch as i64],
    )?;
    let conversation = refresh_conversation(tx, &conv_id, &group)?;
    if direct {
        super::inbound::settle_direct_duplicates(
            tx,
            &others[0].address,
            u16::from(group.ciphersuite()),
        )?;
    }
    tracing::info!(conversation = %conv_id, from = %entry.sender_address, "joined a conversation");
    tx.emit(EventPayload::ConversationJoined { conversation })?;
    Ok(Some(conv_id))
}
