//! The resync of a conversation by external commit (issue 15): how a restored install
//! rejoins a group it can no longer follow, and joins the groups its backup did not know.
//!
//! A conversation needs a resync when this install cannot follow its log any more:
//! - another install of this device (the one the backup was taken from) committed after
//!   the backup: an own log entry with an unknown post id that is a commit
//!   (`inbound::own_entry`) — this install never had that epoch's secrets;
//! - the relay no longer holds the log entries since our cursor (`gap`).
//!
//! Either schedules a row in `resyncs` (in the transaction that found it); while the row
//! exists the conversation's actor does nothing but the resync ([`run`]):
//! 1. `GetGroupInfo`: the GroupInfo (with the ratchet tree and the external public key)
//!    that the latest committer posted with its commit (`PostCommit`);
//! 2. in one transaction: the old MLS state is deleted and openmls's external-commit
//!    builder joins from the GroupInfo — it adds a Remove of this device's old leaf (same
//!    signature key) — and the commit, its own new-epoch GroupInfo and a fresh post id
//!    are stored on the `resyncs` row (a crash re-posts the same bytes: idempotent);
//! 3. `PostCommit` of the external commit (a `NewMemberCommit`, which the relay accepts
//!    only from a principal on the group's access list, under the epoch rule). Accepted at
//!    seq S: in one transaction the row goes, the cursor moves to S (entries before it were
//!    sent in epochs this install has no secrets for), prepared posts are prepared again in
//!    the new epoch, the conversation's members and epoch are refreshed; history stays.
//!    `conflict` (someone committed first): the prepared commit is dropped and the resync
//!    starts again from step 1 (a bounded number of times, then the conversation is marked
//!    broken, saying why).
//!
//! [`discover`] runs once after a restore: `ListGroups` on the home relay and on every
//! relay a conversation lives on; a group this install does not know (the old install
//! joined it after the backup) is joined the same way, creating its conversation.

use std::sync::Arc;
use std::time::Duration;

use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::*;
use rusqlite::{OptionalExtension as _, params};
use sotto_protocol::api::EventPayload;
use sotto_protocol::relay::{RelayError, RelayErrorKind, Request, Response};

use super::Engine;
use super::inbound::{check_member_keys, mark_broken, refresh_conversation};
use super::outbound::{group_info_bytes, keep_group, take_group};
use crate::keys::DeviceKey;
use crate::mls::{self, Provider};
use crate::relay::{RelayCallError, RelayConn};
use crate::store::{StoreError, Tx};

/// Conflicts (someone else committed first) before a resync gives up.
const MAX_ATTEMPTS: i64 = 16;
/// The `meta` key that asks the engine to look for groups this install does not know.
pub const DISCOVER: &str = "discover_groups";
/// Why a resync row was made by [`discover`] (the conversation is new on this install).
const JOIN: &str = "join";

/// What a resync step did, for the actor.
#[derive(Debug)]
pub(super) enum Outcome {
    /// The resync is complete; the actor goes on as usual.
    Done,
    /// Still resyncing (a lost race); run again at once.
    Again,
    /// A transient failure; retry after a backoff.
    Retry(String),
    /// Given up: the conversation is broken.
    Finished,
}

/// Schedules a resync of `conv` (in the transaction that found it is needed).
pub fn schedule(tx: &mut Tx<'_>, conv: &str, reason: &str) -> Result<(), StoreError> {
    tracing::warn!(conversation = %conv, "the conversation needs a resync: {reason}");
    tx.conn().execute(
        "INSERT OR IGNORE INTO resyncs (conversation, reason, created_at) VALUES (?1, ?2, ?3)",
        params![conv, reason, crate::clock::now_rfc3339()],
    )?;
    Ok(())
}

/// Whether `conv` has a resync pending.
pub fn pending(conn: &rusqlite::Connection, conv: &str) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM resyncs WHERE conversation = ?1)")?
        .query_row([conv], |r| r.get(0))?)
}

/// A `resyncs` row.
#[derive(Debug, Clone)]
struct Row {
    reason: String,
    post_id: Option<[u8; 16]>,
    message: Option<Vec<u8>>,
    group_info: Option<Vec<u8>>,
}

