//! One client connection: read NDJSON lines, dispatch them in order, write replies and
//! subscription notifications through one writer task.
//!
//! Read-ahead: the connection keeps reading while requests run (at most [`IN_FLIGHT`]
//! lines and [`IN_FLIGHT_BYTES`] bytes at a time). Each line runs in its own task and
//! starts when the previous line's *turn* ends: when it is answered (and its deferred work
//! ran), or earlier when its handler says every state change it makes is queued at the
//! store ([`CallCtx::release_turn`], `message.send` does). So calls still take effect one
//! after another in arrival order, and a call sees every earlier call's changes, while a
//! run of `message.send` calls queues its writes back to back and shares commits. Replies
//! are still written in request order (each line's reply waits for the previous line's).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tracing::Instrument as _;

use sotto_protocol::ErrorKind;
use sotto_protocol::jsonrpc::Response;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader, BufWriter};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{AbortHandle, JoinSet};

use super::dispatch::dispatch_line;
use super::error::protocol_error;
use super::registry::{CallCtx, Registry, RequestScope};
use crate::service::Service;

/// Lines queued for the socket; a client that stops reading fills this and then its
/// subscriptions overflow.
const WRITE_QUEUE: usize = 256;

/// The most request lines of one connection read ahead and not yet answered.
pub const IN_FLIGHT: usize = 256;
/// The most bytes of such lines (one line over it still runs, alone).
pub const IN_FLIGHT_BYTES: usize = 4 << 20;

/// Per-connection state shared with handlers.
pub struct ConnState {
    writer: mpsc::Sender<String>,
    subscriptions: Mutex<HashMap<String, AbortHandle>>,
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
    });
    let mut in_flight: JoinSet<usize> = JoinSet::new();
    let mut in_flight_bytes = 0usize;
    // The end of the previous line's turn: the next line starts after it.
    let mut previous_turn: Option<oneshot::Receiver<()>> = None;
    // The previous line's reply being queued: replies keep the request order.
    let mut previous_reply: Option<oneshot::Receiver<()>> = None;
    let mut reader = BufReader::with_capacity(16 * 1024, read_half);
    let mut buf = Vec::with_capacity(1024);
    tracing::debug!("connected");
    loop {
        buf.clear();
        let read = tokio::select! {
            r = read_line(&mut reader, &mut buf, max_line) => r,
            _ = shutdown.wait_for(|s| *s) => break,
        };
        while let Some(done) = in_flight.try_join_next() {
            in_flight_bytes -= done.unwrap_or(0);
        }
        match read {
            Ok(Line::Eof) => break,
            Ok(Line::TooLong) => {
                // The earlier lines are answered first.
                while in_flight.join_next().await.is_some() {}
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
                let line = line.to_vec();
                while !in_flight.is_empty()
                    && (in_flight.len() >= IN_FLIGHT
                        || in_flight_bytes + line.len() > IN_FLIGHT_BYTES)
                {
                    if let Some(done) = in_flight.join_next().await {
                        in_flight_bytes -= done.unwrap_or(0);
                    }
                }
                if state.writer.is_closed() {
                    break;
                }
                let (turn, turn_ended) = oneshot::channel();
                let wait_for = previous_turn.replace(turn_ended);
                let (replied, reply_queued) = oneshot::channel::<()>();
                let reply_after = previous_reply.replace(reply_queued);
                let ctx = CallCtx {
                    service: service.clone(),
                    conn: state.clone(),
                    request: Arc::new(RequestScope::new(turn)),
                };
                let registry = registry.clone();
                let writer = state.writer.clone();
                in_flight_bytes += line.len();
                in_flight.spawn(
                    async move {
                        if let Some(previous) = wait_for {
                            // Err: the sender was dropped, which is the signal.
                            let _ = previous.await;
                        }
                        let reply = dispatch_line(&registry, &ctx, &line).await;
                        if let Some(previous) = reply_after {
                            let _ = previous.await;
                        }
                        if let Some(reply) = reply {
                            let _ = writer.send(reply).await;
                        }
                        drop(replied);
                        for f in ctx.request.take_deferred() {
                            f();
                        }
                        // The turn ends here at the latest.
                        ctx.request.release_turn();
                        line.len()
                    }
                    .instrument(tracing::Span::current()),
                );
            }
            Err(e) => {
                tracing::debug!(cause = %e, "read failed");
                break;
            }
        }
    }
    // Every line read is answered (the drain timeout of `serve` bounds this at shutdown).
    while in_flight.join_next().await.is_some() {}
    if *shutdown.borrow() {
        // Let subscriptions write their `subscription.closed` before the socket closes.
        let subs: Vec<_> = lock(&state.subscriptions).drain().map(|(_, t)| t).collect();
        drop(subs);
    } else {
        state.abort_all();
    }
    drop(service);
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
