//! Fixtures for Sotto's tests and benchmarks, with nothing of Sotto in them: a real
//! PostgreSQL server in a temporary directory ([`pg`]), a TCP proxy between clients and
//! servers that injects network faults ([`proxy`]), and a small tmpfs to fill up or make
//! read-only ([`tmpfs`]). The relay's and the daemon's integration tests take this crate
//! as a dev-dependency, `sotto-bench` as a dependency.

#![forbid(unsafe_code)]

pub mod pg;
pub mod proxy;
pub mod tmpfs;
