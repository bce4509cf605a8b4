//! The database key: a random 256-bit SQLCipher key, kept in the same kind of key store as
//! the device key.
//!
//! The database cannot say which store holds its key (it is encrypted), so a small plain
//! file beside it, [`KEY_REF_FILE`], names the store and the entry. It holds no secret.
//! A missing key, a locked or unreachable keyring, or a missing reference is reported as
//! exactly that: the daemon never creates a fresh database over an encrypted one.

use std::io::{Read as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sotto_protocol::api::KeyStoreKind;
use zeroize::Zeroizing;

use super::{KeyError, KeyStore};

/// The length of the raw SQLCipher key.
pub const DB_KEY_LEN: usize = 32;

/// The file (beside the database) naming the store and entry of the database key.
pub const KEY_REF_FILE: &str = "sotto.db.keyref";

/// The first 16 bytes of every plain SQLite database.
pub const PLAIN_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// A raw 256-bit SQLCipher key, zeroized on drop; its `Debug` shows nothing.
#[derive(Clone)]
pub struct DbKey(Zeroizing<[u8; DB_KEY_LEN]>);

impl DbKey {
    /// A fresh key from the OS RNG.
    pub fn generate() -> DbKey {
        DbKey(Zeroizing::new(rand::random()))
    }

    /// A key from its stored bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<DbKey> {
        let bytes: [u8; DB_KEY_LEN] = bytes.try_into().ok()?;
        Some(DbKey(Zeroizing::new(bytes)))
    }

    /// The raw bytes, for the key store only.
    pub fn bytes(&self) -> &[u8] {
        &self.0[..]
    }

    /// The SQLCipher raw-key literal `x'<64 hex digits>'` (no passphrase KDF on open).
    pub fn sql_literal(&self) -> Zeroizing<String> {
        let hex = Zeroizing::new(hex::encode(&self.0[..]));
        Zeroizing::new(format!("x'{}'", hex.as_str()))
    }
}

impl std::fmt::Debug for DbKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DbKey(..)")
    }
}

/// What [`KEY_REF_FILE`] holds.
#[derive(Debug, Serialize, Deserialize)]
struct KeyRef {
    version: u32,
    store: String,
    entry: String,
}

/// Why the database key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseKeyError {
    /// The database is encrypted and its key is not in the store.
    #[error(
        "the database {db} is encrypted and its key is missing: the {store} key store has no entry {entry} (service \"sotto\"); the database cannot be read without it and has been left untouched. Restore that key store entry, or restore a backup with `sotto backup import` into an empty data directory"
    )]
    Missing {
        /// The database file.
        db: PathBuf,
        /// The store named by the key reference.
        store: KeyStoreKind,
        /// The entry's user.
        entry: String,
    },
    /// The key store holding the key cannot be read (locked, unreachable, refused).
    #[error(
        "the database {db} is encrypted and its key is in the {store} key store, which cannot be read now ({reason}); unlock the keyring (or make the store reachable) and start sottod again. The database has been left untouched"
    )]
    Unreadable {
        /// The database file.
        db: PathBuf,
        /// The store named by the key reference.
        store: KeyStoreKind,
        /// What the store said.
        reason: String,
    },
    /// The database is not plain SQLite and nothing names its key.
    #[error(
        "the database {db} is not a plain SQLite file and {keyref} (which names the key store entry of its key) is missing: the file is damaged, or it is encrypted and the reference was deleted. It has been left untouched; restore the reference file or a backup"
    )]
    NoKeyRef {
        /// The database file.
        db: PathBuf,
        /// The missing reference file.
        keyref: PathBuf,
    },
    /// The database is empty or gone but its key exists: it held data once.
    #[error(
        "the database {db} is empty or missing, but {keyref} names its key, so it held data once (a failed copy, a full disk, or a deleted file): sottod will not start over with an empty database in its place. Restore the file or a backup; to really start anew, remove {keyref} too"
    )]
    Emptied {
        /// The database file.
        db: PathBuf,
        /// The reference file naming its key.
        keyref: PathBuf,
    },
    /// The reference file is unreadable or malformed.
    #[error("the database key reference {path} is invalid: {reason}")]
    BadKeyRef {
        /// The reference file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Creating a key for a new (or plain) database failed in the configured store.
    #[error(transparent)]
    Create(#[from] KeyError),
    /// Reading or writing a file failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What we were doing.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
}

/// What the database file is, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbFile {
    /// No file, or an empty one.
    Absent,
    /// A plain SQLite database (to be migrated).
    Plain,
    /// Anything else: encrypted (or damaged).
    Other,
}

