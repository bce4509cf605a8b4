//! The listening socket: inherited from systemd (LISTEN_FDS) or bound safely here.

use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use tokio::net::UnixListener;

use crate::paths;

/// A listener and the guard that removes the socket file when the daemon stops.
#[derive(Debug)]
pub struct Bound {
    /// The listener to serve.
    pub listener: UnixListener,
    /// Removes the socket file on drop (only for sockets this process bound).
    pub guard: SocketGuard,
}

/// Removes a socket file on drop.
#[derive(Debug)]
pub struct SocketGuard(Option<PathBuf>);

impl Drop for SocketGuard {
    fn drop(&mut self) {
        if let Some(path) = self.0.take()
            && let Err(e) = std::fs::remove_file(&path)
        {
            tracing::warn!(path = %path.display(), cause = %e, "could not remove the socket");
        }
    }
}

/// Takes the socket systemd passed (socket activation) or binds `path`.
pub fn acquire(path: &Path) -> anyhow::Result<Bound> {
    let mut fds = listenfd::ListenFd::from_env();
    if fds.len() > 0 {
        let std_listener = fds
            .take_unix_listener(0)
            .context("the socket passed by systemd (LISTEN_FDS) is not a Unix stream socket")?
            .context("systemd passed no socket at fd 3")?;
        let local = std_listener
            .local_addr()
            .context("reading the inherited socket's address")?;
        if let Some(p) = local.as_pathname().and_then(Path::parent) {
            paths::check_private_dir(p).context(
                "the socket directory systemd created is not private (set DirectoryMode=0700)",
            )?;
        }
        std_listener.set_nonblocking(true)?;
        tracing::info!(path = ?local.as_pathname(), "using the socket passed by systemd");
        return Ok(Bound {
            listener: UnixListener::from_std(std_listener)?,
            guard: SocketGuard(None),
        });
    }
    bind(path)
}

/// Binds `path` after making its directory private and checking no daemon is serving it.
pub fn bind(path: &Path) -> anyhow::Result<Bound> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .context("the socket path has no directory")?;
    paths::ensure_private_dir(dir)?;
    match std::fs::symlink_metadata(path) {
        Ok(meta) => {
            if !meta.file_type().is_socket() {
                bail!(
                    "{} exists and is not a socket; refusing to replace it",
                    path.display()
                );
            }
            // Connect before unlinking: a live daemon answers, a stale file refuses.
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                bail!("another sottod is already serving {}", path.display());
            }
            std::fs::remove_file(path)
                .with_context(|| format!("removing stale socket {}", path.display()))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("inspecting {}", path.display())),
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restricting {}", path.display()))?;
    tracing::info!(path = %path.display(), "listening");
    Ok(Bound {
        listener,
        guard: SocketGuard(Some(path.to_owned())),
    })
}
