//! A real PostgreSQL: Debian's binaries (`/usr/lib/postgresql/N/bin`, from the
//! `postgresql` package that `scripts/deps.sh` installs), an initdb'd cluster in a
//! temporary directory on a free loopback port, run as an unprivileged user (`nobody`
//! when we are root, as in CI; PostgreSQL refuses to run as root).
//!
//! The server runs with a parent-death signal when we are root (it is started through
//! `setpriv`), so it dies with the process even after a crash. That signal follows the
//! *thread* that spawned the server: [`Cluster::start_kept`] (and [`shared`]) start it on a
//! thread that lives as long as the process.
//!
//! One [`shared`] cluster serves every test that only needs a database (each gets its own
//! [`Cluster::create_database`]); tests that stop the server start their own.
//!
//! Everything that can fail returns an [`io::Result`]; a failing command's stderr is in
//! the error.

use std::io;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

/// How long the server may take to start.
const DEADLINE: Duration = Duration::from_secs(60);

/// `nobody:nogroup`.
const UNPRIVILEGED: (u32, u32) = (65534, 65534);
/// The superuser initdb creates (trust authentication on loopback).
pub const SUPERUSER: &str = "sotto";
/// Prefix of the cluster directories in the temp dir (`sotto-pg-<pid>-<n>`).
const DIR_PREFIX: &str = "sotto-pg-";

/// The newest Debian PostgreSQL binary directory.
pub fn bin_dir() -> io::Result<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("/usr/lib/postgresql: {e}: install postgresql (scripts/deps.sh)"),
            )
        })?
        .filter_map(|e| {
            let e = e.ok()?;
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).ok_or_else(|| {
        io::Error::other(
            "no /usr/lib/postgresql/N/bin/initdb: install postgresql (scripts/deps.sh)",
        )
    })
}

