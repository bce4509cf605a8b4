//! Integration tests of `sotto-relay`: the real binary, a raw protocol client, real MLS
//! messages from openmls.
//!
//! The protocol suite is compiled once per storage backend (modules `sqlite` and
//! `postgres` below include the same case files), hence the allowed duplicate modules.
#![allow(clippy::duplicate_mod)]

#[path = "cases/client.rs"]
mod client;
#[path = "cases/harness.rs"]
mod harness;
#[path = "cases/mls.rs"]
mod mls;

/// The SQLite database file damaged or from a newer relay (SQLite only).
#[path = "cases/faults_db.rs"]
mod faults_db;

/// The disk under the SQLite database fills up (SQLite only: a tmpfs in the test).
#[path = "cases/faults_disk.rs"]
mod faults_disk;

/// A flood against one relay process while connected clients talk (SQLite only).
#[path = "cases/faults_flood.rs"]
mod faults_flood;

/// The PostgreSQL test cluster (Debian's server in a temp dir).
use sotto_testkit::pg;

/// The relay protocol suite on the embedded SQLite backend.
#[path = "cases"]
mod sqlite {
    mod auth;
    mod durability;
    mod groups;
    mod hostile;
    mod invite;
    mod keypackages;
    mod takeover;
    mod throughput;
    mod transport;
}

/// The same suite on PostgreSQL (`harness::backend()` reads the module path), plus what
/// only several relay processes on one database can show.
#[path = "cases"]
mod postgres {
    mod auth;
    mod durability;
    mod groups;
    mod hostile;
    mod invite;
    mod keypackages;
    mod scaleout;
    mod takeover;
    mod transport;
}
