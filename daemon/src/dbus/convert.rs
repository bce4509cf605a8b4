//! API objects as `a{sv}` dicts: one function per object, the JSON field names as keys,
//! nested objects as `a{sv}`, lists of objects as `aa{sv}`, and a null field omitted.
//!
//! Integers keep their width: `seq`, `epoch`, `position`, `uptime_s` … are `t`, `protocol`
//! is `u`. An event is flattened: `seq` (t), `type` (s) and the payload's fields.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::Value as Json;
use sotto_protocol::api::{
    Account, Contact, Conversation, ErrorInfo, Event, EventPayload, Message, PendingChange,
    RelayStatus, Status,
};
use sotto_protocol::methods::SearchHit;
use zbus::zvariant::Value;

/// One object: `a{sv}`.
pub type Dict = HashMap<String, Value<'static>>;

/// A dict under construction.
struct D(Dict);

impl D {
    fn new() -> D {
        D(Dict::new())
    }

    fn put(mut self, key: &str, value: impl Into<Value<'static>>) -> D {
        self.0.insert(key.to_owned(), value.into());
        self
    }

    fn opt(self, key: &str, value: Option<impl Into<Value<'static>>>) -> D {
        match value {
            Some(v) => self.put(key, v),
            None => self,
        }
    }

    fn done(self) -> Dict {
        self.0
    }
}

/// The wire name of a unit enum (its serde string), e.g. `direct`, `queued`.
fn wire_name<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(Json::String(s)) => s,
        _ => String::new(),
    }
}

/// `daemon.status`.
pub fn status(s: &Status) -> Dict {
    D::new()
        .put("version", s.version.clone())
        .put("protocol", s.protocol)
        .opt("account", s.account.as_ref().map(account))
        .put("relays", s.relays.iter().map(relay).collect::<Vec<_>>())
        .put("uptime_s", s.uptime_s)
        .put("last_event_seq", s.last_event_seq)
        .put("max_text_bytes", s.max_text_bytes)
        .put("ephemeral", s.ephemeral)
        .done()
}

fn relay(r: &RelayStatus) -> Dict {
    D::new()
        .put("url", r.url.clone())
        .put("connected", r.connected)
        .done()
}

/// `Account`.
pub fn account(a: &Account) -> Dict {
    D::new()
        .put("address", a.address.to_string())
        .put("device_id", a.device_id.clone())
        .put("fingerprint", a.fingerprint.clone())
        .put("relay", a.relay.clone())
        .put("key_store", a.key_store.as_str().to_owned())
        .put("state", a.state.as_str().to_owned())
        .done()
}

/// `Contact`.
pub fn contact(c: &Contact) -> Dict {
    D::new()
        .put("address", c.address.to_string())
        .opt("alias", c.alias.clone())
        .put("fingerprint", c.fingerprint.clone())
        .put("verified", c.verified)
        .done()
}

/// `Conversation`.
pub fn conversation(c: &Conversation) -> Dict {
    D::new()
        .put("id", c.id.clone())
        .opt("name", c.name.clone())
        .put("kind", wire_name(&c.kind))
        .put("state", wire_name(&c.state))
        .put(
            "members",
            c.members.iter().map(|m| m.to_string()).collect::<Vec<_>>(),
        )
        .put("epoch", c.epoch)
        .put("ciphersuite", c.ciphersuite.clone())
        .put("relay", c.relay.clone())
        .put("pending", c.pending.iter().map(pending).collect::<Vec<_>>())
        .put("unread", unread_u32(c.unread))
        .opt("last_message", c.last_message.as_ref().map(message))
        .put("last_activity_at", c.last_activity_at.clone())
        .opt("state_reason", c.state_reason.clone())
        .done()
}

