//! Security checks as tests: trace-level logs hold no key and no plaintext; a daemon run
//! as an unprivileged user cannot be read by another process of that user (not
//! dumpable). The other-uid socket refusal is in socket.rs, the removed member in
//! messaging.rs.

use std::os::unix::fs::PermissionsExt as _;
use std::process::{Command, Stdio};

use serde_json::json;

use crate::support::{Daemon, Relay, files_under, wait_for};

/// Every form a secret could take in a text log.
fn forms(secret: &[u8]) -> Vec<Vec<u8>> {
    use base64::Engine as _;
    let e = &base64::engine::general_purpose::STANDARD;
    let mut out = vec![
        secret.to_vec(),
        hex::encode(secret).into_bytes(),
        hex::encode_upper(secret).into_bytes(),
        e.encode(secret).into_bytes(),
        base64::engine::general_purpose::STANDARD_NO_PAD
            .encode(secret)
            .into_bytes(),
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(secret)
            .into_bytes(),
        format!("{secret:?}").into_bytes(),
    ];
    // Debug of a byte array without the brackets (`[1, 2, ...]` inside another struct).
    let list = secret
        .iter()
        .map(u8::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    out.push(list.into_bytes());
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn trace_logs_of_daemons_and_relay_hold_no_key_and_no_plaintext() {
    let relay = Relay::start_env(&[], &[("SOTTO_LOG", "trace"), ("RUST_LOG", "trace")]);
    let mut alice = Daemon::new("file");
    let mut bob = Daemon::new("file");
    for d in [&mut alice, &mut bob] {
        d.set_env("SOTTO_LOG", "trace");
        d.set_env("RUST_LOG", "trace");
    }
    let a = alice.account(&relay, "alice");
    let b = bob.account(&relay, "bob");
    let conv = alice.sotto_json(&["conversation", "create", "--name", "secret talk", &b])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    bob.wait_conversation("the Welcome", |c| c["id"] == conv.as_str());
    let texts = [
        "the eagle lands at midnight",
        "bring the blue envelope",
        "ünïcödé plaintext ✓",
    ];
    alice.client().ok(
        "message.send",
        json!({"conversation": conv, "text": texts[0]}),
    );
    bob.client().ok(
        "message.send",
        json!({"conversation": conv, "text": texts[1]}),
    );
    alice.sotto_ok(&["send", "secret talk", texts[2]]);
    bob.wait_messages(&conv, "all three at bob", |l| l.len() == 3);
    alice.wait_messages(&conv, "all three at alice", |l| {
        l.len() == 3 && l.iter().all(|m| m["state"] != "queued")
    });
    let list = alice
        .client()
        .ok("message.search", json!({"query": "eagle"}));
    assert!(!list.as_array().unwrap().is_empty(), "{list}");
    alice.stop();
    bob.stop();

    // The secrets: each daemon's device key and database key (the file key store holds
    // both), and every text.
    let mut secrets: Vec<(String, Vec<u8>)> = Vec::new();
    for (who, d) in [("alice", &alice), ("bob", &bob)] {
        let keys: Vec<_> = files_under(&d.data_dir().join("keys"))
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "key"))
            .collect();
        assert!(
            keys.len() >= 2,
            "{who}: a device key and a database key: {keys:?}"
        );
        for k in keys {
            let bytes = std::fs::read(&k).unwrap();
            assert!(bytes.len() >= 16, "{}", k.display());
            secrets.push((format!("{who}'s key {}", k.display()), bytes));
        }
    }
    let logs = [
        ("alice's log", alice.log.clone()),
        ("bob's log", bob.log.clone()),
        ("the relay's log", relay.dir.path().join("relay.log")),
    ];
    for (name, path) in &logs {
        let log = std::fs::read(path).unwrap();
        assert!(
            contains(&log, b"TRACE"),
            "{name} is at trace level (so the check means something)"
        );
        for (what, secret) in &secrets {
            for form in forms(secret) {
                assert!(!contains(&log, &form), "{what} appears in {name}");
            }
        }
        for t in texts {
            assert!(
                !contains(&log, t.as_bytes()),
                "the text {t:?} appears in {name}"
            );
            let escaped = serde_json::to_string(t).unwrap();
            assert!(
                !contains(&log, escaped.trim_matches('"').as_bytes()),
                "the text {t:?} (JSON-escaped) appears in {name}"
            );
        }
        // The search query and the group name are plaintext too.
        assert!(
            !contains(&log, b"eagle"),
            "the search query appears in {name}"
        );
    }
    let relay_log = std::fs::read(&logs[2].1).unwrap();
    assert!(
        !contains(&relay_log, b"secret talk"),
        "the group name appears in the relay's log"
    );
    let _ = a;
}

