//! The listener: TLS, the HTTP head, routing to health, metrics or the WebSocket.

use std::future::Future;
use std::io::BufReader;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use openmls_rust_crypto::RustCrypto;
use sotto_protocol::relay::{MIN_FRAME_VERSION, Principal, WIRE_VERSION, WS_PATH};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use crate::config::{Config, Database, TlsFiles};
use crate::http::{self, Head};
use crate::hub::Hub;
use crate::limits::{ConnectionsPerIp, RateMap};
use crate::metrics::Metrics;
use crate::net::canonical;
use crate::storage::{PgStore, SqliteStore, Store};
use crate::{Error, conn, unix_now};

/// How long shutdown waits for connections to close.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A byte stream: TCP or TLS over TCP.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Io for T {}

/// State shared by every connection.
#[derive(Debug)]
pub(crate) struct Shared<S> {
    pub config: Config,
    pub store: S,
    pub metrics: Metrics,
    pub per_ip: Arc<ConnectionsPerIp>,
    pub claims_by_claimer: RateMap<Principal>,
    pub claims_by_target: RateMap<Principal>,
    pub mailbox_posts: RateMap<Principal>,
    pub crypto: RustCrypto,
    pub hub: Arc<Hub>,
    /// Permits for connections in their handshake.
    pub handshakes: Arc<Semaphore>,
    pub shutdown: watch::Receiver<bool>,
}

/// Serves the relay on `listener` until `shutdown` resolves.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    match &config.database {
        Database::Sqlite(path) => {
            let store = SqliteStore::open(path).map_err(|source| Error::Storage { source })?;
            tracing::info!(
                url = config.public_url.as_str(),
                database = %config.database.describe(),
                synchronous = store.durability(),
                "relay starting"
            );
            run_with_store(listener, config, store, shutdown).await
        }
        Database::Postgres { url, pool_size } => {
            let store = PgStore::open(url, *pool_size)
                .await
                .map_err(|source| Error::Storage { source })?;
            tracing::info!(
                url = config.public_url.as_str(),
                database = %config.database.describe(),
                durability = store.durability(),
                "relay starting"
            );
            run_with_store(listener, config, store, shutdown).await
        }
    }
}

/// Serves the relay with any [`Store`].
pub async fn run_with_store<S: Store>(
    listener: TcpListener,
    config: Config,
    store: S,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let tls = match &config.tls {
        Some(files) => Some(load_tls(files)?),
        None => None,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let hub = Arc::new(Hub::default());
    let fan_out = tokio::spawn(Arc::clone(&hub).run(store.changes()));
    let limits = &config.limits;
    let shared = Arc::new(Shared {
        claims_by_claimer: RateMap::per_minute(limits.claims_per_min_per_claimer),
        claims_by_target: RateMap::per_minute(limits.claims_per_min_per_target),
        mailbox_posts: RateMap::per_minute(limits.mailbox_posts_per_min),
        config: config.clone(),
        store,
        metrics: Metrics::default(),
        per_ip: Arc::new(ConnectionsPerIp::default()),
        crypto: RustCrypto::default(),
        hub,
        handshakes: Arc::new(Semaphore::new(limits.max_handshakes.max(1))),
        shutdown: stop_rx,
    });
    let retention = tokio::spawn(retention_loop(Arc::clone(&shared)));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let shared = Arc::clone(&shared);
                    let tls = tls.clone();
                    tokio::spawn(async move { handle_socket(shared, tls, tcp, peer).await });
                }
                Err(e) => {
                    tracing::warn!(cause = %e, "accept failed");
                    // Out of file descriptors and the like: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    tracing::info!("relay shutting down");
    drop(listener);
    let _ = stop_tx.send(true);
    retention.abort();
    // Give connections a moment to send their close frames; every acknowledged write is
    // already durable, so nothing is lost if some do not make it.
    let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
    while shared.metrics.connections_open.load(Ordering::Relaxed) > 0
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    fan_out.abort();
    Ok(())
}

async fn retention_loop<S: Store>(shared: Arc<Shared<S>>) {
    let limits = &shared.config.limits;
    let mut tick = tokio::time::interval(limits.retention_interval);
    loop {
        tick.tick().await;
        match shared
            .store
            .prune(unix_now(), limits.max_age.as_secs())
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::debug!(dropped = n, "retention pass"),
            Err(e) => tracing::warn!(cause = %e, "retention pass failed"),
        }
    }
}

