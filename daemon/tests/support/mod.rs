//! Fixtures: a real `sottod` process on temp XDG dirs, a raw socket client, and a private
//! session bus with a real Secret Service (gnome-keyring). Everything is killed on drop.

#![allow(dead_code)]

pub mod proxied;
pub mod relay_client;

use std::ffi::OsString;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
pub use sotto_testkit::tmpfs::Tmpfs;
use tempfile::TempDir;

/// How long anything may take on a loaded 2-core machine before a test gives up (the
/// relay suite's too: 20 s was within reach of a daemon start plus an MLS round trip on a
/// machine five times slower than an idle one). Only a failing test waits this long.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// A built binary of the workspace (`sottod`, `sotto`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test exe path");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built; run `cargo build --workspace` first",
        path.display()
    );
    path
}

/// Whether `tool` is there: a name on PATH, or a path to an executable.
pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Panics, naming the tool and what to `install`, unless every one of `tools` is there.
pub fn require_tools(tools: &[&str], install: &str) {
    for tool in tools {
        assert!(have(tool), "{tool} is missing: {install}");
    }
}

/// Every file under `dir` (but the daemon's lock file, which holds its pid) with the
/// SHA-256 of its contents, sorted: two snapshots are equal when nothing changed on disk.
pub fn snapshot(dir: &Path) -> Vec<(PathBuf, String)> {
    use sha2::Digest as _;
    let mut all: Vec<_> = files_under(dir)
        .into_iter()
        .filter(|p| !p.ends_with("sottod.lock"))
        .map(|p| {
            let digest = hex::encode(sha2::Sha256::digest(std::fs::read(&p).expect("read")));
            (p, digest)
        })
        .collect();
    all.sort();
    all
}

/// Polls `f` until it returns `Some`, or panics after [`DEADLINE`] with `what`.
pub fn wait_for<T>(what: &str, f: impl FnMut() -> Option<T>) -> T {
    wait_within(DEADLINE, what, f)
}

