//! `sotto account create`

use clap::Subcommand;
use sotto_protocol::methods::{AccountCreate, AccountCreateParams};

use crate::Ctx;
use crate::output::print_json;

#[derive(Debug, Subcommand)]
pub enum AccountCommand {
    /// Create this device's identity and account
    ///
    /// Generates the device's Ed25519 identity key in the daemon's key store (the Secret
    /// Service by default; see `key_store` in config.toml) and records the account
    /// NAME@RELAY-HOST. RELAY is `host[:port]` or a ws:// or wss:// URL.
    ///
    /// An invite-only relay registers only with an invitation from its admin
    /// (`sotto-relay invite create`): give it with --invite.
    ///
    /// Example: sotto account create --relay relay.example.org alice
    Create {
        /// The account's relay: host[:port] or a ws:// / wss:// URL
        #[arg(long, value_name = "RELAY")]
        relay: String,
        /// An invitation token for an invite-only relay (sotto-invite1.…)
        #[arg(long, value_name = "TOKEN")]
        invite: Option<String>,
        /// The account name: 1-32 of a-z 0-9 . _ - (starting with a letter or digit)
        name: String,
    },
}

pub fn run(ctx: &Ctx, cmd: AccountCommand) -> anyhow::Result<()> {
    match cmd {
        AccountCommand::Create {
            relay,
            invite,
            name,
        } => {
            let mut client = super::connect(ctx)?;
            let account = client.call::<AccountCreate>(&AccountCreateParams {
                name,
                relay,
                invite,
            })?;
            if ctx.json {
                return print_json(&account);
            }
            println!("created {}", account.address);
            super::whoami::print_account(&account);
            Ok(())
        }
    }
}
