//! `sotto whoami`

use sotto_protocol::methods::AccountInfo;

use crate::Ctx;
use crate::output::{grouped, print_fields, print_json};

pub fn run(ctx: &Ctx) -> anyhow::Result<()> {
    let mut client = super::connect(ctx)?;
    let account = client.call::<AccountInfo>(&Default::default())?;
    if ctx.json {
        return print_json(&account);
    }
    print_account(&account);
    Ok(())
}

/// Prints an account for people.
pub fn print_account(account: &sotto_protocol::api::Account) {
    print_fields(&[
        ("address", account.address.to_string()),
        ("device", account.device_id.clone()),
        ("fingerprint", grouped(&account.fingerprint)),
        ("relay", account.relay.clone()),
        ("key store", account.key_store.to_string()),
        (
            "state",
            match account.state {
                sotto_protocol::api::AccountState::Active => "active".to_owned(),
                sotto_protocol::api::AccountState::Revoked => {
                    "REVOKED: another install (a restored backup) took this account over".to_owned()
                }
            },
        ),
    ]);
}