/// [`wait_for`] with another deadline (for work that takes longer on a loaded machine).
pub fn wait_within<T>(deadline: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A `sottod` process with its own XDG dirs.
pub struct Daemon {
    pub root: TempDir,
    pub env: Vec<(String, OsString)>,
    child: Option<Child>,
    pub log: PathBuf,
    wrapper: Vec<String>,
    args: Vec<String>,
}

impl Daemon {
    /// A daemon (not yet started) using `key_store`.
    pub fn new(key_store: &str) -> Daemon {
        let root = tempfile::Builder::new()
            .prefix("sottod-test")
            .tempdir()
            .expect("tempdir");
        for d in ["run", "data", "config", "home"] {
            std::fs::create_dir(root.path().join(d)).expect("mkdir");
        }
        let p = root.path();
        let env = vec![
            (
                "PATH".to_owned(),
                std::env::var_os("PATH").unwrap_or_default(),
            ),
            ("HOME".to_owned(), p.join("home").into_os_string()),
            ("XDG_RUNTIME_DIR".to_owned(), p.join("run").into_os_string()),
            ("XDG_DATA_HOME".to_owned(), p.join("data").into_os_string()),
            (
                "XDG_CONFIG_HOME".to_owned(),
                p.join("config").into_os_string(),
            ),
            ("SOTTO_KEY_STORE".to_owned(), key_store.into()),
            ("SOTTO_LOG".to_owned(), "debug".into()),
            // No session bus unless a test gives one.
            (
                "DBUS_SESSION_BUS_ADDRESS".to_owned(),
                "unix:path=/nonexistent/bus".into(),
            ),
        ];
        let log = p.join("sottod.log");
        Daemon {
            root,
            env,
            child: None,
            log,
            wrapper: Vec::new(),
            args: Vec::new(),
        }
    }

    /// Uses the session bus at `address`.
    pub fn with_bus(mut self, address: &str) -> Daemon {
        self.set_env("DBUS_SESSION_BUS_ADDRESS", address);
        self
    }

    /// Sets (or replaces) an environment variable of the daemon and the CLI.
    pub fn set_env(&mut self, key: &str, value: impl Into<OsString>) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.into()));
    }

    /// Starts the daemon with extra `sottod` arguments (e.g. `--ephemeral`).
    pub fn with_args(mut self, args: &[&str]) -> Daemon {
        self.args = args.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Runs the daemon under `wrapper` (e.g. `prlimit --core=1024`).
    pub fn wrapped(mut self, wrapper: &[&str]) -> Daemon {
        self.wrapper = wrapper.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Writes `config.toml`.
    pub fn config(self, text: &str) -> Daemon {
        let dir = self.root.path().join("config/sotto");
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("config.toml"), text).expect("write config");
        self
    }

    pub fn socket(&self) -> PathBuf {
        self.root.path().join("run/sotto/sottod.sock")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.path().join("data/sotto")
    }

    /// The `sottod` command with this daemon's environment.
    pub fn command(&self) -> Command {
        let mut cmd = if self.wrapper.is_empty() {
            Command::new(bin("sottod"))
        } else {
            let mut c = Command::new(&self.wrapper[0]);
            c.args(&self.wrapper[1..]).arg(bin("sottod"));
            c
        };
        cmd.args(&self.args);
        cmd.env_clear();
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Spawns the daemon and waits until it answers `daemon.status`.
    pub fn start(&mut self) -> &mut Daemon {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = self
            .command()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn sottod");
        self.child = Some(child);
        self.wait_ready();
        self
    }

    /// Waits until the socket answers; panics with the log if the daemon died.
    pub fn wait_ready(&mut self) {
        let socket = self.socket();
        wait_for("sottod to answer", || {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                {
                    panic!(
                        "sottod exited early ({status}):\n{}",
                        std::fs::read_to_string(&self.log).unwrap_or_default()
                    );
                }
            }
            let mut c = RawClient::connect(&socket).ok()?;
            let r = c.call("daemon.status", json!({}));
            r.get("result").map(|_| ())
        });
    }

    /// The pid of the running daemon.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends `signal` (e.g. "TERM", "KILL") and waits for exit.
    pub fn signal_and_wait(&mut self, signal: &str) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()
            .expect("kill");
        assert!(ok.success());
        wait_exit(&mut child)
    }

    /// Waits for the daemon to exit on its own (after `daemon.shutdown`).
    pub fn wait_exit(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        wait_exit(&mut child)
    }

    /// SIGTERM and wait; asserts a clean exit.
    pub fn stop(&mut self) {
        let status = self.signal_and_wait("TERM");
        assert!(
            status.success(),
            "sottod exited with {status}:\n{}",
            self.log_text()
        );
    }

    /// Runs `sotto` with this daemon's environment.
    pub fn sotto(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(bin("sotto"));
        cmd.env_clear();
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run sotto")
    }

    /// Runs `sotto`, asserts success, returns stdout.
    pub fn sotto_ok(&self, args: &[&str]) -> String {
        let out = self.sotto(args);
        assert!(
            out.status.success(),
            "sotto {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    /// Runs `sotto --json ...` and parses stdout.
    pub fn sotto_json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.sotto_ok(&all)).expect("json output")
    }

    pub fn client(&self) -> RawClient {
        RawClient::connect(&self.socket()).expect("connect")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

fn wait_exit(child: &mut Child) -> ExitStatus {
    wait_for("sottod to exit", || child.try_wait().ok().flatten())
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A raw NDJSON client: exactly the bytes a test writes, exactly the lines the daemon sends.
pub struct RawClient {
    pub stream: UnixStream,
    reader: BufReader<UnixStream>,
    next_id: u64,
}

impl RawClient {
    pub fn connect(path: &Path) -> std::io::Result<RawClient> {
        let stream = UnixStream::connect(path)?;
        stream.set_read_timeout(Some(DEADLINE))?;
        let reader = BufReader::new(stream.try_clone()?);
        Ok(RawClient {
            stream,
            reader,
            next_id: 1000,
        })
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    pub fn send(&mut self, line: &str) {
        self.send_raw(format!("{line}\n").as_bytes());
    }

    /// The next line as JSON; panics on EOF or timeout.
    pub fn read(&mut self) -> Value {
        let line = self.read_line().expect("a line, got EOF");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad JSON {line:?}: {e}"))
    }

    /// The next raw line, `None` at EOF.
    pub fn read_line(&mut self) -> Option<String> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => None,
            Ok(_) => Some(line),
            Err(e) => panic!("read failed: {e}"),
        }
    }

    /// Asserts the daemon closes the connection (after any remaining lines are read).
    pub fn expect_eof(&mut self) {
        let mut rest = Vec::new();
        self.reader.read_to_end(&mut rest).expect("read to EOF");
        assert!(
            rest.is_empty(),
            "expected EOF, got {:?}",
            String::from_utf8_lossy(&rest)
        );
    }

    /// A call with a fresh numeric id; returns the whole response object.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        self.send(
            &json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string(),
        );
        loop {
            let v = self.read();
            if v.get("id") == Some(&json!(id)) {
                return v;
            }
        }
    }

    /// A call that must succeed; returns `result`.
    pub fn ok(&mut self, method: &str, params: Value) -> Value {
        let r = self.call(method, params);
        r.get("result")
            .cloned()
            .unwrap_or_else(|| panic!("{method} failed: {r}"))
    }
}

