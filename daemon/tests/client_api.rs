//! The client-facing API: read state (`unread`, `conversation.mark_read`,
//! `conversation.read`), activity order and `message.search`, against real daemons and a
//! real relay.

use serde_json::{Value, json};

use crate::support::{Daemon, RawClient, Relay, wait_for};

/// Alice and Bob with accounts on `relay` and a direct conversation, known to both.
fn pair(relay: &Relay) -> (Daemon, String, Daemon, String, String) {
    let mut alice = Daemon::new("file");
    let a = alice.account(relay, "alice");
    let mut bob = Daemon::new("file");
    let b = bob.account(relay, "bob");
    let conv = alice.conversation_with(&bob, &b);
    (alice, a, bob, b, conv)
}

/// Sends `text` from `d` into `conv` and waits until the relay accepted it.
fn send(d: &Daemon, conv: &str, text: &str) -> Value {
    let m = d.sotto_json(&["send", conv, text]);
    assert_eq!(m["state"], "sent", "{m}");
    m
}

/// The next `conversation.read` notification on a subscribed client.
fn next_read_event(c: &mut RawClient) -> Value {
    loop {
        let n = c.read();
        let ev = &n["params"]["result"];
        if ev["type"] == "conversation.read" {
            return ev.clone();
        }
    }
}

fn error_kind(r: &Value) -> &str {
    r["error"]["data"]["kind"].as_str().unwrap_or("")
}

#[test]
fn unread_counts_and_mark_read_across_clients_and_daemons() {
    let relay = Relay::start();
    let (alice, _a, mut bob, _b, conv) = pair(&relay);
    // A second client of Bob's daemon follows his events.
    let mut watcher = bob.client();
    let since = watcher.ok("daemon.status", json!({}))["last_event_seq"].clone();
    watcher.ok("events.subscribe", json!({"since": since}));

    let fresh = bob
        .client()
        .ok("conversation.get", json!({"conversation": conv}));
    assert_eq!(fresh["unread"], 0, "{fresh}");
    assert!(fresh["last_message"].is_null(), "{fresh}");
    assert!(fresh["last_activity_at"].as_str().unwrap().ends_with('Z'));

    for t in ["one", "two", "three"] {
        send(&alice, &conv, t);
    }
    let history = bob.wait_messages(&conv, "three messages", |l| l.len() == 3);
    let mut c = bob.client();
    let got = c.ok("conversation.get", json!({"conversation": conv}));
    assert_eq!(got["unread"], 3, "{got}");
    assert_eq!(got["last_message"]["text"], "three");
    assert_eq!(got["last_message"]["state"], "received");
    assert!(got["last_activity_at"].as_str() >= fresh["last_activity_at"].as_str());
    // The sender's own messages are never unread.
    let mine = alice
        .client()
        .ok("conversation.get", json!({"conversation": conv}));
    assert_eq!(mine["unread"], 0, "{mine}");
    assert_eq!(mine["last_message"]["text"], "three");
    assert_eq!(mine["last_message"]["state"], "sent");

    // Up to the first message: two left, and the other client hears of it.
    let first = history[0]["id"].as_str().unwrap();
    let marked = c.ok(
        "conversation.mark_read",
        json!({"conversation": conv, "up_to": first}),
    );
    assert_eq!(marked["unread"], 2, "{marked}");
    let ev = next_read_event(&mut watcher);
    assert_eq!(ev["conversation"]["id"], conv.as_str());
    assert_eq!(ev["conversation"]["unread"], 2);
    // The same marker again changes nothing and emits nothing; then everything.
    let again = c.ok(
        "conversation.mark_read",
        json!({"conversation": conv, "up_to": first}),
    );
    assert_eq!(again["unread"], 2);
    let all = c.ok("conversation.mark_read", json!({"conversation": conv}));
    assert_eq!(all["unread"], 0);
    let ev = next_read_event(&mut watcher);
    assert_eq!(
        ev["conversation"]["unread"], 0,
        "the repeated mark_read emitted an event: {ev}"
    );
    // Never backwards.
    let back = c.ok(
        "conversation.mark_read",
        json!({"conversation": conv, "up_to": first}),
    );
    assert_eq!(back["unread"], 0, "{back}");
    // Bad input: a clear error, nothing changed.
    let r = c.call(
        "conversation.mark_read",
        json!({"conversation": conv, "up_to": "00".repeat(16)}),
    );
    assert_eq!(error_kind(&r), "not_found", "{r}");
    let r = c.call("conversation.mark_read", json!({"conversation": "nobody"}));
    assert_eq!(error_kind(&r), "not_found", "{r}");
    let r = c.call(
        "conversation.mark_read",
        json!({"conversation": conv, "until": first}),
    );
    assert_eq!(r["error"]["code"], -32602, "{r}");

    // The CLI: unread counts in the list, `sotto read`.
    send(&alice, &conv, "four");
    bob.wait_messages(&conv, "four", |l| l.len() == 4);
    let text = bob.sotto_ok(&["conversation", "list"]);
    assert!(text.contains("[1 unread]"), "{text}");
    let list = bob.sotto_json(&["conversation", "list"]);
    assert_eq!(list[0]["unread"], 1, "{list}");
    assert_eq!(list[0]["last_message"]["text"], "four");
    let read = bob.sotto_json(&["read", &conv]);
    assert_eq!(read["unread"], 0, "{read}");
    let text = bob.sotto_ok(&["conversation", "list"]);
    assert!(!text.contains("unread"), "{text}");
    let ev = next_read_event(&mut watcher);
    assert_eq!(ev["conversation"]["unread"], 0);

    // The marker is persisted, and so are the events.
    drop((c, watcher));
    bob.stop();
    bob.start();
    let mut c = bob.client();
    let got = c.ok("conversation.get", json!({"conversation": conv}));
    assert_eq!(got["unread"], 0, "{got}");
    c.ok("events.subscribe", json!({"since": 0}));
    let ev = next_read_event(&mut c);
    assert_eq!(ev["conversation"]["unread"], 2);
}

