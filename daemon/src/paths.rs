//! The daemon's files: data dir, config file, socket, lock — created private from the start.

use std::fs::{DirBuilder, File, OpenOptions};
use std::os::unix::fs::{
    DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _,
};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use rustix::fs::{FlockOperation, flock};

fn env_dir(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
}

fn home() -> anyhow::Result<PathBuf> {
    env_dir("HOME").context("HOME is not set to an absolute path")
}

/// `$XDG_DATA_HOME/sotto` (default `~/.local/share/sotto`).
pub fn data_dir() -> anyhow::Result<PathBuf> {
    let base = match env_dir("XDG_DATA_HOME") {
        Some(d) => d,
        None => home()?.join(".local/share"),
    };
    Ok(base.join("sotto"))
}

/// `$XDG_CONFIG_HOME/sotto/config.toml` (default `~/.config/sotto/config.toml`).
pub fn config_file() -> anyhow::Result<PathBuf> {
    let base = match env_dir("XDG_CONFIG_HOME") {
        Some(d) => d,
        None => home()?.join(".config"),
    };
    Ok(base.join("sotto").join("config.toml"))
}

/// The socket path from `SOTTO_SOCKET` or the default rule.
pub fn socket_path() -> anyhow::Result<PathBuf> {
    if let Some(p) = env_dir(sotto_protocol::paths::SOCKET_ENV) {
        return Ok(p);
    }
    let runtime = std::env::var("XDG_RUNTIME_DIR").ok();
    Ok(sotto_protocol::paths::default_socket(
        runtime.as_deref(),
        rustix::process::getuid().as_raw(),
    ))
}

/// Creates `dir` (and its parents) with mode 0700, or checks an existing one: it must be a
/// real directory (not a symlink) owned by this user with no group or other access.
///
/// New directories get 0700 at creation (no window where they are wider). An existing
/// directory of ours with wider bits is refused rather than silently fixed, because
/// something else may already have used it.
pub fn ensure_private_dir(dir: &Path) -> anyhow::Result<()> {
    if let Some(parent) = dir.parent()
        && !parent.as_os_str().is_empty()
        && !parent.exists()
    {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    match DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
    }
    check_private_dir(dir)
}

/// Checks that `dir` is a directory (not a symlink) owned by us, mode 0700 or stricter.
pub fn check_private_dir(dir: &Path) -> anyhow::Result<()> {
    let meta =
        std::fs::symlink_metadata(dir).with_context(|| format!("inspecting {}", dir.display()))?;
    if meta.file_type().is_symlink() {
        bail!("{} is a symlink; refusing to use it", dir.display());
    }
    if !meta.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    let uid = rustix::process::getuid().as_raw();
    if meta.uid() != uid {
        bail!(
            "{} is owned by uid {}, not by this user (uid {uid}); refusing to use it",
            dir.display(),
            meta.uid()
        );
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "{} has mode {mode:o}; it must not be accessible to group or others (chmod 700 it)",
            dir.display()
        );
    }
    Ok(())
}

/// An exclusive lock on the data dir, held for the daemon's life.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

/// Creates the data dir and takes its lock: one daemon per data dir.
pub fn lock_data_dir(data_dir: &Path) -> anyhow::Result<DataDirLock> {
    ensure_private_dir(data_dir)?;
    let path = data_dir.join("sottod.lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .read(true)
        .mode(0o600)
        .open(&path);
    let file = match file {
        Err(e) if e.kind() == std::io::ErrorKind::ReadOnlyFilesystem => bail!(
            "the data directory {} is on a read-only file system: sottod keeps its database there and cannot start; remount it read-write or choose another XDG_DATA_HOME",
            data_dir.display()
        ),
        other => other.with_context(|| format!("opening {}", path.display()))?,
    };
    if flock(&file, FlockOperation::NonBlockingLockExclusive).is_err() {
        let pid = std::fs::read_to_string(&path).unwrap_or_default();
        bail!(
            "another sottod (pid {}) is already using the data directory {}; stop it first or use another XDG_DATA_HOME",
            pid.trim(),
            data_dir.display()
        );
    }
    file.set_len(0).ok();
    use std::io::Write as _;
    let mut f = &file;
    let _ = write!(f, "{}", std::process::id());
    Ok(DataDirLock { _file: file })
}
