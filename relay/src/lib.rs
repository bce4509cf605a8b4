//! `sotto-relay`: store-and-forward delivery of ciphertext and the MLS key-package
//! directory for Sotto. The binary is a thin wrapper around [`run`].
//!
//! The wire format is in [`sotto_protocol::relay`]; the rules are in
//! `docs/relay-protocol.md`.

pub mod codec;
pub mod config;
mod conn;
mod handlers;
mod http;
mod hub;
pub mod invite;
pub mod limits;
pub mod metrics;
pub mod mls;
pub mod net;
mod push;
mod server;
pub mod storage;

use std::net::SocketAddr;
use std::path::PathBuf;

pub use config::{Config, Database, Limits, ListenCheck, TlsFiles};
pub use server::run;

/// Errors that stop the relay.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Plain WebSocket on a non-loopback address without `--allow-plaintext`.
    #[error(
        "refusing to serve plain ws on non-loopback address {addr}: give --tls-cert and --tls-key, or --allow-plaintext behind a TLS-terminating proxy"
    )]
    PlaintextRefused {
        /// The listen address.
        addr: SocketAddr,
    },
    /// A TLS file could not be read or parsed.
    #[error("cannot load tls {what} from {path}: {reason}")]
    Tls {
        /// `certificate` or `key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The store failed to open.
    #[error("cannot open storage")]
    Storage {
        /// The cause.
        #[source]
        source: storage::StoreError,
    },
    /// Accepting connections failed.
    #[error("listener failed")]
    Listen {
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
