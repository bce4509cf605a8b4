//! The service layer: every operation of the daemon, independent of transport.
//!
//! JSON-RPC (`rpc`) and, later, D-Bus are thin adapters that call these methods. An `Ok`
//! from a method means the change is already persisted.

mod account;
mod backup;
mod contacts;
mod conversations;
mod error;
mod events;
mod messages;
mod search;

use std::sync::Arc;
use std::time::Instant;

use sotto_protocol::ErrorKind;
use sotto_protocol::api::{Account, AccountState, Event, RelayStatus, Status};
use tokio::sync::{RwLock, broadcast, watch};

use crate::config::Config;
use crate::keys::DeviceKey;
use crate::store::Store;
use crate::{StartError, keys};

pub use crate::clock::now_rfc3339;
pub use error::ApiError;
pub use events::{Delivery, Subscription};

/// The loaded identity: the account and its key (in memory only).
#[derive(Debug, Clone)]
pub struct Identity {
    /// The account as the API shows it.
    pub account: Account,
    /// The private key, zeroized when the last reference drops.
    pub key: Arc<DeviceKey>,
}

/// The daemon's state and operations.
#[derive(Debug)]
pub struct Service {
    config: Config,
    store: Store,
    events: broadcast::Sender<Event>,
    identity: RwLock<Option<Identity>>,
    started: Instant,
    shutdown: watch::Sender<bool>,
    engine: RwLock<Option<Arc<crate::engine::Engine>>>,
    /// `true` once this install is revoked (another install took the account over).
    revoked: Arc<watch::Sender<bool>>,
}

impl Service {
    /// Opens the database and loads the identity key, if an account exists.
    pub async fn start(config: Config) -> Result<Service, StartError> {
        let (events, _) = broadcast::channel(config.subscription_queue);
        let store = if config.ephemeral {
            // Nothing on disk: one shared in-memory database, no data directory, no key.
            Store::open_ephemeral(events.clone(), config.event_retention)?
        } else {
            crate::paths::ensure_private_dir(&config.data_dir).map_err(|e| {
                StartError::Store(crate::store::StoreError::Decode(format!("{e:#}")))
            })?;
            let db_path = config.data_dir.join("sotto.db");
            let db_key = keys::database_key(config.key_store, &config.data_dir, &db_path).await?;
            Store::open(&db_path, &db_key, events.clone(), config.event_retention)?
        };
        let identity = account::load_identity(&store, &config).await?;
        if let Some(id) = &identity {
            tracing::info!(address = %id.account.address, key_store = %id.account.key_store, "identity loaded");
        }
        let (shutdown, _) = watch::channel(false);
        let service = Service {
            config,
            store,
            events,
            identity: RwLock::new(None),
            started: Instant::now(),
            shutdown,
            engine: RwLock::new(None),
            revoked: Arc::new(watch::channel(false).0),
        };
        if let Some(id) = identity {
            service.start_engine(&id).await?;
            *service.identity.write().await = Some(id);
        }
        Ok(service)
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// `daemon.status`.
    pub async fn status(&self) -> Result<Status, ApiError> {
        let account = self
            .identity
            .read()
            .await
            .as_ref()
            .map(|i| self.with_state(i.account.clone()));
        let last_event_seq = self.store.last_event_seq();
        let relays = match self.engine.read().await.as_ref() {
            Some(engine) => engine.relays().status(),
            None => account
                .iter()
                .map(|a| RelayStatus {
                    url: a.relay.clone(),
                    connected: false,
                })
                .collect(),
        };
        Ok(Status {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            protocol: sotto_protocol::PROTOCOL_VERSION,
            account,
            relays,
            uptime_s: self.started.elapsed().as_secs(),
            last_event_seq,
            max_text_bytes: self.config.max_text_bytes,
            ephemeral: self.config.ephemeral,
        })
    }

    /// Asks the daemon to stop (the caller's reply is written first by the transport).
    pub fn request_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// A receiver that turns `true` when the daemon is stopping.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Called once after the transports stopped.
    pub async fn stop(&self) {
        self.request_shutdown();
        if let Err(e) = self.store.call(|db| db.checkpoint()).await {
            tracing::warn!(cause = %e, "final checkpoint failed");
        }
        tracing::info!("sottod stopped");
    }

    /// Starts the messaging engine for `identity` (a revoked install's engine contacts no
    /// relay).
    async fn start_engine(&self, identity: &Identity) -> Result<(), crate::store::StoreError> {
        let standing = self
            .store
            .call(|db| db.write(|tx| crate::relay::install::load(tx.conn())))
            .await?;
        if let Some(reason) = &standing.revoked {
            tracing::warn!(%reason, "this install is revoked: another install took the account over; nothing is sent");
        }
        self.revoked.send_replace(standing.revoked.is_some());
        let engine = crate::engine::Engine::start(
            self.store.clone(),
            identity.account.address.to_string(),
            identity.account.device_id.clone(),
            identity.account.relay.clone(),
            identity.key.clone(),
            standing,
            self.revoked.clone(),
            self.shutdown_signal(),
        )
        .await;
        *self.engine.write().await = Some(engine);
        Ok(())
    }

    /// `account` with this install's state.
    fn with_state(&self, mut account: Account) -> Account {
        account.state = if *self.revoked.borrow() {
            AccountState::Revoked
        } else {
            AccountState::Active
        };
        account
    }

    /// Refuses state-changing calls on a revoked install with `session_revoked`.
    pub(crate) fn ensure_active(&self) -> Result<(), ApiError> {
        if *self.revoked.borrow() {
            return Err(ApiError::new(
                ErrorKind::SessionRevoked,
                "this install was revoked: another install (a restored backup) took the account over, so this one sends nothing and changes nothing; use the restored install",
            ));
        }
        Ok(())
    }

    /// The running engine, or `no_account`.
    pub(crate) async fn engine(&self) -> Result<Arc<crate::engine::Engine>, ApiError> {
        self.engine
            .read()
            .await
            .clone()
            .ok_or_else(account::no_account)
    }

    pub(crate) async fn open_key_store(
        &self,
        kind: sotto_protocol::api::KeyStoreKind,
    ) -> Result<keys::KeyStore, ApiError> {
        Ok(keys::KeyStore::open(kind, self.config.data_dir.clone()).await?)
    }
}
