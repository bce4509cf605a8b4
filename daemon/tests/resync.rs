//! The resync of a restored install (issue 15), with real `sottod` and `sotto-relay`
//! processes: a conversation the old install moved on after the backup (it committed), a
//! conversation whose log the relay no longer holds since the backup (`gap`), and a group
//! the old install joined after the backup are all rejoined by external commit from the
//! GroupInfo committers post with their commits; the conversations continue both ways.

use serde_json::{Value, json};

use crate::backup::{daemon, export, import, pair, texts};
use crate::support::{Daemon, Relay, wait_for};

fn conversation(d: &Daemon, conv: &str) -> Value {
    d.client()
        .ok("conversation.get", json!({"conversation": conv}))
}

fn epoch(d: &Daemon, conv: &str) -> u64 {
    conversation(d, conv)["epoch"].as_u64().unwrap()
}

/// One query on the relay's SQLite database with the group id as `?1`.
fn relay_i64(relay: &Relay, sql: &str, conv: &str) -> i64 {
    let db = rusqlite::Connection::open(relay.dir.path().join("data/relay.sqlite3")).unwrap();
    db.query_row(sql, [hex::decode(conv).unwrap()], |r| r.get(0))
        .unwrap()
}

/// Waits until every mailbox entry on `relay` is acknowledged (the old install has
/// processed its Welcomes: the restored install can only find those groups by `ListGroups`).
fn mailboxes_drained(relay: &Relay) {
    wait_for("every mailbox entry acknowledged", || {
        let db = rusqlite::Connection::open(relay.dir.path().join("data/relay.sqlite3")).unwrap();
        let n: i64 = db
            .query_row("SELECT COUNT(*) FROM mailbox", [], |r| r.get(0))
            .unwrap();
        (n == 0).then_some(())
    });
}

/// `text` sent by `from` arrives at `to`, in conversation `conv`.
fn delivered(from: &Daemon, to: &Daemon, conv: &str, text: &str) {
    from.sotto_ok(&["send", conv, text]);
    to.wait_messages(conv, text, |l| texts(l).contains(&text.to_owned()));
}

/// The restored install continues `conv` with `peer` both ways, and the old install is
/// revoked.
fn continues(fresh: &Daemon, peer: &Daemon, old: &Daemon, conv: &str, tag: &str) {
    delivered(
        fresh,
        peer,
        conv,
        &format!("{tag}: from the restored install"),
    );
    delivered(
        peer,
        fresh,
        conv,
        &format!("{tag}: to the restored install"),
    );
    wait_for("the old install revoked", || {
        (old.client().ok("daemon.status", json!({}))["account"]["state"] == "revoked").then_some(())
    });
}

