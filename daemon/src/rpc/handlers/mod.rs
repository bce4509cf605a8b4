//! JSON-RPC handlers, one file per API area. Each only adapts params to a service call.

mod account;
mod contacts;
mod conversations;
mod daemon;
mod events;
mod messages;

use super::Registry;

/// Registers every implemented method.
pub fn register_all(r: &mut Registry) {
    daemon::register(r);
    account::register(r);
    events::register(r);
    contacts::register(r);
    conversations::register(r);
    messages::register(r);
}