fn load(conn: &rusqlite::Connection, conv: &str) -> Result<Option<Row>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT reason, post_id, message, group_info FROM resyncs WHERE conversation = ?1",
            [conv],
            |r| {
                Ok(Row {
                    reason: r.get(0)?,
                    post_id: r
                        .get::<_, Option<Vec<u8>>>(1)?
                        .and_then(|p| p.try_into().ok()),
                    message: r.get(2)?,
                    group_info: r.get(3)?,
                })
            },
        )
        .optional()?)
}

/// Gives up: the row goes and the conversation is marked broken with `why`.
fn give_up(tx: &mut Tx<'_>, conv: &str, why: &str) -> Result<(), StoreError> {
    tx.conn()
        .execute("DELETE FROM resyncs WHERE conversation = ?1", [conv])?;
    if crate::model::conversation(tx.conn(), conv)?.is_some() {
        mark_broken(tx, conv, why)?;
    }
    Ok(())
}

/// The relay says this principal is no longer on the group's access list: the conversation
/// ends as `removed` (as when the removal commit is processed), not broken.
fn removed(tx: &mut Tx<'_>, conv: &str, why: &str) -> Result<(), StoreError> {
    tracing::warn!(conversation = %conv, "no longer a member, the resync ends: {why}");
    tx.conn()
        .execute("DELETE FROM resyncs WHERE conversation = ?1", [conv])?;
    if crate::model::conversation(tx.conn(), conv)?.is_none() {
        return Ok(());
    }
    tx.conn().execute(
        "UPDATE conversations SET state = 'removed' WHERE id = ?1",
        [conv],
    )?;
    tx.conn()
        .execute("DELETE FROM outbox WHERE conversation = ?1", [conv])?;
    let row = crate::model::conversation(tx.conn(), conv)?
        .ok_or_else(|| StoreError::Decode(format!("conversation {conv} vanished")))?;
    let conversation = crate::model::conversation_api(tx.conn(), &row)?;
    tx.emit(EventPayload::ConversationRemoved { conversation })?;
    Ok(())
}

/// Ends a resync the relay refused for good: `removed` when we are no longer a member,
/// else `broken`, saying why.
fn refused(
    tx: &mut Tx<'_>,
    conv: &str,
    kind: &RelayErrorKind,
    why: &str,
) -> Result<(), StoreError> {
    if matches!(kind, RelayErrorKind::Forbidden) {
        removed(tx, conv, why)
    } else {
        give_up(tx, conv, why)
    }
}

fn retryable(kind: &RelayErrorKind) -> bool {
    matches!(
        kind,
        RelayErrorKind::RateLimited { .. } | RelayErrorKind::Internal
    )
}

/// The group's latest GroupInfo from the relay: `Ok(Ok((bytes, commit seq)))`, or
/// `Ok(Err(refusal))` when the relay will not give one (no such group, not a member, none
/// stored yet), `Err(why)` for a transient failure.
async fn fetch_group_info(
    conn: &RelayConn,
    group_id: &[u8],
) -> Result<Result<(Vec<u8>, u64), RelayError>, String> {
    match conn
        .request(Request::GetGroupInfo {
            group_id: group_id.to_vec(),
        })
        .await
    {
        Ok(Response::GroupInfoMessage {
            group_info, seq, ..
        }) => Ok(Ok((group_info, seq))),
        Ok(other) => Err(format!("unexpected answer {other:?}")),
        Err(RelayCallError::Refused(e)) if retryable(&e.kind) => Err(e.to_string()),
        Err(RelayCallError::Refused(e)) => Ok(Err(e)),
        Err(e) => Err(e.to_string()),
    }
}

/// Who joins: this device's address, device id and key.
pub(super) struct Me<'a> {
    pub(super) address: &'a str,
    pub(super) device_id: &'a str,
    pub(super) key: &'a DeviceKey,
}