#[test]
fn a_commit_the_old_install_made_after_the_backup_is_rejoined_by_external_commit() {
    let relay = Relay::start();
    let (alice, bob, conv, _b) = pair(&relay);
    let file = alice.root.path().join("alice.age");
    export(&alice, &file);
    let before = epoch(&bob, &conv);
    // After the backup the old install commits (a key update) and sends; bob follows.
    alice.sotto_ok(&["conversation", "rotate-keys", &conv]);
    wait_for("bob at the old install's new epoch", || {
        (epoch(&bob, &conv) > before).then_some(())
    });
    delivered(
        &alice,
        &bob,
        &conv,
        "after the backup, from the old install",
    );
    let moved = epoch(&bob, &conv);
    let old_head = relay_i64(&relay, "SELECT head FROM groups WHERE id = ?1", &conv);
    // Every commit came with its new epoch's GroupInfo: the relay holds the latest.
    assert_eq!(
        relay_i64(
            &relay,
            "SELECT epoch FROM group_infos WHERE group_id = ?1",
            &conv
        ),
        moved as i64
    );

    // The restored install meets its "own" commit it never made: instead of a broken
    // conversation it rejoins by external commit, past the old install's epoch.
    let mut fresh = daemon();
    fresh.start();
    import(&fresh, &file);
    let rejoined = wait_for("the restored install past the old install's epoch", || {
        let c = conversation(&fresh, &conv);
        (c["epoch"].as_u64().unwrap() > moved).then_some(c)
    });
    assert_eq!(rejoined["state"], "active", "{rejoined}");
    // The restored install's first post is the external commit (a commit, by alice's key).
    let first_after = |relay: &Relay| -> (i64, Vec<u8>) {
        let db = rusqlite::Connection::open(relay.dir.path().join("data/relay.sqlite3")).unwrap();
        db.query_row(
            "SELECT content_type, sender FROM group_log WHERE group_id = ?1 AND seq = ?2",
            rusqlite::params![hex::decode(&conv).unwrap(), old_head + 1],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap()
    };
    let alice_key = {
        let db = rusqlite::Connection::open(relay.dir.path().join("data/relay.sqlite3")).unwrap();
        db.query_row(
            "SELECT sender FROM group_log WHERE group_id = ?1 AND seq = 1",
            [hex::decode(&conv).unwrap()],
            |r| r.get::<_, Vec<u8>>(0),
        )
        .unwrap()
    };
    assert_eq!(
        first_after(&relay),
        (3, alice_key),
        "a commit by alice's key"
    );
    continues(&fresh, &bob, &alice, &conv, "resync");
    assert_eq!(conversation(&bob, &conv)["state"], "active");
    assert!(
        fresh
            .log_text()
            .contains("rejoined the group by external commit"),
        "the daemon's log says how it continued"
    );
    // The history from before the backup is kept.
    let history = texts(&fresh.wait_messages(&conv, "the history", |l| l.len() >= 4));
    for t in [
        "before the backup, from alice",
        "before the backup, from bob",
    ] {
        assert!(history.contains(&t.to_owned()), "{history:?}");
    }
    // Still going after a restart of the restored install (the new state is durable).
    fresh.stop();
    fresh.start();
    delivered(
        &bob,
        &fresh,
        &conv,
        "after a restart, to the restored install",
    );
    delivered(
        &fresh,
        &bob,
        &conv,
        "after a restart, from the restored install",
    );
}

#[test]
fn a_log_the_relay_no_longer_holds_since_the_backup_is_rejoined_by_external_commit() {
    let relay = Relay::start_with(&["--retention-interval-ms", "50"]);
    let (alice, bob, conv, _b) = pair(&relay);
    let file = alice.root.path().join("alice.age");
    export(&alice, &file);
    let head = |relay: &Relay| relay_i64(relay, "SELECT head FROM groups WHERE id = ?1", &conv);
    let backup_head = head(&relay);
    // After the backup both members read and acknowledge more of the log, so retention
    // drops the entries the backup's cursor still needs.
    for i in 0..3 {
        delivered(
            &bob,
            &alice,
            &conv,
            &format!("after the backup {i}, from bob"),
        );
    }
    wait_for("retention to drop the entries after the backup", || {
        (relay_i64(
            &relay,
            "SELECT pruned_through FROM groups WHERE id = ?1",
            &conv,
        ) > backup_head)
            .then_some(())
    });
    let before = epoch(&bob, &conv);
    let mut fresh = daemon();
    fresh.start();
    import(&fresh, &file);
    // The relay answers `gap`: the restored install rejoins instead of breaking.
    wait_for("the restored install rejoined", || {
        let c = conversation(&fresh, &conv);
        (c["epoch"].as_u64().unwrap() > before && c["state"] == "active").then_some(())
    });
    continues(&fresh, &bob, &alice, &conv, "gap");
    assert!(
        fresh.log_text().contains("no longer has the log entries"),
        "the daemon's log says why it resynced"
    );
}

#[test]
fn a_group_the_old_install_joined_after_the_backup_is_found_and_joined() {
    let relay = Relay::start();
    let (alice, bob, conv, _b) = pair(&relay);
    let a = alice.client().ok("account.info", json!({}))["address"]
        .as_str()
        .unwrap()
        .to_owned();
    let file = alice.root.path().join("alice.age");
    export(&alice, &file);
    // After the backup bob makes a group with alice; the old install joins it and talks.
    let group = bob.client().ok(
        "conversation.create",
        json!({"members": [a], "name": "after the backup"}),
    )["id"]
        .as_str()
        .unwrap()
        .to_owned();
    alice.wait_conversation("the old install joins the new group", |c| {
        c["id"] == group.as_str() && c["state"] == "active"
    });
    delivered(&bob, &alice, &group, "in the new group, from bob");
    delivered(
        &alice,
        &bob,
        &group,
        "in the new group, from the old install",
    );
    mailboxes_drained(&relay);

    let mut fresh = daemon();
    fresh.start();
    import(&fresh, &file);
    // The restored install finds the group through ListGroups and joins it.
    let found = fresh.wait_conversation("the restored install finds the new group", |c| {
        c["id"] == group.as_str() && c["state"] == "active"
    });
    assert_eq!(found["name"], "after the backup", "{found}");
    assert_eq!(found["kind"], "group", "{found}");
    assert!(
        fresh
            .log_text()
            .contains("joining a group this install did not know"),
        "found through ListGroups, not a Welcome"
    );
    continues(&fresh, &bob, &alice, &group, "found group");
    // The conversation from before the backup goes on too.
    delivered(
        &fresh,
        &bob,
        &conv,
        "the old conversation, from the restored install",
    );
    delivered(
        &bob,
        &fresh,
        &conv,
        "the old conversation, to the restored install",
    );
}

#[test]
fn a_resync_without_a_group_info_at_the_relay_marks_the_conversation_broken_saying_why() {
    let relay = Relay::start();
    let (alice, bob, conv, _b) = pair(&relay);
    let file = alice.root.path().join("alice.age");
    export(&alice, &file);
    let backed_up = epoch(&bob, &conv);
    alice.sotto_ok(&["conversation", "rotate-keys", &conv]);
    let before = wait_for("bob at the old install's new epoch", || {
        let e = epoch(&bob, &conv);
        (e > backed_up).then_some(e)
    });
    // As for a group whose commits were all posted by daemons that predate GroupInfos.
    let db = rusqlite::Connection::open(relay.dir.path().join("data/relay.sqlite3")).unwrap();
    db.busy_timeout(std::time::Duration::from_secs(30)).unwrap();
    db.execute("DELETE FROM group_infos", []).unwrap();
    let mut fresh = daemon();
    fresh.start();
    import(&fresh, &file);
    // Never skipped, never forked: broken, and the log says why.
    let broken = fresh.wait_conversation("the conversation marked broken", |c| {
        c["id"] == conv.as_str() && c["state"] == "broken"
    });
    assert_eq!(broken["epoch"].as_u64(), Some(backed_up), "{broken}");
    assert!(
        fresh.log_text().contains("the resync is impossible"),
        "the daemon's log says why"
    );
    // So do the API (conversation.get, the list, the event) and the CLI.
    let why = broken["state_reason"]
        .as_str()
        .expect("a state_reason")
        .to_owned();
    assert!(why.contains("the resync is impossible"), "{why}");
    assert_eq!(conversation(&fresh, &conv)["state_reason"], why.as_str());
    let after = fresh.client().ok("daemon.status", json!({}))["last_event_seq"].clone();
    let mut events = fresh.client();
    events.ok("events.subscribe", json!({"since": 0}));
    let mut said = Vec::new();
    loop {
        let ev = events.read()["params"]["result"].clone();
        if ev["type"] == "conversation.broken" && ev["conversation"]["id"] == conv.as_str() {
            said.push(ev["conversation"]["state_reason"].clone());
        }
        if ev["seq"] == after {
            break;
        }
    }
    assert_eq!(
        said,
        vec![json!(why)],
        "one conversation.broken event, saying why"
    );
    let shown = fresh.sotto_json(&["conversation", "show", &conv]);
    assert_eq!(shown["state_reason"], why.as_str(), "{shown}");
    let listed = fresh.sotto_ok(&["conversation", "list"]);
    assert!(listed.contains(&format!("broken: {why}")), "{listed}");
    // Nothing of the restored install reached bob's group state.
    assert_eq!(epoch(&bob, &conv), before);
}

#[test]
fn a_group_that_removed_the_old_install_after_the_backup_ends_as_removed_not_broken() {
    let relay = Relay::start();
    let (alice, bob, conv, _b) = pair(&relay);
    let a = alice.client().ok("account.info", json!({}))["address"]
        .as_str()
        .unwrap()
        .to_owned();
    let group = bob.client().ok(
        "conversation.create",
        json!({"members": [a], "name": "team"}),
    )["id"]
        .as_str()
        .unwrap()
        .to_owned();
    alice.wait_conversation("alice joins the group", |c| {
        c["id"] == group.as_str() && c["state"] == "active"
    });
    let file = alice.root.path().join("alice.age");
    export(&alice, &file);
    // After the backup the old install commits in the group, then bob removes alice.
    let backed_up = epoch(&bob, &group);
    alice.sotto_ok(&["conversation", "rotate-keys", &group]);
    wait_for("bob at the old install's new epoch", || {
        (epoch(&bob, &group) > backed_up).then_some(())
    });
    bob.client().ok(
        "conversation.remove",
        json!({"conversation": group, "members": [a]}),
    );
    alice.wait_conversation("the old install removed", |c| {
        c["id"] == group.as_str() && c["state"] == "removed"
    });
    let mut fresh = daemon();
    fresh.start();
    import(&fresh, &file);
    // The restored install cannot follow the group past the old install's commit, and may
    // not rejoin it: the conversation ends as removed.
    fresh.wait_conversation("the group removed on the restored install", |c| {
        c["id"] == group.as_str() && c["state"] == "removed"
    });
    assert!(
        fresh
            .log_text()
            .contains("no longer a member, the resync ends"),
        "the resync found out from the relay"
    );
    // The direct conversation goes on.
    delivered(&fresh, &bob, &conv, "still here, from the restored install");
    delivered(&bob, &fresh, &conv, "still here, to the restored install");
}

#[test]
fn a_group_on_another_relay_the_old_install_joined_after_the_backup_is_found_there() {
    let home = Relay::start();
    let far = Relay::start();
    let mut alice = daemon();
    let mut bob = daemon();
    let a = alice.account(&home, "alice");
    bob.account(&far, "bob");
    // Before the backup: bob's conversation with alice lives on bob's relay.
    let known = bob.client().ok(
        "conversation.create",
        json!({"members": [a], "name": "known"}),
    )["id"]
        .as_str()
        .unwrap()
        .to_owned();
    alice.wait_conversation("alice joins from the other relay", |c| {
        c["id"] == known.as_str() && c["state"] == "active"
    });
    delivered(&bob, &alice, &known, "before the backup, from bob");
    let file = alice.root.path().join("alice.age");
    export(&alice, &file);
    // After the backup bob makes another group on his relay; the old install joins it.
    let group = bob.client().ok(
        "conversation.create",
        json!({"members": [a], "name": "after the backup"}),
    )["id"]
        .as_str()
        .unwrap()
        .to_owned();
    alice.wait_conversation("the old install joins the new group", |c| {
        c["id"] == group.as_str() && c["state"] == "active"
    });
    delivered(
        &alice,
        &bob,
        &group,
        "in the new group, from the old install",
    );
    mailboxes_drained(&home);
    let mut fresh = daemon();
    fresh.start();
    import(&fresh, &file);
    // ListGroups is asked of every relay a known conversation lives on, not just home.
    let found = fresh.wait_conversation("the restored install finds the far group", |c| {
        c["id"] == group.as_str() && c["state"] == "active"
    });
    assert_eq!(found["relay"], far.url, "{found}");
    assert!(
        fresh
            .log_text()
            .contains("joining a group this install did not know"),
        "found through ListGroups, not a Welcome"
    );
    continues(&fresh, &bob, &alice, &group, "far group");
    delivered(
        &bob,
        &fresh,
        &known,
        "the known group, to the restored install",
    );
}
