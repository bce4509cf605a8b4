//! Waiting for a queued change or message to complete, by following the event stream on
//! a second connection (subscribed before the change is queued, so nothing is missed).

use std::time::{Duration, Instant};

use serde_json::Value;
use sotto_protocol::methods::{EventsSubscribe, SubscribeParams};

use crate::Ctx;
use crate::client::Client;

/// A live event stream.
pub struct Waiter {
    client: Client,
}

impl Waiter {
    /// Subscribes to live events.
    pub fn start(ctx: &Ctx) -> anyhow::Result<Waiter> {
        let mut client = Client::connect(&ctx.socket)?;
        client.call::<EventsSubscribe>(&SubscribeParams { since: None })?;
        Ok(Waiter { client })
    }

    /// Reads events until `done` returns `Some` or `timeout` passes (then `None`).
    pub fn until<T>(
        mut self,
        timeout: Duration,
        mut done: impl FnMut(&Value) -> Option<T>,
    ) -> anyhow::Result<Option<T>> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.client.set_read_timeout(Some(left))?;
            let msg = match self.client.read_message() {
                Ok(m) => m,
                Err(e) if e.is_timeout() => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            let event = &msg["params"]["result"];
            if event["type"] == "subscription.closed" {
                anyhow::bail!("the daemon ended the event stream ({})", event["reason"]);
            }
            if let Some(v) = done(event) {
                return Ok(Some(v));
            }
        }
    }
}