/// Whether this install can trust the GroupInfo the relay sent (`Ok(Err(why))`: refuse).
/// openmls checks its signature only against the signer's leaf in the tree the GroupInfo
/// itself carries, so a relay could make up a group with the same id, sign it with a leaf
/// of its own and learn the new epoch's secrets from our external commit. Checked here:
/// - not older than the state we have (a resync never goes back in epochs);
/// - every leaf with our address carries this device's signature key (the old install
///   shares it), so no ghost of ourselves hides from `check_member_keys`;
/// - the GroupInfo's signature verifies under a key we already trust that a leaf of its
///   tree carries: this device's key, a leaf's same credential and key in our old tree,
///   or the key pinned for that contact.
fn trusted(
    tx: &Tx<'_>,
    me: &Me<'_>,
    info: &openmls::messages::group_info::VerifiableGroupInfo,
    old: Option<&MlsGroup>,
) -> Result<Result<(), String>, StoreError> {
    if let Some(old) = old
        && info.epoch().as_u64() < old.epoch().as_u64()
    {
        return Ok(Err(format!(
            "the relay's GroupInfo is older (epoch {}) than this install's state (epoch {})",
            info.epoch().as_u64(),
            old.epoch().as_u64()
        )));
    }
    let Some(tree) = info.extensions().ratchet_tree() else {
        return Ok(Err("the relay's GroupInfo carries no ratchet tree".into()));
    };
    let own_key = me.key.public_key();
    let old_members = old.map(mls::members).unwrap_or_default();
    let scheme = info.ciphersuite().signature_algorithm();
    let provider = Provider::new(tx.conn());
    let mut signed_by_trusted = false;
    for leaf in tree.ratchet_tree().leaves() {
        let key = leaf.signature_key().as_slice();
        let Some((address, device_id)) = mls::parse_identity(leaf.credential()) else {
            continue;
        };
        if address == me.address && key != own_key {
            return Ok(Err(
                "the relay's GroupInfo has a leaf with this account's address and another key"
                    .into(),
            ));
        }
        if signed_by_trusted {
            continue;
        }
        let trusted_key = address == me.address
            || old_members
                .iter()
                .any(|m| m.address == address && m.device_id == device_id && m.public_key == key)
            || crate::model::contact(tx.conn(), &address)?.is_some_and(|(_, _, k)| k == key);
        signed_by_trusted = trusted_key
            && OpenMlsSignaturePublicKey::new(key.to_vec().into(), scheme)
                .is_ok_and(|pk| info.verify_no_out(provider.crypto(), &pk).is_ok());
    }
    if signed_by_trusted {
        Ok(Ok(()))
    } else {
        Ok(Err(
            "the relay's GroupInfo is not signed by a member key this install trusts".into(),
        ))
    }
}

