//! The `org.sotto.Sotto1` interface. Each method decodes its arguments and options into
//! the protocol's params type, calls the service, and converts the result; nothing else.

use std::sync::Arc;

use serde_json::json;
use sotto_protocol::methods::{
    AccountCreate, AccountInfo, ContactAdd, ContactList, ContactSafetyNumber, ContactVerify,
    ConversationAdd, ConversationCreate, ConversationGet, ConversationLeave, ConversationList,
    ConversationMarkRead, ConversationRemove, ConversationRename, DaemonStatus, MessageList,
    MessageSearch, MessageSend,
};
use zbus::object_server::SignalEmitter;

use super::convert::{self, Dict};
use super::error::DbusError;
use super::params::{Options, decode};
use crate::service::Service;

/// The object at `/org/sotto/Sotto1`.
#[derive(Debug)]
pub struct Sotto1 {
    service: Arc<Service>,
}

impl Sotto1 {
    /// The interface over `service`.
    pub fn new(service: Arc<Service>) -> Sotto1 {
        Sotto1 { service }
    }
}

#[zbus::interface(name = "org.sotto.Sotto1")]
impl Sotto1 {
    /// `daemon.status`: version, protocol, account, relays, uptime, last event seq.
    #[zbus(out_args("status"))]
    async fn status(&self, options: Options) -> Result<Dict, DbusError> {
        decode::<DaemonStatus>(json!({}), options)?;
        Ok(convert::status(&self.service.status().await?))
    }

    /// `account.info`: this device's account.
    #[zbus(out_args("account"))]
    async fn account_info(&self, options: Options) -> Result<Dict, DbusError> {
        decode::<AccountInfo>(json!({}), options)?;
        Ok(convert::account(&self.service.account_info().await?))
    }

    /// `conversation.list`.
    #[zbus(out_args("conversations"))]
    async fn list_conversations(&self, options: Options) -> Result<Vec<Dict>, DbusError> {
        decode::<ConversationList>(json!({}), options)?;
        let list = self.service.conversation_list().await?;
        Ok(list.iter().map(convert::conversation).collect())
    }

    /// `conversation.get`: by id, a peer's address (the direct conversation) or a unique name.
    #[zbus(out_args("conversation"))]
    async fn get_conversation(
        &self,
        conversation: String,
        options: Options,
    ) -> Result<Dict, DbusError> {
        let p = decode::<ConversationGet>(json!({"conversation": conversation}), options)?;
        let c = self.service.conversation_get(&p.conversation).await?;
        Ok(convert::conversation(&c))
    }

    /// `conversation.create`; options: `name` (s), `ciphersuite` (s).
    #[zbus(out_args("conversation"))]
    async fn create_conversation(
        &self,
        members: Vec<String>,
        options: Options,
    ) -> Result<Dict, DbusError> {
        let p = decode::<ConversationCreate>(json!({"members": members}), options)?;
        Ok(convert::conversation(
            &self.service.conversation_create(p).await?,
        ))
    }

    /// `conversation.add`: queue adding `members`.
    #[zbus(out_args("conversation"))]
    async fn add_members(
        &self,
        conversation: String,
        members: Vec<String>,
        options: Options,
    ) -> Result<Dict, DbusError> {
        let args = json!({"conversation": conversation, "members": members});
        let p = decode::<ConversationAdd>(args, options)?;
        Ok(convert::conversation(
            &self.service.conversation_add(p).await?,
        ))
    }

    /// `conversation.remove`: queue removing `members`.
    #[zbus(out_args("conversation"))]
    async fn remove_members(
        &self,
        conversation: String,
        members: Vec<String>,
        options: Options,
    ) -> Result<Dict, DbusError> {
        let args = json!({"conversation": conversation, "members": members});
        let p = decode::<ConversationRemove>(args, options)?;
        Ok(convert::conversation(
            &self.service.conversation_remove(p).await?,
        ))
    }

    /// `conversation.leave`: queue leaving the conversation.
    #[zbus(out_args("conversation"))]
    async fn leave_conversation(
        &self,
        conversation: String,
        options: Options,
    ) -> Result<Dict, DbusError> {
        let p = decode::<ConversationLeave>(json!({"conversation": conversation}), options)?;
        let c = self.service.conversation_leave(&p.conversation).await?;
        Ok(convert::conversation(&c))
    }

    /// `conversation.rename`: queue renaming the conversation.
    #[zbus(out_args("conversation"))]
    async fn rename_conversation(
        &self,
        conversation: String,
        name: String,
        options: Options,
    ) -> Result<Dict, DbusError> {
        let args = json!({"conversation": conversation, "name": name});
        let p = decode::<ConversationRename>(args, options)?;
        Ok(convert::conversation(
            &self.service.conversation_rename(p).await?,
        ))
    }

    /// `message.send`; options: `reply_to` (s), `idempotency_key` (s).
    #[zbus(out_args("message"))]
    async fn send_message(
        &self,
        conversation: String,
        text: String,
        options: Options,
    ) -> Result<Dict, DbusError> {
        let args = json!({"conversation": conversation, "text": text});
        let p = decode::<MessageSend>(args, options)?;
        Ok(convert::message(&self.service.message_send(p).await?))
    }

    /// `message.list`, oldest first; options: `before` (s, a message id), `limit` (u).
    #[zbus(out_args("messages"))]
    async fn list_messages(
        &self,
        conversation: String,
        options: Options,
    ) -> Result<Vec<Dict>, DbusError> {
        let p = decode::<MessageList>(json!({"conversation": conversation}), options)?;
        let list = self.service.message_list(p).await?;
        Ok(list.iter().map(convert::message).collect())
    }

