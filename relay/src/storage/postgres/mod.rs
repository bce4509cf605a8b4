//! The PostgreSQL implementation of [`Store`](super::Store), for several relay processes
//! on one database.
//!
//! - A connection pool (deadpool-postgres over tokio-postgres) for reads and for writes
//!   that need no ordering (registration, key packages, acks, retention).
//! - One writer task per process for group and mailbox posts: posts queue in the order
//!   they are *called* and run in batches, one transaction per batch, each post one call
//!   of a server-side function (`sotto_append_group`, `sotto_post_mailbox`) pipelined on
//!   the batch's connection. The rows a batch writes are locked first, in one global
//!   order (groups by id, then devices by key), so batches of different processes never
//!   deadlock, and every append to one group runs after the previous one committed.
//! - LISTEN/NOTIFY as the cross-process wake-up: a batch's changes are announced with
//!   `pg_notify` inside its transaction (delivered on commit). A listener connection
//!   forwards other processes' notifications into the local change stream; after any
//!   (re)connect of it every connection re-reads from its cursors. The tables stay the
//!   truth; a lost notification only delays a push until the next wake-up.
//! - A health probe (`SELECT 1` every second) drives `/healthz`; every operation has a
//!   bounded timeout and fails with [`StoreError::Unavailable`] (retryable) while the
//!   database is unreachable; the pool replaces broken connections by itself.

mod conn;
mod schema;
mod store;
mod tls;
mod writer;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Timeouts};
use rand::RngCore;
use tokio::sync::{broadcast, mpsc};

use super::{Change, StoreError};

pub use schema::LATEST as SCHEMA_VERSION;

/// How long any one storage operation may take before it fails as unavailable.
pub const OP_TIMEOUT: Duration = Duration::from_secs(8);
/// How long to wait for a pooled connection, or to open one.
const POOL_TIMEOUT: Duration = Duration::from_secs(4);
/// The NOTIFY channel.
pub(super) const CHANNEL: &str = "sotto_changes";

/// A parsed `postgres://` URL. Its `Debug` and [`PgUrl::redacted`] never show the
/// password.
#[derive(Clone)]
pub struct PgUrl {
    config: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
}

impl fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl PgUrl {
    /// Parses `postgres://USER[:PASS]@HOST[:PORT]/DB[?sslmode=disable|prefer|require]`
    /// (also `postgresql://`).
    pub fn parse(url: &str) -> Result<PgUrl, String> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err("a PostgreSQL URL starts with postgres:// or postgresql://".into());
        }
        let mut config = tokio_postgres::Config::from_str(url)
            .map_err(|e| format!("invalid PostgreSQL URL: {}", chain(&e)))?;
        if config.get_hosts().is_empty() {
            return Err("the PostgreSQL URL names no host".into());
        }
        if config.get_dbname().is_none() {
            return Err("the PostgreSQL URL names no database (postgres://USER@HOST/DB)".into());
        }
        if config.get_user().is_none() {
            return Err("the PostgreSQL URL names no user (postgres://USER@HOST/DB)".into());
        }
        if config.get_application_name().is_none() {
            config.application_name("sotto-relay");
        }
        // Bounded waits everywhere: connect, and on the server locks and statements (a
        // crashed holder of a lock cannot stall the others forever).
        config.connect_timeout(POOL_TIMEOUT);
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(30));
        let server_side = format!(
            "-c statement_timeout={ms} -c lock_timeout={ms} -c idle_in_transaction_session_timeout=60000",
            ms = OP_TIMEOUT.as_millis()
        );
        let options = match config.get_options() {
            Some(o) if !o.is_empty() => format!("{o} {server_side}"),
            _ => server_side,
        };
        config.options(&options);
        Ok(PgUrl {
            config,
            tls: tls::connector()?,
        })
    }

    /// `postgres://USER@HOST:PORT/DB` without the password.
    pub fn redacted(&self) -> String {
        let host = match self.config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
            None => String::new(),
        };
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        format!(
            "postgres://{}@{host}:{port}/{}",
            self.config.get_user().unwrap_or_default(),
            self.config.get_dbname().unwrap_or_default()
        )
    }
}

/// An error and its causes on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(cause) = src {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        src = cause.source();
    }
    s
}

