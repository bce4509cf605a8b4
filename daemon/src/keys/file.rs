//! The explicit file key store: one 0600 file per entry under `<data>/keys` (0700).
//!
//! The key is in clear on disk, protected only by file permissions. It exists for headless
//! hosts without a Secret Service or a session keyring, and only when chosen explicitly.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

/// Key files in one private directory.
#[derive(Debug, Clone)]
pub struct FileStore {
    dir: PathBuf,
}

impl FileStore {
    /// A store in `dir` (created 0700 on first save).
    pub fn new(dir: PathBuf) -> FileStore {
        FileStore { dir }
    }

    fn path(&self, user: &str) -> PathBuf {
        self.dir
            .join(format!("{}.key", hex::encode(user.as_bytes())))
    }

    /// Writes the secret atomically (temp file 0600, fsync, rename).
    pub fn save(&self, user: &str, secret: &[u8]) -> std::io::Result<()> {
        crate::paths::ensure_private_dir(&self.dir).map_err(std::io::Error::other)?;
        let path = self.path(user);
        let tmp = path.with_extension("tmp");
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(secret)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        sync_dir(&self.dir)
    }

    /// Reads the secret; `None` when there is no file.
    pub fn load(&self, user: &str) -> std::io::Result<Option<Zeroizing<Vec<u8>>>> {
        match std::fs::read(self.path(user)) {
            Ok(bytes) => Ok(Some(Zeroizing::new(bytes))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Removes the secret's file.
    pub fn delete(&self, user: &str) -> std::io::Result<()> {
        match std::fs::remove_file(self.path(user)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}
