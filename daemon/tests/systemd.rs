//! The user units pass `systemd-analyze verify` with ExecStart pointed at the built binary.

use std::process::Command;

use crate::support::bin;

#[test]
fn user_units_verify() {
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/../contrib/systemd");
    let dir = tempfile::tempdir().unwrap();
    for unit in ["sottod.socket", "sottod.service"] {
        let text = std::fs::read_to_string(format!("{src}/{unit}")).unwrap();
        let text = text.replace("/usr/bin/sottod", bin("sottod").to_str().unwrap());
        std::fs::write(dir.path().join(unit), text).unwrap();
    }
    let socket = std::fs::read_to_string(format!("{src}/sottod.socket")).unwrap();
    assert!(socket.contains("DirectoryMode=0700") && socket.contains("SocketMode=0600"));
    let runtime = tempfile::tempdir().unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--user"])
        .arg(dir.path().join("sottod.socket"))
        .arg(dir.path().join("sottod.service"))
        .env("XDG_RUNTIME_DIR", runtime.path())
        .output()
        .expect("systemd-analyze (package systemd)");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
