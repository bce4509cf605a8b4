//! SQLCipher: keying every connection, and migrating a plain database to an encrypted one.
//!
//! Every page of the database and of its WAL is encrypted (AES-256, HMAC per page) under
//! a raw 256-bit key; the header too, so the file does not even say it is SQLite.
//! A plain database left by an older sottod is exported into `<db>.encrypting`, which is
//! fsynced and renamed `<db>.migrated` once complete; then the plain file and its WAL are
//! overwritten with zeros and removed, and `<db>.migrated` takes the database's name.
//! A start that finds `<db>.migrated` finishes that last step; one that finds a leftover
//! `<db>.encrypting` (a crash mid-export) discards it and exports again.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use super::StoreError;
use crate::keys::DbKey;

/// Keys a freshly opened connection; must run before any other statement.
pub fn key(conn: &Connection, key: &DbKey) -> rusqlite::Result<()> {
    // SQLCipher would print its own decryption errors to stderr; ours say more.
    conn.execute_batch("PRAGMA cipher_log_level = NONE;")?;
    let sql = zeroize::Zeroizing::new(format!("PRAGMA key = \"{}\";", key.sql_literal().as_str()));
    conn.execute_batch(&sql)
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Finishes or redoes an interrupted migration, then migrates `path` if it is plain.
pub fn migrate_if_plain(path: &Path, key: &DbKey) -> Result<(), StoreError> {
    let io = |what: &'static str, p: &Path, e: std::io::Error| {
        StoreError::Decode(format!("{what} {}: {e}", p.display()))
    };
    let migrated = sibling(path, ".migrated");
    if migrated.exists() {
        tracing::warn!("finishing an interrupted encryption of the database");
        return finish(path, &migrated);
    }
    let partial = sibling(path, ".encrypting");
    for p in [
        partial.clone(),
        sibling(&partial, "-wal"),
        sibling(&partial, "-journal"),
    ] {
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io("cannot remove", &p, e));
            }
            _ => {}
        }
    }
    match crate::keys::database::inspect(path) {
        Ok(crate::keys::database::DbFile::Plain) => {}
        Ok(_) => return Ok(()),
        Err(e) => return Err(io("cannot read", path, e)),
    }
    tracing::info!(path = %path.display(), "encrypting the plain database");
    export(path, &partial, key)?;
    sync_file(&partial).map_err(|e| io("cannot sync", &partial, e))?;
    std::fs::rename(&partial, &migrated).map_err(|e| io("cannot rename", &partial, e))?;
    sync_parent(path).map_err(|e| io("cannot sync the directory of", path, e))?;
    finish(path, &migrated)
}

/// Exports the plain database at `path` into a new encrypted one at `to`. The plain WAL is
/// kept reachable through a hard link while the connection closes (SQLite unlinks it), so
/// its contents can be overwritten afterwards.
fn export(path: &Path, to: &Path, key: &DbKey) -> Result<(), StoreError> {
    let classify = |e| super::classify(path, e);
    let wal = sibling(path, "-wal");
    let wal_keep = sibling(path, "-wal.wipe");
    let _ = std::fs::remove_file(&wal_keep);
    {
        let plain = Connection::open_with_flags(
            path,
            // CREATE: the attached encrypted file is created with the main file's flags.
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| StoreError::Open {
            path: path.to_owned(),
            source,
        })?;
        plain
            .busy_timeout(std::time::Duration::from_secs(5))
            .map_err(classify)?;
        let target = to
            .to_str()
            .ok_or_else(|| StoreError::Decode(format!("the path {} is not UTF-8", to.display())))?;
        plain
            .execute(
                "ATTACH DATABASE ?1 AS encrypted KEY ?2",
                rusqlite::params![target, key.sql_literal().as_str()],
            )
            .map_err(classify)?;
        plain
            .query_row("SELECT sqlcipher_export('encrypted')", [], |_| Ok(()))
            .map_err(classify)?;
        let version: i64 = plain
            .query_row("PRAGMA main.user_version", [], |r| r.get(0))
            .map_err(classify)?;
        plain
            .execute_batch(&format!("PRAGMA encrypted.user_version = {version}"))
            .map_err(classify)?;
        plain
            .execute_batch("DETACH DATABASE encrypted")
            .map_err(classify)?;
        if wal.exists() {
            std::fs::hard_link(&wal, &wal_keep)
                .map_err(|e| StoreError::Decode(format!("cannot link {}: {e}", wal.display())))?;
        }
    }
    if wal_keep.exists() {
        wipe(&wal_keep)
            .map_err(|e| StoreError::Decode(format!("cannot wipe {}: {e}", wal.display())))?;
    }
    Ok(())
}

/// Overwrites the plain files with zeros, removes them, and moves `migrated` into place.
fn finish(path: &Path, migrated: &Path) -> Result<(), StoreError> {
    for p in [
        path.to_owned(),
        sibling(path, "-wal"),
        sibling(path, "-shm"),
        sibling(path, "-journal"),
        sibling(path, "-wal.wipe"),
    ] {
        if p.exists() {
            wipe(&p)
                .map_err(|e| StoreError::Decode(format!("cannot wipe {}: {e}", p.display())))?;
        }
    }
    std::fs::rename(migrated, path)
        .map_err(|e| StoreError::Decode(format!("cannot rename {}: {e}", migrated.display())))?;
    sync_parent(path)
        .map_err(|e| StoreError::Decode(format!("cannot sync {}: {e}", path.display())))?;
    tracing::info!(path = %path.display(), "the database is now encrypted; the plain copy was overwritten and removed");
    Ok(())
}

/// Overwrites `path` with zeros over its whole length, syncs, and removes it.
///
/// On a copy-on-write or flash filesystem the old blocks may survive elsewhere on the
/// device; docs/threat-model.md says so.
fn wipe(path: &Path) -> std::io::Result<()> {
    let len = std::fs::metadata(path)?.len();
    let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
    let zeros = vec![0u8; 64 * 1024];
    let mut left = len;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        f.write_all(&zeros[..n])?;
        left -= n as u64;
    }
    f.sync_all()?;
    drop(f);
    std::fs::remove_file(path)
}

fn sync_file(path: &Path) -> std::io::Result<()> {
    std::fs::File::open(path)?.sync_all()
}

fn sync_parent(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::File::open(dir)?.sync_all(),
        _ => Ok(()),
    }
}
