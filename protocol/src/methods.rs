//! The JSON-RPC methods of the local API: name, params and result of each.
//!
//! Each method is a zero-sized type implementing [`Method`]. The daemon registers handlers
//! by these types, the CLI calls through them, and `rpc.discover` is generated from
//! [`ALL`]. Params are objects (by name); unknown fields are refused so an old daemon never
//! silently ignores a field a newer client thinks is safety-relevant.

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::address::Address;
use crate::api::{Account, BackupInfo, Contact, Conversation, Message, Status};

/// A method of the local API.
pub trait Method {
    /// The method name on the wire, e.g. `daemon.status`.
    const NAME: &'static str;
    /// One line for `rpc.discover` and docs.
    const SUMMARY: &'static str;
    /// The params object.
    type Params: Serialize + DeserializeOwned + JsonSchema + Send + 'static;
    /// The result.
    type Result: Serialize + DeserializeOwned + JsonSchema + Send + 'static;
}

/// The description of one method, for schema generation.
#[derive(Debug, Clone, Copy)]
pub struct MethodInfo {
    /// The method name.
    pub name: &'static str,
    /// One line describing it.
    pub summary: &'static str,
    /// The JSON schema of its params.
    pub params_schema: fn(&mut schemars::SchemaGenerator) -> schemars::Schema,
    /// The JSON schema of its result.
    pub result_schema: fn(&mut schemars::SchemaGenerator) -> schemars::Schema,
    /// Decodes a params object into the method's params type exactly as the daemon does
    /// (unknown fields refused); `Err` holds the decoder's message. For the fuzz targets.
    pub decode_params: fn(serde_json::Value) -> Result<(), String>,
}

macro_rules! methods {
    ($( $(#[$doc:meta])* $ty:ident = $name:literal, $summary:literal, $params:ty => $result:ty; )*) => {
        $(
            $(#[$doc])*
            #[doc = concat!("`", $name, "`: ", $summary)]
            #[derive(Debug, Clone, Copy)]
            pub enum $ty {}

            impl Method for $ty {
                const NAME: &'static str = $name;
                const SUMMARY: &'static str = $summary;
                type Params = $params;
                type Result = $result;
            }
        )*

        /// Every method of the API, in the order of API.md.
        pub const ALL: &[MethodInfo] = &[$(
            MethodInfo {
                name: $name,
                summary: $summary,
                params_schema: |g| g.subschema_for::<$params>(),
                result_schema: |g| g.subschema_for::<$result>(),
                decode_params: |v| {
                    serde_json::from_value::<$params>(v).map(|_| ()).map_err(|e| e.to_string())
                },
            },
        )*];
    };
}

/// Params of a method that takes none: `{}` (or omitted).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

/// An empty result object: `{}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Empty {}

/// Params of `account.create`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountCreateParams {
    /// The account name, `[a-z0-9][a-z0-9._-]{0,31}`.
    pub name: String,
    /// The home relay: `host[:port]` or a `ws://`/`wss://` URL.
    pub relay: String,
    /// An invitation token for an invite-only relay (`sotto-relay invite create`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invite: Option<String>,
}

/// Params of `backup.export` and `backup.import`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupParams {
    /// The backup file (an absolute path on the daemon's machine).
    pub path: String,
    /// The passphrase that encrypts the backup (never logged).
    pub passphrase: String,
}

impl std::fmt::Debug for BackupParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupParams")
            .field("path", &self.path)
            .field("passphrase", &"<hidden>")
            .finish()
    }
}

/// Params naming one contact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AddressParams {
    /// The contact's address.
    pub address: Address,
}

/// Params of `contact.add`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactAddParams {
    /// The contact's address.
    pub address: Address,
    /// A local alias.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
}

/// The result of `contact.safety_number`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SafetyNumber {
    /// 60 digits in 12 groups of 5; the same string on both sides.
    pub safety_number: String,
}

/// Params of `contact.verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactVerifyParams {
    /// The contact's address.
    pub address: Address,
    /// The safety number read from the peer (whitespace ignored).
    pub safety_number: String,
}

/// Params of `contact.trust`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactTrustParams {
    /// The contact's address.
    pub address: Address,
    /// The fingerprint of the key to accept.
    pub fingerprint: String,
}

/// Params of `conversation.create`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConversationCreateParams {
    /// The other members.
    pub members: Vec<Address>,
    /// A name (makes it a group even with one peer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The MLS ciphersuite (name or hex code); default 0x0001.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ciphersuite: Option<String>,
}

/// Params naming one conversation: an id, a peer's address (the direct conversation) or a unique name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConversationParams {
    /// Id, address or unique name.
    pub conversation: String,
}

/// Params of `conversation.add` and `conversation.remove`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConversationMembersParams {
    /// Id, address or unique name.
    pub conversation: String,
    /// The members to add or remove.
    pub members: Vec<Address>,
}

/// Params of `conversation.rename`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConversationRenameParams {
    /// Id, address or unique name.
    pub conversation: String,
    /// The new name.
    pub name: String,
}

/// Params of `message.send`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageSendParams {
    /// Id, address or unique name.
    pub conversation: String,
    /// The text (at most `max_text_bytes` UTF-8 bytes).
    pub text: String,
    /// The id of the message this replies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// A key that makes retries of the same send safe (kept at least 7 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// Params of `message.list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageListParams {
    /// Id, address or unique name.
    pub conversation: String,
    /// Only messages before this message id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
    /// At most this many (the newest ones), oldest first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// Params of `conversation.mark_read`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConversationMarkReadParams {
    /// Id, address or unique name.
    pub conversation: String,
    /// Mark read up to and including this message id; default: everything so far. The
    /// marker never moves backwards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub up_to: Option<String>,
}

