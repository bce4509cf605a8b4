//! Rows of the daemon's own tables and their API shapes. Pure functions over a
//! connection, called on the store's writer thread.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension as _, params};
use sotto_protocol::Address;
use sotto_protocol::api::{
    Contact, Conversation, ConversationKind, ConversationState, ErrorInfo, Message, MessageState,
    PendingChange,
};

use crate::store::StoreError;

/// A conversation row.
#[derive(Debug, Clone)]
pub struct ConvRow {
    /// Hex group id.
    pub id: String,
    /// Name from the group context.
    pub name: Option<String>,
    /// `direct` or `group`.
    pub kind: String,
    /// Lifecycle state.
    pub state: String,
    /// The relay holding the log.
    pub relay: String,
    /// The ciphersuite number.
    pub ciphersuite: u16,
    /// The epoch this device is at.
    pub epoch: u64,
    /// The last processed log seq.
    pub cursor: u64,
    /// The last seq acknowledged to the relay.
    pub acked: u64,
    /// For a direct conversation: the peer's address.
    pub peer: Option<String>,
    /// The read marker: received messages at log positions above it are unread.
    pub read_position: u64,
    /// When the conversation was created or last changed (name, state, epoch).
    pub changed_at: String,
    /// Activity order: higher was touched (a message, a change) more recently.
    pub activity: i64,
    /// Why the conversation is broken (set with the state; `None` otherwise).
    pub state_reason: Option<String>,
}

const CONV_COLUMNS: &str = "id, name, kind, state, relay, ciphersuite, epoch, cursor, acked, peer, read_position, COALESCE(changed_at, created_at), activity, state_reason";

fn conv_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ConvRow> {
    Ok(ConvRow {
        id: r.get(0)?,
        name: r.get(1)?,
        kind: r.get(2)?,
        state: r.get(3)?,
        relay: r.get(4)?,
        ciphersuite: r.get(5)?,
        epoch: r.get::<_, i64>(6)? as u64,
        cursor: r.get::<_, i64>(7)? as u64,
        acked: r.get::<_, i64>(8)? as u64,
        peer: r.get(9)?,
        read_position: r.get::<_, i64>(10)? as u64,
        changed_at: r.get(11)?,
        activity: r.get(12)?,
        state_reason: r.get(13)?,
    })
}

/// One conversation by id.
pub fn conversation(conn: &Connection, id: &str) -> Result<Option<ConvRow>, StoreError> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {CONV_COLUMNS} FROM conversations WHERE id = ?1"
        ))?
        .query_row([id], conv_from_row)
        .optional()?)
}

