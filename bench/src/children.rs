//! The modes in which the bench re-executes itself as a separate process: the holder of
//! many idle relay connections, and the two baseline servers.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::relay_client::{Client, Device, ws_connect};

/// Waits until stdin reaches EOF (the parent dropped its end).
async fn until_stdin_closes() {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        use std::io::Read as _;
        let mut buf = [0u8; 64];
        let mut stdin = std::io::stdin();
        while let Ok(n) = stdin.read(&mut buf) {
            if n == 0 {
                break;
            }
        }
        let _ = tx.send(());
    });
    let _ = rx.await;
}

/// Opens `count` idle connections to `addr` (authenticated relay connections, or bare
/// WebSockets with `plain`), prints `ready OK FAILED [first error]`, holds them until
/// stdin closes.
pub async fn connections_client(addr: SocketAddr, count: usize, plain: bool) {
    crate::procs::raise_nofile();
    let gate = Arc::new(Semaphore::new(128));
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        let gate = gate.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire().await.map_err(|e| e.to_string())?;
            if plain {
                ws_connect(addr, "/")
                    .await
                    .map(|ws| Box::new(ws) as Box<dyn std::any::Any + Send>)
                    .map_err(|e| format!("{e:#}"))
            } else {
                let dev = Device::new(&format!("idle{i}@elsewhere.example"));
                Client::authed(addr, &dev, false)
                    .await
                    .map(|c| Box::new(c) as Box<dyn std::any::Any + Send>)
                    .map_err(|e| format!("{e:#}"))
            }
        }));
    }
    let mut held = Vec::with_capacity(count);
    let mut failed = 0usize;
    let mut first_error = String::new();
    for t in tasks {
        match t.await {
            Ok(Ok(c)) => held.push(c),
            Ok(Err(e)) => {
                failed += 1;
                if first_error.is_empty() {
                    first_error = e;
                }
            }
            Err(e) => {
                failed += 1;
                if first_error.is_empty() {
                    first_error = e.to_string();
                }
            }
        }
    }
    println!("ready {} {failed} {first_error}", held.len());
    until_stdin_closes().await;
    drop(held);
}

/// A line-echo Unix socket server at `path` until stdin closes (baseline idle process).
pub async fn echo_child(path: &Path) -> anyhow::Result<()> {
    crate::scenarios::api::echo_server(path)?;
    until_stdin_closes().await;
    Ok(())
}

/// A bare tokio-tungstenite echo server on 127.0.0.1; prints `listening ADDR`.
pub async fn ws_echo_server() -> anyhow::Result<()> {
    use futures_util::{SinkExt as _, StreamExt as _};
    crate::procs::raise_nofile();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("listening {}", listener.local_addr()?);
    let accept = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = tcp.set_nodelay(true);
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                while let Some(Ok(m)) = ws.next().await {
                    if (m.is_binary() || m.is_text()) && ws.send(m).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    until_stdin_closes().await;
    accept.abort();
    Ok(())
}
