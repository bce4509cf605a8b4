//! `sotto read CONV`

use clap::Args;
use sotto_protocol::methods::{ConversationMarkRead, ConversationMarkReadParams};

use crate::Ctx;
use crate::output::print_json;

#[derive(Debug, Args)]
pub struct ReadArgs {
    /// The conversation: an id, a peer's address or a unique name
    conversation: String,
    /// Only up to and including this message id (default: everything so far)
    #[arg(long, value_name = "MESSAGE_ID")]
    up_to: Option<String>,
}

pub fn run(ctx: &Ctx, args: ReadArgs) -> anyhow::Result<()> {
    let mut client = super::connect(ctx)?;
    let c = client.call::<ConversationMarkRead>(&ConversationMarkReadParams {
        conversation: args.conversation,
        up_to: args.up_to,
    })?;
    if ctx.json {
        return print_json(&c);
    }
    super::conversation::print_line(&c);
    Ok(())
}
