//! `sotto send CONV TEXT`

use std::io::Read as _;
use std::time::Duration;

use clap::Args;
use sotto_protocol::methods::{MessageSend, MessageSendParams};

use super::wait::Waiter;
use crate::Ctx;
use crate::output::print_json;

#[derive(Debug, Args)]
pub struct SendArgs {
    /// The conversation: an id, a peer's address (the direct conversation) or a unique name
    conversation: String,
    /// The text; "-" reads it from standard input
    text: String,
    /// The id of the message this replies to
    #[arg(long)]
    reply_to: Option<String>,
    /// Makes retries of this send safe: the same key returns the same message
    #[arg(long)]
    idempotency_key: Option<String>,
    /// Return once the message is queued instead of waiting for the relay to accept it
    #[arg(long)]
    no_wait: bool,
    /// How long to wait, in seconds
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    timeout: u64,
}

pub fn run(ctx: &Ctx, args: SendArgs) -> anyhow::Result<()> {
    let text = if args.text == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        s.strip_suffix('\n').map(str::to_owned).unwrap_or(s)
    } else {
        args.text
    };
    let mut client = super::connect(ctx)?;
    let waiter = (!args.no_wait).then(|| Waiter::start(ctx)).transpose()?;
    let mut message = client.call::<MessageSend>(&MessageSendParams {
        conversation: args.conversation,
        text,
        reply_to: args.reply_to,
        idempotency_key: args.idempotency_key,
    })?;
    if let Some(waiter) = waiter
        && message.state == sotto_protocol::api::MessageState::Queued
    {
        eprintln!("sending…");
        let id = message.id.clone();
        let outcome = waiter.until(Duration::from_secs(args.timeout), |ev| {
            (ev["type"] == "message.state" && ev["message_id"] == id.as_str()).then(|| ev.clone())
        })?;
        match outcome {
            Some(ev) if ev["state"] == "sent" => {
                message.state = sotto_protocol::api::MessageState::Sent
            }
            Some(ev) => anyhow::bail!(
                "the message failed: {}",
                ev["error"]["message"].as_str().unwrap_or("unknown reason")
            ),
            None => eprintln!(
                "queued, will retry: the message is stored and goes out when the relay is reachable"
            ),
        }
    }
    if ctx.json {
        return print_json(&message);
    }
    println!(
        "{} {}",
        message.id,
        format!("{:?}", message.state).to_lowercase()
    );
    Ok(())
}