/// Every conversation, newest first.
pub fn conversations(conn: &Connection) -> Result<Vec<ConvRow>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {CONV_COLUMNS} FROM conversations ORDER BY created_at DESC, id"
    ))?;
    let rows = stmt.query_map([], conv_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The API shape of a conversation, with members and pending changes.
pub fn conversation_api(conn: &Connection, row: &ConvRow) -> Result<Conversation, StoreError> {
    let last_message = last_message(conn, &row.id)?;
    let mut stmt = conn.prepare_cached(
        "SELECT DISTINCT address FROM members WHERE conversation = ?1 ORDER BY address",
    )?;
    let members = stmt
        .query_map([&row.id], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .filter_map(|a| Address::parse(&a).ok())
        .collect();
    let mut stmt = conn.prepare_cached(
        "SELECT id, op, mls_message IS NOT NULL, join_seq IS NOT NULL FROM outbox
         WHERE conversation = ?1 AND op != 'message' ORDER BY id",
    )?;
    let pending = stmt
        .query_map([&row.id], |r| {
            Ok(pending_from_row(r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let unread = unread(conn, &row.id, row.read_position)?;
    Ok(api_shape(row, members, pending, unread, last_message))
}

/// Every conversation in the API shape, in `conversation.list` order (newest activity
/// first, then by id), in a constant number of queries whatever the count: the rows, the
/// unread counts, the last messages, every member and every pending change are each one
/// set-based query, joined here. The same result as [`conversation_api`] per row.
pub fn conversations_api(conn: &Connection) -> Result<Vec<Conversation>, StoreError> {
    let mut rows = conversations(conn)?;
    rows.sort_by(|a, b| b.activity.cmp(&a.activity).then_with(|| a.id.cmp(&b.id)));
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    // The unread count of every conversation: one indexed count per row, in one statement.
    let mut unread: HashMap<String, u64> = HashMap::with_capacity(rows.len());
    let mut stmt = conn.prepare_cached(
        "SELECT c.id, (SELECT COUNT(*) FROM messages INDEXED BY messages_received
                       WHERE conversation = c.id AND state = 'received' AND position > c.read_position)
         FROM conversations c",
    )?;
    for r in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
        let (id, n) = r?;
        unread.insert(id, n.max(0) as u64);
    }
    // The newest message of every conversation: one read of the order-key index per row.
    let mut last: HashMap<String, Message> = HashMap::with_capacity(rows.len());
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE rowid IN (
             SELECT (SELECT rowid FROM messages INDEXED BY messages_by_order
                     WHERE conversation = c.id ORDER BY {MESSAGE_ORDER_KEY} DESC LIMIT 1)
             FROM conversations c)"
    ))?;
    for r in stmt.query_map([], message_from_row)? {
        let (m, _) = r?;
        last.insert(m.conversation.clone(), m);
    }
    let mut members: HashMap<String, Vec<Address>> = HashMap::with_capacity(rows.len());
    let mut stmt = conn.prepare_cached(
        "SELECT DISTINCT conversation, address FROM members ORDER BY conversation, address",
    )?;
    for r in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
        let (conv, address) = r?;
        if let Ok(a) = Address::parse(&address) {
            members.entry(conv).or_default().push(a);
        }
    }
    let mut pending: HashMap<String, Vec<PendingChange>> = HashMap::new();
    let mut stmt = conn.prepare_cached(
        "SELECT conversation, id, op, mls_message IS NOT NULL, join_seq IS NOT NULL FROM outbox
         WHERE op != 'message' ORDER BY conversation, id",
    )?;
    for r in stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            pending_from_row(r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?),
        ))
    })? {
        let (conv, change) = r?;
        pending.entry(conv).or_default().push(change);
    }
    Ok(rows
        .iter()
        .map(|row| {
            api_shape(
                row,
                members.remove(&row.id).unwrap_or_default(),
                pending.remove(&row.id).unwrap_or_default(),
                unread.get(&row.id).copied().unwrap_or(0),
                last.remove(&row.id),
            )
        })
        .collect())
}

fn pending_from_row(id: i64, op: String, prepared: bool, welcoming: bool) -> PendingChange {
    PendingChange {
        id: id.to_string(),
        op,
        state: if welcoming {
            "welcoming"
        } else if prepared {
            "sending"
        } else {
            "queued"
        }
        .to_owned(),
    }
}

/// The API shape of `row` from its parts (shared by [`conversation_api`] and
/// [`conversations_api`], so one conversation and the list cannot disagree).
fn api_shape(
    row: &ConvRow,
    members: Vec<Address>,
    pending: Vec<PendingChange>,
    unread: u64,
    last_message: Option<Message>,
) -> Conversation {
    Conversation {
        id: row.id.clone(),
        name: row.name.clone(),
        kind: if row.kind == "direct" {
            ConversationKind::Direct
        } else {
            ConversationKind::Group
        },
        state: parse_state(&row.state),
        members,
        epoch: row.epoch,
        ciphersuite: openmls::prelude::Ciphersuite::try_from(row.ciphersuite)
            .map(crate::mls::ciphersuite_name)
            .unwrap_or_else(|_| format!("0x{:04x}", row.ciphersuite)),
        relay: row.relay.clone(),
        pending,
        unread,
        last_activity_at: last_activity(&row.changed_at, last_message.as_ref()),
        last_message,
        // Only a broken conversation says why (a stale reason never outlives the state).
        state_reason: row.state_reason.clone().filter(|_| row.state == "broken"),
    }
}

/// Received messages of `conv` after the read marker `read_position` (an indexed count).
pub fn unread(conn: &Connection, conv: &str, read_position: u64) -> Result<u64, StoreError> {
    let n: i64 = conn
        .prepare_cached(
            "SELECT COUNT(*) FROM messages INDEXED BY messages_received
             WHERE conversation = ?1 AND state = 'received' AND position > ?2",
        )?
        .query_row(params![conv, read_position as i64], |r| r.get(0))?;
    Ok(n as u64)
}

/// The newest message of `conv` in `message.list` order (a queued one is newest): one
/// read of the order-key index.
pub fn last_message(conn: &Connection, conv: &str) -> Result<Option<Message>, StoreError> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages INDEXED BY messages_by_order
             WHERE conversation = ?1 ORDER BY {MESSAGE_ORDER_KEY} DESC LIMIT 1"
        ))?
        .query_row([conv], message_from_row)
        .optional()?
        .map(|(m, _)| m))
}