/// Builds the external commit from `info` (replacing the conversation's MLS state) and
/// stores it on the `resyncs` row; for a conversation this install does not know (`relay`
/// given), creates it. `Ok(Err(why))`: the GroupInfo is unusable.
pub(super) fn build(
    tx: &mut Tx<'_>,
    conv: &str,
    me: &Me<'_>,
    info: &[u8],
    info_seq: u64,
    new_on: Option<&str>,
) -> Result<Result<(), String>, StoreError> {
    let Ok(msg) = MlsMessageIn::tls_deserialize_exact(info) else {
        return Ok(Err("the relay's GroupInfo is undecodable".into()));
    };
    let MlsMessageBodyIn::GroupInfo(verifiable) = msg.extract() else {
        return Ok(Err("the relay's GroupInfo is not a GroupInfo".into()));
    };
    if hex::encode(verifiable.group_id().as_slice()) != conv {
        return Ok(Err("the relay's GroupInfo names another group".into()));
    }
    let old = take_group(tx, conv)?;
    // A relay can send any GroupInfo it likes: refuse one this install cannot trust before
    // the old state goes (a refused GroupInfo changes nothing).
    if let Err(why) = trusted(tx, me, &verifiable, old.as_ref())? {
        if let Some(old) = old {
            keep_group(tx, conv, old);
        }
        tracing::warn!(conversation = %conv, "refused the relay's GroupInfo: {why}");
        return Ok(Err(why));
    }
    let provider = Provider::new(tx.conn());
    if let Some(mut old) = old {
        old.delete(provider.storage()).map_err(StoreError::Sqlite)?;
    }
    let credential = mls::credential(me.address, me.device_id, &me.key.public_key());
    let leaf = LeafNodeParameters::builder()
        .with_capabilities(mls::capabilities())
        .build();
    let built = MlsGroup::external_commit_builder()
        .with_config(mls::join_config())
        .build_group(&provider, verifiable, credential)
        .map_err(|e| match e {
            ExternalCommitBuilderError::StorageError(e) => Err(StoreError::Sqlite(e)),
            other => Ok(format!("cannot join from the GroupInfo: {other}")),
        })
        .and_then(|b| {
            b.leaf_node_parameters(leaf)
                .load_psks(provider.storage())
                .map_err(|e| Ok(format!("building the external commit: {e}")))
        })
        .and_then(|b| {
            b.build(provider.rand(), provider.crypto(), me.key, |_| true)
                .map_err(|e| Ok(format!("building the external commit: {e}")))
        })
        .and_then(|b| {
            b.finalize(&provider).map_err(|e| match e {
                ExternalCommitBuilderFinalizeError::StorageError(e) => Err(StoreError::Sqlite(e)),
                other => Ok(format!("finishing the external commit: {other}")),
            })
        });
    let (group, bundle) = match built {
        Ok(v) => v,
        Err(Err(e)) => return Err(e),
        Err(Ok(why)) => return Ok(Err(why)),
    };
    let (commit, _, own_info) = bundle.into_contents();
    let (Ok(commit), Ok(own_info)) = (
        commit.tls_serialize_detached(),
        group_info_bytes(own_info).map_err(|e| e.to_string()),
    ) else {
        return Ok(Err("encoding the external commit".into()));
    };
    let Some(own_info) = own_info else {
        return Ok(Err("the external commit came without a GroupInfo".into()));
    };
    // Trust on first use, as for a Welcome: members' keys are pinned or checked.
    check_member_keys(tx, me.address, &mls::members(&group))?;
    if let Some(relay) = new_on {
        let name = mls::group_name(&group);
        let members = mls::members(&group);
        let others: Vec<_> = members.iter().filter(|m| m.address != me.address).collect();
        let direct = name.is_none() && others.len() == 1;
        tx.conn().execute(
            "INSERT OR IGNORE INTO conversations (id, name, kind, state, relay, ciphersuite, epoch, cursor, acked, peer, created_at)
             VALUES (?1, ?2, ?3, 'pending', ?4, ?5, ?6, ?7, ?7, ?8, ?9)",
            params![
                conv,
                name,
                if direct { "direct" } else { "group" },
                relay,
                u16::from(group.ciphersuite()),
                group.epoch().as_u64() as i64,
                info_seq as i64,
                direct.then(|| others[0].address.clone()),
                crate::clock::now_rfc3339(),
            ],
        )?;
        tx.conn().execute(
            "INSERT OR IGNORE INTO resyncs (conversation, reason, created_at) VALUES (?1, ?2, ?3)",
            params![conv, JOIN, crate::clock::now_rfc3339()],
        )?;
    }
    let post_id = crate::clock::ordered_id();
    tx.conn().execute(
        "UPDATE resyncs SET post_id = ?2, message = ?3, group_info = ?4 WHERE conversation = ?1",
        params![conv, &post_id[..], commit, own_info],
    )?;
    keep_group(tx, conv, group);
    Ok(Ok(()))
}

/// The external commit was accepted at `seq`: the resync is complete.
fn finish(tx: &mut Tx<'_>, conv: &str, seq: u64) -> Result<(), StoreError> {
    let Some(row) = load(tx.conn(), conv)? else {
        return Ok(());
    };
    tx.conn()
        .execute("DELETE FROM resyncs WHERE conversation = ?1", [conv])?;
    tx.conn().execute(
        "UPDATE conversations SET cursor = MAX(cursor, ?2), state = 'active', state_reason = NULL WHERE id = ?1",
        params![conv, seq as i64],
    )?;
    // Whatever was prepared belonged to the old state.
    super::inbound::forget_all_prepared(tx, conv)?;
    let Some(group) = take_group(tx, conv)? else {
        return Err(StoreError::Decode(format!("no MLS state for {conv}")));
    };
    let conversation = refresh_conversation(tx, conv, &group)?;
    keep_group(tx, conv, group);
    tracing::info!(conversation = %conv, seq, "rejoined the group by external commit");
    if row.reason == JOIN {
        tx.emit(EventPayload::ConversationJoined { conversation })?;
    } else {
        tx.emit(EventPayload::ConversationChanged { conversation })?;
    }
    Ok(())
}

