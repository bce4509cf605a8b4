//! A real PostgreSQL for the tests: Debian's binaries (`/usr/lib/postgresql/N/bin`, from
//! the `postgresql` package that `scripts/deps.sh` installs), an initdb'd cluster in a
//! temporary directory on a free loopback port, run as an unprivileged user (`nobody`
//! when the tests run as root, as in CI; PostgreSQL refuses to run as root).
//!
//! Also used by the daemon's tests (daemon/tests/tests.rs includes this file), so it
//! depends on nothing else of the relay's harness.
//!
//! One shared cluster serves every test that only needs a database (each gets its own
//! `CREATE DATABASE`); tests that stop the server start their own. The server runs with
//! a parent-death signal, so it dies with the test process even after a crash.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

/// How long the server may take to start.
const DEADLINE: Duration = Duration::from_secs(60);

/// `nobody:nogroup`.
const UNPRIVILEGED: (u32, u32) = (65534, 65534);
const SUPERUSER: &str = "sotto";

/// The newest Debian PostgreSQL binary directory.
pub fn bin_dir() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("/usr/lib/postgresql: install the postgresql package (scripts/deps.sh)")
        .filter_map(|e| {
            let e = e.ok()?;
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("no /usr/lib/postgresql/N/bin/initdb: install postgresql (scripts/deps.sh)")
        .1
}

fn is_root() -> bool {
    // The owner of /proc/self is the process's uid.
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// A command that runs as the unprivileged user when we are root, and dies with the
/// thread that spawned it.
fn unprivileged(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("setpriv");
        c.arg(format!("--reuid={}", UNPRIVILEGED.0))
            .arg(format!("--regid={}", UNPRIVILEGED.1))
            .arg("--clear-groups")
            .arg("--pdeathsig=KILL")
            .arg("--")
            .arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A PostgreSQL cluster.
pub struct Cluster {
    pub port: u16,
    dir: PathBuf,
    child: Mutex<Option<Child>>,
    next_db: AtomicU32,
}

impl Cluster {
    /// initdb and start a new cluster.
    pub fn start() -> Cluster {
        let base =
            std::env::temp_dir().join(format!("sotto-pg-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&base).expect("cluster dir");
        if is_root() {
            std::os::unix::fs::chown(&base, Some(UNPRIVILEGED.0), Some(UNPRIVILEGED.1))
                .expect("chown cluster dir");
        }
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o700))
            .expect("chmod cluster dir");
        let data = base.join("data");
        let out = unprivileged(&bin_dir().join("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                SUPERUSER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ])
            .stdin(Stdio::null())
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = Cluster {
            port: free_port(),
            dir: base,
            child: Mutex::new(None),
            next_db: AtomicU32::new(0),
        };
        cluster.start_server();
        cluster
    }

    fn log(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    /// Starts the server (again) on the same data directory and port.
    pub fn start_server(&self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .expect("postgres log");
        if is_root() {
            let _ = std::os::unix::fs::chown(self.log(), Some(UNPRIVILEGED.0), None);
        }
        let child = unprivileged(&bin_dir().join("postgres"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(&self.dir)
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "max_connections=300",
                "-c",
                "shared_buffers=64MB",
                "-c",
                "fsync=on",
                "-c",
                "synchronous_commit=on",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn postgres");
        *self.child.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);
        let start = Instant::now();
        while !self.ready() {
            if start.elapsed() > DEADLINE {
                panic!("postgres did not start; log:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn ready(&self) -> bool {
        Command::new(bin_dir().join("pg_isready"))
            .args([
                "-q",
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                SUPERUSER,
            ])
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Writes a file the server can read and nobody else (`0600`, owned by its user).
    pub fn write_private(&self, name: &str, contents: &[u8]) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, contents).expect("write server file");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        if is_root() {
            std::os::unix::fs::chown(&path, Some(UNPRIVILEGED.0), Some(UNPRIVILEGED.1))
                .expect("chown server file");
        }
        path
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }

    /// A fast shutdown (what `pg_ctl stop -m fast` does): clients are disconnected.
    pub fn stop_server(&self) {
        let out = unprivileged(&bin_dir().join("pg_ctl"))
            .arg("stop")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "fast", "-w"])
            .output()
            .expect("pg_ctl stop");
        assert!(
            out.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if let Some(mut c) = self.child.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = c.wait();
        }
    }

    /// Runs SQL through psql; returns its unaligned output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(bin_dir().join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                SUPERUSER,
                "-d",
                db,
            ])
            .args(["-c", sql])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Creates an empty database; returns its URL.
    pub fn create_database(&self) -> String {
        let n = self.next_db.fetch_add(1, Ordering::Relaxed);
        let name = format!("relay_{n}");
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        self.url(&name)
    }

    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://{SUPERUSER}@127.0.0.1:{}/{db}?sslmode=disable",
            self.port
        )
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Removes clusters left behind by earlier test runs that were killed (their server
/// died with them; only the directory stays).
fn sweep_stale() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("sotto-pg-")) else {
            continue;
        };
        let Some(pid) = rest.split('-').next() else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// The cluster shared by this test process. It is started on a thread that lives as
/// long as the process (the server's parent-death signal follows its spawning thread),
/// and killed when the process exits.
pub fn shared() -> &'static Cluster {
    static SHARED: OnceLock<&'static Cluster> = OnceLock::new();
    SHARED.get_or_init(|| {
        sweep_stale();
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("postgres-keeper".into())
            .spawn(move || {
                let cluster: &'static Cluster = Box::leak(Box::new(Cluster::start()));
                let _ = tx.send(cluster);
                loop {
                    std::thread::park();
                }
            })
            .expect("keeper thread");
        rx.recv_timeout(DEADLINE * 2)
            .expect("shared postgres started")
    })
}
