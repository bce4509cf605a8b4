//! Faults at the relay that are neither an outage nor a full disk: a relay that answers
//! `internal` to a post on every attempt. The daemon retries it with its backoff, but not
//! forever (it would block everything queued behind it in the conversation): after
//! `SOTTO_RELAY_INTERNAL_GIVE_UP` (ten minutes by default, two seconds here) and at least
//! five attempts the message is `failed` with the relay's reason, and what is queued
//! after it is delivered once the relay takes posts again.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Daemon, Relay};

/// Polls `f` until it returns `Some`, for up to two minutes (a loaded machine).
fn wait_long<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn message<'a>(list: &'a [Value], text: &str) -> Option<&'a Value> {
    list.iter().find(|m| m["text"] == text)
}

#[test]
fn a_post_the_relay_fails_internally_for_too_long_is_given_up_with_its_reason() {
    let relay = Relay::start();
    let mut alice = Daemon::new("file");
    alice.set_env("SOTTO_RELAY_INTERNAL_GIVE_UP", "2");
    alice.account(&relay, "alice");
    let mut bob = Daemon::new("file");
    let b = bob.account(&relay, "bob");
    let conv = alice.sotto_json(&["conversation", "create", &b])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    bob.wait_conversation("the Welcome", |c| c["id"] == conv.as_str());
    let mut c = alice.client();
    c.ok(
        "message.send",
        json!({"conversation": conv, "text": "before"}),
    );
    bob.wait_messages(&conv, "the first message", |l| l.len() == 1);

    // Every insert into the group log now fails at the relay: `internal`, not a full disk.
    let db = rusqlite::Connection::open(relay.dir.path().join("data/relay.sqlite3")).unwrap();
    db.busy_timeout(Duration::from_secs(30)).unwrap();
    db.execute_batch(
        "CREATE TRIGGER sotto_test_fault BEFORE INSERT ON group_log
         BEGIN SELECT RAISE(ABORT, 'injected by the test'); END;",
    )
    .unwrap();
    let sent_at = Instant::now();
    let m = c.ok(
        "message.send",
        json!({"conversation": conv, "text": "refused"}),
    );
    assert_eq!(m["state"], "queued", "{m}");
    let failed = wait_long("the refused message to be given up", || {
        let list = alice.wait_messages(&conv, "alice's history", |_| true);
        message(&list, "refused")
            .filter(|m| m["state"] == "failed")
            .cloned()
    });
    assert!(
        sent_at.elapsed() >= Duration::from_secs(2),
        "given up only after the give-up time: {:?}",
        sent_at.elapsed()
    );
    let why = failed["error"]["message"].as_str().unwrap_or_default();
    assert!(
        why.contains("failed internally on every attempt"),
        "the reason says why: {failed}"
    );
    let attempts = std::fs::read_to_string(relay.dir.path().join("relay.log"))
        .unwrap()
        .matches("storage failure")
        .count();
    assert!(
        attempts >= 5,
        "retried before giving up: {attempts} attempts"
    );

    // The relay takes posts again: what was queued after it goes out; it never does.
    db.execute_batch("DROP TRIGGER sotto_test_fault").unwrap();
    c.ok(
        "message.send",
        json!({"conversation": conv, "text": "after"}),
    );
    let seen = bob.wait_messages(&conv, "the message after", |l| {
        message(l, "after").is_some()
    });
    assert!(message(&seen, "refused").is_none(), "{seen:?}");
    let list = alice.wait_messages(&conv, "alice's message sent", |l| {
        message(l, "after").is_some_and(|m| m["state"] == "sent")
    });
    assert_eq!(message(&list, "refused").unwrap()["state"], "failed");
}
