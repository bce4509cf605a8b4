//! Socket safety, single instance, lifecycle, activation and hardening.

use std::os::unix::fs::PermissionsExt as _;
use std::process::{Command, Stdio};

use serde_json::json;

use crate::support::{Daemon, RawClient, bin, wait_for};

fn mode(path: &std::path::Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn the_socket_directory_is_0700_and_the_socket_0600() {
    let mut d = Daemon::new("file");
    d.start();
    assert_eq!(mode(d.socket().parent().unwrap()), 0o700);
    assert_eq!(mode(&d.socket()), 0o600);
    assert_eq!(mode(&d.data_dir()), 0o700);
    d.stop();
}

#[test]
fn sigterm_stops_cleanly_and_removes_the_socket() {
    let mut d = Daemon::new("file");
    d.start();
    assert!(d.socket().exists());
    d.stop();
    assert!(!d.socket().exists(), "the socket file must be removed");
}

#[test]
fn daemon_shutdown_replies_first_then_stops() {
    let mut d = Daemon::new("file");
    d.start();
    let mut c = d.client();
    let r = c.call("daemon.shutdown", json!({}));
    assert_eq!(r["result"], json!({}));
    let status = d.wait_exit();
    assert!(status.success(), "{status}");
    assert!(!d.socket().exists());
}

#[test]
fn a_second_daemon_on_the_same_data_dir_is_refused() {
    let mut first = Daemon::new("file");
    first.start();
    // Same data dir, different socket.
    let other_run = first.root.path().join("run2");
    std::fs::create_dir(&other_run).unwrap();
    let out = first
        .command()
        .env("XDG_RUNTIME_DIR", &other_run)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already using the data directory"), "{err}");
    assert!(first.is_running());
    assert!(first.client().ok("daemon.status", json!({}))["version"].is_string());
}

#[test]
fn a_second_daemon_on_the_same_socket_is_refused_and_the_first_keeps_serving() {
    let mut first = Daemon::new("file");
    first.start();
    let other_data = first.root.path().join("data2");
    std::fs::create_dir(&other_data).unwrap();
    let out = first
        .command()
        .env("XDG_DATA_HOME", &other_data)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already serving"), "{err}");
    assert!(first.socket().exists(), "the live socket was not unlinked");
    assert!(first.client().ok("daemon.status", json!({}))["version"].is_string());
}

#[test]
fn a_stale_socket_after_kill_9_is_replaced() {
    let mut d = Daemon::new("file");
    d.start();
    d.signal_and_wait("KILL");
    assert!(d.socket().exists(), "kill -9 leaves the socket behind");
    d.start();
    assert!(d.client().ok("daemon.status", json!({}))["version"].is_string());
    d.stop();
}

#[test]
fn a_socket_directory_open_to_others_is_refused() {
    let mut d = Daemon::new("file");
    let dir = d.root.path().join("run/sotto");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = d.command().stdin(Stdio::null()).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("must not be accessible to group or others"),
        "{err}"
    );
    assert!(!d.is_running());
}

