//! A private PostgreSQL cluster for the PostgreSQL relay scenario: Debian's binaries
//! (`/usr/lib/postgresql/N/bin`, package `postgresql` from scripts/deps.sh), initdb'd in a
//! temporary directory, on a free loopback port, run as `nobody` when we are root.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

const NOBODY: (u32, u32) = (65534, 65534);
const USER: &str = "sotto";

fn bin_dir() -> anyhow::Result<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .context("/usr/lib/postgresql: install postgresql (scripts/deps.sh)")?
        .filter_map(|e| {
            let e = e.ok()?;
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, b)| b)
        .context("no PostgreSQL server binaries")
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

fn unprivileged(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("setpriv");
        c.arg(format!("--reuid={}", NOBODY.0))
            .arg(format!("--regid={}", NOBODY.1))
            .args(["--clear-groups", "--pdeathsig=KILL", "--"])
            .arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// A running cluster, killed and removed on drop.
#[derive(Debug)]
pub struct Cluster {
    dir: tempfile::TempDir,
    child: Child,
    pub port: u16,
    bin: PathBuf,
}

impl Cluster {
    /// [`Cluster::start`] on a thread that lives as long as the process. The server runs
    /// with a parent-death signal, which follows the *thread* that spawned it: started from
    /// a tokio blocking-pool thread, it was killed when that thread retired after 10 s idle
    /// (the full run of scenario 10 lost its server during the SQLite phase).
    pub fn start_kept() -> anyhow::Result<Cluster> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("postgres-keeper".into())
            .spawn(move || {
                let _ = tx.send(Cluster::start());
                loop {
                    std::thread::park();
                }
            })?;
        rx.recv().context("the postgres keeper thread")?
    }

    pub fn start() -> anyhow::Result<Cluster> {
        let bin = bin_dir()?;
        let dir = tempfile::Builder::new()
            .prefix("sotto-bench-pg")
            .tempdir()?;
        if is_root() {
            std::os::unix::fs::chown(dir.path(), Some(NOBODY.0), Some(NOBODY.1))?;
        }
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))?;
        let data = dir.path().join("data");
        let out = unprivileged(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                USER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-instructions",
            ])
            .output()
            .context("initdb")?;
        if !out.status.success() {
            bail!("initdb: {}", String::from_utf8_lossy(&out.stderr));
        }
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let log = std::fs::File::create(dir.path().join("postgres.log"))?;
        if is_root() {
            std::os::unix::fs::chown(dir.path().join("postgres.log"), Some(NOBODY.0), None)?;
        }
        let child = unprivileged(&bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-k"])
            .arg(dir.path())
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "max_connections=200",
            ])
            .args(["-c", "fsync=on", "-c", "synchronous_commit=on"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("spawning postgres")?;
        let cluster = Cluster {
            dir,
            child,
            port,
            bin,
        };
        let start = Instant::now();
        while !Command::new(cluster.bin.join("pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
            .status()
            .is_ok_and(|s| s.success())
        {
            if start.elapsed() > Duration::from_secs(60) {
                bail!("postgres did not start");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(cluster)
    }

    /// Runs SQL through psql; returns its unaligned output.
    pub fn psql(&self, db: &str, sql: &str) -> anyhow::Result<String> {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                USER,
                "-d",
                db,
            ])
            .args(["-c", sql])
            .output()
            .context("psql")?;
        if !out.status.success() {
            bail!("psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// A new empty database; returns its URL.
    pub fn database(&self, name: &str) -> anyhow::Result<String> {
        self.psql("postgres", &format!("CREATE DATABASE {name}"))?;
        Ok(format!(
            "postgres://{USER}@127.0.0.1:{}/{name}?sslmode=disable",
            self.port
        ))
    }

    /// `synchronous_commit=… fsync=…` as the server reports them.
    pub fn durability(&self) -> anyhow::Result<String> {
        Ok(format!(
            "synchronous_commit={} fsync={}",
            self.psql("postgres", "SHOW synchronous_commit")?,
            self.psql("postgres", "SHOW fsync")?
        ))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = &self.dir;
    }
}