/// Classifies the database file at `path` by its header.
pub fn inspect(path: &Path) -> std::io::Result<DbFile> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(DbFile::Absent),
        Err(e) => return Err(e),
    };
    let mut head = [0u8; 16];
    let mut got = 0;
    while got < head.len() {
        let n = f.read(&mut head[got..])?;
        if n == 0 {
            break;
        }
        got += n;
    }
    Ok(match got {
        0 => DbFile::Absent,
        16 if &head == PLAIN_HEADER => DbFile::Plain,
        _ => DbFile::Other,
    })
}

/// Finds (or, for a new or plain database, creates) the key of the database at `db`.
///
/// A new key goes into the `configured` store under `database/<random>` and the reference
/// is written to `<data_dir>/sotto.db.keyref` before the database is created or migrated.
pub async fn database_key(
    configured: KeyStoreKind,
    data_dir: &Path,
    db: &Path,
) -> Result<DbKey, DatabaseKeyError> {
    let keyref_path = data_dir.join(KEY_REF_FILE);
    let file = inspect(db).map_err(|source| DatabaseKeyError::Io {
        what: "cannot read",
        path: db.to_owned(),
        source,
    })?;
    let Some(reference) = read_keyref(&keyref_path)? else {
        return match file {
            DbFile::Absent => create(configured, data_dir, &keyref_path).await,
            // An older sottod's plain database: its key goes where the device key is.
            DbFile::Plain => {
                let kind = account_store(db).unwrap_or(configured);
                create(kind, data_dir, &keyref_path).await
            }
            DbFile::Other => Err(DatabaseKeyError::NoKeyRef {
                db: db.to_owned(),
                keyref: keyref_path,
            }),
        };
    };
    let kind =
        KeyStoreKind::parse(&reference.store).ok_or_else(|| DatabaseKeyError::BadKeyRef {
            path: keyref_path.clone(),
            reason: format!("unknown key store {:?}", reference.store),
        })?;
    let unreadable = |e: KeyError| DatabaseKeyError::Unreadable {
        db: db.to_owned(),
        store: kind,
        reason: match e {
            KeyError::Unavailable { reason, .. } | KeyError::Failed { reason, .. } => reason,
            other => other.to_string(),
        },
    };
    let store = KeyStore::open(kind, data_dir.to_owned())
        .await
        .map_err(unreadable)?;
    match store.load_secret(&reference.entry).await {
        // Found by the faults suite: an emptied file was silently replaced by a new,
        // empty database (the account and history gone without a word).
        Ok(_) if file == DbFile::Absent => Err(DatabaseKeyError::Emptied {
            db: db.to_owned(),
            keyref: keyref_path,
        }),
        Ok(secret) => DbKey::from_bytes(&secret).ok_or_else(|| DatabaseKeyError::BadKeyRef {
            path: keyref_path,
            reason: format!(
                "the {kind} entry {} holds {} bytes, not a {DB_KEY_LEN}-byte database key",
                reference.entry,
                secret.len()
            ),
        }),
        // No database yet and no key: nothing is lost, start anew.
        Err(KeyError::Missing { .. }) if file == DbFile::Absent => {
            create(configured, data_dir, &keyref_path).await
        }
        Err(KeyError::Missing { .. }) => Err(DatabaseKeyError::Missing {
            db: db.to_owned(),
            store: kind,
            entry: reference.entry,
        }),
        Err(e) => Err(unreadable(e)),
    }
}

/// The key store of the account in the plain database at `db`, if it has one.
fn account_store(db: &Path) -> Option<KeyStoreKind> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .ok()?;
    let name: String = conn
        .query_row("SELECT key_store FROM account WHERE id = 1", [], |r| {
            r.get(0)
        })
        .ok()?;
    KeyStoreKind::parse(&name)
}

