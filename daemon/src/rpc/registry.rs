//! The method table: typed handlers registered by their protocol [`Method`] type.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use serde_json::Value;
use sotto_protocol::Method;

use super::conn::ConnState;
use crate::service::{ApiError, Service};

/// What a handler sees: the service, its connection, and its request's place in the
/// connection's order.
#[derive(Debug, Clone)]
pub struct CallCtx {
    /// The service layer.
    pub service: Arc<Service>,
    /// The calling connection (for subscriptions).
    pub conn: Arc<ConnState>,
    /// This request's turn and its work deferred until after the reply.
    pub(super) request: Arc<RequestScope>,
}

type Deferred = Box<dyn FnOnce() + Send>;

/// One request line's state (a batch's members share their line's).
#[derive(Default)]
pub(super) struct RequestScope {
    /// Dropping it lets the connection's next request start (`conn` module doc).
    turn: Mutex<Option<oneshot::Sender<()>>>,
    deferred: Mutex<Vec<Deferred>>,
    /// A batch's members run in order inside their line's turn: they never release it.
    in_batch: bool,
}

impl std::fmt::Debug for RequestScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestScope").finish_non_exhaustive()
    }
}

impl RequestScope {
    pub(super) fn new(turn: oneshot::Sender<()>) -> Self {
        RequestScope {
            turn: Mutex::new(Some(turn)),
            ..Default::default()
        }
    }

    pub(super) fn release_turn(&self) {
        lock(&self.turn).take();
    }

    pub(super) fn take_deferred(&self) -> Vec<Deferred> {
        std::mem::take(&mut *lock(&self.deferred))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl CallCtx {
    /// Runs `f` after this request's reply has been queued for writing (so a
    /// subscription's reply precedes its notifications, and `daemon.shutdown` replies first).
    pub fn after_reply(&self, f: impl FnOnce() + Send + 'static) {
        lock(&self.request.deferred).push(Box::new(f));
    }

    /// Lets the connection's next request start before this one is answered: call it
    /// once every state change of this request is queued at the store (whatever is queued
    /// later runs after it). Without it, the next request starts when this one is done.
    /// No effect inside a batch.
    pub fn release_turn(&self) {
        if !self.request.in_batch {
            self.request.release_turn();
        }
    }

    /// The context for a batch's members.
    pub(super) fn for_batch(&self) -> CallCtx {
        CallCtx {
            service: self.service.clone(),
            conn: self.conn.clone(),
            request: Arc::new(RequestScope {
                in_batch: true,
                ..Default::default()
            }),
        }
    }

    /// Moves the work a batch member deferred to its line.
    pub(super) fn adopt_deferred(&self, member: &CallCtx) {
        let moved = member.request.take_deferred();
        lock(&self.request.deferred).extend(moved);
    }
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<Value, ApiError>> + Send>>;
type Handler = Arc<dyn Fn(CallCtx, Value) -> BoxFuture + Send + Sync>;

/// Registered methods by name.
#[derive(Default, Clone)]
pub struct Registry {
    handlers: HashMap<&'static str, Handler>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("methods", &self.names())
            .finish()
    }
}

impl Registry {
    /// Registers `handler` for `M`. Params are decoded into `M::Params` (unknown fields
    /// refused); the result is encoded from `M::Result`.
    pub fn register<M, F, Fut>(&mut self, handler: F)
    where
        M: Method,
        F: Fn(CallCtx, M::Params) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<M::Result, ApiError>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let erased: Handler = Arc::new(move |ctx, params| {
            let handler = handler.clone();
            Box::pin(async move {
                let params: M::Params = serde_json::from_value(params).map_err(|e| {
                    ApiError::invalid_params(format!("invalid params for {}: {e}", M::NAME))
                })?;
                let result = handler(ctx, params).await?;
                serde_json::to_value(result).map_err(|e| {
                    ApiError::new(
                        sotto_protocol::ErrorKind::Internal,
                        format!("encoding the result: {e}"),
                    )
                })
            })
        });
        let previous = self.handlers.insert(M::NAME, erased);
        assert!(previous.is_none(), "{} registered twice", M::NAME);
    }

    /// Looks a method up.
    pub fn get(&self, name: &str) -> Option<&Handler> {
        self.handlers.get(name)
    }

    /// The registered names, in API order.
    pub fn names(&self) -> Vec<&'static str> {
        sotto_protocol::methods::ALL
            .iter()
            .map(|m| m.name)
            .filter(|n| self.handlers.contains_key(n))
            .collect()
    }
}
