//! A minimal async JSON-RPC client for the daemon's socket: one request at a time, plus
//! an event stream for subscribers.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

/// How long one call or one awaited event may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug)]
pub struct RpcClient {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    next_id: u64,
    line: String,
}

impl RpcClient {
    pub async fn connect(path: &Path) -> anyhow::Result<RpcClient> {
        let stream = UnixStream::connect(path)
            .await
            .with_context(|| format!("connecting to {}", path.display()))?;
        let (r, w) = stream.into_split();
        Ok(RpcClient {
            reader: BufReader::with_capacity(64 * 1024, r),
            writer: w,
            next_id: 0,
            line: String::new(),
        })
    }

    /// The two halves, for a caller that pipelines requests itself.
    pub fn into_split(self) -> (BufReader<OwnedReadHalf>, OwnedWriteHalf) {
        (self.reader, self.writer)
    }

    /// Sends a request; returns its id.
    pub async fn send(&mut self, method: &str, params: Value) -> anyhow::Result<u64> {
        self.next_id += 1;
        let id = self.next_id;
        let mut text =
            json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string();
        text.push('\n');
        self.writer.write_all(text.as_bytes()).await?;
        Ok(id)
    }

    /// The next line as JSON.
    pub async fn read(&mut self) -> anyhow::Result<Value> {
        self.line.clear();
        let n = tokio::time::timeout(CALL_TIMEOUT, self.reader.read_line(&mut self.line))
            .await
            .context("the daemon sent nothing in time")??;
        if n == 0 {
            bail!("the daemon closed the connection");
        }
        Ok(serde_json::from_str(&self.line)?)
    }

    /// Waits for the response to `id` (skipping notifications); returns `result`.
    pub async fn response(&mut self, id: u64) -> anyhow::Result<Value> {
        loop {
            let mut v = self.read().await?;
            if v.get("id") == Some(&json!(id)) {
                if let Some(r) = v.get_mut("result") {
                    return Ok(r.take());
                }
                bail!("call {id} failed: {v}");
            }
        }
    }

    /// A call that must succeed; returns `result`.
    pub async fn ok(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
        let id = self.send(method, params).await?;
        self.response(id)
            .await
            .with_context(|| format!("calling {method}"))
    }

    /// Subscribes to events from now on.
    pub async fn subscribe(&mut self) -> anyhow::Result<()> {
        self.ok("events.subscribe", json!({})).await.map(drop)
    }

    /// The next event (`params.result` of an `event` notification).
    pub async fn event(&mut self) -> anyhow::Result<Value> {
        loop {
            let mut v = self.read().await?;
            if v.get("method").and_then(Value::as_str) == Some("event") {
                return Ok(v["params"]["result"].take());
            }
        }
    }

    /// Waits for an event satisfying `pred`.
    pub async fn event_where(&mut self, pred: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
        loop {
            let e = self.event().await?;
            if pred(&e) {
                return Ok(e);
            }
        }
    }
}