/// Starts a private `dbus-daemon --session` listening in `dir`; returns it and its address.
fn spawn_bus(dir: &Path) -> (Child, String) {
    spawn_dbus_daemon(
        Command::new("dbus-daemon")
            .arg("--session")
            .arg(format!("--address=unix:path={}", dir.join("bus").display())),
    )
}

/// Runs a `dbus-daemon` command in the foreground and reads the address it prints.
fn spawn_dbus_daemon(cmd: &mut Command) -> (Child, String) {
    let mut bus = cmd
        .args(["--nofork", "--nopidfile", "--print-address=1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn dbus-daemon");
    let mut first = String::new();
    BufReader::new(bus.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("bus address");
    let address = first.trim().to_owned();
    assert!(address.starts_with("unix:"), "bad bus address {address:?}");
    (bus, address)
}

/// A private session bus with gnome-keyring's Secret Service, unlocked with a test password.
pub struct SecretService {
    dir: TempDir,
    pub address: String,
    bus: Child,
    keyring: Child,
}

impl SecretService {
    pub fn start() -> SecretService {
        require_tools(
            &["dbus-daemon", "gnome-keyring-daemon", "secret-tool"],
            "install dbus, gnome-keyring and libsecret-tools (the README test command does)",
        );
        let dir = tempfile::Builder::new()
            .prefix("sotto-ss")
            .tempdir()
            .expect("tempdir");
        for d in ["home", "run"] {
            std::fs::create_dir(dir.path().join(d)).expect("mkdir");
        }
        let (bus, address) = spawn_bus(dir.path());
        let mut keyring = Command::new("gnome-keyring-daemon")
            .args(["--foreground", "--unlock", "--components=secrets"])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", dir.path().join("home"))
            .env("XDG_RUNTIME_DIR", dir.path().join("run"))
            .env("DBUS_SESSION_BUS_ADDRESS", &address)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn gnome-keyring-daemon");
        {
            let mut stdin = keyring.stdin.take().expect("stdin");
            stdin.write_all(b"test-password").expect("password");
        }
        let ss = SecretService {
            dir,
            address,
            bus,
            keyring,
        };
        wait_for("the Secret Service on the private bus", || {
            let out = Command::new("dbus-send")
                .arg(format!("--bus={}", ss.address))
                .args([
                    "--print-reply",
                    "--dest=org.freedesktop.DBus",
                    "/org/freedesktop/DBus",
                    "org.freedesktop.DBus.NameHasOwner",
                    "string:org.freedesktop.secrets",
                ])
                .output()
                .ok()?;
            String::from_utf8_lossy(&out.stdout)
                .contains("boolean true")
                .then_some(())
        });
        ss
    }

    /// The secret stored under service `sotto`, user `user` (raw bytes), via `secret-tool`.
    pub fn lookup(&self, user: &str) -> Option<Vec<u8>> {
        let out = Command::new("secret-tool")
            .args(["lookup", "service", "sotto", "username", user])
            .env("DBUS_SESSION_BUS_ADDRESS", &self.address)
            .output()
            .expect("secret-tool");
        (out.status.success() && !out.stdout.is_empty()).then_some(out.stdout)
    }
}

impl Drop for SecretService {
    fn drop(&mut self) {
        let _ = self.keyring.kill();
        let _ = self.keyring.wait();
        let _ = self.bus.kill();
        let _ = self.bus.wait();
        let _ = &self.dir;
    }
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Asserts that no file under `dir` (except `allowed`) contains `secret` raw, in hex or base64.
pub fn assert_secret_absent(dir: &Path, secret: &[u8], allowed: &[PathBuf]) {
    use base64::Engine as _;
    let forms: Vec<Vec<u8>> = vec![
        secret.to_vec(),
        hex::encode(secret).into_bytes(),
        hex::encode_upper(secret).into_bytes(),
        base64::engine::general_purpose::STANDARD
            .encode(secret)
            .into_bytes(),
        base64::engine::general_purpose::STANDARD_NO_PAD
            .encode(secret)
            .into_bytes(),
        format!("{secret:?}").into_bytes(),
    ];
    for file in files_under(dir) {
        if allowed.contains(&file) {
            continue;
        }
        let bytes = std::fs::read(&file).unwrap_or_default();
        for form in &forms {
            assert!(
                !bytes.windows(form.len()).any(|w| w == form.as_slice()),
                "the private key appears in {}",
                file.display()
            );
        }
    }
}

/// A private session bus (`dbus-daemon --session`) with nothing on it; killed on drop.
pub struct SessionBus {
    dir: TempDir,
    pub address: String,
    bus: Option<Child>,
}

impl SessionBus {
    pub fn start() -> SessionBus {
        require_tools(
            &[
                "dbus-daemon",
                "dbus-send",
                "dbus-monitor",
                "gdbus",
                "busctl",
            ],
            "install dbus, dbus-bin, libglib2.0-bin and systemd (scripts/deps.sh does)",
        );
        let dir = tempfile::Builder::new()
            .prefix("sotto-bus")
            .tempdir()
            .expect("tempdir");
        let (bus, address) = spawn_bus(dir.path());
        SessionBus {
            dir,
            address,
            bus: Some(bus),
        }
    }

    /// A bus that starts services from `services` (D-Bus activation), giving them `env`
    /// (the environment of a [`Daemon`]) with this bus as their session bus.
    pub fn with_activation(services: &Path, env: &[(String, OsString)]) -> SessionBus {
        let dir = tempfile::Builder::new()
            .prefix("sotto-bus")
            .tempdir()
            .expect("tempdir");
        let socket = dir.path().join("bus");
        let config = dir.path().join("session.conf");
        std::fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={}</listen>
  <servicedir>{}</servicedir>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
                socket.display(),
                services.display()
            ),
        )
        .expect("bus config");
        let mut cmd = Command::new("dbus-daemon");
        cmd.env_clear();
        for (k, v) in env {
            cmd.env(k, v);
        }
        let (bus, address) = spawn_dbus_daemon(
            cmd.env(
                "DBUS_SESSION_BUS_ADDRESS",
                format!("unix:path={}", socket.display()),
            )
            .arg(format!("--config-file={}", config.display())),
        );
        SessionBus {
            dir,
            address,
            bus: Some(bus),
        }
    }

    /// `program` with `DBUS_SESSION_BUS_ADDRESS` pointing at this bus (so `busctl --user`
    /// and `gdbus --session` use it, exactly as a user would type them).
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("DBUS_SESSION_BUS_ADDRESS", &self.address)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `program args` on this bus and returns its output.
    pub fn run(&self, program: &str, args: &[&str]) -> Output {
        self.command(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("run {program}: {e}"))
    }

    /// Whether `name` has an owner on this bus.
    pub fn has_owner(&self, name: &str) -> bool {
        let out = self.run(
            "dbus-send",
            &[
                "--session",
                "--print-reply",
                "--dest=org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus.NameHasOwner",
                &format!("string:{name}"),
            ],
        );
        String::from_utf8_lossy(&out.stdout).contains("boolean true")
    }

    /// Starts `dbus-monitor` on this bus with `rule`; waits until it is monitoring.
    pub fn monitor(&self, rule: &str) -> Monitor {
        let mut child = self
            .command("dbus-monitor")
            .args(["--session", rule])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn dbus-monitor");
        let out = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let stdout = child.stdout.take().expect("stdout");
        let sink = out.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut text = sink.lock().expect("monitor text");
                text.push_str(&line);
                text.push('\n');
            }
        });
        let m = Monitor { child, out };
        // dbus-monitor prints its own NameLost once it became a monitor.
        m.wait_for("dbus-monitor to start", |t| t.contains("member=NameLost"));
        m
    }

    /// Sends `signal` (e.g. "STOP", "CONT") to the bus daemon: a stopped bus reads nothing,
    /// so its clients' sends back up.
    pub fn signal(&self, signal: &str) {
        let bus = self.bus.as_ref().expect("bus running");
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(bus.id().to_string())
            .status()
            .expect("kill");
        assert!(ok.success());
    }

    /// Kills the bus (the daemon loses its connection).
    pub fn kill(&mut self) {
        if let Some(mut bus) = self.bus.take() {
            let _ = bus.kill();
            let _ = bus.wait();
        }
    }
}

