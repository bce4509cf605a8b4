//! The thin clients in users' tools — the Python package, the Neovim plugin, the Emacs
//! package, the shell completions and man pages — driven for real: a relay and real
//! daemons from `support`, then `pytest`, `nvim --headless` or `emacs --batch` with
//! `SOTTO_SOCKET` and friends pointing at them. A missing tool fails the test.
//!
//! The tools restart daemons through a control socket (`SOTTO_TEST_CONTROL`): one line
//! `restart NAME`, `stop NAME` or `start NAME`, answered `ok` once done.

mod emacs;
mod nvim;
mod python;
mod shell;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::support::{Daemon, Relay};

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

/// The cargo target dir (`target/`), where the Python venv lives.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test exe path");
    exe.ancestors()
        .nth(3)
        .expect("target dir (target/debug/deps/tests-…)")
        .to_path_buf()
}

/// The absolute path of `program` on PATH; panics (the test fails) when it is missing.
pub fn require_tool(program: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("`{program}` is not installed: run scripts/deps.sh (Debian package {package})")
        })
}

/// A relay, daemons with accounts on it, a direct conversation between the first two, and
/// the control socket.
pub struct World {
    pub relay: Relay,
    pub daemons: Arc<Mutex<BTreeMap<String, Daemon>>>,
    /// name → address.
    pub addresses: BTreeMap<String, String>,
    /// The direct conversation between the first two people.
    pub conv: String,
    pub dir: TempDir,
    control: PathBuf,
    default: String,
}

impl World {
    pub fn start(names: &[&str]) -> World {
        World::start_with(names, &[])
    }

    /// Like [`World::start`], with a `config.toml` for some of the people.
    pub fn start_with(names: &[&str], configs: &[(&str, &str)]) -> World {
        let relay = Relay::start();
        let mut daemons = BTreeMap::new();
        let mut addresses = BTreeMap::new();
        for name in names {
            let mut d = Daemon::new("file");
            if let Some((_, text)) = configs.iter().find(|(n, _)| n == name) {
                d = d.config(text);
            }
            let address = d.account(&relay, name);
            addresses.insert(name.to_string(), address);
            daemons.insert(name.to_string(), d);
        }
        let (first, second) = (names[0], names[1]);
        let conv = {
            let d = &daemons[first];
            let c = d.sotto_json(&["conversation", "create", &addresses[second]]);
            c["id"].as_str().expect("conversation id").to_owned()
        };
        daemons[second].wait_conversation("the direct conversation", |c| {
            c["id"] == conv.as_str() && c["state"] == "active"
        });
        let dir = tempfile::Builder::new()
            .prefix("sotto-clients-test")
            .tempdir()
            .expect("tempdir");
        for d in ["home", "config", "data", "cache", "state"] {
            std::fs::create_dir(dir.path().join(d)).expect("mkdir");
        }
        let control = dir.path().join("control.sock");
        let daemons = Arc::new(Mutex::new(daemons));
        serve_control(&control, daemons.clone());
        World {
            relay,
            daemons,
            addresses,
            conv,
            dir,
            control,
            default: second.to_owned(),
        }
    }

    pub fn socket(&self, name: &str) -> PathBuf {
        self.daemons.lock().expect("lock")[name].socket()
    }

    pub fn run_dir(&self, name: &str) -> PathBuf {
        self.daemons.lock().expect("lock")[name]
            .root
            .path()
            .join("run")
    }