#[test]
fn a_socket_directory_that_is_a_symlink_is_refused() {
    let mut d = Daemon::new("file");
    d.env.retain(|(k, _)| k != "XDG_RUNTIME_DIR");
    // Point the fallback at our own dir through a --socket whose parent is a symlink.
    let real = d.root.path().join("real");
    std::fs::create_dir(&real).unwrap();
    let link = d.root.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let out = d
        .command()
        .arg("--socket")
        .arg(link.join("sottod.sock"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("symlink"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_peer_with_another_uid_is_refused() {
    let uid = rustix_uid();
    if uid != 0 {
        eprintln!("skipped: needs root to run a client as another user (uid is {uid})");
        return;
    }
    let mut d = Daemon::new("file");
    d.start();
    // Widen the directory and socket by hand, as a misconfiguration would: SO_PEERCRED
    // must still keep the other user out.
    let sock = d.socket();
    for p in [
        d.root.path().to_owned(),
        d.root.path().join("run"),
        sock.parent().unwrap().to_owned(),
    ] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut client = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "socat",
            // How long socat waits for the daemon's reply after its stdin ended (it ends
            // at once when the daemon closes): generous for a loaded machine.
            "-t",
            "60",
            "-",
        ])
        .arg(format!("UNIX-CONNECT:{}", sock.display()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("setpriv and socat (packages util-linux, socat)");
    std::io::Write::write_all(
        client.stdin.as_mut().unwrap(),
        b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"daemon.status\"}\n",
    )
    .unwrap();
    let out = client.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    // socat may also report the reset of a connection the daemon closed on it; the refusal
    // line is what matters.
    let reply: serde_json::Value = serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "expected one JSON line ({e}); socat said: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(
        reply["error"]["data"]["kind"], "permission_denied",
        "{reply}"
    );
    assert!(reply.get("result").is_none());
    assert!(d.log_text().contains("refused a connection"));
    // The owner is still served.
    assert!(d.client().ok("daemon.status", json!({}))["version"].is_string());
    d.stop();
}

fn rustix_uid() -> u32 {
    let out = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn socket_activation_uses_the_inherited_socket_and_leaves_it_to_systemd() {
    let d = Daemon::new("file");
    let sock = d.socket();
    std::fs::create_dir(sock.parent().unwrap()).unwrap();
    std::fs::set_permissions(
        sock.parent().unwrap(),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    let mut cmd = Command::new("systemd-socket-activate");
    cmd.arg("-l").arg(&sock);
    // systemd-socket-activate passes the command only the variables named with -E.
    for (k, _) in &d.env {
        cmd.arg("-E").arg(k);
    }
    cmd.arg(bin("sottod")).arg("--foreground");
    cmd.env_clear();
    for (k, v) in &d.env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("systemd-socket-activate (package systemd)");
    wait_for("the activated daemon", || {
        let mut c = RawClient::connect(&sock).ok()?;
        c.call("daemon.status", json!({})).get("result").map(|_| ())
    });
    let mut c = RawClient::connect(&sock).unwrap();
    c.ok("daemon.shutdown", json!({}));
    let status = wait_for("exit", || child.try_wait().ok().flatten());
    assert!(status.success());
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(err.contains("using the socket passed by systemd"), "{err}");
}

#[test]
fn the_daemon_is_not_dumpable_unless_the_debug_switch_is_set() {
    let core_limit = |d: &Daemon| -> String {
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", d.pid())).unwrap();
        limits
            .lines()
            .find(|l| l.starts_with("Max core file size"))
            .unwrap()
            .to_owned()
    };
    let mut hardened = Daemon::new("file").wrapped(&["prlimit", "--core=4096:4096"]);
    hardened.start();
    // prlimit execs sottod, so the pid is the daemon's.
    let line = core_limit(&hardened);
    assert!(
        line.split_whitespace().nth(4) == Some("0"),
        "core dumps must be off: {line}"
    );
    let mut debug = Daemon::new("file").wrapped(&["prlimit", "--core=4096:4096"]);
    debug.set_env("SOTTO_ALLOW_DEBUGGING", "1");
    debug.start();
    let line = core_limit(&debug);
    assert!(
        line.contains("4096"),
        "the debug switch leaves limits alone: {line}"
    );
    assert!(debug.log_text().contains("SOTTO_ALLOW_DEBUGGING"));
}

#[test]
fn a_corrupt_database_stops_the_start_with_a_clear_error_and_is_left_untouched() {
    let d = Daemon::new("file");
    std::fs::create_dir_all(d.data_dir()).unwrap();
    std::fs::set_permissions(d.data_dir(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let db = d.data_dir().join("sotto.db");
    let garbage: Vec<u8> = (0..16384u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&db, &garbage).unwrap();
    let out = d.command().stdin(Stdio::null()).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("damaged"), "{err}");
    assert_eq!(std::fs::read(&db).unwrap(), garbage);
    assert!(
        !d.socket().exists(),
        "a failed start leaves no socket behind"
    );
}
