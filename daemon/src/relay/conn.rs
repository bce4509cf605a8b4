//! One authenticated WebSocket connection to a relay: requests with ids, answers matched
//! by id, pushes forwarded to the engine.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use sotto_protocol::RelayUrl;
use sotto_protocol::relay::{
    ClientFrame, InstallId, MIN_FRAME_VERSION, Push, RelayError, RelayErrorKind, Request, Response,
    ServerFrame, WIRE_VERSION, auth_message,
};
use sotto_protocol::wire;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::keys::DeviceKey;

/// How long one request may wait for its answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// How long connecting and authenticating may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A ping keeps the relay's idle timer from closing a quiet connection, and tells a dead
/// one: when nothing at all (not even the answer to the last ping) arrived during one
/// interval, the connection is dropped and a new one made. A network cut without a
/// close is noticed within two intervals. `SOTTO_RELAY_KEEPALIVE` (seconds) changes it.
const KEEPALIVE: Duration = Duration::from_secs(20);

fn keepalive() -> Duration {
    static VALUE: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *VALUE.get_or_init(|| {
        std::env::var("SOTTO_RELAY_KEEPALIVE")
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.1)
            .map_or(KEEPALIVE, Duration::from_secs_f64)
    })
}

/// Why a relay call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RelayCallError {
    /// Could not connect, or the connection broke.
    #[error("relay {url} unreachable: {reason}")]
    Unreachable {
        /// The relay.
        url: String,
        /// Why.
        reason: String,
    },
    /// The relay answered with an error.
    #[error("relay refused: {0}")]
    Refused(RelayError),
    /// The relay broke the protocol.
    #[error("relay {url} broke the protocol: {reason}")]
    Protocol {
        /// The relay.
        url: String,
        /// How.
        reason: String,
    },
}

/// Who this daemon is on relays.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The account address.
    pub address: String,
    /// The device id.
    pub device_id: String,
    /// The device key.
    pub key: Arc<DeviceKey>,
    /// An invitation for an invite-only home relay; sent only with the first registration
    /// (`account.create`). Later re-registrations of the same key need none.
    pub invite: Option<String>,
    /// This install's id (the home relay serves only the account's active install).
    pub install_id: InstallId,
    /// Whether registrations with the home relay take the account over (a restored
    /// backup, until the home relay has accepted the take-over once).
    pub take_over: Arc<std::sync::atomic::AtomicBool>,
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Response, RelayError>>>>>;

/// A live, authenticated relay connection.
#[derive(Debug)]
pub struct RelayConn {
    url: String,
    out: mpsc::Sender<Vec<u8>>,
    pending: Pending,
    next_id: AtomicU64,
    closed: watch::Receiver<bool>,
    /// The connection-level error the relay closed the connection with, if any.
    fatal: Arc<Mutex<Option<RelayError>>>,
    /// Whether this relay is the account's home (a local principal there).
    pub local: bool,
}

impl RelayConn {
    /// Connects, checks the relay's hello, and authenticates (registering when `register`).
    pub async fn connect(
        url: &RelayUrl,
        creds: &Credentials,
        register: bool,
        pushes: mpsc::UnboundedSender<(String, Push)>,
    ) -> Result<Arc<RelayConn>, RelayCallError> {
        tokio::time::timeout(
            CONNECT_TIMEOUT,
            Self::connect_inner(url, creds, register, pushes),
        )
        .await
        .map_err(|_| RelayCallError::Unreachable {
            url: url.to_string(),
            reason: "timed out connecting".into(),
        })?
    }

