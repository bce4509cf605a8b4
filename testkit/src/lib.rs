//! Fixtures for Sotto's tests and benchmarks, with nothing of Sotto in them: a real
//! PostgreSQL server in a temporary directory ([`pg`]) and a TCP proxy between clients and
//! servers that injects network faults ([`proxy`]). The relay's and the daemon's
//! integration tests take this crate as a dev-dependency, `sotto-bench` as a dependency.

#![forbid(unsafe_code)]

pub mod pg;
pub mod proxy;