/// Classifies a driver error: unreachable, closed, timed out, deadlock, shutdown and
/// resource errors are retryable ([`StoreError::Unavailable`]); the rest are not.
pub(super) fn db(context: &'static str, e: tokio_postgres::Error) -> StoreError {
    let reason = match e.as_db_error() {
        Some(d) => format!("{} ({})", d.message(), d.code().code()),
        None => chain(&e),
    };
    let transient = e.code().is_none_or(|c| {
        let c = c.code();
        ["08", "40", "53", "57", "58"]
            .iter()
            .any(|p| c.starts_with(p))
            || c == "55P03"
    });
    if transient {
        StoreError::Unavailable { context, reason }
    } else {
        StoreError::Postgres { context, reason }
    }
}

fn is_serialization(e: &StoreError) -> bool {
    matches!(e, StoreError::Unavailable { reason, .. }
        if reason.ends_with("(40P01)") || reason.ends_with("(40001)"))
}

/// Pool and database counters for `/metrics`.
#[derive(Debug, Default)]
pub(super) struct PgMetrics {
    pub waits: AtomicU64,
    pub wait_micros: AtomicU64,
    pub errors: AtomicU64,
    pub batches: AtomicU64,
    pub batch_posts: AtomicU64,
    pub listener_reconnects: AtomicU64,
    pub notifications: AtomicU64,
}