fn is_root() -> bool {
    // The owner of /proc/self is the process's uid.
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// A command that runs as the unprivileged user when we are root, and then dies with the
/// thread that spawned it.
fn unprivileged(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("setpriv");
        c.arg(format!("--reuid={}", UNPRIVILEGED.0))
            .arg(format!("--regid={}", UNPRIVILEGED.1))
            .args(["--clear-groups", "--pdeathsig=KILL", "--"])
            .arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// Gives a path to the unprivileged user when we are root.
fn chown_unprivileged(path: &Path) -> io::Result<()> {
    if is_root() {
        std::os::unix::fs::chown(path, Some(UNPRIVILEGED.0), Some(UNPRIVILEGED.1))?;
    }
    Ok(())
}

/// `out` if the command succeeded, else an error with what it printed on stderr.
fn succeeded(what: &str, out: Output) -> io::Result<Output> {
    if out.status.success() {
        Ok(out)
    } else {
        Err(io::Error::other(format!(
            "{what}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Numbers the cluster directories of this process.
static NEXT_DIR: AtomicU32 = AtomicU32::new(0);

/// How a server start ended.
enum Started {
    Ready,
    /// It exited: its port was taken.
    PortTaken,
}

fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A PostgreSQL cluster; dropping it kills the server and removes its directory.
#[derive(Debug)]
pub struct Cluster {
    /// The loopback port the server listens on.
    pub port: u16,
    bin: PathBuf,
    dir: PathBuf,
    child: Mutex<Option<Child>>,
    next_db: AtomicU32,
}

impl Cluster {
    /// initdb and start a new cluster. The server dies with the calling thread when we
    /// are root (see the module docs); [`Cluster::start_kept`] for one that outlives it.
    pub fn start() -> io::Result<Cluster> {
        sweep_stale();
        let bin = bin_dir()?;
        // Named by a counter, not by a port from `free_port` (two clusters starting at
        // once may be handed the same free port, and would then share a directory).
        let dir = std::env::temp_dir().join(format!(
            "{DIR_PREFIX}{}-{}",
            std::process::id(),
            NEXT_DIR.fetch_add(1, Ordering::Relaxed)
        ));
        // Ours by name (this pid, a number not handed out yet): a stale directory of a
        // dead process that had our pid.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        // From here on, dropping the cluster removes the directory.
        let mut cluster = Cluster {
            port: free_port()?,
            bin,
            dir,
            child: Mutex::new(None),
            next_db: AtomicU32::new(0),
        };
        chown_unprivileged(&cluster.dir)?;
        std::fs::set_permissions(&cluster.dir, std::fs::Permissions::from_mode(0o700))?;
        let out = unprivileged(&cluster.bin.join("initdb"))
            .arg("-D")
            .arg(cluster.dir.join("data"))
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
            .output()?;
        succeeded("initdb", out)?;
        // The port was free when `free_port` released it; anything may have taken it
        // since (another cluster, any socket's ephemeral port): then try another.
        let mut attempts = 0;
        loop {
            match cluster.spawn_server()? {
                Started::Ready => return Ok(cluster),
                Started::PortTaken if attempts < 10 => {
                    attempts += 1;
                    cluster.port = free_port()?;
                }
                Started::PortTaken => {
                    return Err(io::Error::other(format!(
                        "postgres found no free port in {attempts} attempts; log:\n{}",
                        cluster.log_text()
                    )));
                }
            }
        }
    }

    /// [`Cluster::start`] on a thread that lives as long as the process. The server runs
    /// with a parent-death signal, which follows the *thread* that spawned it: started
    /// from a short-lived thread (a tokio blocking-pool thread retires after 10 s idle) it
    /// would be killed with that thread (the full run of bench scenario 10 lost its
    /// server during the SQLite phase that way).
    pub fn start_kept() -> io::Result<Cluster> {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("postgres-keeper".into())
            .spawn(move || {
                let _ = tx.send(Cluster::start());
                loop {
                    std::thread::park();
                }
            })?;
        rx.recv_timeout(DEADLINE * 2)
            .map_err(|e| io::Error::other(format!("the postgres keeper thread: {e}")))?
    }

    fn log(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    /// Starts the server (again) on the same data directory and port; returns when it
    /// accepts connections. It dies with the calling thread when we are root. While the
    /// port is held by another socket (a restart: any connection may have been given it as
    /// its ephemeral port meanwhile), it tries again until the deadline.
    pub fn start_server(&self) -> io::Result<()> {
        let start = Instant::now();
        loop {
            match self.spawn_server()? {
                Started::Ready => return Ok(()),
                Started::PortTaken if start.elapsed() < DEADLINE => {
                    std::thread::sleep(Duration::from_millis(250));
                }
                Started::PortTaken => {
                    return Err(io::Error::other(format!(
                        "port {} stayed taken for {DEADLINE:?}; log:\n{}",
                        self.port,
                        self.log_text()
                    )));
                }
            }
        }
    }

    /// Spawns the server and waits until it accepts connections, or until it exits:
    /// [`Started::PortTaken`] when it could not bind its port.
    fn spawn_server(&self) -> io::Result<Started> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())?;
        if is_root() {
            std::os::unix::fs::chown(self.log(), Some(UNPRIVILEGED.0), None)?;
        }
        let logged_before = log.metadata()?.len();
        let child = unprivileged(&self.bin.join("postgres"))
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
            .spawn()?;
        *lock(&self.child) = Some(child);
        let start = Instant::now();
        while !self.ready() {
            let exited = lock(&self.child)
                .as_mut()
                .map(Child::try_wait)
                .transpose()?;
            if let Some(Some(status)) = exited {
                lock(&self.child).take();
                let text = self.log_text();
                let new = text.get(logged_before as usize..).unwrap_or(&text);
                if new.contains("Address already in use") {
                    return Ok(Started::PortTaken);
                }
                return Err(io::Error::other(format!(
                    "postgres exited ({status}) while starting; log:\n{new}"
                )));
            }
            if start.elapsed() > DEADLINE {
                return Err(io::Error::other(format!(
                    "postgres did not start within {DEADLINE:?}; log:\n{}",
                    self.log_text()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Started::Ready)
    }

    /// Whether *this* cluster's server accepts connections. Asked on its own Unix socket
    /// (in its directory): on the TCP port another server that got the same port would
    /// answer. The postmaster binds its TCP port first and exits if it cannot.
    fn ready(&self) -> bool {
        Command::new(self.bin.join("pg_isready"))
            .arg("-q")
            .arg("-h")
            .arg(&self.dir)
            .args(["-p", &self.port.to_string()])
            .args(["-U", SUPERUSER])
            .status()
            .is_ok_and(|s| s.success())
    }

    /// A fast shutdown (what `pg_ctl stop -m fast` does): clients are disconnected.
    pub fn stop_server(&self) -> io::Result<()> {
        let out = unprivileged(&self.bin.join("pg_ctl"))
            .arg("stop")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "fast", "-w"])
            .output()?;
        succeeded("pg_ctl stop", out)?;
        if let Some(mut c) = lock(&self.child).take() {
            c.wait()?;
        }
        Ok(())
    }

    /// Writes a file in the cluster directory that the server can read and nobody else
    /// (`0600`, owned by its user); returns its path.
    pub fn write_private(&self, name: &str, contents: &[u8]) -> io::Result<PathBuf> {
        let path = self.dir.join(name);
        std::fs::write(&path, contents)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        chown_unprivileged(&path)?;
        Ok(path)
    }

    /// The server's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }

    /// Runs SQL through psql; returns its unaligned output, trimmed.
    pub fn psql(&self, db: &str, sql: &str) -> io::Result<String> {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", SUPERUSER, "-d", db, "-c", sql])
            .stdin(Stdio::null())
            .output()?;
        let out = succeeded(&format!("psql {sql}"), out)?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Creates an empty database (`relay_<n>`); returns its URL.
    pub fn create_database(&self) -> io::Result<String> {
        let n = self.next_db.fetch_add(1, Ordering::Relaxed);
        let name = format!("relay_{n}");
        self.psql("postgres", &format!("CREATE DATABASE {name}"))?;
        Ok(self.url(&name))
    }

    /// `postgres://sotto@127.0.0.1:PORT/DB?sslmode=disable`.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://{SUPERUSER}@127.0.0.1:{}/{db}?sslmode=disable",
            self.port
        )
    }

    /// `synchronous_commit=… fsync=…` as the server reports them.
    pub fn durability(&self) -> io::Result<String> {
        Ok(format!(
            "synchronous_commit={} fsync={}",
            self.psql("postgres", "SHOW synchronous_commit")?,
            self.psql("postgres", "SHOW fsync")?
        ))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(mut c) = lock(&self.child).take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Removes cluster directories left behind by processes that were killed (their server
/// died with them; only the directory stays).
fn sweep_stale() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(DIR_PREFIX)) else {
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

/// The cluster shared by this process ([`Cluster::start_kept`], started on first use;
/// never dropped: the server dies with the process). Panics if it cannot start: it is
/// for tests.
pub fn shared() -> &'static Cluster {
    static SHARED: OnceLock<Cluster> = OnceLock::new();
    SHARED.get_or_init(|| Cluster::start_kept().expect("start the shared PostgreSQL cluster"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A restart while another socket holds the port waits for it instead of failing, and
    /// readiness is this cluster's own (its Unix socket), not whoever answers on the port.
    #[test]
    fn a_restart_waits_out_a_taken_port() {
        let cluster = Cluster::start().expect("start a cluster");
        assert_eq!(cluster.psql("postgres", "SELECT 1").expect("psql"), "1");
        cluster.stop_server().expect("stop");
        let squatter = TcpListener::bind(("127.0.0.1", cluster.port)).expect("take the port");
        assert!(!cluster.ready(), "nothing of ours answers while stopped");
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(1));
            drop(squatter);
        });
        cluster
            .start_server()
            .expect("start again once the port is free");
        release.join().expect("release thread");
        assert!(
            cluster.log_text().contains("Address already in use"),
            "the first attempt met the taken port"
        );
        assert_eq!(cluster.psql("postgres", "SELECT 1").expect("psql"), "1");
    }
}
