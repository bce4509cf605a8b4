//! JSON-RPC 2.0 envelopes as used on the socket (one JSON text per line).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ErrorKind;

/// The longest line the daemon reads, in bytes; longer lines get an error and the
/// connection is closed.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;

/// A request as a client sends it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    /// Always `"2.0"`.
    pub jsonrpc: String,
    /// Echoed verbatim in the response; absent for a notification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Value>,
    /// The method name.
    pub method: String,
    /// The params object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Value>,
}

impl Request {
    /// A call with an id.
    pub fn call(id: impl Into<Value>, method: &str, params: Value) -> Self {
        Request {
            jsonrpc: "2.0".to_owned(),
            id: Some(id.into()),
            method: method.to_owned(),
            params: Some(params),
        }
    }
}

/// The error object of a failed call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorObject {
    /// The JSON-RPC code.
    pub code: i32,
    /// A human-readable message (lowercase, no trailing period).
    pub message: String,
    /// `{kind, ...}` for Sotto errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl ErrorObject {
    /// The error's kind from `data.kind`, if it names one this client knows.
    pub fn kind(&self) -> Option<ErrorKind> {
        self.data
            .as_ref()
            .and_then(|d| d.get("kind"))
            .and_then(Value::as_str)
            .and_then(ErrorKind::from_name)
    }
}

impl std::fmt::Display for ErrorObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ErrorObject {}

/// A response as the daemon sends it: `result` or `error`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    /// Always `"2.0"`.
    pub jsonrpc: String,
    /// The request's id (null when it could not be read).
    pub id: Value,
    /// The result on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// The error on failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorObject>,
}

impl Response {
    /// A success.
    pub fn ok(id: Value, result: Value) -> Self {
        Response {
            jsonrpc: "2.0".to_owned(),
            id,
            result: Some(result),
            error: None,
        }
    }

    /// A failure.
    pub fn err(id: Value, error: ErrorObject) -> Self {
        Response {
            jsonrpc: "2.0".to_owned(),
            id,
            result: None,
            error: Some(error),
        }
    }
}

/// A notification from the daemon (method `event` for subscriptions).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Notification {
    /// Always `"2.0"`.
    pub jsonrpc: String,
    /// The notification method.
    pub method: String,
    /// Its params.
    pub params: Value,
}

/// The params of an `event` notification.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventNotification {
    /// The subscription id.
    pub subscription: String,
    /// An [`crate::api::Event`] or a [`crate::api::SubscriptionClosed`].
    pub result: Value,
}
