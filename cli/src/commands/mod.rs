//! One file per subcommand.

pub mod account;
pub mod backup;
pub mod chat;
pub mod completions;
pub mod contact;
pub mod conversation;
pub mod listen;
pub mod man;
pub mod messages;
pub mod read;
pub mod search;
pub mod send;
pub mod status;
pub mod wait;
pub mod whoami;

use sotto_protocol::PROTOCOL_VERSION;
use sotto_protocol::api::Status;

use crate::Ctx;
use crate::client::Client;

/// Connects and warns on stderr when the daemon speaks another protocol version.
pub fn connect(ctx: &Ctx) -> anyhow::Result<Client> {
    let mut client = Client::connect(&ctx.socket)?;
    let status = client.call::<sotto_protocol::methods::DaemonStatus>(&Default::default())?;
    warn_protocol(&status);
    Ok(client)
}

/// The warning itself, shared with `status`.
pub fn warn_protocol(status: &Status) {
    if status.protocol != PROTOCOL_VERSION {
        eprintln!(
            "sotto: warning: sottod {} speaks protocol {}, this sotto speaks {}; update the older one",
            status.version, status.protocol, PROTOCOL_VERSION
        );
    }
}
