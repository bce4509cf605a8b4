//! `sotto-relay`: parse flags, bind, run until SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use sotto_relay::invite::{self, Invite};
use sotto_relay::net::{Cidr, PublicUrl};
use sotto_relay::{Config, Database, Limits, ListenCheck, TlsFiles};

/// Sotto's relay: store-and-forward delivery of ciphertext and the key-package directory.
#[derive(Debug, Parser)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: Args,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Applies the database migrations and exits (idempotent; needs no --listen).
    Migrate {
        /// Database URL (as for the relay).
        #[arg(long, env = "SOTTO_RELAY_DATABASE", hide_env_values = true)]
        database: String,
    },
    /// Invitations for an --invite-only relay.
    #[command(subcommand)]
    Invite(InviteCommand),
}

#[derive(Debug, Subcommand)]
enum InviteCommand {
    /// Make an invitation token, offline (the relay need not run); the token is printed on
    /// the last line.
    Create {
        /// The admin key file (Ed25519, mode 0600; created on first use).
        #[arg(long)]
        admin_key: PathBuf,
        /// How many accounts may register with it.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=i64::from(invite::MAX_USES)))]
        uses: u32,
        /// How long it stays valid: 30s, 10m, 12h, 7d, 2w.
        #[arg(long, default_value = "7d", value_parser = invite::parse_duration)]
        expires: Duration,
    },
}

/// Serving flags.
#[derive(Debug, clap::Args)]
struct Args {
    /// Address to listen on (WebSocket at /sotto/v1, plus /healthz and /metrics); required
    /// unless a subcommand is given.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Register new accounts only with an invitation signed by the --admin-key.
    #[arg(long, requires = "admin_key")]
    invite_only: bool,
    /// The admin key file of an invite-only relay (Ed25519, mode 0600; created on first use).
    #[arg(long, requires = "invite_only")]
    admin_key: Option<PathBuf>,
    /// Directory for the database (default: the current directory).
    #[arg(long, env = "STATE_DIRECTORY")]
    data_dir: Option<PathBuf>,
    /// Database URL: sqlite:PATH (default: DATA_DIR/relay.sqlite3) or
    /// postgres://USER[:PASS]@HOST[:PORT]/DB with an optional ?sslmode= of disable,
    /// prefer or require.
    #[arg(long, env = "SOTTO_RELAY_DATABASE", hide_env_values = true)]
    database: Option<String>,
    /// Most pooled PostgreSQL connections of this process (plus one for LISTEN).
    #[arg(long, default_value_t = 16)]
    database_pool_size: usize,
    /// TLS certificate chain (PEM).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The canonical public URL, e.g. wss://relay.example/sotto/v1 (default: from --listen).
    #[arg(long)]
    public_url: Option<PublicUrl>,
    /// Serve plain ws on a non-loopback address (only behind a TLS-terminating proxy).
    #[arg(long)]
    allow_plaintext: bool,
    /// Trust X-Forwarded-For from peers in this range (e.g. 127.0.0.1/32).
    #[arg(long)]
    trusted_proxy: Option<Cidr>,
    /// Largest frame in bytes.
    #[arg(long, default_value_t = Limits::default().max_frame_bytes)]
    max_frame_bytes: u32,
    /// Requests per second per connection.
    #[arg(long, default_value_t = Limits::default().requests_per_sec)]
    rate: f64,
    /// Request burst per connection.
    #[arg(long, default_value_t = Limits::default().request_burst)]
    burst: f64,
    /// Key-package claims per minute, per claimer and per claimed device.
    #[arg(long, default_value_t = Limits::default().claims_per_min_per_claimer)]
    claims_per_min: f64,
    /// Mailbox posts per minute per sending principal.
    #[arg(long, default_value_t = Limits::default().mailbox_posts_per_min)]
    mailbox_posts_per_min: f64,
    /// Connections per client IP.
    #[arg(long, default_value_t = Limits::default().connections_per_ip)]
    connections_per_ip: usize,
    /// Seconds without any inbound frame before a connection is closed.
    #[arg(long, default_value_t = Limits::default().idle_timeout.as_secs())]
    idle_timeout: u64,
    /// Maximum age in days of stored entries (read or not).
    #[arg(long, default_value_t = 30)]
    max_age_days: u64,
    /// Milliseconds allowed from TCP accept to the end of the WebSocket upgrade.
    #[arg(long, default_value_t = 10_000)]
    handshake_timeout_ms: u64,
    /// Milliseconds allowed to authenticate after the upgrade.
    #[arg(long, default_value_t = 30_000)]
    auth_timeout_ms: u64,
    /// How often retention runs, in milliseconds.
    #[arg(long, default_value_t = 60_000)]
    retention_interval_ms: u64,
}

fn database(args: &Args) -> anyhow::Result<Database> {
    if let Some(url) = &args.database {
        return Database::parse(url, args.database_pool_size).map_err(anyhow::Error::msg);
    }
    let dir = args.data_dir.clone().unwrap_or_else(|| PathBuf::from("."));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(Database::Sqlite(dir.join("relay.sqlite3")))
}

