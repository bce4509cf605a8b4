//! `sotto chat [CONV]`

use clap::Args;

use crate::Ctx;

#[derive(Debug, Args)]
pub struct ChatArgs {
    /// Open this conversation (an id, a peer's address or a unique name), cursor in the input
    conversation: Option<String>,
}

pub fn run(ctx: &Ctx, args: ChatArgs) -> anyhow::Result<()> {
    crate::chat::run(ctx.socket.clone(), args.conversation)
}
