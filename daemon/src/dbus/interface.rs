//! The `org.sotto.Sotto1` interface. Each method decodes its arguments and options into
//! the protocol's params type, calls the service, and converts the result; nothing else.

use std::sync::Arc;

use serde_json::json;
use sotto_protocol::methods::{AccountInfo, DaemonStatus};
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

    /// `conversation.*`; `extras` has `seq`, `type` and the `conversation`.
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
