//! The database encrypted at rest (SQLCipher) under a key in a real Secret Service
//! (gnome-keyring on a private bus): no plaintext in the database or its WAL, a plain
//! database of an older sottod migrated on first start, and a missing key reported as
//! exactly that with the file left untouched.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::support::{Daemon, Relay, SecretService, files_under, snapshot};

const PLAIN_HEADER: &[u8] = b"SQLite format 3";

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The files of the database (main file, WAL, shared memory, leftovers).
fn db_files(d: &Daemon) -> Vec<PathBuf> {
    files_under(&d.data_dir())
        .into_iter()
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("sotto.db") && !n.ends_with(".keyref"))
        })
        .collect()
}

/// Asserts no database file holds any of `needles`; returns how many bytes were searched.
fn assert_no_plaintext(d: &Daemon, needles: &[&[u8]]) -> usize {
    let mut searched = 0;
    for f in db_files(d) {
        let bytes = std::fs::read(&f).unwrap_or_default();
        searched += bytes.len();
        for n in needles {
            assert!(
                !contains(&bytes, n),
                "{} holds {:?} in clear",
                f.display(),
                String::from_utf8_lossy(n)
            );
        }
    }
    searched
}

fn keyref(d: &Daemon) -> Value {
    let text = std::fs::read_to_string(d.data_dir().join("sotto.db.keyref")).expect("keyref");
    serde_json::from_str(&text).expect("keyref is JSON")
}

fn secret_tool(ss: &SecretService, args: &[&str]) -> std::process::Output {
    Command::new("secret-tool")
        .args(args)
        .env("DBUS_SESSION_BUS_ADDRESS", &ss.address)
        .stdin(Stdio::null())
        .output()
        .expect("secret-tool")
}

/// Two daemons on one Secret Service and one relay, with a direct conversation where
/// alice said `text` and bob received it. Returns (alice, bob, conversation id).
fn pair_with_a_message(ss: &SecretService, relay: &Relay, text: &str) -> (Daemon, Daemon, String) {
    let mut alice = Daemon::new("secret-service").with_bus(&ss.address);
    let mut bob = Daemon::new("secret-service").with_bus(&ss.address);
    alice.account(relay, "alice");
    let b = bob.account(relay, "bob");
    let conv = alice.conversation_with(&bob, &b);
    alice.sotto_ok(&["send", &conv, text]);
    bob.wait_messages(&conv, "alice's message", |l| {
        l.iter().any(|m| m["text"] == text)
    });
    (alice, bob, conv)
}

#[test]
fn the_database_and_its_wal_hold_no_plaintext_and_the_key_is_in_the_secret_service() {
    let ss = SecretService::start();
    let relay = Relay::start();
    let text = "meet me at the old lighthouse at 9";
    let (mut alice, mut bob, conv) = pair_with_a_message(&ss, &relay, text);
    // Reply too, so both sides hold a sent and a received message.
    bob.sotto_ok(&["send", &conv, "bring the blue umbrella"]);
    alice.wait_messages(&conv, "bob's reply", |l| l.len() == 2);
    for d in [&alice, &bob] {
        let r = keyref(d);
        assert_eq!(r["store"], "secret-service", "{r}");
        let entry = r["entry"].as_str().unwrap();
        let key = ss
            .lookup(entry)
            .expect("the database key is in the Secret Service");
        assert_eq!(key.len(), 32, "a raw 256-bit key");
        // While running: the WAL holds the latest writes.
        let wal = d.data_dir().join("sotto.db-wal");
        assert!(wal.exists(), "the daemon runs in WAL mode");
        let searched = assert_no_plaintext(
            d,
            &[
                text.as_bytes(),
                b"bring the blue umbrella",
                PLAIN_HEADER,
                b"CREATE TABLE",
                b"alice@",
            ],
        );
        assert!(searched > 8192, "searched {searched} bytes");
        assert!(
            !contains(
                &std::fs::read(d.log.clone()).unwrap(),
                &hex::encode(&key).into_bytes()
            ),
            "the database key is not in the log"
        );
    }
    alice.stop();
    bob.stop();
    for d in [&alice, &bob] {
        assert_no_plaintext(
            d,
            &[text.as_bytes(), b"bring the blue umbrella", PLAIN_HEADER],
        );
    }
    // The history is all there after a restart with the key from the keyring.
    alice.start();
    let got = alice.wait_messages(&conv, "history after restart", |l| l.len() == 2);
    assert_eq!(got[0]["text"], text);
}