impl Drop for SessionBus {
    fn drop(&mut self) {
        self.kill();
        let _ = &self.dir;
    }
}

/// A running `dbus-monitor`; its output so far is in `text()`. Killed on drop.
pub struct Monitor {
    child: Child,
    out: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Monitor {
    pub fn text(&self) -> String {
        self.out.lock().expect("monitor text").clone()
    }

    /// Polls the output until `pred` holds; returns it.
    pub fn wait_for(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        wait_for(what, || {
            let t = self.text();
            pred(&t).then_some(t)
        })
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `busctl --json=short` output (`{"type": sig, "data": ...}`) as plain JSON: variants
/// unwrapped, `a{sv}` as objects.
pub fn busctl_plain(sig: &str, data: &Value) -> Value {
    match (sig, data) {
        ("v", Value::Object(v)) => busctl_plain(
            v.get("type").and_then(Value::as_str).unwrap_or(""),
            v.get("data").unwrap_or(&Value::Null),
        ),
        ("a{sv}", Value::Object(m)) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), busctl_plain("v", v)))
                .collect(),
        ),
        ("aa{sv}", Value::Array(items)) => {
            Value::Array(items.iter().map(|i| busctl_plain("a{sv}", i)).collect())
        }
        _ => data.clone(),
    }
}

