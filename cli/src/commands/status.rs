//! `sotto status`

use sotto_protocol::methods::DaemonStatus;

use crate::Ctx;
use crate::client::Client;
use crate::output::{print_fields, print_json};

pub fn run(ctx: &Ctx) -> anyhow::Result<()> {
    let mut client = Client::connect(&ctx.socket)?;
    let status = client.call::<DaemonStatus>(&Default::default())?;
    super::warn_protocol(&status);
    if ctx.json {
        return print_json(&status);
    }
    let account = match &status.account {
        Some(a) if a.state == sotto_protocol::api::AccountState::Revoked => format!(
            "{} (REVOKED: another install, a restored backup, took this account over; this one sends nothing)",
            a.address
        ),
        Some(a) => a.address.to_string(),
        None => "none (create one with `sotto account create --relay RELAY NAME`)".into(),
    };
    let relays = if status.relays.is_empty() {
        "none".to_owned()
    } else {
        status
            .relays
            .iter()
            .map(|r| {
                format!(
                    "{} ({})",
                    r.url,
                    if r.connected {
                        "connected"
                    } else {
                        "not connected"
                    }
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    print_fields(&[
        (
            "daemon",
            format!(
                "sottod {} (protocol {}){}",
                status.version,
                status.protocol,
                if status.ephemeral {
                    ", EPHEMERAL: everything is in memory and gone when it stops"
                } else {
                    ""
                }
            ),
        ),
        ("socket", ctx.socket.display().to_string()),
        ("account", account),
        ("relays", relays),
        ("uptime", format_uptime(status.uptime_s)),
        ("last event", status.last_event_seq.to_string()),
    ]);
    Ok(())
}

fn format_uptime(s: u64) -> String {
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        _ => format!("{}h {}m", s / 3600, (s % 3600) / 60),
    }
}
