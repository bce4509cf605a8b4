//! Integration tests: the real `sottod` and `sotto` binaries on temp XDG dirs.

#![allow(clippy::unwrap_used)]

mod support;

mod at_rest;
mod backup;
mod chat;
mod cli;
mod client_api;
mod clients;
mod dbus;
mod ephemeral;
mod faults_db;
mod framing;
mod identity;
mod invite;
mod lost_ack;
mod messaging;
mod openrpc;
mod postquantum;
mod socket;
mod systemd;
