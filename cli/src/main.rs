//! `sotto`: the command-line client of sottod. It never opens the store; every command is
//! one or a few JSON-RPC calls on the daemon's socket.

mod chat;
mod client;
mod commands;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Sotto: end-to-end encrypted messaging from your terminal.
///
/// `sotto` talks to the sottod daemon, which holds your keys and messages. Start it with
/// `systemctl --user start sottod.socket`, or run `sottod` in another terminal.
///
/// Every command accepts `--json` to print the daemon's JSON result for scripts
/// (`listen --json` prints one JSON event per line).
///
/// Exit status: 0 on success, 1 on an error (the message is on stderr), 2 on a usage error.
#[derive(Debug, Parser)]
#[command(name = "sotto", version, about, long_about, propagate_version = true)]
pub struct Cli {
    /// Print results as JSON (NDJSON for `listen`)
    #[arg(long, global = true)]
    json: bool,
    /// The daemon's socket [default: $XDG_RUNTIME_DIR/sotto/sottod.sock]
    #[arg(long, global = true, env = "SOTTO_SOCKET", value_name = "PATH")]
    socket: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show the daemon's version, account, relays and uptime
    Status,
    /// Manage this device's account
    #[command(subcommand)]
    Account(commands::account::AccountCommand),
    /// Back up this install to a passphrase-encrypted file, or restore one (takeover)
    #[command(subcommand)]
    Backup(commands::backup::BackupCommand),
    /// Show this device's address, device id and key fingerprint
    Whoami,
    /// Stream events (messages, membership changes, connection state) until interrupted
    ///
    /// With `--since SEQ`, every stored event after SEQ is replayed first, so a script
    /// that remembers the last `seq` it saw never misses one.
    Listen(commands::listen::ListenArgs),
    /// Manage contacts: pinned identity keys, safety numbers, verification
    #[command(subcommand)]
    Contact(commands::contact::ContactCommand),
    /// Create, list and change conversations
    #[command(subcommand)]
    Conversation(commands::conversation::ConversationCommand),
    /// Send a text message (waits until the relay accepted it unless --no-wait)
    Send(commands::send::SendArgs),
    /// Show a conversation's history, oldest first
    Messages(commands::messages::MessagesArgs),
    /// Print the shell completion script for bash, zsh or fish
    ///
    /// bash: `sotto completions bash > ~/.local/share/bash-completion/completions/sotto`;
    /// zsh: into a directory of your `$fpath` as `_sotto`; fish:
    /// `sotto completions fish > ~/.config/fish/completions/sotto.fish`.
    Completions(commands::completions::CompletionsArgs),
    /// Write the man pages (without --dir: print sotto(1))
    ///
    /// sotto(1), one page per subcommand (sotto-send(1), sotto-contact-add(1), ...) and the
    /// protocol pages sotto-jsonrpc(7) and sotto-dbus(7). sottod(8) and sotto-relay(8)
    /// come from `sottod --man` and `sotto-relay --man`.
    Man(commands::man::ManArgs),
    /// Interactive terminal chat: conversation list, history, compose, live updates
    ///
    /// Keys are listed with `?` (or F1) inside; docs/chat.md describes the screen.
    Chat(commands::chat::ChatArgs),
    /// Mark a conversation read (every client then shows it without unread messages)
    Read(commands::read::ReadArgs),
    /// Search this device's message history, best match first
    ///
    /// The query is plain words: each must occur in the message as a word, the last one
    /// may also be the beginning of a word. Punctuation is just text.
    Search(commands::search::SearchArgs),
}

/// What every command gets.
#[derive(Debug)]
pub struct Ctx {
    /// `--json` was given.
    pub json: bool,
    /// The socket path.
    pub socket: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let socket = cli.socket.clone().unwrap_or_else(default_socket);
    let ctx = Ctx {
        json: cli.json,
        socket,
    };
    let result = match cli.command {
        Command::Status => commands::status::run(&ctx),
        Command::Account(cmd) => commands::account::run(&ctx, cmd),
        Command::Backup(cmd) => commands::backup::run(&ctx, cmd),
        Command::Whoami => commands::whoami::run(&ctx),
        Command::Listen(args) => commands::listen::run(&ctx, args),
        Command::Contact(cmd) => commands::contact::run(&ctx, cmd),
        Command::Conversation(cmd) => commands::conversation::run(&ctx, cmd),
        Command::Send(args) => commands::send::run(&ctx, args),
        Command::Messages(args) => commands::messages::run(&ctx, args),
        Command::Read(args) => commands::read::run(&ctx, args),
        Command::Search(args) => commands::search::run(&ctx, args),
        Command::Chat(args) => commands::chat::run(&ctx, args),
        // These two never talk to the daemon.
        Command::Completions(args) => commands::completions::run(args),
        Command::Man(args) => commands::man::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sotto: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn default_socket() -> PathBuf {
    let runtime = std::env::var("XDG_RUNTIME_DIR").ok();
    sotto_protocol::paths::default_socket(runtime.as_deref(), rustix::process::getuid().as_raw())
}
