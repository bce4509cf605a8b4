//! Faults of the network: a cut without a close (a TCP proxy in the test stops forwarding
//! and keeps the sockets open). Daemons notice the dead connection within a bounded time
//! (keepalive pings; `SOTTO_RELAY_KEEPALIVE` shortens the interval for the test),
//! reconnect and resume: every message arrives exactly once, in order.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::Daemon;
use crate::support::proxied::ProxiedRelays;

fn texts_from(list: &[Value], sender: &str) -> Vec<String> {
    list.iter()
        .filter(|m| m["sender"] == sender)
        .map(|m| m["text"].as_str().unwrap().to_owned())
        .collect()
}

/// A daemon with a short keepalive whose account lives on the relay behind the proxy.
fn behind(net: &ProxiedRelays, name: &str) -> (Daemon, String) {
    let mut d = Daemon::new("file");
    d.set_env("SOTTO_RELAY_KEEPALIVE", "1");
    let address = d.account_at(net.host(), name);
    (d, address)
}

/// The first event of type `kind` with a seq above `since` (waits for it).
fn event_after(d: &Daemon, since: u64, kind: &str) -> Value {
    let mut c = d.client();
    c.ok("events.subscribe", json!({"since": since}));
    loop {
        let n = c.read();
        let ev = &n["params"]["result"];
        if ev["type"] == kind {
            return ev.clone();
        }
    }
}

/// The seq of the newest event so far.
fn last_seq(d: &Daemon) -> u64 {
    d.client().ok("daemon.status", json!({}))["last_event_seq"]
        .as_u64()
        .unwrap()
}

#[test]
fn a_network_cut_without_close_is_noticed_and_everything_resumes() {
    let net = ProxiedRelays::start(1, &[]);
    let proxy = &net.proxy;
    let (alice, a) = behind(&net, "alice");
    let (bob, b) = behind(&net, "bob");
    let conv = alice.conversation_with(&bob, &b);
    alice.client().ok(
        "message.send",
        json!({"conversation": conv, "text": "before the cut"}),
    );
    bob.wait_messages(&conv, "the first message", |l| l.len() == 1);
    alice.wait_messages(&conv, "the first message sent", |l| {
        l.iter().all(|m| m["state"] == "sent")
    });
    let seq_before = last_seq(&alice);

    let connections_before = proxy.total(0);
    proxy.cut_silently();
    let cut_at = Instant::now();
    let mut expected = vec!["before the cut".to_owned()];
    let mut ac = alice.client();
    for i in 0..10 {
        let t = format!("during the cut {i}");
        ac.ok("message.send", json!({"conversation": conv, "text": t}));
        expected.push(t);
    }
    bob.client().ok(
        "message.send",
        json!({"conversation": conv, "text": "bob after the cut"}),
    );
    // Both notice (their connections were cut silently) and reconnect through the proxy.
    let at_bob = bob.wait_messages(&conv, "alice's messages after the cut", |l| {
        texts_from(l, &a).len() >= expected.len()
    });
    let resumed_in = cut_at.elapsed();
    assert_eq!(texts_from(&at_bob, &a), expected, "exactly once, in order");
    let at_alice = alice.wait_messages(&conv, "bob's message after the cut", |l| {
        texts_from(l, &b).len() == 1
            && l.iter()
                .filter(|m| m["sender"] == a.as_str())
                .all(|m| m["state"] == "sent")
    });
    assert_eq!(texts_from(&at_alice, &a), expected);
    eprintln!("resumed {resumed_in:?} after the cut (keepalive 1 s)");
    // Generous for a loaded machine (the wait above allows DEADLINE) yet far below what
    // TCP alone would take to notice a silent cut (minutes of retransmissions).
    assert!(
        resumed_in < Duration::from_secs(45),
        "noticed within the keepalive bound"
    );
    // The daemon said so.
    let down = event_after(&alice, seq_before, "relay.disconnected");
    let up = event_after(&alice, down["seq"].as_u64().unwrap(), "relay.connected");
    assert!(up["seq"].as_u64() > down["seq"].as_u64());
    assert!(alice.log_text().contains("the relay stopped answering"));
    assert!(
        proxy.total(0) >= connections_before + 2,
        "both daemons connected again: {connections_before} → {}",
        proxy.total(0)
    );
}