/// Params of `message.search`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageSearchParams {
    /// Plain words: each must occur as a word, the last may also be a word's beginning.
    /// Punctuation and search-syntax characters are just text.
    pub query: String,
    /// Only this conversation (id, address or unique name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation: Option<String>,
    /// At most this many hits (default 20, at most 200).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// One hit of `message.search`: the message and a snippet of its text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SearchHit {
    /// The message.
    #[serde(flatten)]
    pub message: Message,
    /// The matching part of the text, the matched words between `[` and `]`, cut parts
    /// marked with `…`.
    pub snippet: String,
}

/// Params of `events.subscribe`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscribeParams {
    /// Replay every persisted event with `seq > since` first; without it, only live events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<u64>,
}

/// Params of `events.unsubscribe`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UnsubscribeParams {
    /// The subscription id returned by `events.subscribe`.
    pub subscription: String,
}

methods! {
    DaemonStatus = "daemon.status", "The daemon's version, protocol, account, relays and uptime", NoParams => Status;
    DaemonShutdown = "daemon.shutdown", "Stop the daemon (the reply is sent first)", NoParams => Empty;
    RpcDiscover = "rpc.discover", "The OpenRPC document of every method", NoParams => serde_json::Value;
    AccountCreate = "account.create", "Create this device's identity and account on a relay", AccountCreateParams => Account;
    AccountInfo = "account.info", "This device's account", NoParams => Account;
    ContactAdd = "contact.add", "Fetch a peer's identity key from its relay and pin it", ContactAddParams => Contact;
    ContactList = "contact.list", "Every contact", NoParams => Vec<Contact>;
    ContactRemove = "contact.remove", "Forget a contact", AddressParams => Empty;
    ContactSafetyNumber = "contact.safety_number", "The safety number to compare with a contact", AddressParams => SafetyNumber;
    ContactVerify = "contact.verify", "Mark a contact verified after comparing safety numbers", ContactVerifyParams => Contact;
    ContactTrust = "contact.trust", "Accept a contact's changed key without comparing numbers", ContactTrustParams => Contact;
    ConversationCreate = "conversation.create", "Create a direct or group conversation", ConversationCreateParams => Conversation;
    ConversationList = "conversation.list", "Every conversation", NoParams => Vec<Conversation>;
    ConversationGet = "conversation.get", "One conversation", ConversationParams => Conversation;
    ConversationAdd = "conversation.add", "Queue adding members", ConversationMembersParams => Conversation;
    ConversationRemove = "conversation.remove", "Queue removing members", ConversationMembersParams => Conversation;
    ConversationLeave = "conversation.leave", "Queue leaving a conversation", ConversationParams => Conversation;
    ConversationRename = "conversation.rename", "Queue renaming a conversation", ConversationRenameParams => Conversation;
    ConversationRotateKeys = "conversation.rotate_keys", "Queue a key update for this device", ConversationParams => Conversation;
    MessageSend = "message.send", "Queue a text message", MessageSendParams => Message;
    MessageList = "message.list", "A conversation's history, oldest first", MessageListParams => Vec<Message>;
    ConversationMarkRead = "conversation.mark_read", "Move a conversation's read marker forward (emits `conversation.read`)", ConversationMarkReadParams => Conversation;
    MessageSearch = "message.search", "Full-text search over this device's history, best match first", MessageSearchParams => Vec<SearchHit>;
    EventsSubscribe = "events.subscribe", "Stream events (replaying from `since` when given)", SubscribeParams => String;
    EventsUnsubscribe = "events.unsubscribe", "End a subscription", UnsubscribeParams => bool;
    BackupExport = "backup.export", "Write everything this install holds to a passphrase-encrypted file", BackupParams => BackupInfo;
    BackupImport = "backup.import", "Restore a backup on a daemon without an account and take the account over", BackupParams => Account;
}

/// The notification method that carries subscription events.
pub const EVENT_NOTIFICATION: &str = "event";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_dotted() {
        let mut seen = std::collections::HashSet::new();
        for m in ALL {
            assert!(seen.insert(m.name), "duplicate {}", m.name);
            assert!(m.name.contains('.'), "{} is not area.verb", m.name);
        }
        // The fixed names of ../shared/API.md: none may ever disappear (more may be added).
        for fixed in [
            "daemon.status",
            "daemon.shutdown",
            "rpc.discover",
            "account.create",
            "account.info",
            "contact.add",
            "contact.list",
            "contact.remove",
            "contact.safety_number",
            "contact.verify",
            "contact.trust",
            "conversation.create",
            "conversation.list",
            "conversation.get",
            "conversation.add",
            "conversation.remove",
            "conversation.leave",
            "conversation.rename",
            "conversation.rotate_keys",
            "conversation.mark_read",
            "message.send",
            "message.list",
            "message.search",
            "events.subscribe",
            "events.unsubscribe",
            "backup.export",
            "backup.import",
        ] {
            assert!(seen.contains(fixed), "{fixed} is missing from ALL");
        }
    }

    #[test]
    fn unknown_params_are_refused() {
        let err = serde_json::from_value::<AccountCreateParams>(
            serde_json::json!({"name": "a", "relay": "r", "colour": 1}),
        )
        .unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
        assert!(serde_json::from_value::<NoParams>(serde_json::json!({"x": 1})).is_err());
    }
}
