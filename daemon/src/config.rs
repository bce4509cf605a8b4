//! Daemon configuration: `config.toml`, environment overrides, and defaults.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Deserialize;
use sotto_protocol::api::KeyStoreKind;

use crate::paths;

/// The default largest text `message.send` accepts, in UTF-8 bytes.
pub const DEFAULT_MAX_TEXT_BYTES: u64 = 16 * 1024;
/// The default number of events kept for `events.subscribe {since}` replay.
pub const DEFAULT_EVENT_RETENTION: u64 = 100_000;
/// The default per-subscription queue bound, in events.
pub const DEFAULT_SUBSCRIPTION_QUEUE: usize = 1024;

/// The daemon's resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the socket is (for status and logs; binding is done by the caller).
    pub socket_path: PathBuf,
    /// The data directory (SQLite, file key store), mode 0700.
    pub data_dir: PathBuf,
    /// Where a new account's key is stored.
    pub key_store: KeyStoreKind,
    /// Skip process hardening (for profilers and debuggers).
    pub allow_debugging: bool,
    /// The longest request line, in bytes.
    pub max_line_bytes: usize,
    /// The largest text accepted by `message.send`.
    pub max_text_bytes: u64,
    /// How many events are kept for replay.
    pub event_retention: u64,
    /// Per-subscription queue bound; a subscriber this far behind is closed.
    pub subscription_queue: usize,
    /// Serve `org.sotto.Sotto1` on the session bus when one is reachable (default on).
    pub dbus: bool,
    /// Show a desktop notification for each received message (default off).
    pub notify: bool,
    /// Put a short preview of the text in notifications (default on).
    pub notify_preview: bool,
    /// The ciphersuite of new conversations when `conversation.create` names none
    /// (`default_ciphersuite` in config.toml; default 0x0001).
    pub default_ciphersuite: openmls::prelude::Ciphersuite,
    /// `sottod --ephemeral`: the database in memory, the key in memory only, no config,
    /// lock or data directory, no notifications and no D-Bus.
    pub ephemeral: bool,
}

/// The config file's shape; every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    key_store: Option<String>,
    allow_debugging: Option<bool>,
    max_line_bytes: Option<usize>,
    max_text_bytes: Option<u64>,
    event_retention: Option<u64>,
    subscription_queue: Option<usize>,
    dbus: Option<bool>,
    notify: Option<bool>,
    notify_preview: Option<bool>,
    default_ciphersuite: Option<String>,
}

impl Config {
    /// Loads `path` (or the default config path, if it exists) and applies the environment.
    pub fn load(path: Option<&Path>, socket: Option<PathBuf>) -> anyhow::Result<Config> {
        let (file, explicit) = match path {
            Some(p) => (p.to_owned(), true),
            None => (paths::config_file()?, false),
        };
        let parsed = match std::fs::read_to_string(&file) {
            Ok(text) => toml::from_str::<FileConfig>(&text)
                .with_context(|| format!("reading config {}", file.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                FileConfig::default()
            }
            Err(e) => return Err(e).with_context(|| format!("reading config {}", file.display())),
        };
        let key_store_name = std::env::var("SOTTO_KEY_STORE")
            .ok()
            .filter(|s| !s.is_empty())
            .or(parsed.key_store);
        let key_store = match key_store_name {
            None => KeyStoreKind::SecretService,
            Some(name) => KeyStoreKind::parse(&name).with_context(|| {
                format!(
                    "unknown key store {name:?}: use \"secret-service\", \"keyutils\" or \"file\""
                )
            })?,
        };
        let allow_debugging = std::env::var(crate::hardening::DEBUG_ENV)
            .is_ok_and(|v| !v.is_empty() && v != "0")
            || parsed.allow_debugging.unwrap_or(false);
        let default_ciphersuite = match parsed.default_ciphersuite.as_deref() {
            None => crate::mls::DEFAULT_CIPHERSUITE,
            Some(name) => crate::mls::parse_ciphersuite(name).with_context(|| {
                format!(
                    "reading config {}: unknown or unsupported default_ciphersuite {name:?}; supported: {}",
                    file.display(),
                    crate::mls::supported_names()
                )
            })?,
        };
        Ok(Config {
            socket_path: match socket {
                Some(s) => s,
                None => paths::socket_path()?,
            },
            data_dir: paths::data_dir()?,
            key_store,
            allow_debugging,
            max_line_bytes: parsed
                .max_line_bytes
                .unwrap_or(sotto_protocol::jsonrpc::MAX_LINE_BYTES),
            max_text_bytes: parsed.max_text_bytes.unwrap_or(DEFAULT_MAX_TEXT_BYTES),
            event_retention: parsed
                .event_retention
                .unwrap_or(DEFAULT_EVENT_RETENTION)
                .max(1),
            subscription_queue: parsed
                .subscription_queue
                .unwrap_or(DEFAULT_SUBSCRIPTION_QUEUE)
                .max(1),
            dbus: parsed.dbus.unwrap_or(true),
            notify: parsed.notify.unwrap_or(false),
            notify_preview: parsed.notify_preview.unwrap_or(true),
            default_ciphersuite,
            ephemeral: false,
        })
    }

    /// A config for tests and embedding: everything default, explicit paths, and no D-Bus
    /// (an embedded daemon must not claim the user's session bus name).
    pub fn with_paths(socket_path: PathBuf, data_dir: PathBuf, key_store: KeyStoreKind) -> Config {
        Config {
            socket_path,
            data_dir,
            key_store,
            allow_debugging: false,
            max_line_bytes: sotto_protocol::jsonrpc::MAX_LINE_BYTES,
            max_text_bytes: DEFAULT_MAX_TEXT_BYTES,
            event_retention: DEFAULT_EVENT_RETENTION,
            subscription_queue: DEFAULT_SUBSCRIPTION_QUEUE,
            dbus: false,
            notify: false,
            notify_preview: true,
            default_ciphersuite: crate::mls::DEFAULT_CIPHERSUITE,
            ephemeral: false,
        }
    }

    /// The configuration of `sottod --ephemeral`: defaults only (no config file is read),
    /// the key in memory, no data directory, no notifications, no D-Bus (nothing that could
    /// keep a trace outside the process: notification servers keep a history).
    pub fn ephemeral(socket: Option<PathBuf>) -> anyhow::Result<Config> {
        let socket_path = match socket {
            Some(s) => s,
            None => paths::socket_path()?,
        };
        Ok(Config {
            ephemeral: true,
            allow_debugging: std::env::var(crate::hardening::DEBUG_ENV)
                .is_ok_and(|v| !v.is_empty() && v != "0"),
            ..Config::with_paths(socket_path, PathBuf::new(), KeyStoreKind::Memory)
        })
    }
}

/// Logs to stderr, filtered by `SOTTO_LOG` (tracing EnvFilter syntax, default `info`).
pub fn init_tracing() {
    let spec = std::env::var("SOTTO_LOG").unwrap_or_else(|_| "info".to_owned());
    let mut filter = tracing_subscriber::EnvFilter::try_new(&spec)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Third-party crypto and migration crates stay at warn unless named explicitly: their
    // debug output is noise at best and key material at worst.
    for noisy in [
        "openmls",
        "openmls_rust_crypto",
        "hpke_rs",
        "refinery_core",
        "tungstenite",
        "tokio_tungstenite",
    ] {
        if !spec.contains(noisy)
            && let Ok(d) = format!("{noisy}=warn").parse()
        {
            filter = filter.add_directive(d);
        }
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}
