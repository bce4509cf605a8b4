//! `sottod`, Sotto's per-user daemon, as a library.
//!
//! The daemon owns the device identity key (in the OS keyring), the local database and
//! (with later work) the MLS groups and relay connections. Clients talk to it with
//! JSON-RPC 2.0 over NDJSON on a Unix socket; see docs/api.md.
//!
//! [`run`] is the whole daemon given a bound listener: `main.rs` binds or inherits the
//! socket, tests start it on a temp socket.

pub mod clock;
pub mod config;
pub mod dbus;
pub mod engine;
pub mod hardening;
pub mod keys;
pub mod listener;
pub mod mls;
pub mod model;
pub mod paths;
pub mod relay;
pub mod rpc;
pub mod service;
pub mod store;

#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub use engine::fuzzing;

use std::future::Future;
use std::sync::Arc;

use tokio::net::UnixListener;

pub use config::Config;
pub use service::Service;

/// Errors that stop the daemon from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The database could not be opened or migrated.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// The account's key could not be loaded from its key store.
    #[error(transparent)]
    Key(#[from] keys::KeyError),
    /// The database's key could not be found or created.
    #[error(transparent)]
    DatabaseKey(#[from] keys::DatabaseKeyError),
}

/// Runs the daemon on `listener` until `shutdown` resolves or a client calls
/// `daemon.shutdown`; then stops accepting, tells subscribers, and returns.
pub async fn run(
    listener: UnixListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let service = Arc::new(Service::start(config).await?);
    let dbus = dbus::start(service.clone()).await;
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "sottod ready");
    rpc::serve(listener, service.clone(), shutdown).await;
    dbus.stop().await;
    service.stop().await;
    Ok(())
}