/// A real `sotto-relay` on 127.0.0.1 with a temp data dir; killed on drop.
pub struct Relay {
    pub dir: TempDir,
    child: Option<Child>,
    /// `127.0.0.1:PORT`, the host part of addresses on this relay.
    pub host: String,
    /// The canonical URL.
    pub url: String,
    extra: Vec<String>,
    env: Vec<(String, String)>,
}

impl Relay {
    pub fn start() -> Relay {
        Relay::start_with(&[])
    }

    /// A relay with extra flags (e.g. `--public-url`).
    pub fn start_with(extra: &[&str]) -> Relay {
        Relay::start_prepared(extra, |_| {})
    }

    /// A relay whose data directory `prepare` sets up first (e.g. mounts a [`Tmpfs`]
    /// there); the directory exists when `prepare` runs.
    pub fn start_prepared(extra: &[&str], prepare: impl FnOnce(&Path)) -> Relay {
        Relay::start_full(extra, &[], prepare)
    }

    /// A relay with extra flags and environment variables (e.g. `SOTTO_LOG=trace`).
    pub fn start_env(extra: &[&str], env: &[(&str, &str)]) -> Relay {
        Relay::start_full(extra, env, |_| {})
    }

    fn start_full(extra: &[&str], env: &[(&str, &str)], prepare: impl FnOnce(&Path)) -> Relay {
        let dir = tempfile::Builder::new()
            .prefix("sotto-relay-test")
            .tempdir()
            .expect("tempdir");
        std::fs::create_dir(dir.path().join("data")).expect("mkdir data");
        prepare(&dir.path().join("data"));
        let mut relay = Relay {
            dir,
            child: None,
            host: String::new(),
            url: String::new(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        relay.spawn("127.0.0.1:0");
        relay
    }

    /// Starts the relay on `listen`. On a restart (the same port) the port was free for a
    /// moment: any socket may have been given it as its ephemeral port meanwhile, so while
    /// the relay cannot bind it, this tries again until the deadline.
    fn spawn(&mut self, listen: &str) {
        let log_path = self.dir.path().join("relay.log");
        let start = Instant::now();
        let (child, line) = loop {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .expect("log");
            let logged_before = log.metadata().map_or(0, |m| m.len());
            let mut child = Command::new(bin("sotto-relay"))
                .args(["--listen", listen, "--data-dir"])
                .arg(self.dir.path().join("data"))
                .args(&self.extra)
                .env("RUST_LOG", "info")
                .envs(self.env.iter().map(|(k, v)| (k, v)))
                .stdout(Stdio::piped())
                .stderr(log)
                .spawn()
                .expect("spawn sotto-relay");
            let mut line = String::new();
            BufReader::new(child.stdout.take().expect("stdout"))
                .read_line(&mut line)
                .expect("the relay's listening line");
            if !line.is_empty() {
                break (child, line);
            }
            // It exited before listening.
            let _ = child.wait();
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            let new = text.get(logged_before as usize..).unwrap_or(&text);
            assert!(
                new.contains("Address already in use") && start.elapsed() < DEADLINE,
                "sotto-relay did not start on {listen}; its log:\n{new}"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        // "listening 127.0.0.1:PORT ws://127.0.0.1:PORT/sotto/v1"
        let mut parts = line.split_whitespace().skip(1);
        self.host = parts.next().expect("address").to_owned();
        self.url = parts.next().expect("url").to_owned();
        self.child = Some(child);
    }

    /// Kills the relay (SIGKILL) without starting it again.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the relay (kill -9) and starts it again on the same port and data.
    pub fn restart(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let host = self.host.clone();
        self.spawn(&host);
    }

    /// Stops the relay, deletes its data (as a reinstall would) and starts it again on the
    /// same port.
    pub fn reset(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(self.dir.path().join("data"));
        let host = self.host.clone();
        self.spawn(&host);
    }

    /// Every file of the relay's data.
    pub fn files(&self) -> Vec<PathBuf> {
        files_under(&self.dir.path().join("data"))
    }
}

impl Relay {
    /// The value of metric `name` on the relay's `/metrics` (a `name value` line).
    pub fn metric(&self, name: &str) -> f64 {
        self.metric_if_any(name)
            .unwrap_or_else(|out| panic!("no {name} in:\n{out}"))
    }

    /// The value of counter `name`, 0 while the relay has not reported it (a labelled
    /// counter such as a rejection reason appears on its first count).
    pub fn counter(&self, name: &str) -> f64 {
        self.metric_if_any(name).unwrap_or(0.0)
    }

    /// The value of metric `name`, or the whole exposition when it has no such line.
    fn metric_if_any(&self, name: &str) -> Result<f64, String> {
        let mut s = std::net::TcpStream::connect(&self.host).expect("connect for /metrics");
        s.set_read_timeout(Some(DEADLINE)).expect("read timeout");
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
        )
        .expect("send GET /metrics");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read /metrics");
        out.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
            .ok_or(out)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Daemon {
    /// Starts the daemon and creates account `name` on `relay`; returns the address.
    pub fn account(&mut self, relay: &Relay, name: &str) -> String {
        self.account_at(&relay.host, name)
    }

    /// Starts the daemon (unless running) and creates account `name` on the relay at
    /// `host` (`127.0.0.1:PORT`, e.g. a proxy's); returns the address.
    pub fn account_at(&mut self, host: &str, name: &str) -> String {
        if !self.is_running() {
            self.start();
        }
        let a = self
            .client()
            .ok("account.create", json!({"name": name, "relay": host}));
        a["address"].as_str().expect("address").to_owned()
    }

    /// Creates a conversation with `peer` (whose address is `peer_address`) through the
    /// CLI and waits until `peer` has joined it from the Welcome; returns its id.
    pub fn conversation_with(&self, peer: &Daemon, peer_address: &str) -> String {
        let conv = self.sotto_json(&["conversation", "create", peer_address])["id"]
            .as_str()
            .expect("conversation id")
            .to_owned();
        peer.wait_conversation("the Welcome", |c| c["id"] == conv.as_str());
        conv
    }

    /// Polls `message.list` of `conv` until `pred` holds; returns the messages.
    pub fn wait_messages(
        &self,
        conv: &str,
        what: &str,
        pred: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        self.wait_messages_within(DEADLINE, conv, what, pred)
    }

    /// [`Daemon::wait_messages`] with another deadline.
    pub fn wait_messages_within(
        &self,
        deadline: Duration,
        conv: &str,
        what: &str,
        pred: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        wait_within(deadline, what, || {
            let mut c = RawClient::connect(&self.socket()).ok()?;
            let r = c.call("message.list", json!({"conversation": conv, "limit": 1000}));
            let list = r.get("result")?.as_array()?.clone();
            pred(&list).then_some(list)
        })
    }

    /// Polls until a conversation satisfying `pred` exists; returns it.
    pub fn wait_conversation(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        wait_for(what, || {
            let mut c = RawClient::connect(&self.socket()).ok()?;
            let r = c.call("conversation.list", json!({}));
            r.get("result")?
                .as_array()?
                .iter()
                .find(|c| pred(c))
                .cloned()
        })
    }
}
