//! Process hardening: no core dumps, not ptrace-able by other processes of the same user.
//!
//! Setting `PR_SET_DUMPABLE` to 0 makes `/proc/<pid>` owned by root and refuses
//! `ptrace` attach from same-uid processes, so a compromised editor plugin cannot read
//! the identity key from memory. Profiling needs the opposite: set
//! `SOTTO_ALLOW_DEBUGGING=1` (or `allow_debugging = true` in the config) to skip it.

use rustix::process::{DumpableBehavior, Resource, Rlimit, set_dumpable_behavior, setrlimit};

/// The environment switch that leaves the daemon dumpable and debuggable.
pub const DEBUG_ENV: &str = "SOTTO_ALLOW_DEBUGGING";

/// Applies the hardening unless `allow_debugging` is set.
pub fn apply(allow_debugging: bool) -> std::io::Result<()> {
    if allow_debugging {
        tracing::warn!("{DEBUG_ENV} is set: core dumps and ptrace are allowed (keys may leak)");
        return Ok(());
    }
    setrlimit(
        Resource::Core,
        Rlimit {
            current: Some(0),
            maximum: Some(0),
        },
    )?;
    set_dumpable_behavior(DumpableBehavior::NotDumpable)?;
    Ok(())
}