/// An unread count as `u` (saturating: nobody has 4 billion unread messages).
pub fn unread_u32(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn pending(p: &PendingChange) -> Dict {
    D::new()
        .put("id", p.id.clone())
        .put("op", p.op.clone())
        .put("state", p.state.clone())
        .done()
}

/// `Message`.
pub fn message(m: &Message) -> Dict {
    D::new()
        .put("id", m.id.clone())
        .put("conversation", m.conversation.clone())
        .put("sender", m.sender.to_string())
        .put("kind", m.kind.clone())
        .put("text", m.text.clone())
        .opt("reply_to", m.reply_to.clone())
        .put("sent_at", m.sent_at.clone())
        .opt("received_at", m.received_at.clone())
        .put("state", wire_name(&m.state))
        .opt("error", m.error.as_ref().map(error_info))
        .put("position", m.position)
        .done()
}

/// A `message.search` hit: the message's fields and `snippet`.
pub fn search_hit(h: &SearchHit) -> Dict {
    let mut d = message(&h.message);
    d.insert("snippet".to_owned(), Value::from(h.snippet.clone()));
    d
}

/// `contact.safety_number`'s result.
pub fn safety_number(n: &str) -> Dict {
    D::new().put("safety_number", n.to_owned()).done()
}

/// `{kind, message}` of a failed message.
pub fn error_info(e: &ErrorInfo) -> Dict {
    D::new()
        .put("kind", e.kind.clone())
        .put("message", e.message.clone())
        .done()
}

/// The `extras` of a signal: `seq`, then whatever the caller adds.
pub fn extras(seq: u64) -> Dict {
    D::new().put("seq", seq).done()
}

/// An event, flattened: `seq`, `type`, then the payload's fields.
pub fn event(e: &Event) -> Dict {
    let d = D::new()
        .put("seq", e.seq)
        .put("type", e.payload.type_name().to_owned());
    match &e.payload {
        EventPayload::AccountCreated { account: a } => d.put("account", account(a)),
        EventPayload::MessageCreated { message: m }
        | EventPayload::MessageReceived { message: m } => d.put("message", message(m)),
        EventPayload::MessageState {
            conversation,
            message_id,
            state,
            error,
        } => d
            .put("conversation", conversation.clone())
            .put("message_id", message_id.clone())
            .put("state", wire_name(state))
            .opt("error", error.as_ref().map(error_info)),
        EventPayload::ConversationJoined { conversation: c }
        | EventPayload::ConversationChanged { conversation: c }
        | EventPayload::ConversationChangeFailed {
            conversation: c, ..
        }
        | EventPayload::ConversationRemoved { conversation: c }
        | EventPayload::ConversationBroken { conversation: c }
        | EventPayload::ConversationRead { conversation: c } => {
            d.put("conversation", conversation(c))
        }
        EventPayload::ContactIdentityChanged {
            address,
            old_fingerprint,
            new_fingerprint,
        } => d
            .put("address", address.to_string())
            .put("old_fingerprint", old_fingerprint.clone())
            .put("new_fingerprint", new_fingerprint.clone()),
        EventPayload::RelayConnected { url } | EventPayload::RelayDisconnected { url } => {
            d.put("url", url.clone())
        }
        // A payload added after this adapter: its fields, converted from JSON.
        other => {
            let mut d = d;
            if let Ok(Json::Object(fields)) = serde_json::to_value(other) {
                for (k, v) in fields {
                    if k != "type" {
                        d = d.opt(&k, from_json(v));
                    }
                }
            }
            d
        }
    }
    .done()
}

/// A JSON value as a D-Bus value (for payloads this adapter does not know): null is
/// omitted, a list of strings is `as`, any other list `aa{sv}` or `av`.
fn from_json(v: Json) -> Option<Value<'static>> {
    Some(match v {
        Json::Null => return None,
        Json::Bool(b) => Value::from(b),
        Json::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => Value::from(u),
            (None, Some(i)) => Value::from(i),
            _ => Value::from(n.as_f64().unwrap_or_default()),
        },
        Json::String(s) => Value::from(s),
        Json::Array(items) if items.iter().all(Json::is_string) => Value::from(
            items
                .into_iter()
                .filter_map(|i| i.as_str().map(str::to_owned))
                .collect::<Vec<_>>(),
        ),
        Json::Array(items) if items.iter().all(Json::is_object) => Value::from(
            items
                .into_iter()
                .filter_map(|i| match i {
                    Json::Object(fields) => Some(dict_from_json(fields)),
                    _ => None,
                })
                .collect::<Vec<_>>(),
        ),
        Json::Array(items) => {
            Value::from(items.into_iter().filter_map(from_json).collect::<Vec<_>>())
        }
        Json::Object(fields) => Value::from(dict_from_json(fields)),
    })
}

fn dict_from_json(fields: serde_json::Map<String, Json>) -> Dict {
    fields
        .into_iter()
        .filter_map(|(k, v)| from_json(v).map(|v| (k, v)))
        .collect()
}

#[cfg(test)]
mod tests;
