//! One request line → zero or one response line (API.md framing rules 2–5, 8).

use serde_json::{Value, json};
use sotto_protocol::ErrorKind;
use sotto_protocol::jsonrpc::{self, Call, ErrorObject, Line, Rejected, Response};

use super::error::{protocol_error, to_error_object};
use super::registry::{CallCtx, Registry};

/// Handles one line: a request, a notification or a batch. Returns the line to write, if any.
/// The framing rules are read by [`jsonrpc::parse_line`] (the `jsonrpc_lines` fuzz target
/// drives the same function).
pub async fn dispatch_line(registry: &Registry, ctx: &CallCtx, line: &[u8]) -> Option<String> {
    match jsonrpc::parse_line(line) {
        Line::Invalid(err) => Some(encode(&Response::err(Value::Null, err))),
        Line::Batch(items) => {
            let mut responses = Vec::new();
            // In order, inside the line's turn: state-changing calls of one connection
            // run in arrival order.
            let members = ctx.for_batch();
            for item in items {
                if let Some(r) = handle(registry, &members, item).await {
                    responses.push(r);
                }
            }
            ctx.adopt_deferred(&members);
            (!responses.is_empty()).then(|| encode(&responses))
        }
        Line::Single(item) => handle(registry, ctx, item).await.map(|r| encode(&r)),
    }
}

fn encode<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|e| {
        json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32603, "message": format!("encoding failed: {e}"), "data": {"kind": "internal"}}}).to_string()
    })
}

/// Handles one request object. `None` for a notification (no `id` member).
async fn handle(
    registry: &Registry,
    ctx: &CallCtx,
    parsed: Result<Call, Rejected>,
) -> Option<Response> {
    let call = match parsed {
        Ok(call) => call,
        Err(r) => return reply(r.notification, Response::err(r.id, r.error)),
    };
    let Call {
        id,
        notification: is_notification,
        method,
        params,
    } = call;
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
