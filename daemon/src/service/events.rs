//! Event subscriptions: replay from a `seq`, then live, with a bounded queue.

use sotto_protocol::ErrorKind;
use sotto_protocol::api::{Event, SubscriptionClosed};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::watch;

use super::{ApiError, Service};
use crate::store::Store;

/// How many events a replay reads per database round trip.
const REPLAY_PAGE: u32 = 256;

/// A subscription whose live receiver already exists (so nothing committed after the
/// subscribe call can be missed) but which has not started delivering.
#[derive(Debug)]
pub struct Subscription {
    store: Store,
    since: Option<u64>,
    start_seq: u64,
    live: broadcast::Receiver<Event>,
    shutdown: watch::Receiver<bool>,
}

/// What a subscription hands to its transport.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// An event.
    Event(Box<Event>),
    /// The last item: the subscription ended.
    Closed(SubscriptionClosed),
}

impl Service {
    /// `events.subscribe`: checks `since` against the retained backlog and prepares delivery.
    pub async fn subscribe(&self, since: Option<u64>) -> Result<Subscription, ApiError> {
        let live = self.events.subscribe();
        let (pruned, last) = self
            .store
            .call(|db| Ok((db.events_pruned_through()?, db.last_event_seq()?)))
            .await?;
        if let Some(since) = since
            && since < pruned
        {
            return Err(ApiError::new(
                ErrorKind::EventsExpired,
                format!("events up to seq {pruned} are no longer kept; resubscribe with since >= {pruned}"),
            )
            .with("oldest_seq", pruned + 1));
        }
        Ok(Subscription {
            store: self.store.clone(),
            since,
            start_seq: last,
            live,
            shutdown: self.shutdown_signal(),
        })
    }
}

impl Service {
    /// The most events one `events_after` call returns.
    pub const EVENTS_AFTER_MAX: u32 = 1000;

    /// Persisted events with `seq > since`, oldest first, at most `limit` (0 or more than
    /// [`Self::EVENTS_AFTER_MAX`] means that maximum): a late client catching up without a
    /// subscription. `since` older than the retained backlog → `events_expired`.
    pub async fn events_after(&self, since: u64, limit: u32) -> Result<Vec<Event>, ApiError> {
        let limit = match limit {
            0 => Self::EVENTS_AFTER_MAX,
            n => n.min(Self::EVENTS_AFTER_MAX),
        };
        let (pruned, page) = self
            .store
            .call(move |db| Ok((db.events_pruned_through()?, db.events_after(since, limit)?)))
            .await?;
        if since < pruned {
            return Err(ApiError::new(
                ErrorKind::EventsExpired,
                format!(
                    "events up to seq {pruned} are no longer kept; ask again with since >= {pruned}"
                ),
            )
            .with("oldest_seq", pruned + 1));
        }
        Ok(page.events)
    }
}

impl Subscription {
    /// Delivers the backlog then live events to `sink` until the sink closes, the client
    /// falls behind by more than the queue bound (then `Closed {overflow}`), or the daemon
    /// stops (then `Closed {shutdown}`).
    pub async fn run<F, Fut>(mut self, mut sink: F)
    where
        F: FnMut(Delivery) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let mut last = match self.since {
            Some(since) => since,
            None => self.start_seq,
        };
        if self.since.is_some() {
            loop {
                let after = last;
                let page = match self
                    .store
                    .call(move |db| db.events_after(after, REPLAY_PAGE))
                    .await
                {
                    Ok(page) => page,
                    Err(e) => {
                        tracing::error!(cause = %e, "event replay failed");
                        sink(Delivery::Closed(SubscriptionClosed::new("error", last))).await;
                        return;
                    }
                };
                if page.events.is_empty() {
                    break;
                }
                for event in page.events {
                    last = event.seq;
                    if !sink(Delivery::Event(Box::new(event))).await {
                        return;
                    }
                }
            }
        }
        loop {
            let received = tokio::select! {
                r = self.live.recv() => r,
                _ = self.shutdown.wait_for(|s| *s) => Err(RecvError::Closed),
            };
            match received {
                Ok(event) if event.seq <= last => continue,
                Ok(event) => {
                    last = event.seq;
                    if !sink(Delivery::Event(Box::new(event))).await {
                        return;
                    }
                }
                Err(RecvError::Lagged(_)) => {
                    sink(Delivery::Closed(SubscriptionClosed::new("overflow", last))).await;
                    return;
                }
                Err(RecvError::Closed) => {
                    sink(Delivery::Closed(SubscriptionClosed::new("shutdown", last))).await;
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sotto_protocol::api::EventPayload;

    fn payload(n: u64) -> EventPayload {
        EventPayload::RelayConnected {
            url: format!("ws://127.0.0.1:{n}/sotto/v1"),
        }
    }

    async fn emit(store: &Store, n: u64) {
        store
            .call(move |db| db.write(|tx| tx.emit(payload(n))))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn replay_then_live_without_gaps_or_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, _) = broadcast::channel(64);
        let store = Store::open(
            &dir.path().join("db"),
            &crate::keys::DbKey::generate(),
            tx.clone(),
            1000,
        )
        .unwrap();
        for n in 1..=3 {
            emit(&store, n).await;
        }
        let (_stop, shutdown) = watch::channel(false);
        let sub = Subscription {
            store: store.clone(),
            since: Some(1),
            start_seq: 3,
            live: tx.subscribe(),
            shutdown,
        };
        // An event committed after subscribing but before delivery starts.
        emit(&store, 4).await;
        let (out_tx, mut out) = tokio::sync::mpsc::channel(16);
        let task = tokio::spawn(sub.run(move |d| {
            let out_tx = out_tx.clone();
            async move { out_tx.send(d).await.is_ok() }
        }));
        emit(&store, 5).await;
        let mut seqs = Vec::new();
        while seqs.len() < 4 {
            match out.recv().await.unwrap() {
                Delivery::Event(e) => seqs.push(e.seq),
                Delivery::Closed(c) => panic!("closed early: {c:?}"),
            }
        }
        assert_eq!(seqs, [2, 3, 4, 5]);
        task.abort();
    }

    #[tokio::test]
    async fn a_slow_subscriber_is_closed_with_overflow() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, _) = broadcast::channel(2);
        let store = Store::open(
            &dir.path().join("db"),
            &crate::keys::DbKey::generate(),
            tx.clone(),
            1000,
        )
        .unwrap();
        let (_stop, shutdown) = watch::channel(false);
        let sub = Subscription {
            store: store.clone(),
            since: None,
            start_seq: 0,
            live: tx.subscribe(),
            shutdown,
        };
        for n in 1..=5 {
            emit(&store, n).await;
        }
        let mut got = Vec::new();
        sub.run(|d| {
            got.push(d);
            async { true }
        })
        .await;
        assert_eq!(
            got,
            [Delivery::Closed(SubscriptionClosed::new("overflow", 0))]
        );
    }

    #[tokio::test]
    async fn shutdown_closes_the_subscription() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, _) = broadcast::channel(8);
        let store = Store::open(
            &dir.path().join("db"),
            &crate::keys::DbKey::generate(),
            tx.clone(),
            1000,
        )
        .unwrap();
        let (stop, shutdown) = watch::channel(false);
        let sub = Subscription {
            store,
            since: None,
            start_seq: 7,
            live: tx.subscribe(),
            shutdown,
        };
        stop.send_replace(true);
        let mut got = Vec::new();
        sub.run(|d| {
            got.push(d);
            async { true }
        })
        .await;
        assert_eq!(
            got,
            [Delivery::Closed(SubscriptionClosed::new("shutdown", 7))]
        );
    }
}
