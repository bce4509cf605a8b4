//! `sottod --ephemeral`: a full session (account, conversation, messages both ways) leaves
//! nothing under HOME or any XDG directory once the daemon has stopped.

use std::path::Path;
use std::process::Command;

use serde_json::json;

use crate::support::{Daemon, Relay};

/// Everything under `dir` (files and directories), via find(1).
fn find(dir: &Path) -> String {
    let out = Command::new("find")
        .arg(dir)
        .arg("-mindepth")
        .arg("1")
        .output()
        .expect("run find");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn an_ephemeral_session_leaves_no_trace() {
    let relay = Relay::start();
    let mut eph = Daemon::new("file").with_args(&["--ephemeral"]);
    let locked_kb = |pid: u32| -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmLck:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    };
    eph.start();
    let before = locked_kb(eph.pid());
    let alice = eph.account(&relay, "alice");
    let status = eph.client().ok("daemon.status", json!({}));
    assert_eq!(status["ephemeral"], true, "{status}");
    assert_eq!(status["account"]["key_store"], "memory", "{status}");
    assert!(eph.sotto_ok(&["status"]).contains("EPHEMERAL"));
    // The key's pages are locked in RAM where RLIMIT_MEMLOCK allows (it is inherited).
    let limit = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let memlock: Option<u64> = limit
        .lines()
        .find(|l| l.starts_with("Max locked memory"))
        .and_then(|l| l.split_whitespace().nth(3)?.parse().ok());
    if memlock.is_none_or(|m| m >= 64 * 1024) {
        let after = locked_kb(eph.pid());
        assert!(
            after > before,
            "the key's pages were not locked ({before} → {after} kB)"
        );
    }
    // One instance per socket: a second one refuses to start.
    let second = eph.command().output().expect("run a second sottod");
    assert!(!second.status.success(), "{second:?}");

    let mut bob = Daemon::new("file");
    let bob_a = bob.account(&relay, "bob");
    let conv = eph.sotto_json(&["conversation", "create", &bob_a]);
    assert_eq!(conv["state"], "active", "{conv}");
    let id = conv["id"].as_str().unwrap().to_owned();
    bob.wait_conversation("the Welcome", |c| c["id"] == id.as_str());
    eph.sotto_json(&["send", &id, "from memory"]);
    bob.sotto_json(&["send", &alice, "to memory"]);
    let got = eph.wait_messages(&id, "both messages", |l| l.len() == 2);
    assert!(got.iter().any(|m| m["text"] == "to memory"), "{got:?}");

    eph.stop();
    let root = eph.root.path();
    for dir in ["home", "data", "config", "run"] {
        let left = find(&root.join(dir));
        assert!(
            left.is_empty(),
            "the ephemeral daemon left in {dir}:\n{left}"
        );
    }
    // Nothing in /tmp named after it either (SQLite temp files would be etilqs_*).
    let tmp = std::fs::read_dir(std::env::temp_dir()).unwrap();
    for e in tmp.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        assert!(!name.contains("sotto-ephemeral"), "{name}");
    }
}
