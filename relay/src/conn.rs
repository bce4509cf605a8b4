//! One WebSocket connection: hello, requests in order, pushes for its subscriptions,
//! timeouts, and the close on a hostile frame.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::future::Future;
use std::pin::Pin;

use futures_util::stream::FuturesOrdered;
use futures_util::{SinkExt, StreamExt};
use rand::RngCore;
use sotto_protocol::relay::{
    Hello, InstallId, MIN_FRAME_VERSION, Principal, RelayError, RelayErrorKind, Request, Response,
    ServerFrame, WIRE_VERSION,
};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::codec;
use crate::handlers::Plan;
use crate::hub::Registration;
use crate::limits::{IpSlot, TokenBucket};
use crate::metrics::Metrics;
use crate::server::{Io, Shared};
use crate::storage::Store;

/// The connection could not be written to; stop serving it.
#[derive(Debug)]
pub(crate) struct Gone;

/// The authenticated principal of a connection.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub key: Principal,
    pub address: String,
    pub device_id: String,
    /// Registered on this relay (owns a mailbox and key packages here).
    pub local: bool,
    /// Which install of the device (checked against the active one for local devices).
    pub install_id: InstallId,
}

/// Per-connection state.
pub(crate) struct Conn<S: Store> {
    pub shared: Arc<Shared<S>>,
    pub ws: WebSocketStream<Box<dyn Io>>,
    pub nonce: Option<[u8; 32]>,
    pub session: Option<Session>,
    pub mailbox_cursor: Option<u64>,
    pub group_subs: HashMap<Vec<u8>, u64>,
    pub ip: IpAddr,
    pub reg: Registration,
    bucket: TokenBucket,
    /// Requests running beside each other; answered in request order.
    inflight: FuturesOrdered<Pending>,
}

/// Most requests one connection may have running at once; past that the relay stops
/// reading its frames until one finishes.
const MAX_INFLIGHT: usize = 64;

type Pending = Pin<Box<dyn Future<Output = (u64, Result<Response, RelayError>)> + Send>>;

enum Event {
    Inbound(Option<Result<Message, WsError>>),
    Done(u64, Result<Response, RelayError>),
    Wake,
    Tick,
    Shutdown,
}

/// Serves one upgraded connection until it closes.
#[tracing::instrument(name = "conn", skip_all, fields(%ip))]
pub(crate) async fn serve<S: Store>(
    shared: Arc<Shared<S>>,
    ws: WebSocketStream<Box<dyn Io>>,
    ip: IpAddr,
    slot: IpSlot,
) {
    let limits = shared.config.limits.clone();
    let metrics: &Metrics = &shared.metrics;
    metrics
        .connections_open
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Metrics::inc(&metrics.connections_total);
    let mut shutdown = shared.shutdown.clone();
    let mut conn = Conn {
        bucket: TokenBucket::new(
            limits.requests_per_sec,
            limits.request_burst,
            Instant::now(),
        ),
        shared: Arc::clone(&shared),
        ws,
        nonce: None,
        session: None,
        mailbox_cursor: None,
        group_subs: HashMap::new(),
        ip,
        reg: shared.hub.register(),
        inflight: FuturesOrdered::new(),
    };
    let _ = conn.run(&mut shutdown).await;
    drop(slot);
    shared
        .metrics
        .connections_open
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
}

impl<S: Store> Conn<S> {
    async fn run(&mut self, shutdown: &mut tokio::sync::watch::Receiver<bool>) -> Result<(), Gone> {
        let limits = self.shared.config.limits.clone();
        let nonce = self.fresh_nonce();
        let hello = Hello {
            min_version: MIN_FRAME_VERSION,
            max_version: WIRE_VERSION,
            relay_url: self.shared.config.public_url.as_str().to_owned(),
            nonce,
            max_frame_bytes: limits.max_frame_bytes,
            server: concat!("sotto-relay/", env!("CARGO_PKG_VERSION")).to_owned(),
        };
        self.send(&ServerFrame::Hello(hello)).await?;
        let started = Instant::now();
        let mut last_in = Instant::now();
        // Often enough to enforce the authentication deadline and the idle timeout.
        let period = (limits.idle_timeout / 4)
            .min(limits.auth_timeout / 4)
            .clamp(Duration::from_millis(25), Duration::from_secs(30));
        let mut tick = tokio::time::interval(period);
        loop {
            let event = tokio::select! {
                m = self.ws.next(), if self.inflight.len() < MAX_INFLIGHT => Event::Inbound(m),
                Some((id, result)) = self.inflight.next(), if !self.inflight.is_empty() => {
                    Event::Done(id, result)
                }
                () = self.reg.waker.notify.notified() => Event::Wake,
                _ = tick.tick() => Event::Tick,
                _ = shutdown.changed() => Event::Shutdown,
            };
            match event {
                Event::Inbound(None) => return Ok(()),
                Event::Inbound(Some(Err(WsError::Capacity(e)))) => {
                    tracing::debug!(ip = %self.ip, cause = %e, "oversized frame");
                    let max = limits.max_frame_bytes;
                    return self
                        .fatal(
                            RelayErrorKind::TooLarge { max_bytes: max },
                            format!("frame too large: {e}"),
                        )
                        .await;
                }
                Event::Inbound(Some(Err(e))) => {
                    tracing::debug!(ip = %self.ip, cause = %e, "websocket error");
                    self.shared.metrics.reject("websocket");
                    return Ok(());
                }
                Event::Inbound(Some(Ok(msg))) => {
                    last_in = Instant::now();
                    match msg {
                        Message::Binary(bytes) => self.on_frame(&bytes).await?,
                        Message::Text(_) => {
                            return self
                                .fatal(
                                    RelayErrorKind::Malformed,
                                    "text frames are not part of the protocol; send binary frames",
                                )
                                .await;
                        }
                        Message::Close(_) => return Ok(()),
                        _ => {}
                    }
                }
                Event::Done(id, result) => self.reply(id, result).await?,
                Event::Wake => self.on_wake().await?,
                Event::Tick => {
                    let now = Instant::now();
                    if self.session.is_none() && now - started > limits.auth_timeout {
                        self.shared.metrics.reject("auth_timeout");
                        return self
                            .close(CloseCode::Policy, "authentication timeout")
                            .await;
                    }
                    let idle = now - last_in;
                    if idle > limits.idle_timeout {
                        self.shared.metrics.reject("idle_timeout");
                        return self.close(CloseCode::Away, "idle timeout").await;
                    }
                    if idle > limits.idle_timeout / 2 {
                        self.ws
                            .send(Message::Ping(Vec::new().into()))
                            .await
                            .map_err(|_| Gone)?;
                    }
                }
                Event::Shutdown => return self.close(CloseCode::Away, "relay shutting down").await,
            }
        }
    }