/// The later of the conversation's last change and its newest message (when this device
/// received it, or sent it). RFC 3339 UTC strings of one shape compare as times.
fn last_activity(changed_at: &str, last: Option<&Message>) -> String {
    let message_at = last.map(|m| m.received_at.as_deref().unwrap_or(&m.sent_at));
    match message_at {
        Some(t) if t > changed_at => t.to_owned(),
        _ => changed_at.to_owned(),
    }
}

/// The log position up to which `conv` is read when marked read up to message `up_to`
/// (every message so far without one); `None` when `up_to` is not in the conversation.
pub fn read_target(
    conn: &Connection,
    conv: &str,
    up_to: Option<&str>,
) -> Result<Option<u64>, StoreError> {
    let newest = || -> Result<u64, StoreError> {
        let p: Option<i64> = conn
            .prepare_cached("SELECT MAX(position) FROM messages WHERE conversation = ?1")?
            .query_row([conv], |r| r.get(0))?;
        Ok(p.unwrap_or(0).max(0) as u64)
    };
    let Some(id) = up_to else {
        return Ok(Some(newest()?));
    };
    let found: Option<Option<i64>> = conn
        .prepare_cached(
            "SELECT MAX(position), COUNT(*) FROM messages WHERE conversation = ?1 AND id = ?2",
        )?
        .query_row(params![conv, id], |r| {
            let n: i64 = r.get(1)?;
            Ok((n > 0).then_some(r.get::<_, Option<i64>>(0)?))
        })?;
    Ok(match found {
        None => None,
        Some(Some(p)) => Some(p.max(0) as u64),
        // A queued message sorts after everything in the log: all of it is read.
        Some(None) => Some(newest()?),
    })
}

/// The API state of a stored state string.
pub fn parse_state(s: &str) -> ConversationState {
    match s {
        "pending" => ConversationState::Pending,
        "left" => ConversationState::Left,
        "removed" => ConversationState::Removed,
        "broken" => ConversationState::Broken,
        _ => ConversationState::Active,
    }
}

/// Replaces a conversation's member list.
pub fn set_members(
    conn: &Connection,
    conv: &str,
    members: &[crate::mls::MemberInfo],
) -> Result<(), StoreError> {
    conn.execute("DELETE FROM members WHERE conversation = ?1", [conv])?;
    let mut stmt = conn.prepare_cached(
        "INSERT OR IGNORE INTO members (conversation, address, device_id) VALUES (?1, ?2, ?3)",
    )?;
    for m in members {
        stmt.execute(params![conv, m.address, m.device_id])?;
    }
    Ok(())
}

/// Queued messages get positions from here on (2^52: above any log seq, exact in JSON).
pub const QUEUED_BASE: u64 = 1 << 52;

const MESSAGE_COLUMNS: &str = "id, conversation, sender, kind, text, reply_to, sent_at, received_at, state, error, position, rowid";

fn message_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(Message, i64)> {
    let sender: String = r.get(2)?;
    let state: String = r.get(8)?;
    let error: Option<String> = r.get(9)?;
    let position: Option<i64> = r.get(10)?;
    let rowid: i64 = r.get(11)?;
    Ok((
        Message {
            id: r.get(0)?,
            conversation: r.get(1)?,
            sender: Address::parse(&sender)
                .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?,
            kind: r.get(3)?,
            text: r.get(4)?,
            reply_to: r.get(5)?,
            sent_at: r.get(6)?,
            received_at: r.get(7)?,
            state: match state.as_str() {
                "queued" => MessageState::Queued,
                "sent" => MessageState::Sent,
                "failed" => MessageState::Failed,
                _ => MessageState::Received,
            },
            error: error.and_then(|e| serde_json::from_str::<ErrorInfo>(&e).ok()),
            // Queued messages sort after everything in the log.
            position: position
                .map(|p| p as u64)
                .unwrap_or(u64::MAX / 2 + rowid as u64),
        },
        rowid,
    ))
}

