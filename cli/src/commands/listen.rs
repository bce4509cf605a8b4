//! `sotto listen [--since SEQ]`

use clap::Args;
use serde_json::Value;
use sotto_protocol::api::{Event, EventPayload};
use sotto_protocol::methods::{EventsSubscribe, SubscribeParams};

use crate::Ctx;

#[derive(Debug, Args)]
pub struct ListenArgs {
    /// Replay every stored event after this seq before streaming live ones
    #[arg(long, value_name = "SEQ")]
    since: Option<u64>,
}

pub fn run(ctx: &Ctx, args: ListenArgs) -> anyhow::Result<()> {
    let mut client = super::connect(ctx)?;
    let subscription = client.call::<EventsSubscribe>(&SubscribeParams { since: args.since })?;
    if !ctx.json {
        eprintln!("listening for events (ctrl-c to stop)");
    }
    loop {
        let msg = client.read_message()?;
        if msg.get("method").and_then(Value::as_str) != Some("event") {
            continue;
        }
        let params = &msg["params"];
        if params["subscription"].as_str() != Some(subscription.as_str()) {
            continue;
        }
        let result = &params["result"];
        if result["type"].as_str() == Some(sotto_protocol::api::SubscriptionClosed::TYPE) {
            let last = result["last_seq"].as_u64().unwrap_or(0);
            anyhow::bail!(
                "the daemon ended the subscription ({}); resume with `sotto listen --since {last}`",
                result["reason"].as_str().unwrap_or("unknown reason")
            );
        }
        if ctx.json {
            println!("{result}");
        } else {
            match serde_json::from_value::<Event>(result.clone()) {
                Ok(event) => println!("{}", describe(&event)),
                Err(_) => println!("{result}"),
            }
        }
    }
}

fn describe(event: &Event) -> String {
    let what = match &event.payload {
        EventPayload::AccountCreated { account } => format!("account created: {}", account.address),
        EventPayload::MessageCreated { message } | EventPayload::MessageReceived { message } => {
            format!(
                "[{}] {}: {}",
                message.conversation, message.sender, message.text
            )
        }
        EventPayload::MessageState {
            conversation,
            message_id,
            state,
            ..
        } => {
            format!("[{conversation}] message {message_id} is {state:?}")
        }
        EventPayload::ContactIdentityChanged {
            address,
            new_fingerprint,
            ..
        } => {
            format!("{address} has a new identity key {new_fingerprint}")
        }
        EventPayload::ConversationJoined { conversation } => {
            format!("joined {}", title(conversation))
        }
        EventPayload::ConversationChanged { conversation } => {
            format!(
                "{} changed: {:?}, epoch {}, {} members",
                title(conversation),
                conversation.state,
                conversation.epoch,
                conversation.members.len()
            )
        }
        EventPayload::ConversationChangeFailed {
            conversation,
            error,
        } => match error {
            Some(e) => format!("a change to {} failed: {}", title(conversation), e.message),
            None => format!("a change to {} failed", title(conversation)),
        },
        EventPayload::ConversationRemoved { conversation } => {
            format!("you were removed from {}", title(conversation))
        }
        EventPayload::ConversationBroken { conversation } => match &conversation.state_reason {
            Some(why) => format!(
                "{} is broken: {why} (see docs/operations.md)",
                title(conversation)
            ),
            None => format!("{} is broken (see docs/operations.md)", title(conversation)),
        },
        EventPayload::RelayConnected { url } => format!("connected to {url}"),
        EventPayload::RelayDisconnected { url } => format!("disconnected from {url}"),
        EventPayload::AccountRevoked { reason } => format!(
            "this install was REVOKED: another install took the account over ({reason}); it sends nothing more"
        ),
        other => other.type_name().to_owned(),
    };
    format!("#{:<6} {}", event.seq, what)
}

fn title(c: &sotto_protocol::api::Conversation) -> String {
    match &c.name {
        Some(n) => format!("{n} ({})", c.id),
        None => format!(
            "{} ({})",
            c.members
                .iter()
                .map(|m| m.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            c.id
        ),
    }
}
