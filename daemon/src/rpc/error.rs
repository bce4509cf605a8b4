//! The one place where service errors become JSON-RPC error objects.

use serde_json::{Map, Value};
use sotto_protocol::ErrorKind;
use sotto_protocol::jsonrpc::ErrorObject;

use crate::service::ApiError;

/// Maps an [`ApiError`] to a JSON-RPC error: the kind's code, the message, and
/// `data: {kind, ...}`.
pub fn to_error_object(e: &ApiError) -> ErrorObject {
    let mut data = Map::new();
    data.insert("kind".into(), Value::from(e.kind.as_str()));
    for (k, v) in &e.data {
        data.insert(k.clone(), v.clone());
    }
    ErrorObject {
        code: e.kind.code(),
        message: e.message.clone(),
        data: Some(Value::Object(data)),
    }
}

/// A protocol-level error (parse, invalid request, unknown method) as an error object.
pub fn protocol_error(kind: ErrorKind, message: impl Into<String>) -> ErrorObject {
    to_error_object(&ApiError::new(kind, message))
}
