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
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
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
    let config = sottod::Config::load(args.config.as_deref(), args.socket)?;
    sottod::hardening::apply(config.allow_debugging).context("hardening the process")?;
    let _lock = sottod::paths::lock_data_dir(&config.data_dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let bound = sottod::listener::acquire(&config.socket_path)?;
        let result = sottod::run(bound.listener, config, shutdown_signal()).await;
        drop(bound.guard);
        result.map_err(anyhow::Error::from)
    })
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
