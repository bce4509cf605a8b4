//! The scenarios of issue 6, each measured beside a baseline taken in the same run.

pub mod api;
pub mod at_rest;
pub mod client;
pub mod footprint;
pub mod groups;
pub mod latency;
pub mod memory;
pub mod mls_step;
pub mod paced;
pub mod pipelined;
pub mod pq;
pub mod relay_pg;
pub mod sustained;
pub mod throughput;

use std::time::{Duration, Instant};

use openmls::prelude::tls_codec::Serialize as _;
use openmls::prelude::*;
use serde_json::{Value, json};

use crate::procs::{Daemon, Relay};
use crate::relay_client::Device;

/// What every scenario gets.
#[derive(Debug, Clone, Copy)]
pub struct Ctx {
    pub quick: bool,
}

impl Ctx {
    /// `quick` in quick mode, `full` otherwise.
    pub fn pick<T>(&self, quick: T, full: T) -> T {
        if self.quick { quick } else { full }
    }
}

/// Progress on stderr.
#[macro_export]
macro_rules! progress {
    ($($arg:tt)*) => {
        eprintln!("  · {}", format!($($arg)*))
    };
}

/// Two daemons on one relay with an active direct conversation between them.
#[derive(Debug)]
pub struct Pair {
    pub a: Daemon,
    pub b: Daemon,
    pub bob: String,
    /// `conversation.create` on A to `conversation.joined` on B.
    pub create_to_joined: Duration,
}

impl Pair {
    pub async fn start(relay: &Relay) -> anyhow::Result<Pair> {
        let a = Daemon::start()?;
        let b = Daemon::start()?;
        a.account(relay, "alice").await?;
        let bob = b.account(relay, "bob").await?;
        let mut events = b.client().await?;
        events.subscribe().await?;
        let mut ca = a.client().await?;
        let start = Instant::now();
        ca.ok("conversation.create", json!({"members": [bob]}))
            .await?;
        events
            .event_where(|e| e["type"] == "conversation.joined")
            .await?;
        let create_to_joined = start.elapsed();
        Ok(Pair {
            a,
            b,
            bob,
            create_to_joined,
        })
    }
}

/// The text of a `message.received` event, if it is one.
pub fn received_text(e: &Value) -> Option<&str> {
    (e["type"] == "message.received")
        .then(|| e["message"]["text"].as_str())
        .flatten()
}

/// A text of exactly `len` bytes starting with `tag` and a space.
pub fn padded(tag: &str, len: usize) -> String {
    let mut s = format!("{tag} ");
    while s.len() < len {
        s.push('x');
    }
    s.truncate(len.max(tag.len() + 1));
    s
}

/// `dev`'s own single-member MLS group (in memory) and `n` application messages of
/// `len` bytes of plaintext in its epoch 0, serialized.
pub fn app_messages(dev: &Device, n: usize, len: usize) -> anyhow::Result<(Vec<u8>, Vec<Vec<u8>>)> {
    let config = MlsGroupCreateConfig::builder()
        .ciphersuite(sottod::mls::DEFAULT_CIPHERSUITE)
        .build();
    let mut group = MlsGroup::new(&dev.provider, &dev.signer, &config, dev.credential())?;
    let payload = vec![b'x'; len];
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let m = group.create_message(&dev.provider, &dev.signer, &payload)?;
        out.push(m.tls_serialize_detached()?);
    }
    Ok((group.group_id().to_vec(), out))
}
