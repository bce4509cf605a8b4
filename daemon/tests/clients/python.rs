//! The Python package (`clients/python`): its pytest suite against real daemons and a
//! relay, the generated helpers against the daemon's `rpc.discover`, and `pip install`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rustix::fs::{FlockOperation, flock};

use super::{World, repo, require_tool, run_ok, target_dir};
use crate::support::Daemon;

/// What the test venv holds; a change here rebuilds it.
const VENV_REQUIREMENTS: &str = "pytest>=7,<9";

/// `target/clients-venv`: a venv with pytest, made once (under a lock: tests run in
/// parallel, possibly in several processes) with `python3 -m venv` and pip from PyPI.
fn venv() -> PathBuf {
    let python = require_tool("python3", "python3 and python3-venv");
    let dir = target_dir().join("clients-venv");
    let lock = std::fs::File::create(target_dir().join("clients-venv.lock")).expect("lock file");
    flock(&lock, FlockOperation::LockExclusive).expect("flock");
    let marker = dir.join("sotto-requirements.txt");
    if std::fs::read_to_string(&marker).ok().as_deref() != Some(VENV_REQUIREMENTS) {
        let _ = std::fs::remove_dir_all(&dir);
        let mut cmd = Command::new(&python);
        cmd.args(["-m", "venv"]).arg(&dir);
        run_ok("python3 -m venv", cmd, Duration::from_secs(300));
        let mut cmd = Command::new(dir.join("bin/pip"));
        cmd.args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            VENV_REQUIREMENTS,
        ]);
        run_ok("pip install pytest", cmd, Duration::from_secs(600));
        std::fs::write(&marker, VENV_REQUIREMENTS).expect("marker");
    }
    dir
}

fn pytest(world: &World, venv: &Path, args: &[&str]) -> String {
    let mut cmd = world.command(venv.join("bin/python"));
    cmd.args([
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "clients/python/tests",
    ])
    .args(args)
    .env("PYTHONPATH", repo().join("clients/python/src"))
    .env("PYTHONDONTWRITEBYTECODE", "1");
    let out = run_ok("pytest clients/python/tests", cmd, Duration::from_secs(400));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{text}");
    text
}

#[test]
fn python_client_pytest_against_real_daemons() {
    let venv = venv();
    // carol keeps only two events, for `events_expired`.
    let world = World::start_with(
        &["alice", "bob", "carol"],
        &[("carol", "event_retention = 2\n")],
    );
    let text = pytest(&world, &venv, &[]);
    // pytest exits 0 when it collected nothing: make sure the suite really ran.
    let passed = text
        .lines()
        .rev()
        .find_map(|l| {
            let (n, rest) = l.trim().split_once(' ')?;
            rest.starts_with("passed").then(|| n.parse::<u32>().ok())?
        })
        .unwrap_or(0);
    assert!(passed >= 10, "expected the whole suite to run:\n{text}");
    assert!(!text.contains("skipped"), "nothing may be skipped:\n{text}");
}

#[test]
fn python_generated_helpers_match_rpc_discover() {
    let python = require_tool("python3", "python3");
    let mut d = Daemon::new("file");
    d.start();
    let doc = d.client().ok("rpc.discover", serde_json::json!({}));
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("openrpc.json");
    std::fs::write(&file, doc.to_string()).expect("write");
    let mut cmd = Command::new(python);
    cmd.current_dir(repo())
        .arg("clients/python/scripts/gen_methods.py")
        .arg("--from")
        .arg(&file)
        .arg("--check");
    // On failure the script's stderr names the one command that regenerates the file.
    run_ok("the generated-helpers check", cmd, Duration::from_secs(60));
}

#[test]
fn python_package_installs_with_pip() {
    let venv = venv();
    let dir = tempfile::tempdir().expect("tempdir");
    let fresh = dir.path().join("venv");
    let mut cmd = Command::new(venv.join("bin/python"));
    cmd.args(["-m", "venv"]).arg(&fresh);
    run_ok("python3 -m venv", cmd, Duration::from_secs(300));
    // From a copy: setuptools writes build/ and *.egg-info next to the sources.
    let source = dir.path().join("sotto-client");
    copy_tree(&repo().join("clients/python"), &source);
    let mut cmd = Command::new(fresh.join("bin/pip"));
    cmd.args(["install", "--quiet", "--disable-pip-version-check"])
        .arg(&source)
        .current_dir(dir.path());
    run_ok("pip install clients/python", cmd, Duration::from_secs(600));
    let mut cmd = Command::new(fresh.join("bin/python"));
    cmd.current_dir(dir.path()).args([
        "-c",
        "import os, sotto_client as s; d = os.path.dirname(s.__file__); \
         assert 'site-packages' in d, d; \
         assert os.path.exists(os.path.join(d, 'py.typed')); \
         assert hasattr(s.Client, 'message_send') and hasattr(s.AsyncClient, 'message_send'); \
         print(s.__version__)",
    ]);
    let out = run_ok("import the installed package", cmd, Duration::from_secs(60));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0.1.0");
}

/// Copies the files of `from` (no build leftovers) into `to`.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir").flatten() {
        let name = entry.file_name();
        let name_s = name.to_string_lossy();
        if name_s == "build" || name_s == "__pycache__" || name_s.ends_with(".egg-info") {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            copy_tree(&path, &to.join(&name));
        } else {
            std::fs::copy(&path, to.join(&name)).expect("copy");
        }
    }
}
