//! Sotto's shared types: the local API contract (JSON-RPC methods, their params and
//! results, events, error kinds), the address grammar and the relay wire format.
//!
//! This crate holds types only — no I/O. The daemon's dispatcher, the CLI's typed client,
//! the D-Bus adapter and the published OpenRPC schema are all derived from these
//! definitions, so a field changed here changes every one of them.

pub mod address;
pub mod api;
pub mod envelope;
pub mod error;
pub mod jsonrpc;
pub mod methods;
pub mod openrpc;
pub mod paths;
pub mod relay;
pub mod wire;

// The fuzz targets' bodies (fuzz/src/lib.rs) name this crate by its package name; its unit
// tests compile them too.
#[cfg(test)]
extern crate self as sotto_protocol;
#[cfg(test)]
mod fuzz_corpus;
#[cfg(test)]
mod proptests;

pub use address::{Address, AddressError, RelayUrl};
pub use error::ErrorKind;
pub use methods::Method;

/// The integer protocol version of the local API, reported by `daemon.status`.
///
/// It is raised only for changes that old clients cannot ignore; additive changes
/// (new optional fields, methods, events) keep it.
pub const PROTOCOL_VERSION: u32 = 1;
