//! Relay connections: one maintained connection per relay URL, reconnecting with
//! exponential backoff and jitter. `relay.connected`/`relay.disconnected` are persisted
//! events.

mod conn;
mod tls;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sotto_protocol::RelayUrl;
use sotto_protocol::api::{EventPayload, RelayStatus};
use sotto_protocol::relay::Push;
use tokio::sync::{mpsc, watch};

pub use conn::{Credentials, RelayCallError, RelayConn};

use crate::store::Store;

/// How long `get` waits for a connection before reporting the relay unreachable.
const GET_TIMEOUT: Duration = Duration::from_secs(10);
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

struct Entry {
    conn: watch::Sender<Option<Arc<RelayConn>>>,
    last_error: Mutex<Option<RelayCallError>>,
}

/// Every relay connection this daemon keeps.
pub struct Relays {
    creds: Credentials,
    home: String,
    store: Store,
    entries: Mutex<HashMap<String, Arc<Entry>>>,
    pushes: mpsc::UnboundedSender<(String, Push)>,
    shutdown: watch::Receiver<bool>,
}

impl std::fmt::Debug for Relays {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relays")
            .field("home", &self.home)
            .finish_non_exhaustive()
    }
}

impl Relays {
    /// A manager for `creds`, whose home relay is `home`. Pushes from every relay arrive
    /// on the returned receiver.
    pub fn new(
        creds: Credentials,
        home: String,
        store: Store,
        shutdown: watch::Receiver<bool>,
    ) -> (Arc<Relays>, mpsc::UnboundedReceiver<(String, Push)>) {
        let (pushes, rx) = mpsc::unbounded_channel();
        let relays = Arc::new(Relays {
            creds,
            home,
            store,
            entries: Mutex::new(HashMap::new()),
            pushes,
            shutdown,
        });
        (relays, rx)
    }

    /// The home relay's URL.
    pub fn home(&self) -> &str {
        &self.home
    }

    /// Who we are.
    pub fn credentials(&self) -> &Credentials {
        &self.creds
    }

    /// A connected, authenticated connection to `url`, starting its maintainer if needed.
    pub async fn get(self: &Arc<Self>, url: &str) -> Result<Arc<RelayConn>, RelayCallError> {
        let entry = self.entry(url);
        let mut rx = entry.conn.subscribe();
        let wait = rx.wait_for(|c| c.as_ref().is_some_and(|c| !c.is_closed()));
        match tokio::time::timeout(GET_TIMEOUT, wait).await {
            Ok(Ok(conn)) => conn
                .clone()
                .ok_or_else(|| unreachable(url, "no connection")),
            _ => Err(lock(&entry.last_error)
                .clone()
                .unwrap_or_else(|| unreachable(url, "timed out connecting"))),
        }
    }

    /// A watch of `url`'s current connection (for resubscribing after reconnects).
    pub fn watch(self: &Arc<Self>, url: &str) -> watch::Receiver<Option<Arc<RelayConn>>> {
        self.entry(url).conn.subscribe()
    }

    /// Each known relay and whether it is connected now.
    pub fn status(&self) -> Vec<RelayStatus> {
        let entries = lock(&self.entries);
        let mut out: Vec<RelayStatus> = entries
            .iter()
            .map(|(url, e)| RelayStatus {
                url: url.clone(),
                connected: e.conn.borrow().as_ref().is_some_and(|c| !c.is_closed()),
            })
            .collect();
        if !entries.contains_key(&self.home) {
            out.push(RelayStatus {
                url: self.home.clone(),
                connected: false,
            });
        }
        out.sort_by(|a, b| (a.url != self.home, &a.url).cmp(&(b.url != self.home, &b.url)));
        out
    }

    fn entry(self: &Arc<Self>, url: &str) -> Arc<Entry> {
        let mut entries = lock(&self.entries);
        if let Some(e) = entries.get(url) {
            return e.clone();
        }
        let (tx, _) = watch::channel(None);
        let entry = Arc::new(Entry {
            conn: tx,
            last_error: Mutex::new(None),
        });
        entries.insert(url.to_owned(), entry.clone());
        let this = self.clone();
        let url = url.to_owned();
        let e = entry.clone();
        tokio::spawn(async move { this.maintain(url, e).await });
        entry
    }

    async fn maintain(self: Arc<Self>, url: String, entry: Arc<Entry>) {
        let mut shutdown = self.shutdown.clone();
        let parsed = match RelayUrl::parse(&url, true) {
            Ok(u) => u,
            Err(e) => {
                *lock(&entry.last_error) = Some(unreachable(&url, &e.to_string()));
                return;
            }
        };
        let register = url == self.home;
        let mut backoff = BACKOFF_MIN;
        loop {
            if *shutdown.borrow() {
                return;
            }
            match RelayConn::connect(&parsed, &self.creds, register, self.pushes.clone()).await {
                Ok(conn) => {
                    backoff = BACKOFF_MIN;
                    *lock(&entry.last_error) = None;
                    entry.conn.send_replace(Some(conn.clone()));
                    tracing::info!(relay = %url, local = conn.local, "relay connected");
                    self.emit(EventPayload::RelayConnected { url: url.clone() })
                        .await;
                    tokio::select! {
                        () = conn.closed() => {}
                        _ = shutdown.wait_for(|s| *s) => return,
                    }
                    entry.conn.send_replace(None);
                    tracing::info!(relay = %url, "relay disconnected");
                    self.emit(EventPayload::RelayDisconnected { url: url.clone() })
                        .await;
                }
                Err(e) => {
                    tracing::debug!(relay = %url, cause = %e, "relay connection failed");
                    *lock(&entry.last_error) = Some(e);
                }
            }
            let jitter = rand::random::<f64>() * backoff.as_secs_f64() * 0.3;
            let delay = backoff + Duration::from_secs_f64(jitter);
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    async fn emit(&self, payload: EventPayload) {
        if let Err(e) = self
            .store
            .call(move |db| db.write(|tx| tx.emit(payload).map(|_| ())))
            .await
        {
            tracing::warn!(cause = %e, "could not record a relay event");
        }
    }
}

fn unreachable(url: &str, reason: &str) -> RelayCallError {
    RelayCallError::Unreachable {
        url: url.to_owned(),
        reason: reason.to_owned(),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
