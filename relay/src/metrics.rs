//! Counters exported at `GET /metrics` in the Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// The relay's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Open WebSocket connections.
    pub connections_open: AtomicI64,
    /// WebSocket connections accepted since start.
    pub connections_total: AtomicU64,
    /// Frames received.
    pub frames_in: AtomicU64,
    /// Frames sent.
    pub frames_out: AtomicU64,
    /// Mailbox entries stored.
    pub mailbox_stored: AtomicU64,
    /// Group-log entries stored.
    pub group_entries_stored: AtomicU64,
    /// Key packages claimed (single-use and last-resort).
    pub claims: AtomicU64,
    /// Last-resort key packages handed out.
    pub last_resort_claims: AtomicU64,
    /// Group posts refused with `conflict`.
    pub conflicts: AtomicU64,
    rejections: Mutex<BTreeMap<&'static str, u64>>,
}

impl Metrics {
    /// Adds one to a counter.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a refused request or connection by reason.
    pub fn reject(&self, reason: &'static str) {
        let mut map = self.rejections.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry(reason).or_default() += 1;
    }

    /// Renders the Prometheus text exposition.
    pub fn render(&self, durability: &str) -> String {
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, kind: &str, value: String| {
            let _ = writeln!(out, "# HELP sotto_relay_{name} {help}");
            let _ = writeln!(out, "# TYPE sotto_relay_{name} {kind}");
            let _ = writeln!(out, "sotto_relay_{name} {value}");
        };
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed).to_string();
        counter(
            "connections",
            "Open WebSocket connections.",
            "gauge",
            self.connections_open.load(Ordering::Relaxed).to_string(),
        );
        counter(
            "connections_total",
            "WebSocket connections accepted.",
            "counter",
            get(&self.connections_total),
        );
        counter(
            "frames_in_total",
            "Frames received.",
            "counter",
            get(&self.frames_in),
        );
        counter(
            "frames_out_total",
            "Frames sent.",
            "counter",
            get(&self.frames_out),
        );
        counter(
            "mailbox_entries_stored_total",
            "Mailbox entries stored.",
            "counter",
            get(&self.mailbox_stored),
        );
        counter(
            "group_entries_stored_total",
            "Group-log entries stored.",
            "counter",
            get(&self.group_entries_stored),
        );
        counter(
            "key_package_claims_total",
            "Key packages claimed.",
            "counter",
            get(&self.claims),
        );
        counter(
            "last_resort_claims_total",
            "Last-resort key packages handed out.",
            "counter",
            get(&self.last_resort_claims),
        );
        counter(
            "conflicts_total",
            "Group posts refused for a stale or future epoch.",
            "counter",
            get(&self.conflicts),
        );
        let _ = writeln!(
            out,
            "# HELP sotto_relay_rejections_total Requests refused, by reason."
        );
        let _ = writeln!(out, "# TYPE sotto_relay_rejections_total counter");
        let map = self.rejections.lock().unwrap_or_else(|e| e.into_inner());
        for (reason, n) in map.iter() {
            let _ = writeln!(
                out,
                "sotto_relay_rejections_total{{reason=\"{reason}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP sotto_relay_storage_synchronous The SQLite synchronous setting in force."
        );
        let _ = writeln!(out, "# TYPE sotto_relay_storage_synchronous gauge");
        let _ = writeln!(
            out,
            "sotto_relay_storage_synchronous{{mode=\"{durability}\"}} 1"
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_reasons() {
        let m = Metrics::default();
        Metrics::inc(&m.frames_in);
        m.reject("bad_proof");
        m.reject("bad_proof");
        let text = m.render("full");
        assert!(text.contains("sotto_relay_frames_in_total 1"));
        assert!(text.contains("sotto_relay_rejections_total{reason=\"bad_proof\"} 2"));
        assert!(text.contains("sotto_relay_storage_synchronous{mode=\"full\"} 1"));
    }
}