    /// The environment every tool gets: private HOME and XDG dirs (no user config), the
    /// daemons' sockets and addresses, the conversation, the control socket. The default
    /// daemon is the SECOND person's (found through XDG_RUNTIME_DIR, not SOTTO_SOCKET).
    pub fn env(&self) -> Vec<(String, OsString)> {
        let p = self.dir.path();
        let names: Vec<String> = self.addresses.keys().cloned().collect();
        let mut env: Vec<(String, OsString)> = vec![
            ("PATH".into(), std::env::var_os("PATH").unwrap_or_default()),
            ("HOME".into(), p.join("home").into()),
            ("XDG_CONFIG_HOME".into(), p.join("config").into()),
            ("XDG_DATA_HOME".into(), p.join("data").into()),
            ("XDG_CACHE_HOME".into(), p.join("cache").into()),
            ("XDG_STATE_HOME".into(), p.join("state").into()),
            ("LANG".into(), "C.UTF-8".into()),
            ("SOTTO_TEST_CONTROL".into(), self.control.clone().into()),
            ("SOTTO_TEST_CONV".into(), self.conv.clone().into()),
            ("SOTTO_TEST_REPO".into(), repo().into()),
            ("SOTTO_TEST_RELAY".into(), self.relay.host.clone().into()),
            ("SOTTO_TEST_NAMES".into(), names.join(" ").into()),
        ];
        for (name, address) in &self.addresses {
            let up = name.to_uppercase();
            env.push((format!("SOTTO_TEST_{up}_SOCKET"), self.socket(name).into()));
            env.push((format!("SOTTO_TEST_{up}_ADDRESS"), address.into()));
        }
        env.push(("XDG_RUNTIME_DIR".into(), self.run_dir(&self.default).into()));
        env
    }

    /// A command with [`World::env`] only.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.env_clear();
        for (k, v) in self.env() {
            cmd.env(k, v);
        }
        cmd.current_dir(repo());
        cmd
    }
}

/// Runs `cmd` to completion (killed after `limit`), asserts success, returns its output.
pub fn run_ok(what: &str, mut cmd: Command, limit: Duration) -> Output {
    let out = run(what, &mut cmd, limit);
    assert!(
        out.status.success(),
        "{what} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `cmd` to completion, killing it after `limit`.
pub fn run(what: &str, cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out_thread = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stdout.read_to_end(&mut v);
        v
    });
    let err_thread = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stderr.read_to_end(&mut v);
        v
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let status = child.wait().expect("wait");
            let out = out_thread.join().unwrap_or_default();
            let err = err_thread.join().unwrap_or_default();
            panic!(
                "{what} did not finish in {limit:?} ({status}):\n--- stdout\n{}\n--- stderr\n{}",
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&err)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: out_thread.join().unwrap_or_default(),
        stderr: err_thread.join().unwrap_or_default(),
    }
}

/// The control socket's thread holds the daemons too (and never ends): without this they
/// outlived the test, left running with their temp dirs after the test binary exited.
impl Drop for World {
    fn drop(&mut self) {
        let daemons = match self.daemons.lock() {
            Ok(mut d) => std::mem::take(&mut *d),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        };
        drop(daemons);
    }
}

/// The control socket's server thread: restarts daemons on request.
fn serve_control(path: &Path, daemons: Arc<Mutex<BTreeMap<String, Daemon>>>) {
    let listener = UnixListener::bind(path).expect("bind the control socket");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let daemons = daemons.clone();
            std::thread::spawn(move || {
                let Ok(mut writer) = stream.try_clone() else {
                    return;
                };
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { return };
                    let answer = control(&daemons, line.trim());
                    if writer.write_all(format!("{answer}\n").as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
}

fn control(daemons: &Mutex<BTreeMap<String, Daemon>>, line: &str) -> String {
    let (verb, name) = line.split_once(' ').unwrap_or((line, ""));
    let mut daemons = match daemons.lock() {
        Ok(d) => d,
        Err(_) => return "error: a test panicked".into(),
    };
    let Some(d) = daemons.get_mut(name) else {
        return format!("error: no daemon {name:?}");
    };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match verb {
        "restart" => {
            d.stop();
            d.start();
        }
        "stop" => d.stop(),
        "start" => {
            d.start();
        }
        _ => panic!("unknown command {verb:?}"),
    }));
    match result {
        Ok(()) => "ok".into(),
        Err(_) => format!("error: {line} failed"),
    }
}