/// Runs `args` as uid/gid 65534 (`nobody`) with no supplementary groups.
fn as_nobody(args: &[&str]) -> Command {
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .args(args);
    c
}

fn chown_tree(dir: &std::path::Path) {
    for p in
        std::iter::once(dir.to_owned()).chain(walk_dirs(dir).into_iter().chain(files_under(dir)))
    {
        std::os::unix::fs::chown(&p, Some(65534), Some(65534)).unwrap();
    }
}

fn walk_dirs(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.path().is_dir() {
                out.push(e.path());
                stack.push(e.path());
            }
        }
    }
    out
}

/// Starts `d` as `nobody` (not through the fixture: root's client would be refused as
/// another uid) and waits until its socket exists; returns the child.
fn spawn_as_nobody(d: &Daemon) -> std::process::Child {
    chown_tree(d.root.path());
    std::fs::set_permissions(d.root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let log = std::fs::File::create(&d.log).unwrap();
    let mut cmd = d.command();
    // d.command() is `setpriv ... sottod` through the wrapper.
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
    let mut child = cmd.spawn().expect("spawn sottod as nobody");
    let sock = d.socket();
    wait_for("sottod (as nobody) to bind its socket", || {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("sottod exited ({status}):\n{}", d.log_text());
        }
        sock.exists().then_some(())
    });
    child
}

#[test]
fn a_process_of_the_same_user_cannot_read_the_daemons_memory() {
    let uid = String::from_utf8(Command::new("id").arg("-u").output().unwrap().stdout).unwrap();
    if uid.trim() != "0" {
        panic!(
            "this test runs the daemon as another user and needs root (uid is {}); the README test command runs as root",
            uid.trim()
        );
    }
    let wrapper = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
    ];
    let hardened = Daemon::new("file").wrapped(&wrapper);
    let mut debug = Daemon::new("file").wrapped(&wrapper);
    debug.set_env("SOTTO_ALLOW_DEBUGGING", "1");
    let mut children = Vec::new();
    for d in [&hardened, &debug] {
        children.push(spawn_as_nobody(d));
    }
    let read_environ = |pid: u32| {
        as_nobody(&["cat", &format!("/proc/{pid}/environ")])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .unwrap()
    };
    let owner = |pid: u32| {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata(format!("/proc/{pid}/status"))
            .unwrap()
            .uid()
    };
    let (h, g) = (children[0].id(), children[1].id());
    // A process that is not dumpable has its /proc entries owned by root, and the same
    // user may neither read its environment and memory nor ptrace it.
    assert_eq!(
        owner(h),
        0,
        "the hardened daemon's /proc entries belong to root"
    );
    let out = read_environ(h);
    assert!(
        !out.status.success(),
        "another process of the same user read the hardened daemon's /proc/PID/environ"
    );
    let mem = as_nobody(&[
        "dd",
        &format!("if=/proc/{h}/mem"),
        "bs=1",
        "count=1",
        "skip=4096",
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .output()
    .unwrap();
    assert!(
        !mem.status.success(),
        "/proc/PID/mem of the hardened daemon was opened"
    );
    // The control: with the debugging switch the same checks pass, so they can fail.
    assert_eq!(
        owner(g),
        65534,
        "the debuggable daemon's /proc entries are its user's"
    );
    let out = read_environ(g);
    assert!(
        out.status.success(),
        "the debuggable daemon is readable by its user: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for mut c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
}
