//! `sotto contact ...`

use clap::Subcommand;
use sotto_protocol::Address;
use sotto_protocol::api::Contact;
use sotto_protocol::methods::{
    AddressParams, ContactAdd, ContactAddParams, ContactList, ContactRemove, ContactSafetyNumber,
    ContactTrust, ContactTrustParams, ContactVerify, ContactVerifyParams,
};

use crate::Ctx;
use crate::output::{grouped, print_json};

#[derive(Debug, Subcommand)]
pub enum ContactCommand {
    /// Fetch a peer's identity key from its relay and pin it (trust on first use)
    Add {
        /// The peer's address, name@host[:port]
        address: Address,
        /// A local name for the contact
        #[arg(long)]
        alias: Option<String>,
    },
    /// List contacts with their fingerprints and verification state
    List,
    /// Forget a contact
    Remove {
        /// The contact's address
        address: Address,
    },
    /// Show the safety number to compare with the contact (in person or by call)
    SafetyNumber {
        /// The contact's address
        address: Address,
    },
    /// Mark a contact verified after comparing safety numbers
    ///
    /// Read the contact's number from their screen; whitespace is ignored.
    Verify {
        /// The contact's address
        address: Address,
        /// The 60-digit safety number
        #[arg(num_args = 1.., required = true)]
        safety_number: Vec<String>,
    },
    /// Accept a contact's changed key by its fingerprint, without comparing numbers
    Trust {
        /// The contact's address
        address: Address,
        /// The fingerprint shown in the identity-change notice
        fingerprint: String,
    },
}

fn print_contact(c: &Contact) {
    let alias = c
        .alias
        .as_deref()
        .map(|a| format!(" ({a})"))
        .unwrap_or_default();
    let verified = if c.verified {
        "verified"
    } else {
        "not verified"
    };
    println!(
        "{}{alias}  {verified}\n  {}",
        c.address,
        grouped(&c.fingerprint)
    );
}

pub fn run(ctx: &Ctx, cmd: ContactCommand) -> anyhow::Result<()> {
    let mut client = super::connect(ctx)?;
    match cmd {
        ContactCommand::Add { address, alias } => {
            let c = client.call::<ContactAdd>(&ContactAddParams { address, alias })?;
            if ctx.json {
                return print_json(&c);
            }
            print_contact(&c);
        }
        ContactCommand::List => {
            let list = client.call::<ContactList>(&Default::default())?;
            if ctx.json {
                return print_json(&list);
            }
            if list.is_empty() {
                eprintln!("no contacts yet: `sotto contact add ADDRESS`");
            }
            list.iter().for_each(print_contact);
        }
        ContactCommand::Remove { address } => {
            let r = client.call::<ContactRemove>(&AddressParams {
                address: address.clone(),
            })?;
            if ctx.json {
                return print_json(&r);
            }
            println!("removed {address}");
        }
        ContactCommand::SafetyNumber { address } => {
            let r = client.call::<ContactSafetyNumber>(&AddressParams { address })?;
            if ctx.json {
                return print_json(&r);
            }
            let groups: Vec<&str> = r.safety_number.split(' ').collect();
            for row in groups.chunks(4) {
                println!("{}", row.join(" "));
            }
        }
        ContactCommand::Verify {
            address,
            safety_number,
        } => {
            let c = client.call::<ContactVerify>(&ContactVerifyParams {
                address,
                safety_number: safety_number.join(" "),
            })?;
            if ctx.json {
                return print_json(&c);
            }
            print_contact(&c);
        }
        ContactCommand::Trust {
            address,
            fingerprint,
        } => {
            let c = client.call::<ContactTrust>(&ContactTrustParams {
                address,
                fingerprint,
            })?;
            if ctx.json {
                return print_json(&c);
            }
            print_contact(&c);
        }
    }
    Ok(())
}
