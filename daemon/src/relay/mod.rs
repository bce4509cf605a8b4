//! Relay connections: one maintained connection per relay URL, reconnecting with
//! exponential backoff and jitter. `relay.connected`/`relay.disconnected` are persisted
//! events.
//!
//! When the home relay says `session_revoked` (another install of this device, a restored
//! backup, took the account over) — on an open connection or when connecting — the install
//! is revoked for good: `account.revoked` is persisted with the revocation, every
//! connection is dropped and no relay is contacted again.

mod conn;
pub mod install;
mod tls;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sotto_protocol::RelayUrl;
use sotto_protocol::api::{EventPayload, RelayStatus};
use sotto_protocol::relay::{Push, RelayError, RelayErrorKind};
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
    /// The URL of each relay whenever a connection to it is made.
    connected: tokio::sync::broadcast::Sender<String>,
    shutdown: watch::Receiver<bool>,
    /// Turns `true` (for good) when this install is revoked.
    revoked: Arc<watch::Sender<bool>>,
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
        revoked: Arc<watch::Sender<bool>>,
    ) -> (Arc<Relays>, mpsc::UnboundedReceiver<(String, Push)>) {
        let (pushes, rx) = mpsc::unbounded_channel();
        let relays = Arc::new(Relays {
            creds,
            home,
            store,
            entries: Mutex::new(HashMap::new()),
            pushes,
            connected: tokio::sync::broadcast::channel(16).0,
            shutdown,
            revoked,
        });
        (relays, rx)
    }

    /// Whether this install has been revoked.
    pub fn is_revoked(&self) -> bool {
        *self.revoked.borrow()
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
        if self.is_revoked() {
            return Err(RelayCallError::Refused(RelayError::new(
                RelayErrorKind::SessionRevoked,
                "this install was revoked: another install took the account over",
            )));
        }
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

    /// The URL of a relay each time a connection to it is made (a reconnect too); lagging
    /// receivers skip ahead (a wake-up is all it means).
    pub fn connected(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.connected.subscribe()
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
        let mut revoked = self.revoked.subscribe();
        loop {
            if *shutdown.borrow() || *revoked.borrow() {
                entry.conn.send_replace(None);
                return;
            }
            let take_over = register && self.creds.take_over.load(Ordering::Relaxed);
            match RelayConn::connect(&parsed, &self.creds, register, self.pushes.clone()).await {
                Ok(conn) => {
                    backoff = BACKOFF_MIN;
                    if take_over {
                        self.took_over().await;
                    }
                    *lock(&entry.last_error) = None;
                    entry.conn.send_replace(Some(conn.clone()));
                    tracing::info!(relay = %url, local = conn.local, "relay connected");
                    self.emit(EventPayload::RelayConnected { url: url.clone() })
                        .await;
                    let _ = self.connected.send(url.clone());
                    tokio::select! {
                        () = conn.closed() => {}
                        _ = shutdown.wait_for(|s| *s) => return,
                        _ = revoked.wait_for(|r| *r) => {}
                    }
                    entry.conn.send_replace(None);
                    tracing::info!(relay = %url, "relay disconnected");
                    self.emit(EventPayload::RelayDisconnected { url: url.clone() })
                        .await;
                    if let (true, Some(reason)) = (register, conn.revoked()) {
                        self.revoke(reason).await;
                        return;
                    }
                }
                Err(RelayCallError::Refused(e))
                    if register && e.kind == RelayErrorKind::SessionRevoked =>
                {
                    *lock(&entry.last_error) = Some(RelayCallError::Refused(e.clone()));
                    self.revoke(e.message).await;
                    return;
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

    /// The home relay accepted this install's take-over: later registrations are plain.
    async fn took_over(&self) {
        self.creds.take_over.store(false, Ordering::Relaxed);
        tracing::info!("the home relay accepted the take-over; the other installs are revoked");
        if let Err(e) = self
            .store
            .call(|db| db.write(|tx| install::took_over(tx.conn())))
            .await
        {
            // The next registration takes over again, which changes nothing.
            tracing::warn!(cause = %e, "could not record the take-over");
        }
    }

    /// Revokes this install for good: persisted with `account.revoked` (once), then every
    /// connection is dropped.
    async fn revoke(&self, reason: String) {
        tracing::warn!(%reason, "this install was revoked by the home relay: another install took the account over");
        // In force before the event is out: whoever sees `account.revoked` sees the state.
        self.revoked.send_replace(true);
        for entry in lock(&self.entries).values() {
            entry.conn.send_replace(None);
        }
        let recorded = self
            .store
            .call(move |db| db.write(|tx| install::revoke(tx, &reason)))
            .await;
        if let Err(e) = recorded {
            tracing::error!(cause = %e, "could not record the revocation; it is in force until restart");
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
