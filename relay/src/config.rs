//! Relay configuration: where to listen, what to call itself, and its limits.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::net::{Cidr, PublicUrl};

/// Everything [`crate::run`] needs besides the listener.
#[derive(Debug, Clone)]
pub struct Config {
    /// The canonical public URL; authentication proofs sign it and local addresses use
    /// its `host[:port]`.
    pub public_url: PublicUrl,
    /// The database.
    pub database: Database,
    /// TLS certificate chain and key (PEM). `None` serves plain WebSocket.
    pub tls: Option<TlsFiles>,
    /// Peers in this range may name the client address in `X-Forwarded-For`.
    pub trusted_proxy: Option<Cidr>,
    /// Limits and timeouts.
    pub limits: Limits,
    /// Invite-only: registration needs an invitation signed by this admin key.
    pub invite_key: Option<ed25519_dalek::VerifyingKey>,
}

/// Which database backs the relay.
#[derive(Debug, Clone)]
pub enum Database {
    /// An embedded SQLite file (one relay process).
    Sqlite(PathBuf),
    /// A PostgreSQL database, shareable by several relay processes.
    Postgres {
        /// The connection URL.
        url: Box<crate::storage::PgUrl>,
        /// The most pooled connections this process opens (plus one for LISTEN).
        pool_size: usize,
    },
}

impl Database {
    /// Parses `--database`: `sqlite:PATH`, `sqlite://PATH`, or
    /// `postgres://USER[:PASS]@HOST[:PORT]/DB[?sslmode=disable|prefer|require]`.
    pub fn parse(url: &str, pool_size: usize) -> Result<Database, String> {
        if let Some(path) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            if path.is_empty() {
                return Err(
                    "sqlite: needs a path, e.g. sqlite:/var/lib/sotto-relay/relay.sqlite3".into(),
                );
            }
            return Ok(Database::Sqlite(PathBuf::from(path)));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let url = crate::storage::PgUrl::parse(url)?;
            return Ok(Database::Postgres {
                url: Box::new(url),
                pool_size,
            });
        }
        Err(format!(
            "unsupported database URL {:?}: use sqlite:PATH or postgres://USER[:PASS]@HOST[:PORT]/DB",
            url.split_once("://").map_or(url, |(scheme, _)| scheme)
        ))
    }

    /// A description without secrets, for logs.
    pub fn describe(&self) -> String {
        match self {
            Database::Sqlite(p) => format!("sqlite:{}", p.display()),
            Database::Postgres { url, .. } => url.redacted(),
        }
    }
}

/// PEM files for TLS.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Certificate chain.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
}

/// Limits with their defaults.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest WebSocket message accepted, in bytes.
    pub max_frame_bytes: u32,
    /// Largest mailbox payload, in bytes.
    pub max_mailbox_payload: u32,
    /// Largest group message, in bytes.
    pub max_group_message: u32,
    /// Requests per second per connection (token bucket rate).
    pub requests_per_sec: f64,
    /// Request burst per connection (token bucket size).
    pub request_burst: f64,
    /// Key-package claims per minute per claiming principal.
    pub claims_per_min_per_claimer: f64,
    /// Key-package claims per minute per claimed device.
    pub claims_per_min_per_target: f64,
    /// Mailbox posts per minute per sending principal.
    pub mailbox_posts_per_min: f64,
    /// Concurrent connections per client IP.
    pub connections_per_ip: usize,
    /// Connections still in their TLS/HTTP handshake, relay-wide; past this, new TCP
    /// connections are dropped at once (slow-handshake floods).
    pub max_handshakes: usize,
    /// Time allowed from TCP accept to the end of the WebSocket upgrade.
    pub handshake_timeout: Duration,
    /// Time allowed to authenticate after the upgrade.
    pub auth_timeout: Duration,
    /// A connection with no inbound frame (including pongs) for this long is closed.
    pub idle_timeout: Duration,
    /// Entries older than this are dropped even if unread (group logs and mailboxes).
    pub max_age: Duration,
    /// How often retention runs.
    pub retention_interval: Duration,
    /// Most entries per read or push.
    pub max_entries_per_frame: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // Sized for post-quantum groups: with ML-KEM-768 + X25519 a Welcome and the
            // commit that adds everyone grow by ~2.7 KB per member (270 KB each for 100
            // members, docs/performance.md), so 2 MiB holds one commit of ~750 members.
            max_frame_bytes: 4 * 1024 * 1024,
            max_mailbox_payload: 2 * 1024 * 1024,
            max_group_message: 2 * 1024 * 1024,
            requests_per_sec: 200.0,
            request_burst: 400.0,
            claims_per_min_per_claimer: 120.0,
            claims_per_min_per_target: 120.0,
            mailbox_posts_per_min: 600.0,
            connections_per_ip: 64,
            max_handshakes: 1024,
            handshake_timeout: Duration::from_secs(10),
            auth_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(300),
            max_age: Duration::from_secs(60 * 60 * 24 * 30),
            retention_interval: Duration::from_secs(60),
            max_entries_per_frame: 256,
        }
    }
}

/// The address to bind and whether plain WebSocket may be served there.
#[derive(Debug, Clone, Copy)]
pub struct ListenCheck {
    /// The listen address.
    pub addr: SocketAddr,
    /// TLS configured.
    pub tls: bool,
    /// `--allow-plaintext` given.
    pub allow_plaintext: bool,
}

impl ListenCheck {
    /// Plain WebSocket is served only on loopback unless explicitly allowed.
    pub fn check(&self) -> Result<(), crate::Error> {
        if self.tls || self.allow_plaintext || self.addr.ip().is_loopback() {
            Ok(())
        } else {
            Err(crate::Error::PlaintextRefused { addr: self.addr })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_only_on_loopback_unless_allowed() {
        let ok = |addr: &str, tls, allow| {
            ListenCheck {
                addr: addr.parse().unwrap_or_else(|_| panic!("addr {addr}")),
                tls,
                allow_plaintext: allow,
            }
            .check()
            .is_ok()
        };
        assert!(ok("127.0.0.1:1", false, false));
        assert!(ok("[::1]:1", false, false));
        assert!(!ok("0.0.0.0:1", false, false));
        assert!(ok("0.0.0.0:1", true, false));
        assert!(ok("0.0.0.0:1", false, true));
    }

    #[test]
    fn database_urls() {
        assert!(
            matches!(Database::parse("sqlite:/x/r.db", 4), Ok(Database::Sqlite(p)) if p == std::path::Path::new("/x/r.db"))
        );
        assert!(
            matches!(Database::parse("sqlite:///x/r.db", 4), Ok(Database::Sqlite(p)) if p == std::path::Path::new("/x/r.db"))
        );
        assert!(matches!(
            Database::parse("postgres://u:pw@127.0.0.1:5/db?sslmode=disable", 4),
            Ok(Database::Postgres { pool_size: 4, .. })
        ));
        let e = Database::parse("mysql://u:secret@h/d", 4).expect_err("refused");
        assert!(e.contains("mysql") && !e.contains("secret"), "{e}");
        assert!(Database::parse("sqlite:", 4).is_err());
    }
}