/// One step of `conv`'s resync (see the module docs).
pub(super) async fn run(
    engine: &Arc<Engine>,
    conv: &str,
    conn: &RelayConn,
    group_id: &[u8],
) -> Result<Outcome, StoreError> {
    let id = conv.to_owned();
    let Some(row) = engine.store.call(move |db| load(db.conn(), &id)).await? else {
        return Ok(Outcome::Done);
    };
    let row = match (&row.post_id, &row.message, &row.group_info) {
        (Some(_), Some(_), Some(_)) => row,
        _ => {
            let (info, info_seq) = match fetch_group_info(conn, group_id).await {
                Ok(Ok(v)) => v,
                Ok(Err(e)) => {
                    let (id, why) = (
                        conv.to_owned(),
                        format!("{}; the resync is impossible: {e}", row.reason),
                    );
                    engine
                        .store
                        .call(move |db| db.write(|tx| refused(tx, &id, &e.kind, &why)))
                        .await?;
                    return Ok(Outcome::Finished);
                }
                Err(why) => return Ok(Outcome::Retry(why)),
            };
            let (id, address, device_id, key) = (
                conv.to_owned(),
                engine.address.clone(),
                engine.device_id.clone(),
                engine.key.clone(),
            );
            let reason = row.reason.clone();
            let built = engine
                .store
                .call(move |db| {
                    db.write(|tx| {
                        let me = Me {
                            address: &address,
                            device_id: &device_id,
                            key: &key,
                        };
                        match build(tx, &id, &me, &info, info_seq, None)? {
                            Ok(()) => Ok(load(tx.conn(), &id)?),
                            Err(why) => {
                                give_up(tx, &id, &format!("{reason}; the resync failed: {why}"))?;
                                Ok(None)
                            }
                        }
                    })
                })
                .await?;
            match built {
                Some(r) => r,
                None => return Ok(Outcome::Finished),
            }
        }
    };
    let (Some(post_id), Some(message), Some(group_info)) =
        (row.post_id, row.message.clone(), row.group_info.clone())
    else {
        return Ok(Outcome::Retry(
            "the prepared external commit vanished".into(),
        ));
    };
    let answer = conn
        .request(Request::PostCommit {
            post_id,
            group_id: group_id.to_vec(),
            message,
            added: Vec::new(),
            removed: Vec::new(),
            group_info,
        })
        .await;
    match answer {
        Ok(Response::Accepted { seq, .. }) => {
            let id = conv.to_owned();
            engine
                .store
                .call(move |db| db.write(|tx| finish(tx, &id, seq)))
                .await?;
            Ok(Outcome::Done)
        }
        Ok(other) => Ok(Outcome::Retry(format!("unexpected answer {other:?}"))),
        Err(RelayCallError::Refused(e)) if matches!(e.kind, RelayErrorKind::Conflict { .. }) => {
            // Someone committed first: build again from the newer GroupInfo.
            let id = conv.to_owned();
            let reason = row.reason.clone();
            let gave_up = engine
                .store
                .call(move |db| {
                    db.write(|tx| {
                        tx.conn().execute(
                            "UPDATE resyncs SET post_id = NULL, message = NULL, group_info = NULL,
                                 attempts = attempts + 1 WHERE conversation = ?1",
                            [&id],
                        )?;
                        let attempts: i64 = tx.conn().query_row(
                            "SELECT attempts FROM resyncs WHERE conversation = ?1",
                            [&id],
                            |r| r.get(0),
                        )?;
                        if attempts >= MAX_ATTEMPTS {
                            give_up(
                                tx,
                                &id,
                                &format!("{reason}; the external commit lost {attempts} times in a row (the relay's GroupInfo may be stale)"),
                            )?;
                            return Ok(true);
                        }
                        Ok(false)
                    })
                })
                .await?;
            Ok(if gave_up {
                Outcome::Finished
            } else {
                Outcome::Again
            })
        }
        Err(RelayCallError::Refused(e)) if retryable(&e.kind) => Ok(Outcome::Retry(e.to_string())),
        Err(RelayCallError::Refused(e)) => {
            let (id, why) = (
                conv.to_owned(),
                format!("{}; the relay refused the external commit: {e}", row.reason),
            );
            engine
                .store
                .call(move |db| db.write(|tx| refused(tx, &id, &e.kind, &why)))
                .await?;
            Ok(Outcome::Finished)
        }
        Err(e) => Ok(Outcome::Retry(e.to_string())),
    }
}

