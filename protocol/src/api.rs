//! The objects of the local API: accounts, contacts, conversations, messages, events.
//!
//! Field names are snake_case, ids are strings and times are RFC 3339 UTC strings.
//! New fields are added as optional; clients ignore fields they do not know.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::address::Address;

/// Where the device's private key is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum KeyStoreKind {
    /// The freedesktop Secret Service (GNOME Keyring, KWallet, KeePassXC) on the session bus.
    SecretService,
    /// The Linux kernel key retention service (the user's session keyring).
    Keyutils,
    /// A file of mode 0600 in the data directory: for headless hosts, stored in clear.
    File,
    /// Nowhere: an ephemeral daemon (`sottod --ephemeral`) keeps the key in memory only, and
    /// it is gone when the daemon stops.
    Memory,
}

impl KeyStoreKind {
    /// The name used in config files, the environment and API results.
    pub const fn as_str(self) -> &'static str {
        match self {
            KeyStoreKind::SecretService => "secret-service",
            KeyStoreKind::Keyutils => "keyutils",
            KeyStoreKind::File => "file",
            KeyStoreKind::Memory => "memory",
        }
    }

    /// Parses a config or environment value.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "secret-service" | "secret_service" => Some(KeyStoreKind::SecretService),
            "keyutils" => Some(KeyStoreKind::Keyutils),
            "file" => Some(KeyStoreKind::File),
            _ => None,
        }
    }
}

impl std::fmt::Display for KeyStoreKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// This device's account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Account {
    /// The account's address, `name@host[:port]`.
    pub address: Address,
    /// This device's id (hex); the MLS credential is `address/device_id`.
    pub device_id: String,
    /// SHA-256 of the device's Ed25519 public key, lowercase hex.
    pub fingerprint: String,
    /// The canonical URL of the account's home relay.
    pub relay: String,
    /// Where the private key is kept.
    pub key_store: KeyStoreKind,
    /// `active`, or `revoked` once another install (a restored backup) took the account
    /// over: this install then sends nothing and refuses every state-changing call with
    /// `session_revoked`.
    #[serde(default)]
    pub state: AccountState,
}

/// Whether this install still speaks for its account.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AccountState {
    /// This install is the account's active one.
    #[default]
    Active,
    /// Another install took the account over (`account.revoked`).
    Revoked,
}

impl AccountState {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            AccountState::Active => "active",
            AccountState::Revoked => "revoked",
        }
    }
}

/// The result of `backup.export`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BackupInfo {
    /// The file written.
    pub path: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// When the snapshot was taken (RFC 3339, UTC).
    pub created_at: String,
}

/// A relay connection's state, as reported by `daemon.status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RelayStatus {
    /// The relay's canonical URL.
    pub url: String,
    /// Whether the daemon is connected and authenticated right now.
    pub connected: bool,
}

/// The daemon's state: `daemon.status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Status {
    /// The daemon's version (semver).
    pub version: String,
    /// The integer protocol version of the local API.
    pub protocol: u32,
    /// This device's account, if one was created.
    pub account: Option<Account>,
    /// The relays the daemon uses.
    pub relays: Vec<RelayStatus>,
    /// Seconds since the daemon started.
    pub uptime_s: u64,
    /// The `seq` of the newest persisted event (0 when there is none).
    pub last_event_seq: u64,
    /// The largest `text` that `message.send` accepts, in UTF-8 bytes.
    pub max_text_bytes: u64,
    /// An ephemeral daemon (`sottod --ephemeral`): everything in memory, nothing kept.
    #[serde(default)]
    pub ephemeral: bool,
}

/// A contact: a peer whose identity key this device has pinned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Contact {
    /// The contact's address.
    pub address: Address,
    /// A local alias, if one was set.
    pub alias: Option<String>,
    /// SHA-256 of the contact's pinned identity key, lowercase hex.
    pub fingerprint: String,
    /// Whether the user compared safety numbers with this contact.
    pub verified: bool,
}

/// A conversation's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ConversationKind {
    /// Two members, no name.
    Direct,
    /// Any number of members, usually named.
    Group,
}

/// A conversation's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ConversationState {
    /// Created locally; the group is not yet accepted by the relay.
    Pending,
    /// Usable.
    Active,
    /// This device left.
    Left,
    /// Another member removed this device.
    Removed,
    /// The group's history could not be followed (see docs for recovery).
    Broken,
}

