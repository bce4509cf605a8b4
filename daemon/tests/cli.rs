//! The `sotto` CLI against a real daemon.

use std::io::BufRead as _;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::support::{Daemon, Relay, bin};

#[test]
fn status_whoami_and_account_create_in_text_and_json() {
    let relay = Relay::start();
    let mut d = Daemon::new("file");
    d.start();
    let text = d.sotto_ok(&["status"]);
    assert!(text.contains("sottod 0.1.0 (protocol 1)"), "{text}");
    assert!(
        text.contains("sotto account create"),
        "hints at creating an account: {text}"
    );
    let status = d.sotto_json(&["status"]);
    assert_eq!(status["account"], Value::Null);
    assert_eq!(status["protocol"], 1);
    let out = d.sotto(&["whoami"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("sotto account create"));
    let created = d.sotto_ok(&["account", "create", "--relay", &relay.host, "carol"]);
    let carol = format!("carol@{}", relay.host);
    assert!(created.contains(&format!("created {carol}")), "{created}");
    let who = d.sotto_json(&["whoami"]);
    assert_eq!(who["address"], carol);
    assert_eq!(who["relay"], relay.url);
    assert_eq!(who["key_store"], "file");
    assert_eq!(who["fingerprint"].as_str().unwrap().len(), 64);
    let human = d.sotto_ok(&["whoami"]);
    assert!(human.contains(&carol) && human.contains("file"), "{human}");
    let status = d.sotto_json(&["status"]);
    assert_eq!(status["account"]["address"], carol);
    assert_eq!(status["relays"][0]["url"], relay.url);
    let again = d.sotto(&["account", "create", "--relay", &relay.host, "carol"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already has the account"));
    d.stop();
}

#[test]
fn listen_streams_events_as_ndjson_and_replays_from_since() {
    let relay = Relay::start();
    let mut d = Daemon::new("file");
    d.start();
    d.sotto_ok(&["account", "create", "--relay", &relay.host, "dave"]);
    let mut cmd = Command::new(bin("sotto"));
    cmd.env_clear();
    for (k, v) in &d.env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .args(["--json", "listen", "--since", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["seq"], 1);
    assert_eq!(first["type"], "account.created");
    assert_eq!(first["account"]["address"], format!("dave@{}", relay.host));
    // The daemon stopping ends `listen` with a resumable message and exit 1.
    let last = d.client().ok("daemon.status", serde_json::json!({}))["last_event_seq"]
        .as_u64()
        .unwrap();
    d.stop();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1));
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(err.contains("sotto listen --since "), "{err}");
    assert!(last >= 1);
}

#[test]
fn a_stopped_daemon_is_reported_with_the_socket_path_and_how_to_start_it() {
    let d = Daemon::new("file");
    let out = d.sotto(&["status"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains(d.socket().to_str().unwrap()), "{err}");
    assert!(
        err.contains("systemctl --user start sottod.socket") && err.contains("sottod"),
        "{err}"
    );
}

#[test]
fn usage_errors_exit_2_and_help_explains_the_commands() {
    let d = Daemon::new("file");
    let out = d.sotto(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    let out = d.sotto(&["account", "create", "nameonly"]);
    assert_eq!(out.status.code(), Some(2), "--relay is required");
    let help = d.sotto_ok(&["--help"]);
    for word in [
        "status",
        "account",
        "whoami",
        "listen",
        "--json",
        "--socket",
        "Exit status",
    ] {
        assert!(help.contains(word), "help lacks {word}: {help}");
    }
}

#[test]
fn the_socket_flag_and_env_select_the_daemon() {
    let mut d = Daemon::new("file");
    d.start();
    let sock = d.socket();
    let out = Command::new(bin("sotto"))
        .env_clear()
        .args(["--json", "--socket"])
        .arg(&sock)
        .arg("status")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(bin("sotto"))
        .env_clear()
        .env("SOTTO_SOCKET", &sock)
        .args(["status"])
        .output()
        .unwrap();
    assert!(out.status.success());
    d.stop();
}
