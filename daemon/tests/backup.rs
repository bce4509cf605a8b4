//! `backup.export` / `backup.import` through the real `sotto` CLI and the socket: a restore
//! on a fresh data directory continues the conversations both ways; a wrong passphrase, a
//! damaged or truncated file and a daemon that already has an account are refused with
//! nothing changed; a big history survives the trip.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::support::{Daemon, Relay, files_under};

const PASS: &str = "correct horse battery staple";

/// A daemon whose backups use a small scrypt work factor (the default costs 256 MiB).
fn daemon() -> Daemon {
    let mut d = Daemon::new("file");
    d.set_env("SOTTO_BACKUP_WORK_FACTOR", "10");
    d
}

fn pass_file(d: &Daemon, text: &str) -> PathBuf {
    let p = d.root.path().join("pass.txt");
    std::fs::write(&p, text).unwrap();
    p
}

fn texts(list: &[Value]) -> Vec<String> {
    list.iter()
        .map(|m| m["text"].as_str().unwrap().to_owned())
        .collect()
}

/// alice and bob with a direct conversation and one message each way.
fn pair(relay: &Relay) -> (Daemon, Daemon, String, String) {
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

fn export(d: &Daemon, path: &Path) -> Value {
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