/// A queued membership or key change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PendingChange {
    /// The change's id.
    pub id: String,
    /// The operation: `create`, `add`, `remove`, `leave`, `rename` or `rotate_keys`.
    pub op: String,
    /// Where it is: `queued`, `sending`, ...
    pub state: String,
}

/// A conversation (one MLS group).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Conversation {
    /// The conversation id (the MLS group id, hex).
    pub id: String,
    /// The name, if any.
    pub name: Option<String>,
    /// Direct or group.
    pub kind: ConversationKind,
    /// Lifecycle state.
    pub state: ConversationState,
    /// Members' addresses, this account included.
    pub members: Vec<Address>,
    /// The MLS epoch this device is at.
    pub epoch: u64,
    /// The MLS ciphersuite, e.g. `MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519`.
    pub ciphersuite: String,
    /// The canonical URL of the relay that holds the group's log.
    pub relay: String,
    /// Changes queued and not yet complete.
    pub pending: Vec<PendingChange>,
    /// Received messages after this device's read marker (`conversation.mark_read` moves it).
    #[serde(default)]
    pub unread: u64,
    /// The newest message in the conversation's order (what `message.list` shows last).
    #[serde(default)]
    pub last_message: Option<Message>,
    /// When the newest message arrived or was sent, or the conversation last changed
    /// (created, joined, renamed, members or epoch), whichever is later.
    #[serde(default)]
    pub last_activity_at: String,
    /// Why the conversation is in its state, when the daemon knows: for a `broken` one, the
    /// readable reason it could not be followed (e.g. "the resync is impossible: ...").
    /// Never key material. Absent otherwise (and for daemons that predate it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_reason: Option<String>,
}

/// A message's delivery state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum MessageState {
    /// Durably queued in the outbox.
    Queued,
    /// Accepted by the relay into the group log.
    Sent,
    /// Gave up; `error` says why.
    Failed,
    /// Received from another member.
    Received,
}

/// An error attached to a message or event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorInfo {
    /// The error kind (snake_case).
    pub kind: String,
    /// A human-readable message.
    pub message: String,
}

/// A message in a conversation's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Message {
    /// The message id (the envelope id, hex).
    pub id: String,
    /// The conversation id.
    pub conversation: String,
    /// The sender's address.
    pub sender: Address,
    /// `text` in v1; clients skip kinds they do not know.
    pub kind: String,
    /// The text.
    pub text: String,
    /// The id of the message this replies to.
    pub reply_to: Option<String>,
    /// When the sender sent it (sender's clock).
    pub sent_at: String,
    /// When this device received it (null for own messages).
    pub received_at: Option<String>,
    /// Delivery state.
    pub state: MessageState,
    /// Why it failed, when `state` is `failed`.
    pub error: Option<ErrorInfo>,
    /// Order in the group log; queued messages sort last.
    pub position: u64,
}

/// A persisted event with its sequence number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Event {
    /// Increasing, persisted sequence number.
    pub seq: u64,
    /// The event's type and payload.
    #[serde(flatten)]
    pub payload: EventPayload,
}

