//! `backup.export` / `backup.import` through the real `sotto` CLI and the socket: a restore
//! on a fresh data directory continues the conversations both ways; a wrong passphrase, a
//! damaged or truncated file and a daemon that already has an account are refused with
//! nothing changed; a big history survives the trip.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::support::{Daemon, Relay, files_under};

const PASS: &str = "correct horse battery staple";

/// A daemon whose backups use a small scrypt work factor (the default costs 256 MiB).
pub(crate) fn daemon() -> Daemon {
    let mut d = Daemon::new("file");
    d.set_env("SOTTO_BACKUP_WORK_FACTOR", "10");
    d
}

fn pass_file(d: &Daemon, text: &str) -> PathBuf {
    let p = d.root.path().join("pass.txt");
    std::fs::write(&p, text).unwrap();
    p
}

pub(crate) fn texts(list: &[Value]) -> Vec<String> {
    list.iter()
        .map(|m| m["text"].as_str().unwrap().to_owned())
        .collect()
}

/// alice and bob with a direct conversation and one message each way.
pub(crate) fn pair(relay: &Relay) -> (Daemon, Daemon, String, String) {
    let mut alice = daemon();
    let mut bob = daemon();
    alice.account(relay, "alice");
    let b = bob.account(relay, "bob");
    let conv = alice.sotto_json(&["conversation", "create", &b])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    bob.wait_conversation("the Welcome", |c| c["id"] == conv.as_str());
    alice.sotto_ok(&["send", &conv, "before the backup, from alice"]);
    bob.wait_messages(&conv, "alice's first", |l| l.len() == 1);
    bob.sotto_ok(&["send", &conv, "before the backup, from bob"]);
    alice.wait_messages(&conv, "bob's first", |l| l.len() == 2);
    (alice, bob, conv, b)
}

