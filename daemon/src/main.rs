//! `sottod`: parse flags, harden the process, find or bind the socket, run the daemon.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;

/// Sotto's per-user daemon: owns the identity key, the message store and relay
/// connections, and serves JSON-RPC on a Unix socket.
///
/// Normally started by systemd (`systemctl --user start sottod.socket`); `sottod`
/// alone runs it in the foreground. Logs go to stderr; set SOTTO_LOG (e.g.
/// `SOTTO_LOG=debug`) for more.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Args {
    /// Socket path [default: $XDG_RUNTIME_DIR/sotto/sottod.sock]
    #[arg(long, env = "SOTTO_SOCKET", value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Config file [default: $XDG_CONFIG_HOME/sotto/config.toml]
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Run in the foreground (the default; accepted for compatibility with unit files)
    #[arg(long)]
    foreground: bool,
    /// Leave no trace: the database and the device key in memory only, no config file read,
    /// no lock, log or data file, no notifications and no D-Bus; only the socket is created,
    /// and removed at exit. The account and history are gone when the daemon stops.
    #[arg(long, conflicts_with = "config")]
    ephemeral: bool,
    /// Print the sottod(8) man page and exit
    #[arg(long, hide = true, exclusive = true)]
    man: bool,
}

/// What sottod(8) adds to the page generated from the flags.
const MAN_EXTRA: &str = r#".SH ENVIRONMENT
.TP
\fBSOTTO_SOCKET\fR
The socket path, like \fB\-\-socket\fR.
.TP
\fBXDG_RUNTIME_DIR\fR, \fBXDG_DATA_HOME\fR, \fBXDG_CONFIG_HOME\fR
Where the socket (\fI$XDG_RUNTIME_DIR/sotto/sottod.sock\fR, else
\fI/tmp/sotto\-$UID/sottod.sock\fR), the data (\fI$XDG_DATA_HOME/sotto\fR) and the
configuration (\fI$XDG_CONFIG_HOME/sotto/config.toml\fR) live.
.TP
\fBSOTTO_LOG\fR
The log filter (tracing EnvFilter syntax), default \fBinfo\fR; logs go to standard error.
.TP
\fBSOTTO_KEY_STORE\fR
\fBsecret\-service\fR (the default), \fBkeyutils\fR or \fBfile\fR.
.TP
\fBLISTEN_FDS\fR
systemd socket activation: the socket is taken from systemd instead of bound.
.SH "SEE ALSO"
sotto(1), sotto\-relay(8), sotto\-jsonrpc(7), sotto\-dbus(7)
"#;

fn print_man() -> std::io::Result<()> {
    use clap::CommandFactory as _;
    use std::io::Write as _;
    let mut out = Vec::new();
    clap_mangen::Man::new(Args::command())
        .section("8")
        .manual("Sotto Manual")
        .render(&mut out)?;
    out.extend_from_slice(MAN_EXTRA.as_bytes());
    std::io::stdout().write_all(&out)
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if args.man {
        return match print_man() {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("sottod: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    sottod::config::init_tracing();
    match real_main(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("sottod: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn real_main(args: Args) -> anyhow::Result<()> {
    let config = if args.ephemeral {
        sottod::Config::ephemeral(args.socket)?
    } else {
        sottod::Config::load(args.config.as_deref(), args.socket)?
    };
    sottod::hardening::apply(config.allow_debugging).context("hardening the process")?;
    // An ephemeral daemon has no data directory to lock: the live socket keeps it single.
    let _lock = if config.ephemeral {
        None
    } else {
        Some(sottod::paths::lock_data_dir(&config.data_dir)?)
    };
    let ephemeral_socket_dir = config
        .ephemeral
        .then(|| config.socket_path.parent().map(std::path::Path::to_owned))
        .flatten();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(async {
        let bound = sottod::listener::acquire(&config.socket_path)?;
        let result = sottod::run(bound.listener, config, shutdown_signal()).await;
        drop(bound.guard);
        if let Some(dir) = ephemeral_socket_dir {
            // The socket's directory goes too when nothing else is in it.
            let _ = std::fs::remove_dir(dir);
        }
        result.map_err(anyhow::Error::from)
    });
    // Every task (and with them every `Store` handle) is dropped here; then the database
    // writer finishes its last checkpoint before the process exits.
    drop(runtime);
    sottod::store::wait_for_writers(std::time::Duration::from_secs(10));
    result
}

/// Installs the SIGTERM/SIGINT handlers now (before the socket serves anyone, so a signal
/// sent right after the first reply is never fatal) and returns the future that waits.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        let (Ok(mut term), Ok(mut int)) = handlers else {
            tracing::error!("cannot install signal handlers; stop with daemon.shutdown");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
    }
}
