//! Integration tests: the real `sottod` and `sotto` binaries on temp XDG dirs.

mod support;

mod cli;
mod framing;
mod identity;
mod socket;
mod systemd;
