//! The processes a scenario runs: real `sotto-relay` and `sottod` binaries on temp dirs
//! (killed on drop), their RSS, and the file-descriptor limit.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tempfile::TempDir;

use crate::rpc::RpcClient;

/// Profiling: `SOTTO_BENCH_LOG=<filter>` runs every child with `SOTTO_LOG=<filter>` (else
/// `warn`) and copies each child's log to `$SOTTO_BENCH_LOG_DIR` (default
/// `/tmp/sotto-bench-logs`) when it is stopped, before its temp directory goes.
pub const LOG_ENV: &str = "SOTTO_BENCH_LOG";

/// The `SOTTO_LOG` filter for children.
fn child_log_filter() -> String {
    std::env::var(LOG_ENV).unwrap_or_else(|_| "warn".into())
}

/// Keeps a copy of a child's log when [`LOG_ENV`] is set.
fn keep_log(log: &Path, name: &str, pid: u32) {
    if std::env::var_os(LOG_ENV).is_none() {
        return;
    }
    let dir = std::env::var_os("SOTTO_BENCH_LOG_DIR")
        .map_or_else(|| PathBuf::from("/tmp/sotto-bench-logs"), PathBuf::from);
    if std::fs::create_dir_all(&dir).is_ok() {
        let _ = std::fs::copy(log, dir.join(format!("{name}-{pid}.log")));
    }
}

/// How long any single setup step may take before the scenario gives up.
pub const DEADLINE: Duration = Duration::from_secs(120);

/// The directory holding the workspace binaries: the one `sotto-bench` runs from.
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating sotto-bench")?;
    let dir = exe.parent().context("sotto-bench has no directory")?;
    // `cargo run` and tests may run from target/<profile>/deps.
    let dir = if dir.ends_with("deps") {
        dir.parent().unwrap_or(dir)
    } else {
        dir
    };
    Ok(dir.to_path_buf())
}

/// A workspace binary next to `sotto-bench`.
pub fn bin(name: &str) -> anyhow::Result<PathBuf> {
    let path = bin_dir()?.join(name);
    if !path.exists() {
        bail!(
            "{} is missing; build the workspace first (cargo build --release --workspace)",
            path.display()
        );
    }
    Ok(path)
}

/// Raises the soft RLIMIT_NOFILE to the hard limit (children inherit it); returns it.
pub fn raise_nofile() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    if lim.current != lim.maximum {
        lim.current = lim.maximum;
        let _ = setrlimit(Resource::Nofile, lim);
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// VmRSS of `pid` in bytes.
pub fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .context("no VmRSS line")?;
    Ok(kib * 1024)
}

/// CPU time (user + system) `pid` has used so far, in seconds (USER_HZ is 100 on Linux).
pub fn cpu_seconds(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the parenthesised command name; utime and stime are 14 and 15.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
            Some(ticks / 100.0)
        })
        .unwrap_or(0.0)
}

/// Cores used by `pids` between two readings taken `wall` apart.
#[derive(Debug, Clone)]
pub struct CpuMeter {
    pids: Vec<(String, u32, f64)>,
    start: std::time::Instant,
}

impl CpuMeter {
    pub fn start(pids: &[(&str, u32)]) -> CpuMeter {
        CpuMeter {
            pids: pids
                .iter()
                .map(|(n, p)| ((*n).to_owned(), *p, cpu_seconds(*p)))
                .collect(),
            start: std::time::Instant::now(),
        }
    }

    /// "name 0.42, other 0.10 cores" since `start`.
    pub fn report(&self) -> String {
        let wall = self.start.elapsed().as_secs_f64().max(1e-9);
        let parts: Vec<String> = self
            .pids
            .iter()
            .map(|(n, p, c0)| format!("{n} {:.2}", (cpu_seconds(*p) - c0) / wall))
            .collect();
        format!("{} cores", parts.join(", "))
    }
}

/// Reads the first stdout line of `child` within `timeout`.
pub fn first_line(child: &mut Child, timeout: Duration) -> anyhow::Result<String> {
    let stdout = child.stdout.take().context("child stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = tx.send(line);
        }
        for _ in lines {}
    });
    rx.recv_timeout(timeout)
        .context("the child printed no line in time")
}

/// A `sotto-relay` on 127.0.0.1 with its own data directory.
#[derive(Debug)]
pub struct Relay {
    dir: TempDir,
    child: Child,
    pub addr: SocketAddr,
    /// The relay's public URL (from its listening line).
    pub url: String,
}

/// Flags that lift the relay's per-client rate limits for a benchmark.
pub fn unlimited_flags() -> anyhow::Result<Vec<String>> {
    let mut flags: Vec<String> = [
        "--rate",
        "10000000",
        "--burst",
        "10000000",
        "--claims-per-min",
        "10000000",
        "--connections-per-ip",
        "100000",
        "--idle-timeout",
        "3600",
        "--max-frame-bytes",
        "16777216",
    ]
    .map(str::to_owned)
    .to_vec();
    if relay_supports("--mailbox-posts-per-min")? {
        flags.extend(["--mailbox-posts-per-min".into(), "10000000".into()]);
    }
    Ok(flags)
}

/// Whether this `sotto-relay` build has `flag`.
pub fn relay_supports(flag: &str) -> anyhow::Result<bool> {
    let out = Command::new(bin("sotto-relay")?)
        .arg("--help")
        .output()
        .context("sotto-relay --help")?;
    Ok(String::from_utf8_lossy(&out.stdout).contains(flag))
}