fn load_tls(files: &TlsFiles) -> Result<TlsAcceptor, Error> {
    let tls_err = |what, path: &std::path::Path, reason: String| Error::Tls {
        what,
        path: path.to_owned(),
        reason,
    };
    let cert_file = std::fs::File::open(&files.cert)
        .map_err(|e| tls_err("certificate", &files.cert, e.to_string()))?;
    let certs = rustls_pemfile::certs(&mut BufReader::new(cert_file))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_err("certificate", &files.cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(tls_err(
            "certificate",
            &files.cert,
            "no certificate found".into(),
        ));
    }
    let key_file =
        std::fs::File::open(&files.key).map_err(|e| tls_err("key", &files.key, e.to_string()))?;
    let key = rustls_pemfile::private_key(&mut BufReader::new(key_file))
        .map_err(|e| tls_err("key", &files.key, e.to_string()))?
        .ok_or_else(|| tls_err("key", &files.key, "no private key found".into()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err("certificate", &files.cert, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| tls_err("key", &files.key, e.to_string()))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

fn client_ip(peer: SocketAddr, head: &Head, trusted: Option<crate::net::Cidr>) -> IpAddr {
    let ip = canonical(peer.ip());
    if trusted.is_some_and(|c| c.contains(ip)) {
        let forwarded = head
            .header("x-forwarded-for")
            .and_then(|v| v.rsplit(',').next())
            .and_then(|v| v.trim().parse::<IpAddr>().ok());
        if let Some(f) = forwarded {
            return canonical(f);
        }
    }
    ip
}

async fn handle_socket<S: Store>(
    shared: Arc<Shared<S>>,
    tls: Option<TlsAcceptor>,
    tcp: TcpStream,
    peer: SocketAddr,
) {
    let Ok(permit) = Arc::clone(&shared.handshakes).try_acquire_owned() else {
        shared.metrics.reject("handshake_capacity");
        return;
    };
    let _ = tcp.set_nodelay(true);
    let timeout = shared.config.limits.handshake_timeout;
    let opened = tokio::time::timeout(timeout, async {
        let mut stream: Box<dyn Io> = match tls {
            Some(acceptor) => Box::new(acceptor.accept(tcp).await.map_err(|e| e.to_string())?),
            None => Box::new(tcp),
        };
        let (head, rest) = http::read_head(&mut stream)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((stream, head, rest))
    })
    .await;
    let (mut stream, head, rest) = match opened {
        Ok(Ok(v)) => v,
        Ok(Err(reason)) => {
            tracing::debug!(%peer, %reason, "handshake failed");
            shared.metrics.reject("handshake");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "handshake timed out");
            shared.metrics.reject("handshake_timeout");
            return;
        }
    };
    let result = route(&shared, &mut stream, &head, peer).await;
    drop(permit);
    match result {
        Ok(Some(slot)) => {
            let ws = WebSocketStream::from_partially_read(
                stream,
                rest,
                Role::Server,
                Some(ws_config(shared.config.limits.max_frame_bytes)),
            )
            .await;
            conn::serve(shared, ws, slot.1, slot.0).await;
        }
        Ok(None) => {}
        Err(e) => tracing::debug!(%peer, cause = %e, "http response failed"),
    }
}

/// Small buffers: an idle connection should cost a few KiB.
pub(crate) fn ws_config(max_frame: u32) -> WebSocketConfig {
    let max = max_frame as usize;
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_write_buffer_size(4 * max + 65536)
        .max_message_size(Some(2 * max))
        .max_frame_size(Some(2 * max))
}

type Upgraded = (crate::limits::IpSlot, IpAddr);

async fn route<S: Store>(
    shared: &Shared<S>,
    stream: &mut Box<dyn Io>,
    head: &Head,
    peer: SocketAddr,
) -> std::io::Result<Option<Upgraded>> {
    let text = "text/plain; charset=utf-8";
    match (head.method.as_str(), head.path.as_str()) {
        ("GET", "/healthz") => {
            if shared.store.healthy() {
                http::respond(stream, "200 OK", text, "ok\n").await?;
            } else {
                let msg = "database unreachable\n";
                http::respond(stream, "503 Service Unavailable", text, msg).await?;
            }
        }
        ("GET", "/metrics") => {
            let mut body = shared.metrics.render(shared.store.durability());
            shared.store.render_metrics(&mut body);
            http::respond(stream, "200 OK", "text/plain; version=0.0.4", &body).await?;
        }
        ("GET", WS_PATH) => {
            let key = head.header("sec-websocket-key");
            let Some(key) = key.filter(|_| head.has_token("upgrade", "websocket")) else {
                let msg = "this is a websocket endpoint: connect with a sotto client\n";
                http::respond(stream, "426 Upgrade Required", text, msg).await?;
                return Ok(None);
            };
            let ip = client_ip(peer, head, shared.config.trusted_proxy);
            let max = shared.config.limits.connections_per_ip;
            let Some(slot) = shared.per_ip.acquire(ip, max) else {
                shared.metrics.reject("too_many_connections");
                let msg = format!("too many connections from {ip} (limit {max})\n");
                http::respond(stream, "429 Too Many Requests", text, &msg).await?;
                return Ok(None);
            };
            http::switch_protocols(stream, &derive_accept_key(key.as_bytes())).await?;
            return Ok(Some((slot, ip)));
        }
        (_, path) if path.starts_with("/sotto/") => {
            shared.metrics.reject("unsupported_version");
            let msg = format!(
                "unsupported protocol path {path}: this relay speaks wire versions {MIN_FRAME_VERSION} to {WIRE_VERSION} at {WS_PATH}\n"
            );
            http::respond(stream, "404 Not Found", text, &msg).await?;
        }
        _ => {
            http::respond(stream, "404 Not Found", text, "not found\n").await?;
        }
    }
    Ok(None)
}