async fn create(
    kind: KeyStoreKind,
    data_dir: &Path,
    keyref_path: &Path,
) -> Result<DbKey, DatabaseKeyError> {
    let store = KeyStore::open(kind, data_dir.to_owned()).await?;
    let key = DbKey::generate();
    let entry = format!("database/{}", hex::encode(rand::random::<[u8; 8]>()));
    store.save_secret(&entry, key.bytes()).await?;
    let reference = KeyRef {
        version: 1,
        store: kind.as_str().to_owned(),
        entry: entry.clone(),
    };
    if let Err(e) = write_keyref(keyref_path, &reference) {
        if let Err(cleanup) = store.delete(&entry).await {
            tracing::warn!(cause = %cleanup, "could not remove the unused database key");
        }
        return Err(e);
    }
    tracing::info!(key_store = %kind, "created the database key");
    Ok(key)
}

fn read_keyref(path: &Path) -> Result<Option<KeyRef>, DatabaseKeyError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(DatabaseKeyError::Io {
                what: "cannot read",
                path: path.to_owned(),
                source,
            });
        }
    };
    let reference: KeyRef =
        serde_json::from_str(&text).map_err(|e| DatabaseKeyError::BadKeyRef {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if reference.version != 1 {
        return Err(DatabaseKeyError::BadKeyRef {
            path: path.to_owned(),
            reason: format!(
                "version {} (this sottod knows 1); upgrade sottod",
                reference.version
            ),
        });
    }
    Ok(Some(reference))
}

fn write_keyref(path: &Path, reference: &KeyRef) -> Result<(), DatabaseKeyError> {
    let io = |source| DatabaseKeyError::Io {
        what: "cannot write",
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("keyref.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    let mut text = serde_json::to_string_pretty(reference).map_err(|e| io(e.into()))?;
    text.push('\n');
    f.write_all(text.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_literal_is_a_raw_key_and_debug_hides_it() {
        let key = DbKey::from_bytes(&[0xab; 32]).unwrap();
        assert_eq!(
            key.sql_literal().as_str(),
            format!("x'{}'", "ab".repeat(32))
        );
        assert_eq!(format!("{key:?}"), "DbKey(..)");
        assert!(DbKey::from_bytes(&[1; 31]).is_none());
    }

    #[test]
    fn headers_are_classified() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        assert_eq!(inspect(&p).unwrap(), DbFile::Absent);
        std::fs::write(&p, b"").unwrap();
        assert_eq!(inspect(&p).unwrap(), DbFile::Absent);
        std::fs::write(&p, b"SQLite format 3\0rest").unwrap();
        assert_eq!(inspect(&p).unwrap(), DbFile::Plain);
        std::fs::write(&p, [7u8; 100]).unwrap();
        assert_eq!(inspect(&p).unwrap(), DbFile::Other);
    }

    #[tokio::test]
    async fn a_file_store_key_is_created_once_and_found_again() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("sotto.db");
        let a = database_key(KeyStoreKind::File, dir.path(), &db)
            .await
            .unwrap();
        std::fs::write(&db, [9u8; 64]).unwrap();
        let b = database_key(KeyStoreKind::File, dir.path(), &db)
            .await
            .unwrap();
        assert_eq!(a.bytes(), b.bytes());
        let text = std::fs::read_to_string(dir.path().join(KEY_REF_FILE)).unwrap();
        assert!(
            !text.contains(&hex::encode(a.bytes())),
            "no secret in the reference"
        );
        // The key deleted: reported as missing, never a new key over the database.
        for f in std::fs::read_dir(dir.path().join("keys")).unwrap() {
            std::fs::remove_file(f.unwrap().path()).unwrap();
        }
        let err = database_key(KeyStoreKind::File, dir.path(), &db)
            .await
            .unwrap_err();
        assert!(matches!(err, DatabaseKeyError::Missing { .. }), "{err}");
        assert!(err.to_string().contains("its key is missing"), "{err}");
    }
}
