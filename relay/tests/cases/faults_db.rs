//! Faults: the relay's SQLite database written by a newer relay is refused at start with an
//! error naming the file; the database files are left byte for byte as they were.

#![allow(clippy::unwrap_used)]

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::client::{Client, Device};
use crate::harness::{DEADLINE, Relay, bin};

/// The database files (main, WAL, shm) with a digest each; the log is not data.
fn snapshot(dir: &Path) -> Vec<(PathBuf, String)> {
    use sha2::Digest as _;
    let mut all: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("relay.sqlite3"))
        })
        .map(|p| {
            let digest = hex::encode(sha2::Sha256::digest(std::fs::read(&p).unwrap()));
            (p, digest)
        })
        .collect();
    all.sort();
    all
}

/// A relay that stored an account and was stopped cleanly; returns its database path.
async fn stopped_relay_with_data() -> (Relay, PathBuf) {
    let mut relay = Relay::start();
    let alice = Device::new(&relay.address("alice"));
    drop(Client::registered(relay.addr, &alice).await);
    let ok = Command::new("kill")
        .args(["-TERM", &relay.pid().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    assert_eq!(relay.wait(), Some(0), "a clean stop");
    let db = relay.database();
    (relay, db)
}

/// Runs the relay on the damaged data dir; it must exit non-zero naming the file, with
/// `expect` in its error, and leave the database files unchanged. Returns stderr.
fn assert_refused(db: &Path, expect: &str) -> String {
    let dir = db.parent().unwrap();
    let before = snapshot(dir);
    let mut child = Command::new(bin())
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env("SOTTO_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the relay kept running on a bad database");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!status.success(), "the relay started anyway:\n{err}");
    assert!(
        err.contains(&db.display().to_string()),
        "the error names {}:\n{err}",
        db.display()
    );
    assert!(err.contains(expect), "expected {expect:?}:\n{err}");
    assert_eq!(snapshot(dir), before, "the database files changed:\n{err}");
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_database_from_a_newer_relay_is_refused_and_untouched() {
    let (_relay, db) = stopped_relay_with_data().await;
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.pragma_update(None, "user_version", 9999).unwrap();
    }
    let err = assert_refused(&db, "newer");
    assert!(err.contains("9999"), "{err}");
}