/// What happened: the `type` field and the event's payload fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type")]
#[non_exhaustive]
pub enum EventPayload {
    /// The account was created on this device.
    #[serde(rename = "account.created")]
    AccountCreated {
        /// The new account.
        account: Account,
    },
    /// A message was sent from this account, by any client.
    #[serde(rename = "message.created")]
    MessageCreated {
        /// The message.
        message: Message,
    },
    /// A message arrived from another member.
    #[serde(rename = "message.received")]
    MessageReceived {
        /// The message.
        message: Message,
    },
    /// A message's delivery state changed.
    #[serde(rename = "message.state")]
    MessageState {
        /// The conversation id.
        conversation: String,
        /// The message id.
        message_id: String,
        /// The new state.
        state: MessageState,
        /// Why, when it failed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<ErrorInfo>,
    },
    /// This device joined a conversation.
    #[serde(rename = "conversation.joined")]
    ConversationJoined {
        /// The conversation.
        conversation: Conversation,
    },
    /// A conversation's members, name or epoch changed.
    #[serde(rename = "conversation.changed")]
    ConversationChanged {
        /// The conversation.
        conversation: Conversation,
    },
    /// A queued change failed.
    #[serde(rename = "conversation.change_failed")]
    ConversationChangeFailed {
        /// The conversation.
        conversation: Conversation,
        /// Why it failed (e.g. a member without key packages for the ciphersuite).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<ErrorInfo>,
    },
    /// This device was removed from a conversation.
    #[serde(rename = "conversation.removed")]
    ConversationRemoved {
        /// The conversation.
        conversation: Conversation,
    },
    /// A conversation's history could not be followed.
    #[serde(rename = "conversation.broken")]
    ConversationBroken {
        /// The conversation.
        conversation: Conversation,
    },
    /// The read marker of a conversation moved (from any client): `unread` is recomputed.
    #[serde(rename = "conversation.read")]
    ConversationRead {
        /// The conversation.
        conversation: Conversation,
    },
    /// A contact's identity key changed.
    #[serde(rename = "contact.identity_changed")]
    ContactIdentityChanged {
        /// The contact.
        address: Address,
        /// The fingerprint pinned before.
        old_fingerprint: String,
        /// The new fingerprint.
        new_fingerprint: String,
    },
    /// A relay connection was established.
    #[serde(rename = "relay.connected")]
    RelayConnected {
        /// The relay's URL.
        url: String,
    },
    /// A relay connection was lost.
    #[serde(rename = "relay.disconnected")]
    RelayDisconnected {
        /// The relay's URL.
        url: String,
    },
    /// Another install of this account (a restored backup) took it over: this install is
    /// revoked (`account.state = "revoked"`) and sends nothing more.
    #[serde(rename = "account.revoked")]
    AccountRevoked {
        /// Why, in words (the home relay's explanation).
        reason: String,
    },
    /// An event type this client does not know (newer daemon): ignore it.
    #[serde(other)]
    Unknown,
}

impl EventPayload {
    /// The `type` string of this event.
    pub fn type_name(&self) -> &'static str {
        match self {
            EventPayload::AccountCreated { .. } => "account.created",
            EventPayload::MessageCreated { .. } => "message.created",
            EventPayload::MessageReceived { .. } => "message.received",
            EventPayload::MessageState { .. } => "message.state",
            EventPayload::ConversationJoined { .. } => "conversation.joined",
            EventPayload::ConversationChanged { .. } => "conversation.changed",
            EventPayload::ConversationChangeFailed { .. } => "conversation.change_failed",
            EventPayload::ConversationRemoved { .. } => "conversation.removed",
            EventPayload::ConversationBroken { .. } => "conversation.broken",
            EventPayload::ConversationRead { .. } => "conversation.read",
            EventPayload::ContactIdentityChanged { .. } => "contact.identity_changed",
            EventPayload::RelayConnected { .. } => "relay.connected",
            EventPayload::RelayDisconnected { .. } => "relay.disconnected",
            EventPayload::AccountRevoked { .. } => "account.revoked",
            EventPayload::Unknown => "unknown",
        }
    }
}

/// The last notification of a subscription that the daemon ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SubscriptionClosed {
    /// Always `subscription.closed`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Why: `overflow` (the client read too slowly) or `shutdown`.
    pub reason: String,
    /// The seq of the last event delivered on this subscription; resubscribe with `since`.
    pub last_seq: u64,
}

impl SubscriptionClosed {
    /// The `type` value of this notification.
    pub const TYPE: &'static str = "subscription.closed";

    /// A close notification with the given reason.
    pub fn new(reason: &str, last_seq: u64) -> Self {
        SubscriptionClosed {
            kind: Self::TYPE.to_owned(),
            reason: reason.to_owned(),
            last_seq,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_wire_shape() {
        let ev = Event {
            seq: 7,
            payload: EventPayload::RelayConnected {
                url: "wss://r.example/sotto/v1".into(),
            },
        };
        let v = serde_json::to_value(&ev).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"seq": 7, "type": "relay.connected", "url": "wss://r.example/sotto/v1"})
        );
        let back: Event = serde_json::from_value(v).unwrap();
        assert_eq!(back, ev);
        let unknown: Event =
            serde_json::from_value(serde_json::json!({"seq": 8, "type": "future.thing", "x": 1}))
                .unwrap();
        assert_eq!(unknown.payload, EventPayload::Unknown);
    }
}
