//! The service layer's error: a kind from the protocol, a message, optional data.
//! Transports map it to their own shape in one place each (`rpc::error`, later D-Bus).

use serde_json::{Map, Value};
use sotto_protocol::ErrorKind;

use crate::keys::KeyError;
use crate::store::StoreError;

/// An error a method returns to its caller.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The kind (`data.kind`).
    pub kind: ErrorKind,
    /// A lowercase human-readable message.
    pub message: String,
    /// Extra fields merged into `data` beside `kind`.
    pub data: Map<String, Value>,
}

impl ApiError {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ApiError {
            kind,
            message: message.into(),
            data: Map::new(),
        }
    }

    /// Adds a field to `data`.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.data.insert(key.to_owned(), value.into());
        self
    }

    /// Invalid params.
    pub fn invalid_params(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidParams, message)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ApiError {}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if e.is_full() {
            tracing::warn!(cause = %e, "the data directory is full or read-only; nothing was written");
            return ApiError::new(
                ErrorKind::StorageFull,
                "the disk holding the daemon's database is full or read-only: nothing was written; free some space and retry (with the same idempotency_key); reads keep working",
            );
        }
        tracing::error!(cause = %e, "database error");
        ApiError::new(ErrorKind::Storage, e.to_string())
    }
}

impl From<KeyError> for ApiError {
    fn from(e: KeyError) -> Self {
        let kind = match &e {
            KeyError::Unavailable { .. } => ErrorKind::KeyStoreUnavailable,
            _ => ErrorKind::KeyStore,
        };
        ApiError::new(kind, e.to_string())
    }
}