async fn migrate(url: &str) -> anyhow::Result<()> {
    let db = Database::parse(url, 1).map_err(anyhow::Error::msg)?;
    let what = db.describe();
    let version = match db {
        Database::Sqlite(path) => {
            sotto_relay::storage::SqliteStore::open(&path)
                .with_context(|| format!("migrating {what}"))?;
            1
        }
        Database::Postgres { url, .. } => sotto_relay::storage::postgres::migrate(&url)
            .await
            .with_context(|| format!("migrating {what}"))?,
    };
    println!("{what}: schema version {version}");
    Ok(())
}

/// What sotto-relay(8) adds to the page generated from the flags.
const MAN_EXTRA: &str = r#".SH ENDPOINTS
.TP
\fB/sotto/v1\fR
The WebSocket endpoint of the relay protocol.
.TP
\fBGET /healthz\fR, \fBGET /metrics\fR
Health (200 when the database answers) and Prometheus metrics, on the same listener.
.SH ENVIRONMENT
.TP
\fBSOTTO_LOG\fR
The log filter (tracing EnvFilter syntax), default \fBinfo\fR; logs go to standard error.
.TP
\fBSOTTO_RELAY_DATABASE\fR
The default of \fB\-\-database\fR (keeps a PostgreSQL password out of the process list).
.TP
\fBSTATE_DIRECTORY\fR
The default of \fB\-\-data\-dir\fR (set by systemd's StateDirectory=).
.SH "SEE ALSO"
sottod(8), sotto(1), sotto\-jsonrpc(7)
"#;

/// `sotto-relay --man` (hidden): prints sotto-relay(8), generated from the flags.
fn print_man() -> anyhow::Result<()> {
    use clap::CommandFactory as _;
    use std::io::Write as _;
    let mut out = Vec::new();
    clap_mangen::Man::new(Cli::command())
        .section("8")
        .manual("Sotto Manual")
        .render(&mut out)?;
    out.extend_from_slice(MAN_EXTRA.as_bytes());
    std::io::stdout().write_all(&out)?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Before parsing: --listen is required for everything else.
    if std::env::args_os().nth(1).is_some_and(|a| a == "--man") && std::env::args_os().len() == 2 {
        return print_man();
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SOTTO_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Invite(InviteCommand::Create {
            admin_key,
            uses,
            expires,
        })) => return invite_create(&admin_key, uses, expires),
        Some(Command::Migrate { database }) => return migrate(&database).await,
        None => cli.serve,
    };
    let Some(listen) = args.listen else {
        <Cli as clap::CommandFactory>::command()
            .error(
                clap::error::ErrorKind::MissingRequiredArgument,
                "the following required argument was not provided: --listen <LISTEN>",
            )
            .exit();
    };
    let invite_key = match (&args.admin_key, args.invite_only) {
        (Some(path), true) => Some(invite::load_or_create_admin_key(path)?.verifying_key()),
        _ => None,
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        }),
        _ => None,
    };
    ListenCheck {
        addr: listen,
        tls: tls.is_some(),
        allow_plaintext: args.allow_plaintext,
    }
    .check()?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let local = listener.local_addr().context("reading the bound address")?;
    let public_url = match args.public_url.clone() {
        Some(u) => u,
        None => PublicUrl::from_parts(tls.is_some(), &local.ip().to_string(), local.port()),
    };
    let limits = Limits {
        max_frame_bytes: args.max_frame_bytes,
        requests_per_sec: args.rate,
        request_burst: args.burst,
        claims_per_min_per_claimer: args.claims_per_min,
        claims_per_min_per_target: args.claims_per_min,
        connections_per_ip: args.connections_per_ip,
        mailbox_posts_per_min: args.mailbox_posts_per_min,
        idle_timeout: Duration::from_secs(args.idle_timeout.max(1)),
        handshake_timeout: Duration::from_millis(args.handshake_timeout_ms.max(10)),
        auth_timeout: Duration::from_millis(args.auth_timeout_ms.max(10)),
        max_age: Duration::from_secs(args.max_age_days.saturating_mul(86_400)),
        retention_interval: Duration::from_millis(args.retention_interval_ms.max(10)),
        ..Limits::default()
    };
    let config = Config {
        public_url,
        database: database(&args)?,
        tls,
        trusted_proxy: args.trusted_proxy,
        limits,
        invite_key,
    };
    if let Some(k) = &config.invite_key {
        tracing::info!(admin_key = %hex::encode(k.to_bytes()), "invite-only: registration needs an invitation");
    }
    // One machine-readable line on stdout for supervisors and tests.
    println!("listening {local} {}", config.public_url.as_str());
    let shutdown = async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
    };
    sotto_relay::run(listener, config, shutdown).await?;
    Ok(())
}

/// `sotto-relay invite create`: works offline, from the admin key alone.
fn invite_create(admin_key: &std::path::Path, uses: u32, expires: Duration) -> anyhow::Result<()> {
    let key = invite::load_or_create_admin_key(admin_key)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("the clock is before 1970")?;
    let expires_at = now.saturating_add(expires).as_secs();
    let token = Invite::create(&key, uses, expires_at);
    let when = time::OffsetDateTime::from_unix_timestamp(i64::try_from(expires_at)?)?
        .format(&time::format_description::well_known::Rfc3339)?;
    println!(
        "invitation for the relay with admin key {}: {uses} use{}, expires {when}",
        hex::encode(key.verifying_key().to_bytes()),
        if uses == 1 { "" } else { "s" }
    );
    println!("{token}");
    Ok(())
}
