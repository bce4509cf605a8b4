//! JSON-RPC 2.0 envelopes as used on the socket (one JSON text per line).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

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
    /// An error of `kind`: its code, `message`, and `data: {kind}`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        let mut data = Map::new();
        data.insert("kind".into(), Value::from(kind.as_str()));
        ErrorObject {
            code: kind.code(),
            message: message.into(),
            data: Some(Value::Object(data)),
        }
    }

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

/// One request object read by the framing rules (API.md 2–5, 8): what to call.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// The id to echo: a number or a string, `null` when absent or null.
    pub id: Value,
    /// The request had no `id` member: a notification, answered by nothing.
    pub notification: bool,
    /// The method name.
    pub method: String,
    /// The params, always an object (`{}` when absent or null).
    pub params: Value,
}

/// A request object that breaks the framing rules: the error to answer with (nothing is
/// sent for a notification).
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    /// The id to echo (`null` when it could not be read).
    pub id: Value,
    /// The request had no `id` member.
    pub notification: bool,
    /// The error.
    pub error: ErrorObject,
}

/// What one line holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    /// One request object.
    Single(Result<Call, Rejected>),
    /// A non-empty batch, in order.
    Batch(Vec<Result<Call, Rejected>>),
    /// Not JSON, or an empty batch: the error to answer with (id `null`).
    Invalid(ErrorObject),
}

/// Reads one line (without its newline) by the framing rules. Never panics, whatever the
/// bytes: the daemon's socket reader calls it on every line, and the `jsonrpc_lines` fuzz
/// target drives it.
pub fn parse_line(line: &[u8]) -> Line {
    match serde_json::from_slice::<Value>(line) {
        Err(e) => Line::Invalid(ErrorObject::new(
            ErrorKind::ParseError,
            format!("parse error: {e}"),
        )),
        Ok(Value::Array(items)) if items.is_empty() => Line::Invalid(ErrorObject::new(
            ErrorKind::InvalidRequest,
            "invalid request: empty batch",
        )),
        Ok(Value::Array(items)) => Line::Batch(items.into_iter().map(parse_request).collect()),
        Ok(other) => Line::Single(parse_request(other)),
    }
}

/// Reads one request object.
pub fn parse_request(value: Value) -> Result<Call, Rejected> {
    let invalid = |id: Value, notification: bool, message: &str| Rejected {
        id,
        notification,
        error: ErrorObject::new(
            ErrorKind::InvalidRequest,
            format!("invalid request: {message}"),
        ),
    };
    let Value::Object(mut obj) = value else {
        return Err(invalid(
            Value::Null,
            false,
            "a request must be a JSON object",
        ));
    };
    let id = obj.remove("id");
    let notification = id.is_none();
    let id = match id {
        None | Some(Value::Null) => Value::Null,
        Some(v @ (Value::Number(_) | Value::String(_))) => v,
        Some(_) => {
            return Err(invalid(
                Value::Null,
                false,
                "id must be a string or a number",
            ));
        }
    };
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(invalid(id, notification, "jsonrpc must be \"2.0\""));
    }
    let Some(Value::String(method)) = obj.remove("method") else {
        return Err(invalid(id, notification, "method must be a string"));
    };
    let params = match obj.remove("params") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(p @ Value::Object(_)) => p,
        Some(_) => {
            return Err(Rejected {
                id,
                notification,
                error: ErrorObject::new(
                    ErrorKind::InvalidParams,
                    "params must be an object: Sotto takes params by name",
                ),
            });
        }
    };
    Ok(Call {
        id,
        notification,
        method,
        params,
    })
}