pub(crate) fn export(d: &Daemon, path: &Path) -> Value {
    let pf = pass_file(d, &format!("{PASS}\n"));
    d.sotto_json(&[
        "backup",
        "export",
        path.to_str().unwrap(),
        "--passphrase-file",
        pf.to_str().unwrap(),
    ])
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_restored_backup_continues_the_conversations_both_ways() {
    let relay = Relay::start();
    let (mut alice, bob, conv, _b) = pair(&relay);
    let before = alice.client().ok("account.info", json!({}));
    let file = alice.root.path().join("alice.age");
    let info = export(&alice, &file);
    assert_eq!(info["path"], file.to_str().unwrap());
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(info["bytes"], bytes.len());
    assert!(
        bytes.starts_with(b"age-encryption.org/v1\n-> scrypt "),
        "an age file in passphrase mode"
    );
    for clear in [
        &b"SQLite format 3"[..],
        b"before the backup",
        b"alice@",
        b"manifest.json",
    ] {
        assert!(
            !contains(&bytes, clear),
            "{:?} in clear",
            String::from_utf8_lossy(clear)
        );
    }
    assert!(
        !file.with_extension("age.partial").exists(),
        "no partial file left"
    );
    // The old install stops (its takeover is tested elsewhere); a new one restores.
    alice.stop();
    let mut fresh = daemon();
    fresh.start();
    let pf = pass_file(&fresh, &format!("{PASS}\r\nignored second line\n"));
    let out = fresh.sotto_ok(&[
        "backup",
        "import",
        file.to_str().unwrap(),
        "--passphrase-file",
        pf.to_str().unwrap(),
    ]);
    assert!(out.contains("restored alice@"), "{out}");
    let restored = fresh.client().ok("account.info", json!({}));
    assert_eq!(restored["address"], before["address"]);
    assert_eq!(restored["fingerprint"], before["fingerprint"]);
    assert_eq!(restored["device_id"], before["device_id"]);
    let history = fresh.wait_messages(&conv, "the restored history", |l| l.len() == 2);
    assert_eq!(
        texts(&history),
        [
            "before the backup, from alice",
            "before the backup, from bob"
        ]
    );
    fresh.sotto_ok(&["send", &conv, "after the restore, from alice"]);
    bob.wait_messages(&conv, "the restored install's message", |l| {
        texts(l).contains(&"after the restore, from alice".to_owned())
    });
    bob.sotto_ok(&["send", &conv, "after the restore, from bob"]);
    fresh.wait_messages(&conv, "bob's reply on the restored install", |l| {
        texts(l).contains(&"after the restore, from bob".to_owned())
    });
    // The key went into the new install's store, its database under its own new key.
    fresh.stop();
    let keys = files_under(&fresh.data_dir().join("keys"));
    assert_eq!(keys.len(), 2, "device key and database key: {keys:?}");
}

#[test]
fn bad_passphrases_damaged_files_and_an_existing_account_change_nothing() {
    let relay = Relay::start();
    let mut alice = daemon();
    alice.account(&relay, "alice");
    let file = alice.root.path().join("alice.age");
    export(&alice, &file);
    let mut fresh = daemon();
    fresh.start();
    let listing = |d: &Daemon| -> Vec<(PathBuf, u64)> {
        let mut v: Vec<_> = files_under(&d.data_dir())
            .into_iter()
            .filter(|p| !p.ends_with("sottod.lock") && !p.to_string_lossy().ends_with("-shm"))
            .map(|p| {
                let len = std::fs::metadata(&p).unwrap().len();
                (p, len)
            })
            .collect();
        v.sort();
        v
    };
    let before = listing(&fresh);
    let mut c = fresh.client();
    let import = |c: &mut crate::support::RawClient, path: &Path, pass: &str| -> Value {
        c.call(
            "backup.import",
            json!({"path": path.to_str().unwrap(), "passphrase": pass}),
        )
    };
    let r = import(&mut c, &file, "wrong passphrase");
    assert_eq!(r["error"]["data"]["kind"], "bad_passphrase", "{r}");
    // Truncated in the middle of the payload, and cut right after the header.
    let bytes = std::fs::read(&file).unwrap();
    for (name, cut) in [
        ("half", bytes.len() / 2),
        ("header", 120),
        ("last byte", bytes.len() - 1),
    ] {
        let t = fresh
            .root
            .path()
            .join(format!("cut-{}.age", name.replace(' ', "-")));
        std::fs::write(&t, &bytes[..cut]).unwrap();
        let r = import(&mut c, &t, PASS);
        assert_eq!(r["error"]["data"]["kind"], "backup_corrupt", "{name}: {r}");
    }
    let mut flipped = bytes.clone();
    let at = flipped.len() - 100;
    flipped[at] ^= 0x40;
    let f = fresh.root.path().join("flipped.age");
    std::fs::write(&f, &flipped).unwrap();
    let r = import(&mut c, &f, PASS);
    assert_eq!(r["error"]["data"]["kind"], "backup_corrupt", "{r}");
    let g = fresh.root.path().join("garbage.age");
    std::fs::write(&g, b"this is not an age file at all\n").unwrap();
    let r = import(&mut c, &g, PASS);
    assert_eq!(r["error"]["data"]["kind"], "backup_corrupt", "{r}");
    let r = c.call(
        "backup.import",
        json!({"path": "relative.age", "passphrase": PASS}),
    );
    assert_eq!(r["error"]["data"]["kind"], "invalid_params", "{r}");
    assert_eq!(c.ok("daemon.status", json!({}))["account"], Value::Null);
    assert_eq!(
        listing(&fresh),
        before,
        "nothing changed in the data directory"
    );
    // The CLI says so too.
    let pf = pass_file(&fresh, "nope\n");
    let out = fresh.sotto(&[
        "backup",
        "import",
        file.to_str().unwrap(),
        "--passphrase-file",
        pf.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("passphrase does not open this backup"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A daemon that has an account refuses, before even reading the file.
    let r = alice.client().call(
        "backup.import",
        json!({"path": file.to_str().unwrap(), "passphrase": PASS}),
    );
    assert_eq!(r["error"]["data"]["kind"], "account_exists", "{r}");
    // Without a terminal and without --passphrase-file the CLI says how.
    let out = fresh.sotto(&["backup", "export", "/tmp/never.age"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--passphrase-file"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Export without an account: no_account, no file.
    let r = fresh.client().call(
        "backup.export",
        json!({"path": fresh.root.path().join("x.age").to_str().unwrap(), "passphrase": PASS}),
    );
    assert_eq!(r["error"]["data"]["kind"], "no_account", "{r}");
    assert!(!fresh.root.path().join("x.age").exists());
}

/// The database key of the stopped daemon `d` (file store).
fn db_key(d: &Daemon) -> String {
    let r: Value = serde_json::from_str(
        &std::fs::read_to_string(d.data_dir().join("sotto.db.keyref")).unwrap(),
    )
    .unwrap();
    let entry = r["entry"].as_str().unwrap();
    let file = d
        .data_dir()
        .join("keys")
        .join(format!("{}.key", hex::encode(entry)));
    hex::encode(std::fs::read(file).unwrap())
}

fn open_db(d: &Daemon) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(d.data_dir().join("sotto.db")).unwrap();
    conn.execute_batch(&format!("PRAGMA key = \"x'{}'\";", db_key(d)))
        .unwrap();
    conn
}

#[test]
fn a_backup_of_a_big_history_is_restored_whole() {
    const N: i64 = 20_000;
    let relay = Relay::start();
    let (mut alice, _bob, conv, _b) = pair(&relay);
    alice.stop();
    {
        let mut conn = open_db(&alice);
        let tx = conn.transaction().unwrap();
        {
            let mut stmt = tx
                .prepare(
                    "INSERT INTO messages (id, conversation, sender, kind, text, sent_at, received_at, state, position)
                     VALUES (?1, ?2, 'bob@elsewhere.invalid', 'text', ?3, '2026-01-01T00:00:00Z', '2026-01-01T00:00:01Z', 'received', ?4)",
                )
                .unwrap();
            for i in 0..N {
                stmt.execute(rusqlite::params![
                    format!("{i:032x}"),
                    conv,
                    format!("old message {i} {}", "padding ".repeat(30)),
                    i + 10
                ])
                .unwrap();
            }
        }
        tx.commit().unwrap();
    }
    alice.start();
    let file = alice.root.path().join("big.age");
    let info = export(&alice, &file);
    assert!(info["bytes"].as_u64().unwrap() > 4_000_000, "{info}");
    alice.stop();
    let mut fresh = daemon();
    fresh.start();
    fresh.client().ok(
        "backup.import",
        json!({"path": file.to_str().unwrap(), "passphrase": PASS}),
    );
    let newest = fresh.wait_messages(&conv, "the newest of the big history", |l| !l.is_empty());
    assert!(
        texts(&newest)
            .iter()
            .any(|t| t.starts_with(&format!("old message {}", N - 1)))
    );
    fresh.stop();
    let count: i64 = open_db(&fresh)
        .query_row(
            "SELECT count(*) FROM messages WHERE conversation = ?1",
            [&conv],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(count, N + 2);
    assert_ne!(
        db_key(&fresh),
        db_key(&alice),
        "re-keyed under the new install's key"
    );
}

/// Reads notifications until an event of `kind` arrives.
fn next_event(c: &mut crate::support::RawClient, kind: &str) -> Value {
    loop {
        let n = c.read();
        let ev = &n["params"]["result"];
        if ev["type"] == kind {
            return ev.clone();
        }
    }
}

pub(crate) fn import(d: &Daemon, file: &Path) {
    let pf = pass_file(d, &format!("{PASS}\n"));
    d.sotto_ok(&[
        "backup",
        "import",
        file.to_str().unwrap(),
        "--passphrase-file",
        pf.to_str().unwrap(),
    ]);
}

/// Every state-changing call of a revoked install answers `session_revoked`; reads work.
fn assert_refuses_changes(d: &Daemon, conv: &str, peer: &str) {
    let mut c = d.client();
    for (method, params) in [
        (
            "message.send",
            json!({"conversation": conv, "text": "from the old install"}),
        ),
        (
            "conversation.rename",
            json!({"conversation": conv, "name": "x"}),
        ),
        ("conversation.create", json!({"members": [peer]})),
        ("conversation.mark_read", json!({"conversation": conv})),
        ("contact.add", json!({"address": peer})),
    ] {
        let r = c.call(method, params);
        assert_eq!(
            r["error"]["data"]["kind"], "session_revoked",
            "{method}: {r}"
        );
    }
    c.ok("message.list", json!({"conversation": conv}));
    assert_eq!(c.ok("account.info", json!({}))["state"], "revoked");
    // The CLI says so, in words.
    let out = d.sotto(&["send", conv, "from the old install"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("revoked") && err.contains("took the account over"),
        "{err}"
    );
    let status = d.sotto_ok(&["status"]);
    assert!(status.contains("REVOKED"), "{status}");
}

#[test]
fn a_takeover_revokes_the_old_install_and_nothing_it_sends_reaches_anyone() {
    let relay = Relay::start();
    let (mut alice, bob, conv, b) = pair(&relay);
    let file = alice.root.path().join("alice.age");
    export(&alice, &file);
    assert_eq!(
        alice.client().ok("daemon.status", json!({}))["account"]["state"],
        "active"
    );
    // The old install stays up and idle, watching its events.
    let mut watcher = alice.client();
    watcher.ok("events.subscribe", json!({}));
    let log = |sql: &str| -> Vec<(i64, i64, Vec<u8>)> {
        let db = rusqlite::Connection::open(relay.dir.path().join("data/relay.sqlite3")).unwrap();
        let mut st = db.prepare(sql).unwrap();
        st.query_map([hex::decode(&conv).unwrap()], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    };
    let all = "SELECT seq, content_type, sender FROM group_log WHERE group_id = ?1 ORDER BY seq";
    let before = log(all);
    let backup_head = before.last().unwrap().0;
    // Alice's key: the sender of the commit that created the conversation.
    let alice_key = before[0].2.clone();
    let mut fresh = daemon();
    fresh.start();
    import(&fresh, &file);
    let restored_at = std::time::Instant::now();
    let ev = next_event(&mut watcher, "account.revoked");
    println!(
        "the idle old install learnt of the takeover after {:?}",
        restored_at.elapsed()
    );
    assert!(
        ev["reason"]
            .as_str()
            .unwrap()
            .contains("took the account over"),
        "{ev}"
    );
    let status = alice.client().ok("daemon.status", json!({}));
    assert_eq!(status["account"]["state"], "revoked", "{status}");
    assert_refuses_changes(&alice, &conv, &b);

    // The restored install continues the conversation both ways.
    assert_eq!(
        fresh.client().ok("account.info", json!({}))["state"],
        "active"
    );
    fresh.sotto_ok(&["send", &conv, "after the takeover, from alice"]);
    bob.wait_messages(&conv, "the restored install's message", |l| {
        texts(l).contains(&"after the takeover, from alice".to_owned())
    });
    bob.sotto_ok(&["send", &conv, "after the takeover, from bob"]);
    fresh.wait_messages(&conv, "bob's reply", |l| {
        texts(l).contains(&"after the takeover, from bob".to_owned())
    });
    // The restored install's first post is a commit with an update path (a key update:
    // post-compromise security against a later leak of the backup), before its message.
    let ours: Vec<i64> = log(all)
        .into_iter()
        .filter(|(seq, _, sender)| *seq > backup_head && *sender == alice_key)
        .map(|(_, content_type, _)| content_type)
        .collect();
    assert_eq!(ours, [3, 1], "a commit, then the message: {ours:?}");

    // The revocation survives a restart of the old install: still revoked, still silent,
    // and the event is not repeated.
    alice.stop();
    alice.start();
    assert_eq!(
        alice.client().ok("daemon.status", json!({}))["account"]["state"],
        "revoked"
    );
    assert_refuses_changes(&alice, &conv, &b);
    let mut replay = alice.client();
    replay.ok("events.subscribe", json!({"since": 0}));
    next_event(&mut replay, "account.revoked");
    let after = alice.client().ok("daemon.status", json!({}))["last_event_seq"].clone();
    let events: Vec<Value> = {
        let mut c = alice.client();
        c.ok("events.subscribe", json!({"since": 0}));
        let mut all = Vec::new();
        loop {
            let ev = c.read()["params"]["result"].clone();
            let seq = ev["seq"].clone();
            all.push(ev);
            if seq == after {
                break all;
            }
        }
    };
    let revoked = events
        .iter()
        .filter(|e| e["type"] == "account.revoked")
        .count();
    assert_eq!(revoked, 1, "one account.revoked event");

    // Nothing the old install tried reached anyone; bob's history is exactly the four.
    let final_texts = texts(&bob.wait_messages(&conv, "bob's history", |l| l.len() == 4));
    assert!(
        !final_texts.iter().any(|t| t.contains("old install")),
        "{final_texts:?}"
    );
}
