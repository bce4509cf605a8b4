//! `sotto conversation ...`

use std::time::Duration;

use clap::Subcommand;
use sotto_protocol::Address;
use sotto_protocol::api::Conversation;
use sotto_protocol::methods::{
    ConversationAdd, ConversationCreate, ConversationCreateParams, ConversationGet,
    ConversationLeave, ConversationList, ConversationMembersParams, ConversationParams,
    ConversationRemove, ConversationRename, ConversationRenameParams, ConversationRotateKeys,
};

use super::wait::Waiter;
use crate::Ctx;
use crate::output::print_json;

#[derive(Debug, clap::Args)]
pub struct WaitArgs {
    /// Return once the change is queued instead of waiting for it to complete
    #[arg(long)]
    no_wait: bool,
    /// How long to wait for completion, in seconds
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    timeout: u64,
}

#[derive(Debug, Subcommand)]
pub enum ConversationCommand {
    /// Create a conversation: direct with one address, a group with several or a name
    ///
    /// Waits until every member was added (their key packages claimed, the commit
    /// accepted by the relay, the invitations posted) unless --no-wait is given.
    Create {
        /// Members' addresses
        #[arg(required = true)]
        members: Vec<Address>,
        /// A name (makes it a group)
        #[arg(long)]
        name: Option<String>,
        /// MLS ciphersuite, by name or number (default: the daemon's default_ciphersuite, 0x0001
        /// unless configured); MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519 (0x004f) is
        /// the post-quantum hybrid
        #[arg(long)]
        ciphersuite: Option<String>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// List conversations
    List,
    /// Show one conversation: an id, a peer's address, or a unique name
    Show {
        /// Id, address or name
        conversation: String,
    },
    /// Add members to a group
    Add {
        /// Id, address or name
        conversation: String,
        /// Addresses to add
        #[arg(required = true)]
        members: Vec<Address>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Remove members from a group (every device of each address)
    Remove {
        /// Id, address or name
        conversation: String,
        /// Addresses to remove
        #[arg(required = true)]
        members: Vec<Address>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Leave a conversation
    ///
    /// Posts a request to be removed; another member's daemon commits it. Waits until
    /// that happened unless --no-wait.
    Leave {
        /// Id, address or name
        conversation: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Rename a group (an empty NAME removes the name)
    Rename {
        /// Id, address or name
        conversation: String,
        /// The new name
        name: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Replace this device's key material in the group (post-compromise security)
    RotateKeys {
        /// Id, address or name
        conversation: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
}

/// One line per conversation.
pub fn print_line(c: &Conversation) {
    let title = c.name.clone().unwrap_or_else(|| {
        c.members
            .iter()
            .map(|m| m.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    });
    let pending = if c.pending.is_empty() {
        String::new()
    } else {
        format!("  ({} pending)", c.pending.len())
    };
    let unread = match c.unread {
        0 => String::new(),
        n => format!("  [{n} unread]"),
    };
    let state = format!("{:?}", c.state).to_lowercase();
    let reason = c
        .state_reason
        .as_ref()
        .map(|r| format!("  {state}: {r}"))
        .unwrap_or_default();
    println!(
        "{}  {:<6} {state:<7} epoch {:<4} {title}{unread}{pending}{reason}",
        c.id,
        format!("{:?}", c.kind).to_lowercase(),
        c.epoch
    );
}

fn print_full(c: &Conversation) {
    print_line(c);
    println!("  relay        {}", c.relay);
    println!("  ciphersuite  {}", c.ciphersuite);
    println!("  unread       {}", c.unread);
    if !c.last_activity_at.is_empty() {
        println!("  activity     {}", c.last_activity_at);
    }
    if let Some(m) = &c.last_message {
        println!("  last         {}", super::messages::line(m));
    }
    for m in &c.members {
        println!("  member       {m}");
    }
    for p in &c.pending {
        println!("  pending      {} #{} ({})", p.op, p.id, p.state);
    }
}

/// Waits until `change` (a pending op id on `conv`) leaves the pending list.
fn wait_change(
    waiter: Waiter,
    conv: &Conversation,
    timeout: u64,
) -> anyhow::Result<Option<Conversation>> {
    let Some(change) = conv.pending.last().map(|p| p.id.clone()) else {
        return Ok(Some(conv.clone()));
    };
    eprintln!("waiting for the change to complete (claiming key packages, committing, inviting)…");
    let id = conv.id.clone();
    waiter
        .until(Duration::from_secs(timeout), |ev| {
            let t = ev["type"].as_str()?;
            let c: Conversation = serde_json::from_value(ev["conversation"].clone()).ok()?;
            if c.id != id {
                return None;
            }
            match t {
                "conversation.changed" if !c.pending.iter().any(|p| p.id == change) => Some(Ok(c)),
                "conversation.change_failed" | "conversation.broken" => {
                    let why = ev["error"]["message"]
                        .as_str()
                        .or(c.state_reason.as_deref())
                        .map(|m| format!(": {m}"))
                        .unwrap_or_default();
                    Some(Err(anyhow::anyhow!(
                        "the change failed{why}; see `sotto conversation show {}`",
                        c.id
                    )))
                }
                _ => None,
            }
        })?
        .transpose()
}

pub fn run(ctx: &Ctx, cmd: ConversationCommand) -> anyhow::Result<()> {
    let mut client = super::connect(ctx)?;
    let (conv, wait) = match cmd {
        ConversationCommand::List => {
            let list = client.call::<ConversationList>(&Default::default())?;
            if ctx.json {
                return print_json(&list);
            }
            if list.is_empty() {
                eprintln!("no conversations yet: `sotto conversation create ADDRESS`");
            }
            list.iter().for_each(print_line);
            return Ok(());
        }
        ConversationCommand::Show { conversation } => {
            let c = client.call::<ConversationGet>(&ConversationParams { conversation })?;
            if ctx.json {
                return print_json(&c);
            }
            print_full(&c);
            return Ok(());
        }
        ConversationCommand::Create {
            members,
            name,
            ciphersuite,
            wait,
        } => {
            let waiter = (!wait.no_wait).then(|| Waiter::start(ctx)).transpose()?;
            let c = client.call::<ConversationCreate>(&ConversationCreateParams {
                members,
                name,
                ciphersuite,
            })?;
            (c, waiter.map(|w| (w, wait.timeout)))
        }
        ConversationCommand::Add {
            conversation,
            members,
            wait,
        } => {
            let waiter = (!wait.no_wait).then(|| Waiter::start(ctx)).transpose()?;
            let c = client.call::<ConversationAdd>(&ConversationMembersParams {
                conversation,
                members,
            })?;
            (c, waiter.map(|w| (w, wait.timeout)))
        }
        ConversationCommand::Remove {
            conversation,
            members,
            wait,
        } => {
            let waiter = (!wait.no_wait).then(|| Waiter::start(ctx)).transpose()?;
            let c = client.call::<ConversationRemove>(&ConversationMembersParams {
                conversation,
                members,
            })?;
            (c, waiter.map(|w| (w, wait.timeout)))
        }
        ConversationCommand::Leave { conversation, wait } => {
            let waiter = (!wait.no_wait).then(|| Waiter::start(ctx)).transpose()?;
            let c = client.call::<ConversationLeave>(&ConversationParams { conversation })?;
            (c, waiter.map(|w| (w, wait.timeout)))
        }
        ConversationCommand::Rename {
            conversation,
            name,
            wait,
        } => {
            let waiter = (!wait.no_wait).then(|| Waiter::start(ctx)).transpose()?;
            let c = client
                .call::<ConversationRename>(&ConversationRenameParams { conversation, name })?;
            (c, waiter.map(|w| (w, wait.timeout)))
        }
        ConversationCommand::RotateKeys { conversation, wait } => {
            let waiter = (!wait.no_wait).then(|| Waiter::start(ctx)).transpose()?;
            let c = client.call::<ConversationRotateKeys>(&ConversationParams { conversation })?;
            (c, waiter.map(|w| (w, wait.timeout)))
        }
    };
    let result = match wait {
        Some((waiter, timeout)) => match wait_change(waiter, &conv, timeout)? {
            Some(done) => done,
            None => {
                eprintln!(
                    "queued, will retry: the change is durably queued and completes when the relays are reachable"
                );
                conv
            }
        },
        None => conv,
    };
    if ctx.json {
        return print_json(&result);
    }
    print_full(&result);
    Ok(())
}