/// After a restore (the `meta` key [`DISCOVER`]): finds the groups this install does not
/// know through `ListGroups` on the home relay and on every relay a conversation lives
/// on, and joins each by external commit (the conversation's actor posts it). The key is
/// removed once every relay answered.
pub(super) async fn discover(engine: Arc<Engine>) {
    let mut shutdown = engine.shutdown.clone();
    let mut backoff = Duration::from_millis(200);
    loop {
        if *shutdown.borrow() {
            return;
        }
        match discover_once(&engine).await {
            Ok(()) => return,
            Err(why) => {
                tracing::debug!(cause = %why, "looking for unknown groups; will retry");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

async fn discover_once(engine: &Arc<Engine>) -> Result<(), String> {
    let home = engine.relays.home().to_owned();
    let mut relays: Vec<String> = engine
        .store
        .call(|db| {
            let mut st = db
                .conn()
                .prepare("SELECT DISTINCT relay FROM conversations ORDER BY relay")?;
            let rows = st.query_map([], |r| r.get::<_, String>(0))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
        .map_err(|e| e.to_string())?;
    relays.retain(|r| *r != home);
    relays.insert(0, home);
    for url in relays {
        let conn = engine.relays.get(&url).await.map_err(|e| e.to_string())?;
        let groups = match conn.request(Request::ListGroups).await {
            Ok(Response::Groups { groups }) => groups,
            Ok(other) => return Err(format!("unexpected answer {other:?}")),
            Err(RelayCallError::Refused(e)) if !retryable(&e.kind) => {
                // A relay that does not offer the call (an older one): nothing to find there.
                tracing::info!(relay = %url, cause = %e, "the relay does not list groups");
                continue;
            }
            Err(e) => return Err(e.to_string()),
        };
        for g in groups {
            let conv = hex::encode(&g.group_id);
            let id = conv.clone();
            let known = engine
                .store
                .call(move |db| Ok(crate::model::conversation(db.conn(), &id)?.is_some()))
                .await
                .map_err(|e| e.to_string())?;
            if known {
                continue;
            }
            let (info, info_seq) = match fetch_group_info(&conn, &g.group_id).await? {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(conversation = %conv, relay = %url, cause = %e, "a group this install does not know cannot be joined");
                    continue;
                }
            };
            let (id, address, device_id, key, relay) = (
                conv.clone(),
                engine.address.clone(),
                engine.device_id.clone(),
                engine.key.clone(),
                url.clone(),
            );
            let built = engine
                .store
                .call(move |db| {
                    db.write(|tx| {
                        if crate::model::conversation(tx.conn(), &id)?.is_some() {
                            return Ok(Ok(false)); // joined meanwhile (a Welcome)
                        }
                        let me = Me {
                            address: &address,
                            device_id: &device_id,
                            key: &key,
                        };
                        // A build refused half-way (after openmls stored the new group)
                        // leaves nothing behind: no MLS state without a conversation.
                        let built = tx.savepoint(
                            |tx| build(tx, &id, &me, &info, info_seq, Some(&relay)),
                            Result::is_ok,
                        )?;
                        Ok(built.map(|()| true))
                    })
                })
                .await
                .map_err(|e| e.to_string())?;
            match built {
                Ok(true) => {
                    tracing::info!(conversation = %conv, relay = %url, "joining a group this install did not know");
                    engine.wake(&conv);
                }
                Ok(false) => {}
                Err(why) => {
                    tracing::warn!(conversation = %conv, relay = %url, cause = %why, "a group this install does not know cannot be joined");
                }
            }
        }
    }
    engine
        .store
        .call(|db| {
            db.conn()
                .execute("DELETE FROM meta WHERE key = ?1", [DISCOVER])?;
            Ok(())
        })
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}
