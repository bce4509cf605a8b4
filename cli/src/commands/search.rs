//! `sotto search QUERY`

use clap::Args;
use sotto_protocol::methods::{MessageSearch, MessageSearchParams};

use crate::Ctx;
use crate::output::print_json;

#[derive(Debug, Args)]
pub struct SearchArgs {
    /// Plain words; each must occur in the message, the last may be a word's beginning
    #[arg(required = true, num_args = 1..)]
    query: Vec<String>,
    /// Only this conversation: an id, a peer's address or a unique name
    #[arg(long)]
    conversation: Option<String>,
    /// At most this many hits (at most 200)
    #[arg(long, default_value_t = 20)]
    limit: u32,
}

pub fn run(ctx: &Ctx, args: SearchArgs) -> anyhow::Result<()> {
    let mut client = super::connect(ctx)?;
    let hits = client.call::<MessageSearch>(&MessageSearchParams {
        query: args.query.join(" "),
        conversation: args.conversation,
        limit: Some(args.limit),
    })?;
    if ctx.json {
        return print_json(&hits);
    }
    if hits.is_empty() {
        eprintln!("no messages match");
    }
    for h in &hits {
        let m = &h.message;
        println!(
            "{}  [{}] {}: {}",
            m.conversation, m.sent_at, m.sender, h.snippet
        );
    }
    Ok(())
}
