//! JSON-RPC 2.0 over NDJSON on the Unix socket: accept, check the peer, serve.

mod conn;
mod dispatch;
pub mod error;
mod handlers;
mod registry;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt as _;
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinSet;

pub use registry::{CallCtx, Registry};

use crate::service::Service;

/// How long connections get to finish their current request after shutdown starts.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Every method the daemon serves.
pub fn registry() -> Registry {
    let mut r = Registry::default();
    handlers::register_all(&mut r);
    r
}

/// Accepts connections until `shutdown` resolves or `daemon.shutdown` is called, then
/// drains the open connections.
pub async fn serve(
    listener: UnixListener,
    service: Arc<Service>,
    shutdown: impl Future<Output = ()>,
) {
    let registry = Arc::new(registry());
    let mut stopping = service.shutdown_signal();
    let mut connections = JoinSet::new();
    let own_uid = rustix::process::getuid().as_raw();
    let mut next_id = 0u64;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    next_id += 1;
                    if let Err(reason) = check_peer(&stream, own_uid) {
                        tracing::warn!(conn = next_id, %reason, "refused a connection");
                        connections.spawn(refuse(stream, reason));
                        continue;
                    }
                    connections.spawn(conn::serve_connection(
                        stream,
                        next_id,
                        service.clone(),
                        registry.clone(),
                        service.shutdown_signal(),
                    ));
                }
                Err(e) => {
                    tracing::error!(cause = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            () = &mut shutdown => break,
            _ = stopping.wait_for(|s| *s) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    service.request_shutdown();
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("connections did not finish in time; closing them");
        connections.shutdown().await;
    }
}

/// Refuses peers of another uid (SO_PEERCRED); the socket's directory should already
/// keep them out, this holds even when it was made wider by mistake.
fn check_peer(stream: &UnixStream, own_uid: u32) -> Result<(), String> {
    match rustix::net::sockopt::socket_peercred(stream) {
        Ok(cred) if cred.uid.as_raw() == own_uid => Ok(()),
        Ok(cred) => Err(format!(
            "peer uid {} (pid {}) is not the daemon's uid {own_uid}",
            cred.uid.as_raw(),
            cred.pid.as_raw_nonzero()
        )),
        Err(e) => Err(format!("cannot read peer credentials: {e}")),
    }
}

async fn refuse(mut stream: UnixStream, reason: String) {
    let err = error::protocol_error(
        sotto_protocol::ErrorKind::PermissionDenied,
        format!("permission denied: {reason}"),
    );
    let line = serde_json::to_string(&sotto_protocol::jsonrpc::Response::err(
        serde_json::Value::Null,
        err,
    ))
    .unwrap_or_default();
    let _ = stream.write_all(format!("{line}\n").as_bytes()).await;
    let _ = stream.shutdown().await;
    // Drain what the peer already sent (briefly, bounded) so its write does not fail
    // before it has read the refusal.
    let drain = async {
        let mut buf = [0u8; 4096];
        let mut total = 0usize;
        while let Ok(n) = tokio::io::AsyncReadExt::read(&mut stream, &mut buf).await {
            total += n;
            if n == 0 || total > 64 * 1024 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
}
