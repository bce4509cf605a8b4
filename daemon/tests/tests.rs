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
mod faults_chaos;
mod faults_db;
mod faults_disk;
mod faults_hostile;
mod faults_net;
mod faults_relay;
mod faults_security;
mod framing;
mod gtk;
mod identity;
mod invite;
mod lost_ack;
mod messaging;
mod openrpc;
/// The PostgreSQL test cluster (Debian's server in a temp dir).
use sotto_testkit::pg;
mod postquantum;
mod resync;
mod scaleout;
mod socket;
mod systemd;
