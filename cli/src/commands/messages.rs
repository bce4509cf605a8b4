//! `sotto messages CONV`

use clap::Args;
use sotto_protocol::api::{Message, MessageState};
use sotto_protocol::methods::{MessageList, MessageListParams};

use crate::Ctx;
use crate::output::print_json;

#[derive(Debug, Args)]
pub struct MessagesArgs {
    /// The conversation: an id, a peer's address or a unique name
    conversation: String,
    /// How many of the newest messages to show
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// Only messages before this message id
    #[arg(long)]
    before: Option<String>,
}

/// One line for people: time, sender, text, and the state when it is not plain.
pub fn line(m: &Message) -> String {
    let state = match m.state {
        MessageState::Queued => " (queued)",
        MessageState::Failed => " (failed)",
        _ => "",
    };
    format!("[{}] {}: {}{state}", m.sent_at, m.sender, m.text)
}

pub fn run(ctx: &Ctx, args: MessagesArgs) -> anyhow::Result<()> {
    let mut client = super::connect(ctx)?;
    let list = client.call::<MessageList>(&MessageListParams {
        conversation: args.conversation,
        before: args.before,
        limit: Some(args.limit),
    })?;
    if ctx.json {
        return print_json(&list);
    }
    for m in &list {
        println!("{}", line(m));
    }
    Ok(())
}