    async fn connect_inner(
        url: &RelayUrl,
        creds: &Credentials,
        register: bool,
        pushes: mpsc::UnboundedSender<(String, Push)>,
    ) -> Result<Arc<RelayConn>, RelayCallError> {
        let url_s = url.to_string();
        let unreachable = |reason: String| RelayCallError::Unreachable {
            url: url_s.clone(),
            reason,
        };
        let mut ws_config = WebSocketConfig::default();
        // Twice the relay's default frame limit (4 MiB, sized for post-quantum Welcomes).
        ws_config.max_message_size = Some(8 * 1024 * 1024);
        ws_config.max_frame_size = Some(8 * 1024 * 1024);
        let host = url.host();
        let bare_host = host
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let tcp = TcpStream::connect((bare_host.as_str(), host.port()))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        tcp.set_nodelay(true).ok();
        if url.is_tls() {
            let tls = super::tls::connector().map_err(unreachable)?;
            let name = rustls::pki_types::ServerName::try_from(bare_host.clone())
                .map_err(|e| unreachable(e.to_string()))?;
            let stream = tls
                .connect(name, tcp)
                .await
                .map_err(|e| unreachable(format!("TLS: {e}")))?;
            let (ws, _) = tokio_tungstenite::client_async_with_config(
                url_s.as_str(),
                stream,
                Some(ws_config),
            )
            .await
            .map_err(|e| unreachable(e.to_string()))?;
            Self::establish(ws, url_s, creds, register, pushes).await
        } else {
            let (ws, _) =
                tokio_tungstenite::client_async_with_config(url_s.as_str(), tcp, Some(ws_config))
                    .await
                    .map_err(|e| unreachable(e.to_string()))?;
            Self::establish(ws, url_s, creds, register, pushes).await
        }
    }

    async fn establish<S>(
        ws: tokio_tungstenite::WebSocketStream<S>,
        url_s: String,
        creds: &Credentials,
        register: bool,
        pushes: mpsc::UnboundedSender<(String, Push)>,
    ) -> Result<Arc<RelayConn>, RelayCallError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let unreachable = |reason: String| RelayCallError::Unreachable {
            url: url_s.clone(),
            reason,
        };
        let protocol = |reason: String| RelayCallError::Protocol {
            url: url_s.clone(),
            reason,
        };
        let (tx_ws, rx_ws) = ws.split();
        let mut tx_ws = tx_ws;
        let mut rx_ws = rx_ws;
        // The hello.
        let hello = loop {
            let msg = rx_ws
                .next()
                .await
                .ok_or_else(|| unreachable("closed before hello".into()))?
                .map_err(|e| unreachable(e.to_string()))?;
            match msg {
                WsMessage::Binary(bytes) => match wire::decode::<ServerFrame>(&bytes) {
                    Ok(ServerFrame::Hello(h)) => break h,
                    Ok(ServerFrame::Fatal(e)) => return Err(RelayCallError::Refused(e)),
                    Ok(other) => return Err(protocol(format!("expected hello, got {other:?}"))),
                    Err(e) => return Err(protocol(e.to_string())),
                },
                WsMessage::Close(_) => return Err(unreachable("closed before hello".into())),
                _ => continue,
            }
        };
        if !(hello.min_version..=hello.max_version).contains(&WIRE_VERSION) {
            return Err(protocol(format!(
                "the relay speaks wire versions {}..={}, this daemon {MIN_FRAME_VERSION}..={WIRE_VERSION}",
                hello.min_version, hello.max_version
            )));
        }
        if hello.relay_url != url_s {
            return Err(protocol(format!(
                "the relay calls itself {}, but we connected to {url_s}",
                hello.relay_url
            )));
        }
        // Only the home relay (where this daemon registers) hears of a take-over; foreign
        // relays are never told (the key rotation after it cuts the old install out there).
        let take_over = register && creds.take_over.load(Ordering::Relaxed);
        let install_id = creds.install_id;
        let signature = creds
            .key
            .sign_raw(&auth_message(
                &hello.relay_url,
                &hello.nonce,
                &creds.address,
                &creds.device_id,
                &install_id,
                take_over,
            ))
            .to_vec();
        let public_key = creds.key.public_key();
        let request = if let (true, Some(invite)) = (register, &creds.invite) {
            Request::RegisterInvited {
                address: creds.address.clone(),
                device_id: creds.device_id.clone(),
                public_key,
                install_id,
                take_over,
                signature,
                invite: invite.clone(),
            }
        } else if register {
            Request::Register {
                address: creds.address.clone(),
                device_id: creds.device_id.clone(),
                public_key,
                install_id,
                take_over,
                signature,
            }
        } else {
            Request::Authenticate {
                address: creds.address.clone(),
                device_id: creds.device_id.clone(),
                public_key,
                install_id,
                take_over,
                signature,
            }
        };
        tx_ws
            .send(WsMessage::Binary(
                wire::encode(&ClientFrame { id: 1, request }).into(),
            ))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let local = loop {
            let msg = rx_ws
                .next()
                .await
                .ok_or_else(|| unreachable("closed during authentication".into()))?
                .map_err(|e| unreachable(e.to_string()))?;
            let WsMessage::Binary(bytes) = msg else {
                continue;
            };
            match wire::decode::<ServerFrame>(&bytes).map_err(|e| protocol(e.to_string()))? {
                ServerFrame::Response {
                    id: 1,
                    result: Ok(Response::Authenticated { local }),
                } => break local,
                ServerFrame::Response {
                    id: 1,
                    result: Err(e),
                } => return Err(RelayCallError::Refused(e)),
                ServerFrame::Fatal(e) => return Err(RelayCallError::Refused(e)),
                other => {
                    return Err(protocol(format!(
                        "unexpected answer to authentication: {other:?}"
                    )));
                }
            }
        };