/// One message by (conversation, sender, id).
pub fn message(
    conn: &Connection,
    conv: &str,
    sender: &str,
    id: &str,
) -> Result<Option<Message>, StoreError> {
    Ok(conn
        .prepare_cached(&format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation = ?1 AND sender = ?2 AND id = ?3"))?
        .query_row(
            params![conv, sender, id],
            message_from_row,
        )
        .optional()?
        .map(|(m, _)| m))
}

/// The order of a history: log position, then queued ones in local order. Migration 3
/// indexes exactly this expression (with the conversation), so a page is a range read.
pub const MESSAGE_ORDER_KEY: &str = "COALESCE(position, 4503599627370496 + rowid)";

/// Up to `limit` messages of a conversation before `before` (a message id), oldest first.
pub fn messages(
    conn: &Connection,
    conv: &str,
    before: Option<&str>,
    limit: u32,
) -> Result<Vec<Message>, StoreError> {
    let order_key = MESSAGE_ORDER_KEY;
    let bound = match before {
        Some(id) => conn
            .query_row(
                &format!("SELECT {order_key} FROM messages WHERE conversation = ?1 AND id = ?2"),
                params![conv, id],
                |r| r.get::<_, i64>(0),
            )
            .optional()?
            .ok_or_else(|| StoreError::Decode(format!("no message {id} in this conversation")))?,
        None => i64::MAX,
    };
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation = ?1 AND {order_key} < ?2
         ORDER BY {order_key} DESC LIMIT ?3"
    ))?;
    let mut out = stmt
        .query_map(params![conv, bound, limit], message_from_row)?
        .map(|r| r.map(|(m, _)| m))
        .collect::<Result<Vec<_>, _>>()?;
    out.reverse();
    Ok(out)
}

/// A contact row as the API shows it.
pub fn contact(
    conn: &Connection,
    address: &str,
) -> Result<Option<(Contact, String, Vec<u8>)>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT address, alias, identity_key, verified, device_id FROM contacts WHERE address = ?1",
            [address],
            |r| {
                let key: Vec<u8> = r.get(2)?;
                let address: String = r.get(0)?;
                Ok((
                    Contact {
                        address: Address::parse(&address).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?,
                        alias: r.get(1)?,
                        fingerprint: crate::keys::fingerprint(&key),
                        verified: r.get(3)?,
                    },
                    r.get::<_, String>(4)?,
                    key,
                ))
            },
        )
        .optional()?)
}

/// Every contact, by address.
pub fn contacts(conn: &Connection) -> Result<Vec<Contact>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT address FROM contacts ORDER BY address")?;
    let addresses = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = Vec::new();
    for a in addresses {
        if let Some((c, _, _)) = contact(conn, &a)? {
            out.push(c);
        }
    }
    Ok(out)
}

