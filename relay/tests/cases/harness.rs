//! The fixture: a real `sotto-relay` process on a free loopback port with its own data
//! directory, killed on drop.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long anything may take on a loaded machine before a test gives up.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// The storage backend a test's relays use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The backend of the running test: the suite is compiled twice (tests.rs), once under
/// `sqlite::` and once under `postgres::`, and libtest names each test's thread after
/// its path.
pub fn backend() -> Backend {
    match std::thread::current().name() {
        Some(n) if n.starts_with("postgres::") => Backend::Postgres,
        _ => Backend::Sqlite,
    }
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_sotto-relay")
}

pub struct Relay {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub url: String,
    extra: Vec<String>,
    dir: tempfile::TempDir,
}

impl Relay {
    /// Starts a relay with default limits.
    pub fn start() -> Relay {
        Relay::start_with(&[])
    }

    /// Starts a relay with extra flags.
    pub fn start_with(extra: &[&str]) -> Relay {
        let mut extra: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        if backend() == Backend::Postgres && !extra.iter().any(|a| a == "--database") {
            let url = crate::pg::shared()
                .create_database()
                .expect("create a database");
            extra.splice(0..0, ["--database".to_owned(), url]);
        }
        Relay::spawn_with(extra, None)
    }

    /// Starts another relay process on the same database and public URL as `self`.
    pub fn sibling(&self) -> Relay {
        Relay::spawn_with(self.extra.clone(), Some(&self.url))
    }

    /// Starts a relay (SQLite) whose data directory `prepare` sets up first (e.g. mounts
    /// a small tmpfs there for the disk-full tests).
    pub fn start_prepared(prepare: impl FnOnce(&Path)) -> Relay {
        let dir = tempfile::tempdir().expect("temp dir");
        prepare(dir.path());
        let (child, addr, url) = spawn(dir.path(), &[], None);
        Relay {
            child: Some(child),
            addr,
            url,
            extra: Vec::new(),
            dir,
        }
    }

    fn spawn_with(extra: Vec<String>, public_url: Option<&str>) -> Relay {
        let dir = tempfile::tempdir().expect("temp dir");
        let (child, addr, url) = spawn(dir.path(), &extra, public_url);
        Relay {
            child: Some(child),
            addr,
            url,
            extra,
            dir,
        }
    }

    /// The relay's resident memory in KiB (Linux).
    pub fn rss_kib(&self) -> u64 {
        let pid = self.pid();
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// The PostgreSQL URL this relay uses, if any.
    pub fn database_url(&self) -> Option<&str> {
        let i = self.extra.iter().position(|a| a == "--database")?;
        self.extra.get(i + 1).map(String::as_str)
    }

    /// Runs a `SELECT COUNT(*) ...` on the relay's database, whichever backend.
    pub fn count(&self, sql: &str) -> i64 {
        match self.database_url() {
            Some(url) => {
                let db = url
                    .rsplit('/')
                    .next()
                    .and_then(|d| d.split('?').next())
                    .expect("database name");
                let out = crate::pg::shared().psql(db, sql).expect("psql");
                out.parse()
                    .unwrap_or_else(|_| panic!("count from {sql}: {out:?}"))
            }
            None => {
                let db = rusqlite::Connection::open(self.database()).expect("open db");
                db.query_row(sql, [], |r| r.get(0)).expect("count")
            }
        }
    }

    pub fn database(&self) -> PathBuf {
        self.dir.path().join("relay.sqlite3")
    }

    /// `name@host:port` on this relay.
    pub fn address(&self, name: &str) -> String {
        format!("{name}@{}", self.authority())
    }

    pub fn authority(&self) -> String {
        self.url
            .trim_start_matches("ws://")
            .trim_start_matches("wss://")
            .trim_end_matches("/sotto/v1")
            .to_owned()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Waits for the process to exit (after a signal) and returns its exit code.
    pub fn wait(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status.code();
            }
            if start.elapsed() > DEADLINE {
                let _ = child.kill();
                panic!("relay did not exit");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, no goodbye.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same data directory and public URL (on a new port).
    pub fn restart(&mut self) {
        self.kill9();
        let (child, addr, url) = spawn(self.dir.path(), &self.extra, Some(&self.url));
        assert_eq!(url, self.url);
        self.child = Some(child);
        self.addr = addr;
    }

    /// A plain HTTP GET on the relay's listener; returns (status line, body).
    pub fn http_get(&self, path: &str) -> (String, String) {
        http_get(self.addr, path)
    }

    /// The value of an unlabelled or labelled metric line.
    pub fn metric(&self, name: &str) -> u64 {
        let (_, body) = self.http_get("/metrics");
        body.lines()
            .find_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                (k == name).then(|| v.parse::<f64>().ok())?
            })
            .map_or(0, |v| v as u64)
    }
}

pub fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect for http");
    s.set_read_timeout(Some(DEADLINE)).expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read response");
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let status = head.lines().next().unwrap_or_default().to_owned();
    (status, body.to_owned())
}

fn spawn(dir: &Path, extra: &[String], public_url: Option<&str>) -> (Child, SocketAddr, String) {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("relay.log"))
        .expect("log file");
    let mut cmd = Command::new(bin());
    cmd.arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(dir)
        .args(extra)
        .env("SOTTO_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log));
    if let Some(url) = public_url {
        cmd.arg("--public-url").arg(url);
    }
    let mut child = cmd.spawn().expect("spawn sotto-relay");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = tx.send(line);
        }
        for _ in lines {}
    });
    let line = rx.recv_timeout(DEADLINE).unwrap_or_else(|_| {
        let _ = child.kill();
        let log = std::fs::read_to_string(dir.join("relay.log")).unwrap_or_default();
        panic!("relay did not report its address; log:\n{log}")
    });
    let mut parts = line.split_whitespace();
    assert_eq!(
        parts.next(),
        Some("listening"),
        "unexpected first line {line:?}"
    );
    let addr: SocketAddr = parts.next().and_then(|a| a.parse().ok()).expect("address");
    let url = parts.next().expect("url").to_owned();
    (child, addr, url)
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Polls `f` until it returns `Some`, or panics after the deadline.
pub async fn eventually<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