        let (out, mut out_rx) = mpsc::channel::<Vec<u8>>(256);
        let pending: Pending = Arc::default();
        let (closed_tx, closed) = watch::channel(false);
        let fatal: Arc<Mutex<Option<RelayError>>> = Arc::default();
        let conn = Arc::new(RelayConn {
            url: url_s.clone(),
            out,
            pending: pending.clone(),
            next_id: AtomicU64::new(2),
            closed,
            fatal: fatal.clone(),
            local,
        });
        // Whether any frame arrived since the last keepalive tick; `dead` ends the reader
        // when one interval passed in silence (found by the faults suite: after a network
        // cut without a close, the daemon kept the dead connection forever and every
        // request on it timed out; nothing reconnected).
        let heard = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let dead = Arc::new(tokio::sync::Notify::new());
        // Writer (with keepalive pings).
        let writer_url = url_s.clone();
        let (w_heard, w_dead) = (heard.clone(), dead.clone());
        tokio::spawn(async move {
            let interval = keepalive();
            let mut ping = tokio::time::interval(interval);
            ping.tick().await;
            loop {
                tokio::select! {
                    frame = out_rx.recv() => match frame {
                        Some(bytes) => if tx_ws.send(WsMessage::Binary(bytes.into())).await.is_err() { break },
                        None => break,
                    },
                    _ = ping.tick() => {
                        if !w_heard.swap(false, Ordering::Relaxed) {
                            tracing::warn!(relay = %writer_url, silent = ?interval, "the relay stopped answering; dropping the connection");
                            w_dead.notify_one();
                            break;
                        }
                        let frame = wire::encode(&ClientFrame { id: 0, request: Request::Ping });
                        if tx_ws.send(WsMessage::Binary(frame.into())).await.is_err() { break }
                    }
                }
            }
            // A dead peer may never take the close frame.
            let _ = tokio::time::timeout(Duration::from_secs(1), tx_ws.close()).await;
            w_dead.notify_one();
            tracing::debug!(relay = %writer_url, "relay writer ended");
        });
        // Reader.
        let reader_url = url_s;
        tokio::spawn(async move {
            loop {
                let msg = tokio::select! {
                    m = rx_ws.next() => m,
                    () = dead.notified() => break,
                };
                let Some(msg) = msg else { break };
                heard.store(true, Ordering::Relaxed);
                let Ok(msg) = msg else { break };
                let bytes = match msg {
                    WsMessage::Binary(b) => b,
                    WsMessage::Close(_) => break,
                    _ => continue,
                };
                match wire::decode::<ServerFrame>(&bytes) {
                    Ok(ServerFrame::Response { id, result }) => {
                        let waiter = lock(&pending).remove(&id);
                        if let Some(w) = waiter {
                            let _ = w.send(result);
                        }
                    }
                    Ok(ServerFrame::Push(push)) => {
                        if pushes.send((reader_url.clone(), push)).is_err() {
                            break;
                        }
                    }
                    Ok(ServerFrame::Fatal(e)) => {
                        tracing::warn!(relay = %reader_url, error = %e, "relay closed the connection");
                        *lock(&fatal) = Some(e);
                        break;
                    }
                    Ok(other) => tracing::debug!(relay = %reader_url, ?other, "ignored frame"),
                    Err(e) => {
                        tracing::warn!(relay = %reader_url, cause = %e, "undecodable frame from relay");
                        break;
                    }
                }
            }
            lock(&pending).clear();
            let _ = closed_tx.send(true);
            tracing::debug!(relay = %reader_url, "relay reader ended");
        });
        Ok(conn)
    }

    /// The relay's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether the relay closed this connection because another install took the
    /// account over (`session_revoked`); its explanation if so.
    pub fn revoked(&self) -> Option<String> {
        lock(&self.fatal)
            .as_ref()
            .filter(|e| e.kind == RelayErrorKind::SessionRevoked)
            .map(|e| e.message.clone())
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// Resolves when the connection ends.
    pub async fn closed(&self) {
        let mut c = self.closed.clone();
        let _ = c.wait_for(|v| *v).await;
    }

    /// Sends a request and waits for its answer.
    pub async fn request(&self, request: Request) -> Result<Response, RelayCallError> {
        let sent = self.send_request(request).await?;
        self.answer(sent).await
    }

    /// Sends `requests` in this order and waits for their answers (in the same order).
    ///
    /// The frames are queued one after another by this one future, so the relay receives
    /// them in this order: a pipelined run of `PostGroupAfter` depends on it. Polling many
    /// [`RelayConn::request`] futures at once (`join_all`) does not keep it: once tokio's
    /// cooperative budget of the task runs out, a send yields and the later ones are
    /// re-polled in whatever order they are woken (found with a run of 256 posts, whose
    /// second half the relay refused as `out_of_order` on every cycle).
    pub async fn request_all(
        &self,
        requests: Vec<Request>,
    ) -> Vec<Result<Response, RelayCallError>> {
        let mut sent = Vec::with_capacity(requests.len());
        for request in requests {
            // After a failed send the connection is gone: the rest fail the same way.
            let failed = matches!(sent.last(), Some(Err(_)));
            sent.push(if failed {
                Err(self.unreachable("connection closed"))
            } else {
                self.send_request(request).await
            });
        }
        let mut answers = Vec::with_capacity(sent.len());
        for s in sent {
            answers.push(match s {
                Ok(rx) => self.answer(rx).await,
                Err(e) => Err(e),
            });
        }
        answers
    }

    fn unreachable(&self, reason: &str) -> RelayCallError {
        RelayCallError::Unreachable {
            url: self.url.clone(),
            reason: reason.to_owned(),
        }
    }

    /// Queues one request's frame; the receiver of its answer.
    async fn send_request(&self, request: Request) -> Result<Answer, RelayCallError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(id, tx);
        if self.is_closed()
            || self
                .out
                .send(wire::encode(&ClientFrame { id, request }))
                .await
                .is_err()
        {
            lock(&self.pending).remove(&id);
            return Err(self.unreachable("connection closed"));
        }
        Ok(Answer { id, rx })
    }

    /// Waits (at most [`REQUEST_TIMEOUT`]) for the answer to a sent request.
    async fn answer(&self, answer: Answer) -> Result<Response, RelayCallError> {
        let Answer { id, rx } = answer;
        match tokio::time::timeout(REQUEST_TIMEOUT, rx).await {
            Ok(Ok(Ok(response))) => Ok(response),
            Ok(Ok(Err(e))) => Err(RelayCallError::Refused(e)),
            Ok(Err(_)) => Err(self.unreachable("connection closed before the answer")),
            Err(_) => {
                lock(&self.pending).remove(&id);
                Err(self.unreachable("timed out waiting for the answer"))
            }
        }
    }
}

/// A sent request: its id and where its answer arrives.
struct Answer {
    id: u64,
    rx: oneshot::Receiver<Result<Response, RelayError>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