#[test]
fn the_list_is_ordered_by_newest_activity() {
    let relay = Relay::start();
    let (alice, _a, bob, b, direct) = pair(&relay);
    let group = alice.sotto_json(&["conversation", "create", "--name", "later", &b])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let ids = |d: &Daemon| -> Vec<String> {
        d.client()
            .ok("conversation.list", json!({}))
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(&alice), [group.clone(), direct.clone()]);
    // A message in the older conversation moves it up, on both sides.
    send(&alice, &direct, "bump");
    assert_eq!(ids(&alice), [direct.clone(), group.clone()]);
    bob.wait_conversation("the group", |c| c["id"] == group.as_str());
    send(&alice, &direct, "bump again");
    bob.wait_messages(&direct, "both bumps", |l| l.len() == 2);
    assert_eq!(ids(&bob), [direct.clone(), group.clone()]);
    // A change (a rename) moves the group up again, on both sides.
    alice.sotto_ok(&["conversation", "rename", &group, "renamed"]);
    assert_eq!(ids(&alice), [group.clone(), direct.clone()]);
    wait_for("Bob to see the renamed group first", || {
        (ids(&bob) == [group.clone(), direct.clone()]).then_some(())
    });
}

fn hit_texts(hits: &Value) -> Vec<String> {
    hits.as_array()
        .unwrap()
        .iter()
        .map(|h| h["text"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn search_ranks_filters_and_takes_any_text_as_words() {
    let relay = Relay::start();
    let (alice, _a, bob, b, direct) = pair(&relay);
    let group = alice.sotto_json(&["conversation", "create", "--name", "food", &b])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    bob.wait_conversation("the group", |c| c["id"] == group.as_str());
    let texts = [
        "lunch lunch lunch tomorrow",
        "lunch",
        "we should get lunch sometime next week maybe at the place with the long queue",
        "I don't know",
        "send me an e-mail",
        "salt and pepper",
        "Crème brûlée for dessert",
    ];
    for t in texts {
        send(&alice, &direct, t);
    }
    send(&alice, &group, "lunch in the group");
    bob.wait_messages(&direct, "every message", |l| l.len() == texts.len());
    bob.wait_messages(&group, "the group message", |l| l.len() == 1);

    // The sender's history (local sends) and the receiver's (the engine's receive path)
    // are both indexed, and rank the same: bm25, best first.
    for d in [&alice, &bob] {
        let mut c = d.client();
        let hits = c.ok(
            "message.search",
            json!({"query": "lunch", "conversation": direct}),
        );
        assert_eq!(
            hit_texts(&hits),
            [texts[0], texts[1], texts[2]],
            "ranking: {hits}"
        );
        let all = c.ok("message.search", json!({"query": "lunch"}));
        assert_eq!(all.as_array().unwrap().len(), 4, "{all}");
        let in_group = c.ok(
            "message.search",
            json!({"query": "lunch", "conversation": "food"}),
        );
        assert_eq!(hit_texts(&in_group), ["lunch in the group"]);
        assert_eq!(in_group[0]["conversation"], group.as_str());
        let one = c.ok("message.search", json!({"query": "lunch", "limit": 1}));
        assert_eq!(one.as_array().unwrap().len(), 1);
    }
    let mut c = bob.client();
    // Each hit is a whole Message plus a snippet with the matches marked.
    let hits = c.ok("message.search", json!({"query": "tomorrow"}));
    let history = bob.wait_messages(&direct, "history", |l| l.len() == texts.len());
    let mut expected = history[0].clone();
    expected["snippet"] = json!("lunch lunch lunch [tomorrow]");
    assert_eq!(hits, json!([expected]));
    // Every word must match; the last one also as a prefix.
    assert_eq!(
        hit_texts(&c.ok("message.search", json!({"query": "tomorrow lun"}))),
        [texts[0]]
    );
    assert_eq!(
        hit_texts(&c.ok("message.search", json!({"query": "next wee"}))),
        [texts[2]]
    );
    assert_eq!(
        c.ok("message.search", json!({"query": "lun tomorrow"})),
        json!([]),
        "only the last word is a prefix"
    );
    // Punctuation and search syntax are just text.
    assert_eq!(
        hit_texts(&c.ok("message.search", json!({"query": "don't"}))),
        [texts[3]]
    );
    let mail = c.ok("message.search", json!({"query": "e-mail"}));
    assert_eq!(hit_texts(&mail), [texts[4]]);
    assert_eq!(mail[0]["snippet"], "send me an [e-mail]");
    assert_eq!(
        hit_texts(&c.ok("message.search", json!({"query": "AND"}))),
        [texts[5]]
    );
    assert_eq!(
        hit_texts(&c.ok("message.search", json!({"query": "creme brulee"}))),
        [texts[6]],
        "diacritics are folded"
    );
    for q in [
        "\"",
        "*",
        "NEAR(",
        "lunch)",
        "(lunch",
        "OR lunch",
        "NOT",
        "lunch*",
        "text:lunch",
        "^lunch",
        "-lunch",
        "'",
        "{lunch}",
        "lunch \"tomorrow",
        "+",
        "a\u{0}b",
    ] {
        let r = c.call("message.search", json!({"query": q}));
        assert!(r["result"].is_array(), "{q:?}: {r}");
    }
    assert_eq!(
        hit_texts(&c.ok("message.search", json!({"query": "\"lunch\" tomorrow*"}))),
        [texts[0]]
    );
    // Bad queries: readable invalid_params, never an internal error.
    for q in ["", "   ", "\t\n"] {
        let r = c.call("message.search", json!({"query": q}));
        assert_eq!(r["error"]["code"], -32602, "{q:?}: {r}");
        assert_eq!(error_kind(&r), "invalid_params");
        assert!(
            r["error"]["message"].as_str().unwrap().contains("empty"),
            "{r}"
        );
    }
    let r = c.call("message.search", json!({"query": "x".repeat(5000)}));
    assert_eq!(error_kind(&r), "invalid_params", "{r}");
    let r = c.call("message.search", json!({}));
    assert_eq!(r["error"]["code"], -32602, "{r}");
    let r = c.call(
        "message.search",
        json!({"query": "lunch", "conversation": "nope"}),
    );
    assert_eq!(error_kind(&r), "not_found", "{r}");

    // The CLI.
    let out = bob.sotto_ok(&["search", "lunch", "--conversation", &direct, "--limit", "2"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].contains("[lunch] [lunch] [lunch] tomorrow"),
        "{out}"
    );
    let json = bob.sotto_json(&["search", "e-mail"]);
    assert_eq!(json[0]["text"], texts[4]);
    let out = bob.sotto(&["search", " "]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("empty"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