impl Relay {
    /// Starts a relay with `flags` and waits for its listening line.
    pub fn start(flags: &[String]) -> anyhow::Result<Relay> {
        let dir = tempfile::Builder::new()
            .prefix("sotto-bench-relay")
            .tempdir()?;
        let log = std::fs::File::create(dir.path().join("relay.log"))?;
        let mut child = Command::new(bin("sotto-relay")?)
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(flags)
            .env("SOTTO_LOG", child_log_filter())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .context("spawning sotto-relay")?;
        let line = match first_line(&mut child, DEADLINE) {
            Ok(l) => l,
            Err(e) => {
                let _ = child.kill();
                let log = std::fs::read_to_string(dir.path().join("relay.log")).unwrap_or_default();
                bail!("{e}; relay log:\n{log}");
            }
        };
        let mut parts = line.split_whitespace().skip(1);
        let addr = parts
            .next()
            .and_then(|a| a.parse().ok())
            .with_context(|| format!("unexpected relay line {line:?}"))?;
        let url = parts.next().unwrap_or_default().to_owned();
        Ok(Relay {
            dir,
            child,
            addr,
            url,
        })
    }

    /// `host:port`, the host part of addresses on this relay.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn address(&self, name: &str) -> String {
        format!("{name}@{}", self.host())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        keep_log(&self.dir.path().join("relay.log"), "relay", self.child.id());
    }
}

/// A `sottod` with its own XDG directories and the file key store.
#[derive(Debug)]
pub struct Daemon {
    pub root: TempDir,
    child: Child,
    /// Spawn to the first served `daemon.status`.
    pub ready_after: Duration,
}

impl Daemon {
    pub fn start() -> anyhow::Result<Daemon> {
        let root = tempfile::Builder::new().prefix("sotto-bench-d").tempdir()?;
        for d in ["run", "data", "config", "home"] {
            std::fs::create_dir(root.path().join(d))?;
        }
        let (child, ready_after) = spawn_daemon(root.path())?;
        Ok(Daemon {
            root,
            child,
            ready_after,
        })
    }

    /// Stops the daemon (SIGTERM, then waits for it) and keeps its directories; `start_again`
    /// brings it back on the same data. Between the two, the data directory is the
    /// caller's (the `client` scenario seeds the database there).
    pub fn stop(&mut self) -> anyhow::Result<()> {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32)
            .context("the daemon has no pid")?;
        rustix::process::kill_process(pid, rustix::process::Signal::TERM)
            .context("signalling sottod")?;
        self.child.wait().context("waiting for sottod")?;
        Ok(())
    }

    /// Starts the daemon again on the same directories (after `stop`).
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        let (child, ready_after) = spawn_daemon(self.root.path())?;
        self.child = child;
        self.ready_after = ready_after;
        Ok(())
    }

    /// The daemon's data directory (`$XDG_DATA_HOME/sotto`).
    pub fn data_dir(&self) -> PathBuf {
        self.root.path().join("data/sotto")
    }

    pub fn socket(&self) -> PathBuf {
        self.root.path().join("run/sotto/sottod.sock")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The daemon's log so far (SOTTO_LOG=warn).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root.path().join("sottod.log")).unwrap_or_default()
    }

    pub async fn client(&self) -> anyhow::Result<RpcClient> {
        RpcClient::connect(&self.socket()).await
    }

    /// Creates account `name` on `relay`; returns its address.
    pub async fn account(&self, relay: &Relay, name: &str) -> anyhow::Result<String> {
        let mut c = self.client().await?;
        let a = c
            .ok(
                "account.create",
                serde_json::json!({"name": name, "relay": relay.host()}),
            )
            .await?;
        a["address"]
            .as_str()
            .map(str::to_owned)
            .context("account without address")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        keep_log(
            &self.root.path().join("sottod.log"),
            "sottod",
            self.child.id(),
        );
    }
}

/// Spawns `sottod` on the directories under `p` and waits until it serves `daemon.status`.
fn spawn_daemon(p: &Path) -> anyhow::Result<(Child, Duration)> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(p.join("sottod.log"))?;
    let socket = p.join("run/sotto/sottod.sock");
    let start = Instant::now();
    let mut cmd = Command::new(bin("sottod")?);
    cmd.env_clear();
    // The daemon's debug switch (ptrace, perf, core dumps), passed through for profiling.
    if let Some(v) = std::env::var_os(sottod::hardening::DEBUG_ENV) {
        cmd.env(sottod::hardening::DEBUG_ENV, v);
    }
    let mut child = cmd
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", p.join("home"))
        .env("XDG_RUNTIME_DIR", p.join("run"))
        .env("XDG_DATA_HOME", p.join("data"))
        .env("XDG_CONFIG_HOME", p.join("config"))
        .env("SOTTO_KEY_STORE", "file")
        .env("SOTTO_LOG", child_log_filter())
        .env("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/bus")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("spawning sottod")?;
    let ready_after = loop {
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(p.join("sottod.log")).unwrap_or_default();
            bail!("sottod exited early ({status}):\n{log}");
        }
        if status_ok(&socket) {
            break start.elapsed();
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            bail!("sottod did not answer daemon.status in time");
        }
        std::thread::sleep(Duration::from_micros(500));
    };
    Ok((child, ready_after))
}

/// One blocking `daemon.status` on a fresh connection.
fn status_ok(socket: &Path) -> bool {
    use std::io::{Read as _, Write as _};
    let Ok(mut s) = std::os::unix::net::UnixStream::connect(socket) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"daemon.status\"}\n")
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 4096];
    let mut got = Vec::new();
    while !got.contains(&b'\n') {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    got.windows(9).any(|w| w == b"\"result\":")
}
