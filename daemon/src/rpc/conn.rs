//! One client connection: read NDJSON lines, dispatch them in order, write replies and
//! subscription notifications through one writer task.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sotto_protocol::ErrorKind;
use sotto_protocol::jsonrpc::Response;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader, BufWriter};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;

use super::dispatch::dispatch_line;
use super::error::protocol_error;
use super::registry::{CallCtx, Registry};
use crate::service::Service;

/// Lines queued for the socket; a client that stops reading fills this and then its
/// subscriptions overflow.
const WRITE_QUEUE: usize = 256;

type Deferred = Box<dyn FnOnce() + Send>;

/// Per-connection state shared with handlers.
pub struct ConnState {
    writer: mpsc::Sender<String>,
    subscriptions: Mutex<HashMap<String, AbortHandle>>,
    deferred: Mutex<Vec<Deferred>>,
}

impl std::fmt::Debug for ConnState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnState").finish_non_exhaustive()
    }
}

impl ConnState {
    /// A sender of raw lines to this connection.
    pub fn writer(&self) -> mpsc::Sender<String> {
        self.writer.clone()
    }

    /// Runs `f` after the current request's reply has been queued for writing (so a
    /// subscription's reply precedes its notifications, and `daemon.shutdown` replies first).
    pub fn after_reply(&self, f: impl FnOnce() + Send + 'static) {
        lock(&self.deferred).push(Box::new(f));
    }

    /// Records a running subscription task.
    pub fn add_subscription(&self, id: String, task: AbortHandle) {
        lock(&self.subscriptions).insert(id, task);
    }

    /// Stops a subscription; false when the id is unknown.
    pub fn remove_subscription(&self, id: &str) -> bool {
        match lock(&self.subscriptions).remove(id) {
            Some(task) => {
                task.abort();
                true
            }
            None => false,
        }
    }

    fn take_deferred(&self) -> Vec<Deferred> {
        std::mem::take(&mut *lock(&self.deferred))
    }

    fn abort_all(&self) {
        for (_, task) in lock(&self.subscriptions).drain() {
            task.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Serves one connection until EOF, a fatal framing error, or shutdown.
#[tracing::instrument(skip_all, fields(conn = conn_id))]
pub async fn serve_connection(
    stream: UnixStream,
    conn_id: u64,
    service: Arc<Service>,
    registry: Arc<Registry>,
    mut shutdown: watch::Receiver<bool>,
) {
    let max_line = service.config().max_line_bytes;
    let (read_half, write_half) = stream.into_split();
    let (writer, mut lines) = mpsc::channel::<String>(WRITE_QUEUE);
    let write_task = tokio::spawn(async move {
        let mut out = BufWriter::new(write_half);
        while let Some(line) = lines.recv().await {
            if out.write_all(line.as_bytes()).await.is_err() || out.write_all(b"\n").await.is_err()
            {
                return;
            }
            if lines.is_empty() && out.flush().await.is_err() {
                return;
            }
        }
        let _ = out.flush().await;
        let _ = out.into_inner().shutdown().await;
    });
    let state = Arc::new(ConnState {
        writer,
        subscriptions: Mutex::new(HashMap::new()),
        deferred: Mutex::new(Vec::new()),
    });
    let ctx = CallCtx {
        service,
        conn: state.clone(),
    };
    let mut reader = BufReader::with_capacity(16 * 1024, read_half);
    let mut buf = Vec::with_capacity(1024);
    tracing::debug!("connected");
    loop {
        buf.clear();
        let read = tokio::select! {
            r = read_line(&mut reader, &mut buf, max_line) => r,
            _ = shutdown.wait_for(|s| *s) => break,
        };
        match read {
            Ok(Line::Eof) => break,
            Ok(Line::TooLong) => {
                tracing::warn!(
                    max_line,
                    "request line over the limit; closing the connection"
                );
                let err = protocol_error(
                    ErrorKind::InvalidRequest,
                    format!(
                        "request line exceeds the {max_line}-byte limit; closing the connection"
                    ),
                );
                let _ = state
                    .writer
                    .send(
                        serde_json::to_string(&Response::err(serde_json::Value::Null, err))
                            .unwrap_or_default(),
                    )
                    .await;
                break;
            }
            Ok(Line::Data) => {
                let line = trim_line(&buf);
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                if let Some(reply) = dispatch_line(&registry, &ctx, line).await
                    && state.writer.send(reply).await.is_err()
                {
                    break;
                }
                for f in state.take_deferred() {
                    f();
                }
            }
            Err(e) => {
                tracing::debug!(cause = %e, "read failed");
                break;
            }
        }
    }
    if *shutdown.borrow() {
        // Let subscriptions write their `subscription.closed` before the socket closes.
        let subs: Vec<_> = lock(&state.subscriptions).drain().map(|(_, t)| t).collect();
        drop(subs);
    } else {
        state.abort_all();
    }
    drop(ctx);
    drop(state);
    let _ = write_task.await;
    tracing::debug!("disconnected");
}

enum Line {
    Data,
    Eof,
    TooLong,
}

/// Reads up to and including `\n` into `buf`, refusing lines over `max` bytes.
async fn read_line(
    reader: &mut BufReader<tokio::net::unix::OwnedReadHalf>,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Line> {
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(if buf.is_empty() {
                Line::Eof
            } else {
                Line::Data
            });
        }
        let (chunk, done) = match available.iter().position(|b| *b == b'\n') {
            Some(i) => (&available[..=i], true),
            None => (available, false),
        };
        if buf.len() + chunk.len() > max + 2 {
            return Ok(Line::TooLong);
        }
        buf.extend_from_slice(chunk);
        let n = chunk.len();
        reader.consume(n);
        if done {
            if buf.len() > max + 1 {
                return Ok(Line::TooLong);
            }
            return Ok(Line::Data);
        }
    }
}

fn trim_line(buf: &[u8]) -> &[u8] {
    let buf = buf.strip_suffix(b"\n").unwrap_or(buf);
    buf.strip_suffix(b"\r").unwrap_or(buf)
}
