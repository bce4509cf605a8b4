//! One request line → zero or one response line (API.md framing rules 2–5, 8).

use serde_json::{Value, json};
use sotto_protocol::ErrorKind;
use sotto_protocol::jsonrpc::{ErrorObject, Response};

use super::error::{protocol_error, to_error_object};
use super::registry::{CallCtx, Registry};

/// Handles one line: a request, a notification or a batch. Returns the line to write, if any.
pub async fn dispatch_line(registry: &Registry, ctx: &CallCtx, line: &[u8]) -> Option<String> {
    let value: Value = match serde_json::from_slice(line) {
        Ok(v) => v,
        Err(e) => {
            let err = protocol_error(ErrorKind::ParseError, format!("parse error: {e}"));
            return Some(encode(&Response::err(Value::Null, err)));
        }
    };
    match value {
        Value::Array(items) if items.is_empty() => {
            let err = protocol_error(ErrorKind::InvalidRequest, "invalid request: empty batch");
            Some(encode(&Response::err(Value::Null, err)))
        }
        Value::Array(items) => {
            let mut responses = Vec::new();
            // In order: state-changing calls of one connection run in arrival order.
            for item in items {
                if let Some(r) = handle(registry, ctx, item).await {
                    responses.push(r);
                }
            }
            (!responses.is_empty()).then(|| encode(&responses))
        }
        other => handle(registry, ctx, other).await.map(|r| encode(&r)),
    }
}

fn encode<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|e| {
        json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32603, "message": format!("encoding failed: {e}"), "data": {"kind": "internal"}}}).to_string()
    })
}

/// Handles one request object. `None` for a notification (no `id` member).
async fn handle(registry: &Registry, ctx: &CallCtx, value: Value) -> Option<Response> {
    let Value::Object(mut obj) = value else {
        return Some(invalid(Value::Null, "a request must be a JSON object"));
    };
    let id = obj.remove("id");
    let is_notification = id.is_none();
    let id = match id {
        None | Some(Value::Null) => Value::Null,
        Some(v @ (Value::Number(_) | Value::String(_))) => v,
        Some(_) => return Some(invalid(Value::Null, "id must be a string or a number")),
    };
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return reply(is_notification, invalid(id, "jsonrpc must be \"2.0\""));
    }
    let Some(Value::String(method)) = obj.remove("method") else {
        return reply(is_notification, invalid(id, "method must be a string"));
    };
    let params = match obj.remove("params") {
        None | Some(Value::Null) => Value::Object(Default::default()),
        Some(p @ Value::Object(_)) => p,
        Some(_) => {
            let err = protocol_error(
                ErrorKind::InvalidParams,
                "params must be an object: Sotto takes params by name",
            );
            return reply(is_notification, Response::err(id, err));
        }
    };
    let Some(handler) = registry.get(&method) else {
        let err: ErrorObject = protocol_error(
            ErrorKind::MethodNotFound,
            format!("method not found: {method}"),
        )
        .with_method(&method);
        return reply(is_notification, Response::err(id, err));
    };
    let outcome = handler(ctx.clone(), params).await;
    if is_notification {
        if let Err(e) = &outcome {
            tracing::debug!(%method, cause = %e, "notification failed (no reply is sent)");
        }
        return None;
    }
    Some(match outcome {
        Ok(result) => Response::ok(id, result),
        Err(e) => Response::err(id, to_error_object(&e)),
    })
}

fn reply(is_notification: bool, r: Response) -> Option<Response> {
    (!is_notification).then_some(r)
}

fn invalid(id: Value, message: &str) -> Response {
    Response::err(
        id,
        protocol_error(
            ErrorKind::InvalidRequest,
            format!("invalid request: {message}"),
        ),
    )
}

trait WithMethod {
    fn with_method(self, method: &str) -> Self;
}

impl WithMethod for ErrorObject {
    fn with_method(mut self, method: &str) -> Self {
        if let Some(Value::Object(data)) = &mut self.data {
            data.insert("method".into(), Value::from(method));
        }
        self
    }
}