    /// `contact.list`.
    #[zbus(out_args("contacts"))]
    async fn list_contacts(&self, options: Options) -> Result<Vec<Dict>, DbusError> {
        decode::<ContactList>(json!({}), options)?;
        let list = self.service.contact_list().await?;
        Ok(list.iter().map(convert::contact).collect())
    }

    /// `contact.add`: fetch the peer's key from its relay and pin it; options: `alias` (s).
    #[zbus(out_args("contact"))]
    async fn add_contact(&self, address: String, options: Options) -> Result<Dict, DbusError> {
        let p = decode::<ContactAdd>(json!({"address": address}), options)?;
        Ok(convert::contact(&self.service.contact_add(p).await?))
    }

    /// `conversation.mark_read`: move the read marker forward (never back); options:
    /// `up_to` (s, a message id; default: everything so far). Returns the conversation with
    /// `unread` recomputed.
    #[zbus(out_args("conversation"))]
    async fn mark_read(&self, conversation: String, options: Options) -> Result<Dict, DbusError> {
        let p = decode::<ConversationMarkRead>(json!({"conversation": conversation}), options)?;
        Ok(convert::conversation(
            &self.service.conversation_mark_read(p).await?,
        ))
    }

    /// `message.search`, best match first, each message with a `snippet` (s); options:
    /// `conversation` (s), `limit` (u).
    #[zbus(out_args("messages"))]
    async fn search_messages(
        &self,
        query: String,
        options: Options,
    ) -> Result<Vec<Dict>, DbusError> {
        let p = decode::<MessageSearch>(json!({"query": query}), options)?;
        let hits = self.service.message_search(p).await?;
        Ok(hits.iter().map(convert::search_hit).collect())
    }

    /// `account.create`: create this device's identity and register it with `relay`
    /// (`host[:port]` or a URL); options: `invite` (s), the token an invite-only relay
    /// needs.
    #[zbus(out_args("account"))]
    async fn create_account(
        &self,
        name: String,
        relay: String,
        options: Options,
    ) -> Result<Dict, DbusError> {
        let p = decode::<AccountCreate>(json!({"name": name, "relay": relay}), options)?;
        Ok(convert::account(
            &self
                .service
                .account_create_invited(&p.name, &p.relay, p.invite.as_deref())
                .await?,
        ))
    }

    /// `contact.safety_number`: `{safety_number}` to compare with the contact.
    #[zbus(out_args("safety_number"))]
    async fn safety_number(&self, address: String, options: Options) -> Result<Dict, DbusError> {
        let p = decode::<ContactSafetyNumber>(json!({"address": address}), options)?;
        let safety_number = self.service.contact_safety_number(&p.address).await?;
        Ok(convert::safety_number(&safety_number))
    }

    /// `contact.verify`: mark the contact verified if `safety_number` matches (whitespace
    /// ignored); `SafetyNumberMismatch` otherwise.
    #[zbus(out_args("contact"))]
    async fn verify_contact(
        &self,
        address: String,
        safety_number: String,
        options: Options,
    ) -> Result<Dict, DbusError> {
        let args = json!({"address": address, "safety_number": safety_number});
        let p = decode::<ContactVerify>(args, options)?;
        Ok(convert::contact(&self.service.contact_verify(p).await?))
    }

    /// Persisted events with `seq > since`, oldest first, at most `limit` (0: the maximum,
    /// 1000): what a client that starts late missed. Each event is flattened.
    #[zbus(out_args("events"))]
    async fn get_events(&self, since: u64, limit: u32) -> Result<Vec<Dict>, DbusError> {
        let events = self.service.events_after(since, limit).await?;
        Ok(events.iter().map(convert::event).collect())
    }

    /// This device's address; empty when there is no account yet.
    #[zbus(property)]
    async fn address(&self) -> String {
        self.service
            .account_info()
            .await
            .map(|a| a.address.to_string())
            .unwrap_or_default()
    }

    /// Whether any relay connection is up.
    #[zbus(property)]
    async fn connected(&self) -> bool {
        self.service
            .status()
            .await
            .is_ok_and(|s| s.relays.iter().any(|r| r.connected))
    }

    /// `message.received`; `extras` has `seq` and the message's other fields.
    #[zbus(signal)]
    pub async fn message_received(
        emitter: &SignalEmitter<'_>,
        conversation: &str,
        id: &str,
        sender: &str,
        text: &str,
        sent_at: &str,
        extras: Dict,
    ) -> zbus::Result<()>;

    /// `message.state`; `extras` has `seq` and `error` when it failed.
    #[zbus(signal)]
    pub async fn message_state_changed(
        emitter: &SignalEmitter<'_>,
        conversation: &str,
        id: &str,
        state: &str,
        extras: Dict,
    ) -> zbus::Result<()>;

    /// `conversation.*` (`conversation.read` included); `extras` has `seq`, `type`,
    /// `unread` (u) and the `conversation`.
    #[zbus(signal)]
    pub async fn conversation_changed(
        emitter: &SignalEmitter<'_>,
        conversation: &str,
        extras: Dict,
    ) -> zbus::Result<()>;

    /// `relay.connected` / `relay.disconnected`; `extras` has `seq`.
    #[zbus(signal)]
    pub async fn connection_changed(
        emitter: &SignalEmitter<'_>,
        relay: &str,
        connected: bool,
        extras: Dict,
    ) -> zbus::Result<()>;
}
