//! The method table: typed handlers registered by their protocol [`Method`] type.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::Value;
use sotto_protocol::Method;

use super::conn::ConnState;
use crate::service::{ApiError, Service};

/// What a handler sees: the service and its connection.
#[derive(Debug, Clone)]
pub struct CallCtx {
    /// The service layer.
    pub service: Arc<Service>,
    /// The calling connection (for subscriptions and work deferred until after the reply).
    pub conn: Arc<ConnState>,
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