    pub fn fresh_nonce(&mut self) -> [u8; 32] {
        let mut nonce = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        self.nonce = Some(nonce);
        nonce
    }

    async fn on_frame(&mut self, bytes: &[u8]) -> Result<(), Gone> {
        Metrics::inc(&self.shared.metrics.frames_in);
        let max = self.shared.config.limits.max_frame_bytes;
        let frame = match sotto_protocol::relay::parse_client_frame(bytes, max) {
            Ok(f) => f,
            Err(e) => return self.fatal(e.kind, e.message).await.and(Err(Gone)),
        };
        let is_subscribe = matches!(
            frame.request,
            Request::SubscribeMailbox { .. } | Request::SubscribeGroup { .. }
        );
        let plan = match self.bucket.take(Instant::now()) {
            Ok(()) => self.plan(frame.request),
            Err(wait) => {
                let limited = RelayError::new(
                    RelayErrorKind::RateLimited {
                        retry_after_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1),
                    },
                    "too many requests on this connection",
                );
                Plan::Concurrent(Box::pin(std::future::ready(Err(limited))))
            }
        };
        let id = frame.id;
        match plan {
            Plan::Concurrent(reply) => {
                self.inflight
                    .push_back(Box::pin(async move { (id, reply.await) }));
            }
            Plan::Stateful(request) => {
                self.drain().await?;
                let result = self.handle_stateful(request).await;
                let subscribed = is_subscribe && result.is_ok();
                self.reply(id, result).await?;
                if subscribed {
                    self.flush_all().await?;
                }
            }
        }
        Ok(())
    }

    /// Answers every running request, in order.
    async fn drain(&mut self) -> Result<(), Gone> {
        while let Some((id, result)) = self.inflight.next().await {
            self.reply(id, result).await?;
        }
        Ok(())
    }

    async fn reply(&mut self, id: u64, result: Result<Response, RelayError>) -> Result<(), Gone> {
        if let Err(e) = &result {
            self.shared.metrics.reject(e.kind.name());
        }
        self.send(&ServerFrame::Response { id, result }).await
    }

    pub async fn send(&mut self, frame: &ServerFrame) -> Result<(), Gone> {
        let bytes = codec::encode(frame);
        // Counted before the write so a peer that saw the frame also sees the count.
        Metrics::inc(&self.shared.metrics.frames_out);
        self.ws.send(Message::binary(bytes)).await.map_err(|_| Gone)
    }

    /// Whether this connection's install of a local device is no longer the active one.
    /// A storage failure is not a revocation (the next wake-up checks again).
    pub(crate) fn revoked(&self) -> impl Future<Output = bool> + Send + use<S> {
        // Owned, so the future does not borrow the connection across the read.
        let shared = Arc::clone(&self.shared);
        let me = self.session.clone().filter(|s| s.local);
        async move {
            let Some(me) = me else {
                return false;
            };
            match shared.store.active_install(me.key).await {
                Ok(Some(active)) => active != me.install_id,
                Ok(None) => false,
                Err(e) => {
                    tracing::warn!(cause = %e, "could not check the active install");
                    false
                }
            }
        }
    }

    /// Closes a revoked install's connection with `session_revoked`.
    pub(crate) async fn revoke(&mut self) -> Result<(), Gone> {
        if let Some(me) = &self.session {
            tracing::info!(address = %me.address, device_id = %me.device_id, "closing a revoked install's connection");
        }
        let error = RelayError::new(
            RelayErrorKind::SessionRevoked,
            "another install of this device (a restored backup) took the account over; this install is revoked",
        );
        self.drain().await?;
        self.shared.metrics.reject(error.kind.name());
        let reason = error.to_string();
        self.send(&ServerFrame::Fatal(error)).await?;
        self.close(CloseCode::Policy, &reason).await.and(Err(Gone))
    }

    /// Sends a connection-level error and closes.
    async fn fatal(
        &mut self,
        kind: RelayErrorKind,
        message: impl Into<String>,
    ) -> Result<(), Gone> {
        let error = RelayError::new(kind, message);
        // Earlier requests still get their answers (their effects may be durable).
        self.drain().await?;
        tracing::debug!(ip = %self.ip, %error, "closing connection after protocol error");
        self.shared.metrics.reject(error.kind.name());
        let reason = error.to_string();
        self.send(&ServerFrame::Fatal(error)).await?;
        self.close(CloseCode::Protocol, &reason).await
    }

    async fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), Gone> {
        // Close reasons are limited to 123 bytes.
        let mut reason = reason.to_owned();
        while reason.len() > 120 {
            reason.pop();
        }
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let _ = self.ws.close(Some(frame)).await;
        Ok(())
    }
}