/// Inserts a conversation this install is creating (`pending` until the relay has the
/// group): direct when it has a `peer`.
pub fn insert_pending_conversation(
    conn: &Connection,
    id: &str,
    name: Option<&str>,
    relay: &str,
    ciphersuite: u16,
    peer: Option<&str>,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO conversations (id, name, kind, state, relay, ciphersuite, epoch, cursor, acked, peer, created_at)
         VALUES (?1, ?2, ?3, 'pending', ?4, ?5, 0, 0, 0, ?6, ?7)",
        params![
            id,
            name,
            if peer.is_some() { "direct" } else { "group" },
            relay,
            ciphersuite,
            peer,
            crate::clock::now_rfc3339()
        ],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use rusqlite::params;

    use super::*;
    use crate::store::Store;

    /// Many conversations with every part the list shows (members with several devices,
    /// received / sent / queued messages, read markers, pending changes of each state, no
    /// messages at all): the batched list equals `conversation_api` of each row, in order.
    #[tokio::test]
    async fn the_list_equals_get_for_each_of_many_conversations() {
        let dir = tempfile::tempdir().unwrap();
        let (events, _rx) = tokio::sync::broadcast::channel(16);
        let store = Store::open(
            &dir.path().join("db.sqlite"),
            &crate::keys::DbKey::generate(),
            events,
            100,
        )
        .unwrap();
        let n = 300usize;
        let (list, each) = store
            .call(move |db| {
                db.write(|tx| {
                    let c = tx.conn();
                    let me = "alice@relay.example";
                    for i in 0..n {
                        let id = format!("{i:032x}");
                        let peer = format!("peer{i}@relay.example");
                        c.execute(
                            "INSERT INTO conversations (id, name, kind, state, relay, ciphersuite, epoch, peer, created_at, read_position, state_reason)
                             VALUES (?1, ?2, ?3, ?4, 'ws://r/sotto/v1', ?5, ?6, ?7, ?8, ?9, ?10)",
                            params![
                                id,
                                (i % 4 == 0).then(|| format!("group {i}")),
                                if i % 4 == 0 { "group" } else { "direct" },
                                ["active", "pending", "left", "broken"][i % 4],
                                if i % 7 == 0 { 0x4f } else { 1 },
                                i as i64,
                                (i % 4 != 0).then_some(peer.clone()),
                                format!("2026-01-01T00:{:02}:{:02}Z", (i / 60) % 60, i % 60),
                                (i % 5) as i64,
                                // Broken ones say why; pending ones keep a stale reason
                                // (from a broken state a resync left) that must not show.
                                (i % 2 == 1).then(|| format!("why {id}")),
                            ],
                        )?;
                        for (addr, dev) in [(me, "d1"), (peer.as_str(), "d1"), (peer.as_str(), "d2")] {
                            c.execute(
                                "INSERT INTO members (conversation, address, device_id) VALUES (?1, ?2, ?3)",
                                params![id, addr, dev],
                            )?;
                        }
                        // Conversation i holds i % 9 messages: every third one sent by us,
                        // the last one of every fourth conversation still queued.
                        let count = i % 9;
                        for m in 0..count {
                            let queued = i % 4 == 1 && m + 1 == count;
                            let mine = m % 3 == 0 || queued;
                            c.execute(
                                "INSERT INTO messages (id, conversation, sender, kind, text, sent_at, received_at, state, position)
                                 VALUES (?1, ?2, ?3, 'text', ?4, ?5, ?6, ?7, ?8)",
                                params![
                                    format!("{i:016x}{m:016x}"),
                                    id,
                                    if mine { me } else { peer.as_str() },
                                    format!("message {m} of {i}"),
                                    format!("2026-02-01T00:00:{m:02}Z"),
                                    (!mine).then(|| format!("2026-02-01T00:01:{m:02}Z")),
                                    if queued { "queued" } else if mine { "sent" } else { "received" },
                                    (!queued).then_some(m as i64 + 1),
                                ],
                            )?;
                        }
                        for (k, (op, prepared, join)) in [
                            ("message", false, false),
                            ("add", false, false),
                            ("rename", true, false),
                            ("create", true, true),
                        ]
                        .iter()
                        .enumerate()
                        .filter(|(k, _)| i % 3 == 0 || *k == 0 || (i % 5 == 1 && *k == 2))
                        {
                            c.execute(
                                "INSERT INTO outbox (conversation, op, payload, mls_message, join_seq, created_at)
                                 VALUES (?1, ?2, '{}', ?3, ?4, '2026-01-01T00:00:00Z')",
                                params![
                                    id,
                                    op,
                                    prepared.then_some(vec![k as u8]),
                                    join.then_some(7i64)
                                ],
                            )?;
                        }
                    }
                    Ok(())
                })?;
                let list = conversations_api(db.conn())?;
                let mut each = Vec::new();
                for c in &list {
                    let row = conversation(db.conn(), &c.id)?.unwrap();
                    each.push(conversation_api(db.conn(), &row)?);
                }
                // The order the list had before it was batched.
                let mut rows = conversations(db.conn())?;
                rows.sort_by(|a, b| b.activity.cmp(&a.activity).then_with(|| a.id.cmp(&b.id)));
                let order: Vec<String> = rows.into_iter().map(|r| r.id).collect();
                Ok((list, (each, order)))
            })
            .await
            .unwrap();
        let (each, order) = each;
        assert_eq!(list.len(), n);
        assert_eq!(list.iter().map(|c| c.id.clone()).collect::<Vec<_>>(), order);
        for (l, g) in list.iter().zip(&each) {
            assert_eq!(l, g, "conversation {}", l.id);
        }
        // Only a broken conversation carries its reason.
        for c in &list {
            let expected = (c.state == ConversationState::Broken).then(|| format!("why {}", c.id));
            assert_eq!(c.state_reason, expected, "conversation {}", c.id);
        }
        assert!(list.iter().any(|c| c.state_reason.is_some()));
        // The seeding covered every part: unread counts, last messages, pending changes of
        // each state, members with two devices listed once.
        assert!(list.iter().any(|c| c.unread > 0));
        assert!(list.iter().any(|c| c.last_message.is_none()));
        assert!(list.iter().any(|c| {
            c.last_message
                .as_ref()
                .is_some_and(|m| m.state == MessageState::Queued)
        }));
        for state in ["queued", "sending", "welcoming"] {
            assert!(
                list.iter()
                    .any(|c| c.pending.iter().any(|p| p.state == state)),
                "{state}"
            );
        }
        assert!(list.iter().all(|c| c.members.len() == 2));
    }
}
