//! Integration tests of `sotto-relay`: the real binary, a raw protocol client, real MLS
//! messages from openmls.

#[path = "cases/client.rs"]
mod client;
#[path = "cases/harness.rs"]
mod harness;
#[path = "cases/mls.rs"]
mod mls;

#[path = "cases/auth.rs"]
mod auth;
#[path = "cases/durability.rs"]
mod durability;
#[path = "cases/groups.rs"]
mod groups;
#[path = "cases/hostile.rs"]
mod hostile;
#[path = "cases/invite.rs"]
mod invite;
#[path = "cases/keypackages.rs"]
mod keypackages;
#[path = "cases/throughput.rs"]
mod throughput;
#[path = "cases/transport.rs"]
mod transport;
