//! Faults: a full disk under the daemon's data directory, a read-only one, and a full disk
//! under the relay. A small tmpfs mounted by the test holds the data; the test fills it to
//! the last byte and frees it again.
//!
//! What must hold: `message.send` is refused at once with `storage_full` (never a hang),
//! reads keep working, nothing is half-written, and once space returns everything flows
//! again by itself — every accepted message reaches the other side exactly once, in order.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Daemon, Relay, Tmpfs, wait_for};

fn texts_from(list: &[Value], sender: &str) -> Vec<String> {
    list.iter()
        .filter(|m| m["sender"] == sender)
        .map(|m| m["text"].as_str().unwrap().to_owned())
        .collect()
}

/// A direct conversation between `a` and `b`, ready on both sides; returns its id.
fn direct(a: &Daemon, b: &Daemon, b_addr: &str) -> String {
    let conv = a.sotto_json(&["conversation", "create", b_addr])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    b.wait_conversation("the Welcome", |c| c["id"] == conv.as_str());
    conv
}

#[test]
fn a_full_disk_refuses_sends_at_once_keeps_reads_and_recovers_by_itself() {
    let relay = Relay::start();
    let mut alice = Daemon::new("file");
    let Some(fs) = Tmpfs::mount(&alice.data_dir(), "24m") else {
        return;
    };
    let a = alice.account(&relay, "alice");
    let mut bob = Daemon::new("file");
    let b = bob.account(&relay, "bob");
    let conv = direct(&alice, &bob, &b);
    let mut c = alice.client();
    let mut expected: Vec<String> = Vec::new();
    for i in 0..3 {
        let text = format!("before {i}");
        c.ok("message.send", json!({"conversation": conv, "text": text}));
        expected.push(text);
    }
    bob.wait_messages(&conv, "the first messages", |l| l.len() == 3);

    let filled = fs.fill();
    assert!(filled > 0, "the filler took some space");
    // The database may still have room in its WAL: send until the disk is really full.
    let mut refused = None;
    for i in 0..5000 {
        let (text, key) = (format!("during {i}"), format!("key-{i}"));
        let started = Instant::now();
        let r = c.call(
            "message.send",
            json!({"conversation": conv, "text": text, "idempotency_key": key}),
        );
        if r.get("result").is_some() {
            expected.push(text);
            continue;
        }
        assert_eq!(r["error"]["data"]["kind"], "storage_full", "{r}");
        assert_eq!(r["error"]["code"], -32018, "{r}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "refused at once, not after a hang ({:?})",
            started.elapsed()
        );
        assert!(
            r["error"]["message"].as_str().unwrap().contains("full"),
            "{r}"
        );
        refused = Some((text, key));
        break;
    }
    let (text, key) = refused.expect("a full disk must refuse a send within 5000 attempts");
    eprintln!(
        "the disk was full after {filled} filler bytes and {} more accepted sends",
        expected.len() - 3
    );

    // Reads keep working; the refused message was not half-written.
    assert!(c.ok("daemon.status", json!({}))["version"].is_string());
    assert_eq!(
        c.ok("conversation.list", json!({}))
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let list = c.ok("message.list", json!({"conversation": conv, "limit": 1000}));
    let mine = texts_from(list.as_array().unwrap(), &a);
    assert_eq!(mine, expected, "every accepted message and nothing else");

    // Bob writes to alice while her disk is full: she cannot store them, so she must not
    // acknowledge them either.
    let mut bc = bob.client();
    let from_bob: Vec<String> = (0..3).map(|i| format!("from bob {i}")).collect();
    for t in &from_bob {
        bc.ok("message.send", json!({"conversation": conv, "text": t}));
    }
    bob.wait_messages(&conv, "bob's messages posted", |l| {
        l.iter()
            .filter(|m| m["sender"] == b.as_str())
            .all(|m| m["state"] == "sent")
            && l.iter().filter(|m| m["sender"] == b.as_str()).count() == 3
    });

    // And invites her to a new group: the Welcome reaches her mailbox while she cannot
    // store it.
    let group = bc.ok(
        "conversation.create",
        json!({"members": [a], "name": "made while full"}),
    )["id"]
        .as_str()
        .unwrap()
        .to_owned();
    bob.wait_conversation("bob's new group to be created", |c| {
        c["id"] == group.as_str() && c["state"] == "active"
    });

    fs.free();
    // The Welcome is joined by itself once there is room.
    alice.wait_conversation("the Welcome that arrived while the disk was full", |c| {
        c["id"] == group.as_str()
    });
    // The same idempotency key now succeeds — once.
    let sent = wait_for("the send to be accepted once space returns", || {
        let r = alice.client().call(
            "message.send",
            json!({"conversation": conv, "text": text, "idempotency_key": key}),
        );
        r.get("result").cloned()
    });
    assert_eq!(sent["text"], text.as_str());
    let again = c.ok(
        "message.send",
        json!({"conversation": conv, "text": text, "idempotency_key": key}),
    );
    assert_eq!(
        again["id"], sent["id"],
        "a retry with the key is not a second message"
    );
    expected.push(text);

    // Everything flows by itself: bob gets alice's messages exactly once, in order, and
    // alice gets bob's.
    let at_bob = bob.wait_messages(&conv, "all of alice's messages at bob", |l| {
        texts_from(l, &a).len() >= expected.len()
    });
    assert_eq!(texts_from(&at_bob, &a), expected);
    let at_alice = alice.wait_messages(&conv, "bob's messages at alice", |l| {
        texts_from(l, &b).len() >= 3
            && l.iter()
                .filter(|m| m["sender"] == a.as_str())
                .all(|m| m["state"] == "sent")
    });
    assert_eq!(texts_from(&at_alice, &b), from_bob);
    assert_eq!(texts_from(&at_alice, &a), expected);
    assert!(
        alice.log_text().contains("full or read-only"),
        "the log says why sends were refused"
    );
    drop(fs);
}

#[test]
fn a_full_disk_at_the_relay_refuses_posts_as_retryable_and_loses_nothing() {
    let mut tmpfs = None;
    let relay = Relay::start_prepared(&[], |data| {
        tmpfs = Some(Tmpfs::mount(data, "24m"));
    });
    let Some(Some(fs)) = tmpfs else {
        return;
    };
    let mut alice = Daemon::new("file");
    let a = alice.account(&relay, "alice");
    let mut bob = Daemon::new("file");
    let b = bob.account(&relay, "bob");
    let conv = direct(&alice, &bob, &b);
    let mut c = alice.client();
    let mut expected = Vec::new();
    for i in 0..3 {
        let text = format!("before {i}");
        c.ok("message.send", json!({"conversation": conv, "text": text}));
        expected.push(text);
    }
    bob.wait_messages(&conv, "the first messages", |l| l.len() == 3);

    fs.fill();
    // The daemon accepts the sends (its own disk is fine) and keeps them queued while the
    // relay refuses to store them: never `failed`. The relay may still have room in its
    // WAL, so send until it refuses.
    let log = relay.dir.path().join("relay.log");
    let refused = || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.contains("storage unavailable") || text.contains("storage failure")
    };
    for i in 0..2000 {
        if refused() {
            break;
        }
        let text = format!("while the relay is full {i}");
        c.ok("message.send", json!({"conversation": conv, "text": text}));
        expected.push(text);
        std::thread::sleep(Duration::from_millis(5));
    }
    wait_for("the relay to refuse a post for lack of space", || {
        refused().then_some(())
    });
    let list = c.ok("message.list", json!({"conversation": conv, "limit": 1000}));
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|m| m["state"] != "failed"),
        "a full relay is a reason to wait, not to give up: {list}"
    );
    let queued = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["state"] == "queued")
        .count();
    assert!(queued > 0, "something waits for the relay: {list}");
    assert!(
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("the disk is full or read-only"),
        "the relay's log says why"
    );

    fs.free();
    let at_bob = bob.wait_messages(&conv, "everything at bob after the relay has room", |l| {
        texts_from(l, &a).len() >= expected.len()
    });
    assert_eq!(texts_from(&at_bob, &a), expected, "exactly once, in order");
    alice.wait_messages(&conv, "all sent", |l| {
        l.iter().all(|m| m["state"] == "sent")
    });
    drop(fs);
}

/// The daemon's files, each with its bytes.
fn snapshot(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut all: Vec<_> = crate::support::files_under(dir)
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    all.sort();
    all
}

#[test]
fn a_read_only_data_directory_stops_the_start_with_a_clear_error_and_is_left_untouched() {
    let relay = Relay::start();
    let mut alice = Daemon::new("file");
    let Some(fs) = Tmpfs::mount(&alice.data_dir(), "24m") else {
        return;
    };
    alice.account(&relay, "alice");
    alice.stop();
    let before = snapshot(&alice.data_dir());
    fs.remount(true);
    let out = alice
        .command()
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "a daemon that cannot write must not start"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("read-only") && err.contains(&alice.data_dir().display().to_string()),
        "the error names the directory and says why: {err}"
    );
    assert!(!alice.socket().exists(), "no socket left behind");
    assert_eq!(snapshot(&alice.data_dir()), before, "nothing changed");
    // Read-write again, it starts with everything there.
    fs.remount(false);
    alice.start();
    let info = alice.client().ok("account.info", json!({}));
    assert!(info["address"].as_str().unwrap().starts_with("alice@"));
    alice.stop();
    drop(fs);
}