/// State shared by the store, its writer and its background tasks.
pub(super) struct Inner {
    pub pool: Pool,
    pub url: PgUrl,
    pub metrics: PgMetrics,
    pub healthy: AtomicBool,
    pub changes: broadcast::Sender<Change>,
    /// This process's tag in NOTIFY payloads (its own notifications are skipped: it
    /// already announced those changes locally after COMMIT).
    pub origin: String,
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inner")
            .field("url", &self.url)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl Inner {
    /// A pooled connection, counting the wait.
    pub async fn client(&self) -> Result<deadpool_postgres::Client, StoreError> {
        let start = Instant::now();
        let got = self.pool.get().await;
        let m = &self.metrics;
        m.waits.fetch_add(1, Ordering::Relaxed);
        m.wait_micros.fetch_add(
            u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        got.map_err(|e| {
            m.errors.fetch_add(1, Ordering::Relaxed);
            StoreError::Unavailable {
                context: "getting a database connection",
                reason: e.to_string(),
            }
        })
    }

    /// Counts an error on its way out.
    pub fn count<T>(&self, r: Result<T, StoreError>) -> Result<T, StoreError> {
        if r.is_err() {
            self.metrics.errors.fetch_add(1, Ordering::Relaxed);
        }
        r
    }
}

/// PostgreSQL-backed storage.
#[derive(Debug)]
pub struct PgStore {
    pub(super) inner: Arc<Inner>,
    pub(super) writer: mpsc::UnboundedSender<writer::Job>,
    durability: String,
    tasks: Vec<tokio::task::AbortHandle>,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Opens one connection outside the pool (migrations, the listener).
async fn connect_one(
    url: &PgUrl,
) -> Result<
    (
        tokio_postgres::Client,
        tokio_postgres::Connection<tokio_postgres::Socket, tls::Stream>,
    ),
    StoreError,
> {
    url.config
        .connect(url.tls.clone())
        .await
        .map_err(|e| db("connecting to PostgreSQL", e))
}

/// Applies the migrations (for `sotto-relay migrate`); returns the version in force.
pub async fn migrate(url: &PgUrl) -> Result<i32, StoreError> {
    let (mut client, conn) = connect_one(url).await?;
    let driver = tokio::spawn(conn);
    let r = schema::migrate(&mut client).await;
    drop(client);
    let _ = driver.await;
    r
}

impl PgStore {
    /// Connects, applies the migrations, and starts the writer, the listener and the
    /// health probe. `pool_size` is the most connections this process opens (plus one
    /// for LISTEN).
    pub async fn open(url: &PgUrl, pool_size: usize) -> Result<PgStore, StoreError> {
        migrate(url).await?;
        let manager = Manager::from_config(
            url.config.clone(),
            url.tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(2))
            .runtime(Runtime::Tokio1)
            .timeouts(Timeouts {
                wait: Some(POOL_TIMEOUT),
                create: Some(POOL_TIMEOUT),
                recycle: Some(POOL_TIMEOUT),
            })
            .build()
            .map_err(|e| StoreError::Setup(format!("cannot build the connection pool: {e}")))?;
        let durability = {
            let c = pool.get().await.map_err(|e| StoreError::Unavailable {
                context: "connecting to PostgreSQL",
                reason: e.to_string(),
            })?;
            let show = |name: &'static str| {
                let c = &c;
                async move {
                    c.query_one(&format!("SHOW {name}"), &[])
                        .await
                        .and_then(|r| r.try_get::<_, String>(0))
                        .map_err(|e| db("reading durability settings", e))
                }
            };
            format!(
                "synchronous_commit={} fsync={}",
                show("synchronous_commit").await?,
                show("fsync").await?
            )
        };
        let mut tag = [0u8; 8];
        rand::rngs::OsRng.fill_bytes(&mut tag);
        let (changes, _) = broadcast::channel(4096);
        let inner = Arc::new(Inner {
            pool,
            url: url.clone(),
            metrics: PgMetrics::default(),
            healthy: AtomicBool::new(true),
            changes,
            origin: hex::encode(tag),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let tasks = vec![
            tokio::spawn(writer::run(Arc::clone(&inner), rx)).abort_handle(),
            tokio::spawn(listen(Arc::clone(&inner))).abort_handle(),
            tokio::spawn(probe(Arc::clone(&inner))).abort_handle(),
        ];
        Ok(PgStore {
            inner,
            writer: tx,
            durability,
            tasks,
        })
    }

    pub(super) fn durability_text(&self) -> &str {
        &self.durability
    }
}

/// The NOTIFY payload of a change: `origin|g|<group hex>|<head>` or `origin|m|<key hex>`.
pub(super) fn payload(origin: &str, change: &Change) -> String {
    match change {
        Change::Group { group_id, head } => format!("{origin}|g|{}|{head}", hex::encode(group_id)),
        Change::Mailbox { device } => format!("{origin}|m|{}", hex::encode(device)),
        Change::Everything => format!("{origin}|*"),
        Change::Revoked { device } => format!("{origin}|r|{}", hex::encode(device)),
    }
}

fn parse_payload(p: &str) -> Option<(&str, Change)> {
    let mut parts = p.split('|');
    let origin = parts.next()?;
    let change = match parts.next()? {
        "g" => Change::Group {
            group_id: hex::decode(parts.next()?).ok()?,
            head: parts.next()?.parse().ok()?,
        },
        "m" => Change::Mailbox {
            device: hex::decode(parts.next()?).ok()?.try_into().ok()?,
        },
        "*" => Change::Everything,
        "r" => Change::Revoked {
            device: hex::decode(parts.next()?).ok()?.try_into().ok()?,
        },
        _ => return None,
    };
    Some((origin, change))
}

/// Forwards other processes' notifications into the local change stream, reconnecting
/// with a back-off; after every (re)connect every connection re-reads (catch-up).
async fn listen(inner: Arc<Inner>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match listen_once(&inner).await {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(e) => tracing::warn!(cause = %e, "change listener lost its connection"),
        }
        inner
            .metrics
            .listener_reconnects
            .fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

async fn listen_once(inner: &Inner) -> Result<(), StoreError> {
    let (client, mut conn) = tokio::time::timeout(POOL_TIMEOUT, connect_one(&inner.url))
        .await
        .map_err(|_| StoreError::Unavailable {
            context: "connecting the change listener",
            reason: "timed out".into(),
        })??;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(m) = futures_util::StreamExt::next(&mut messages).await {
            match m {
                Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                    if tx.send(n.payload().to_owned()).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(cause = %e, "listener connection failed");
                    return;
                }
            }
        }
    });
    let _abort = AbortOnDrop(driver.abort_handle());
    tokio::time::timeout(
        OP_TIMEOUT,
        client.batch_execute(&format!("LISTEN {CHANNEL}")),
    )
    .await
    .map_err(|_| StoreError::Unavailable {
        context: "LISTEN",
        reason: "timed out".into(),
    })?
    .map_err(|e| db("LISTEN", e))?;
    // Anything committed while nobody listened is found by reading from the cursors.
    let _ = inner.changes.send(Change::Everything);
    let mut ping = tokio::time::interval(Duration::from_secs(5));
    ping.tick().await;
    loop {
        tokio::select! {
            p = rx.recv() => {
                let Some(p) = p else { return Ok(()) };
                inner.metrics.notifications.fetch_add(1, Ordering::Relaxed);
                match parse_payload(&p) {
                    Some((origin, _)) if origin == inner.origin => {}
                    Some((_, change)) => { let _ = inner.changes.send(change); }
                    None => tracing::debug!(payload = %p, "ignoring an unknown notification"),
                }
            }
            _ = ping.tick() => {
                // A half-open TCP connection would otherwise wait for keepalives.
                tokio::time::timeout(POOL_TIMEOUT, client.simple_query("SELECT 1"))
                    .await
                    .map_err(|_| StoreError::Unavailable { context: "listener ping", reason: "timed out".into() })?
                    .map_err(|e| db("listener ping", e))?;
            }
        }
    }
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Probes the database every second; two failures in a row mark the store unhealthy,
/// one success healthy again.
async fn probe(inner: Arc<Inner>) {
    let mut failures = 0u32;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let ok = tokio::time::timeout(Duration::from_secs(3), async {
            let c = inner.client().await.ok()?;
            c.simple_query("SELECT 1").await.ok()
        })
        .await
        .ok()
        .flatten()
        .is_some();
        failures = if ok { 0 } else { failures + 1 };
        let healthy = failures < 2;
        if inner.healthy.swap(healthy, Ordering::Relaxed) != healthy {
            if healthy {
                tracing::info!("database reachable again");
            } else {
                tracing::warn!("database unreachable: /healthz reports 503");
            }
        }
    }
}

impl PgStore {
    pub(super) fn render_pg_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let s = self.inner.pool.status();
        let m = &self.inner.metrics;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut line = |name: &str, help: &str, kind: &str, value: String| {
            let _ = writeln!(out, "# HELP sotto_relay_db_{name} {help}");
            let _ = writeln!(out, "# TYPE sotto_relay_db_{name} {kind}");
            let _ = writeln!(out, "sotto_relay_db_{name} {value}");
        };
        line(
            "pool_max",
            "Most pooled database connections.",
            "gauge",
            s.max_size.to_string(),
        );
        line(
            "pool_size",
            "Open pooled database connections.",
            "gauge",
            s.size.to_string(),
        );
        line(
            "pool_available",
            "Idle pooled database connections.",
            "gauge",
            s.available.to_string(),
        );
        line(
            "pool_waiting",
            "Requests waiting for a pooled connection.",
            "gauge",
            s.waiting.to_string(),
        );
        line(
            "pool_waits_total",
            "Connections taken from the pool.",
            "counter",
            get(&m.waits).to_string(),
        );
        line(
            "pool_wait_seconds_total",
            "Time spent waiting for pooled connections.",
            "counter",
            format!("{:.6}", get(&m.wait_micros) as f64 / 1e6),
        );
        line(
            "errors_total",
            "Failed database operations.",
            "counter",
            get(&m.errors).to_string(),
        );
        line(
            "write_batches_total",
            "Write transactions of the post writer.",
            "counter",
            get(&m.batches).to_string(),
        );
        line(
            "write_batch_posts_total",
            "Posts committed by the post writer.",
            "counter",
            get(&m.batch_posts).to_string(),
        );
        line(
            "listener_reconnects_total",
            "Reconnects of the LISTEN connection.",
            "counter",
            get(&m.listener_reconnects).to_string(),
        );
        line(
            "notifications_total",
            "Change notifications received.",
            "counter",
            get(&m.notifications).to_string(),
        );
        line(
            "up",
            "Whether the database answered the last health probes.",
            "gauge",
            u8::from(self.inner.healthy.load(Ordering::Relaxed)).to_string(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_never_show_the_password() {
        let u = PgUrl::parse("postgres://relay:s3cret@db.example:5433/sotto?sslmode=require")
            .expect("parse");
        assert_eq!(u.redacted(), "postgres://relay@db.example:5433/sotto");
        assert!(!format!("{u:?}").contains("s3cret"));
        assert!(PgUrl::parse("postgresql://u@h/d?sslmode=disable").is_ok());
        assert!(PgUrl::parse("postgres://u@h/d?sslmode=bogus").is_err());
        assert!(PgUrl::parse("postgres://u@h").is_err(), "no database");
        assert!(PgUrl::parse("mysql://u@h/d").is_err());
    }

    #[test]
    fn payloads_round_trip() {
        for c in [
            Change::Group {
                group_id: vec![1, 2, 255],
                head: 42,
            },
            Change::Mailbox { device: [7; 32] },
            Change::Everything,
            Change::Revoked { device: [9; 32] },
        ] {
            let p = payload("abc", &c);
            assert_eq!(parse_payload(&p), Some(("abc", c)));
        }
        assert_eq!(parse_payload("x|q"), None);
    }
}