/// Rewrites the encrypted database of the stopped daemon `d` as a plain one (what an older
/// sottod left), with committed pages still in its WAL, and forgets its key.
fn make_plain(d: &Daemon, ss: &SecretService, marker: &str) {
    let r = keyref(d);
    let entry = r["entry"].as_str().unwrap().to_owned();
    let key = ss.lookup(&entry).expect("database key");
    let db = d.data_dir().join("sotto.db");
    let plain = d.root.path().join("plain.db");
    {
        let enc = rusqlite::Connection::open(&db).unwrap();
        enc.execute_batch(&format!("PRAGMA key = \"x'{}'\";", hex::encode(&key)))
            .unwrap();
        enc.execute(
            "ATTACH DATABASE ?1 AS plain KEY ''",
            [plain.to_str().unwrap()],
        )
        .unwrap();
        enc.query_row("SELECT sqlcipher_export('plain')", [], |_| Ok(()))
            .unwrap();
        enc.execute_batch("DETACH DATABASE plain").unwrap();
    }
    for f in db_files(d) {
        std::fs::remove_file(f).unwrap();
    }
    std::fs::remove_file(d.data_dir().join("sotto.db.keyref")).unwrap();
    assert!(
        secret_tool(ss, &["clear", "service", "sotto", "username", &entry])
            .status
            .success()
    );
    assert!(ss.lookup(&entry).is_none());
    // A write left in the WAL (no checkpoint), as a daemon killed with -9 would leave it.
    let conn = rusqlite::Connection::open(&plain).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('test-marker', ?1)",
        [marker],
    )
    .unwrap();
    let wal = PathBuf::from(format!("{}-wal", plain.display()));
    assert!(contains(&std::fs::read(&wal).unwrap(), marker.as_bytes()));
    std::fs::copy(&plain, &db).unwrap();
    std::fs::copy(&wal, d.data_dir().join("sotto.db-wal")).unwrap();
    drop(conn);
    assert!(std::fs::read(&db).unwrap().starts_with(PLAIN_HEADER));
}

#[test]
fn a_plain_database_is_encrypted_on_first_start_and_its_plain_files_are_gone() {
    let ss = SecretService::start();
    let relay = Relay::start();
    let text = "the plain old history survives";
    let (mut alice, _bob, conv) = pair_with_a_message(&ss, &relay, text);
    let fingerprint = alice.client().ok("account.info", json!({}))["fingerprint"].clone();
    alice.stop();
    let marker = "marker-only-in-the-plain-wal";
    make_plain(&alice, &ss, marker);
    alice.start();
    // The same account and history, now encrypted under a fresh key in the keyring.
    assert_eq!(
        alice.client().ok("account.info", json!({}))["fingerprint"],
        fingerprint
    );
    let got = alice.wait_messages(&conv, "the migrated history", |l| !l.is_empty());
    assert_eq!(got[0]["text"], text);
    let r = keyref(&alice);
    assert_eq!(r["store"], "secret-service");
    assert_eq!(
        ss.lookup(r["entry"].as_str().unwrap()).map(|k| k.len()),
        Some(32)
    );
    assert!(alice.log_text().contains("the database is now encrypted"));
    let names: Vec<String> = db_files(&alice)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| !n.contains("migrated") && !n.contains("encrypting") && !n.contains("wipe")),
        "no leftovers: {names:?}"
    );
    assert_no_plaintext(&alice, &[text.as_bytes(), marker.as_bytes(), PLAIN_HEADER]);
    // It still works: a message after the migration.
    alice.sotto_ok(&["send", &conv, "after the migration"]);
    alice.stop();
    assert_no_plaintext(&alice, &[b"after the migration", PLAIN_HEADER]);
}

#[test]
fn a_missing_database_key_is_reported_as_such_and_nothing_is_touched() {
    let ss = SecretService::start();
    let relay = Relay::start();
    let mut d = Daemon::new("secret-service").with_bus(&ss.address);
    d.account(&relay, "forgetful");
    d.stop();
    let entry = keyref(&d)["entry"].as_str().unwrap().to_owned();
    assert!(
        secret_tool(&ss, &["clear", "service", "sotto", "username", &entry])
            .status
            .success()
    );
    let before = snapshot(&d.data_dir());
    let out = d.command().stdin(Stdio::null()).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("encrypted and its key is missing"), "{err}");
    assert!(
        err.contains(&entry) && err.contains("secret-service"),
        "{err}"
    );
    assert!(
        !err.contains("move it aside") && !err.contains("start fresh"),
        "{err}"
    );
    assert_eq!(snapshot(&d.data_dir()), before, "nothing changed on disk");
    // The keyring unreachable (no bus): said so, not "damaged", nothing touched.
    d.set_env("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/bus");
    let out = d.command().stdin(Stdio::null()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("secret-service key store, which cannot be read now"),
        "{err}"
    );
    assert_eq!(snapshot(&d.data_dir()), before, "nothing changed on disk");
}
