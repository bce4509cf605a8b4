//! Where the device key is kept: the Secret Service (default), kernel keyutils, or a 0600
//! file. The entry is service `sotto`, user `<address>/<device_id>`.
//!
//! The chosen store is used or the operation fails with a message that says how to choose
//! another; there is never a silent fallback. The Secret Service and keyutils calls block,
//! so they run on the blocking pool.

pub mod database;
mod device_key;
mod file;
mod worker;

use std::path::PathBuf;
use std::sync::Arc;

use keyring_core::{CredentialStore, Error as KrError};
use sotto_protocol::api::KeyStoreKind;
use zeroize::Zeroizing;

pub use database::{DB_KEY_LEN, DatabaseKeyError, DbKey, KEY_REF_FILE, database_key};
pub use device_key::{DeviceKey, SEED_LEN, fingerprint};
pub use worker::KeyringWorker;

/// The keyring entry's service name.
pub const SERVICE: &str = "sotto";

/// A key store failure.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The store cannot be reached at all.
    #[error("the {store} key store is unavailable: {reason}; {hint}")]
    Unavailable {
        /// Which store.
        store: KeyStoreKind,
        /// What went wrong.
        reason: String,
        /// How to choose another store.
        hint: &'static str,
    },
    /// The store has no key for this device.
    #[error(
        "the {store} key store has no key for {user}; was it deleted? (restore it, or remove the data directory to start over)"
    )]
    Missing {
        /// Which store.
        store: KeyStoreKind,
        /// The entry's user.
        user: String,
    },
    /// The store refused or failed.
    #[error("the {store} key store failed to {op} the key for {user}: {reason}")]
    Failed {
        /// Which store.
        store: KeyStoreKind,
        /// What we tried.
        op: &'static str,
        /// The entry's user.
        user: String,
        /// What the store said.
        reason: String,
    },
    /// The stored key is not a key, or not this account's.
    #[error("the key for {user} in the {store} key store is invalid: {reason}")]
    Invalid {
        /// Which store.
        store: KeyStoreKind,
        /// The entry's user.
        user: String,
        /// What is wrong.
        reason: String,
    },
}

const HINT: &str = "choose another store with key_store = \"secret-service\" | \"keyutils\" | \"file\" in config.toml or SOTTO_KEY_STORE (keyutils keeps the key in kernel memory until reboot; file keeps it in clear in the data directory)";

/// An open key store.
#[derive(Clone)]
pub enum KeyStore {
    /// A keyring-core store (Secret Service or keyutils), owned by its own thread.
    Keyring {
        /// Which kind.
        kind: KeyStoreKind,
        /// The thread that owns the store.
        worker: KeyringWorker,
    },
    /// Files of mode 0600 under `<data>/keys`.
    File(file::FileStore),
    /// `sottod --ephemeral`: nothing is stored; the key lives only in the daemon's memory.
    Memory,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyStore({})", self.kind())
    }
}

impl KeyStore {
    /// Opens the store of `kind`; fails with [`KeyError::Unavailable`] when it cannot be reached.
    pub async fn open(kind: KeyStoreKind, data_dir: PathBuf) -> Result<KeyStore, KeyError> {
        let opened = match kind {
            KeyStoreKind::File => {
                return Ok(KeyStore::File(file::FileStore::new(data_dir.join("keys"))));
            }
            KeyStoreKind::Memory => return Ok(KeyStore::Memory),
            KeyStoreKind::SecretService => {
                KeyringWorker::start(|| {
                    zbus_secret_service_keyring_store::Store::new()
                        .map(|s| s as Arc<CredentialStore>)
                })
                .await
            }
            KeyStoreKind::Keyutils => {
                KeyringWorker::start(|| {
                    linux_keyutils_keyring_store::Store::new().map(|s| s as Arc<CredentialStore>)
                })
                .await
            }
            _ => Err(KrError::NotSupportedByStore(
                "this build does not support it".into(),
            )),
        };
        match opened {
            Ok(worker) => Ok(KeyStore::Keyring { kind, worker }),
            Err(e) => Err(KeyError::Unavailable {
                store: kind,
                reason: describe(&e),
                hint: HINT,
            }),
        }
    }

    /// Which kind of store this is.
    pub fn kind(&self) -> KeyStoreKind {
        match self {
            KeyStore::Keyring { kind, .. } => *kind,
            KeyStore::File(_) => KeyStoreKind::File,
            KeyStore::Memory => KeyStoreKind::Memory,
        }
    }

    /// Stores `key` under `user`.
    pub async fn save(&self, user: &str, key: &DeviceKey) -> Result<(), KeyError> {
        let seed = key.seed();
        self.save_secret(user, &seed[..]).await
    }

    /// Loads the key stored under `user`.
    pub async fn load(&self, user: &str) -> Result<DeviceKey, KeyError> {
        let secret = self.load_secret(user).await?;
        DeviceKey::from_seed(&secret).ok_or_else(|| KeyError::Invalid {
            store: self.kind(),
            user: user.to_owned(),
            reason: format!("expected {SEED_LEN} bytes, found {}", secret.len()),
        })
    }

    /// Stores the raw `secret` under `user` (the device seed, the database key).
    pub async fn save_secret(&self, user: &str, secret: &[u8]) -> Result<(), KeyError> {
        let kind = self.kind();
        match self {
            KeyStore::Memory => Ok(()),
            KeyStore::File(f) => f
                .save(user, secret)
                .map_err(|e| io_failed(kind, "store", user, &e)),
            KeyStore::Keyring { worker, .. } => {
                let u = user.to_owned();
                let secret = Zeroizing::new(secret.to_vec());
                worker
                    .run(move |store| store.build(SERVICE, &u, None)?.set_secret(&secret))
                    .await
                    .map_err(|e| classify(kind, "store", user, &e))
            }
        }
    }

    /// Loads the raw secret stored under `user`.
    pub async fn load_secret(&self, user: &str) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        let kind = self.kind();
        match self {
            KeyStore::Memory => Err(KeyError::Missing {
                store: kind,
                user: user.to_owned(),
            }),
            KeyStore::File(f) => f
                .load(user)
                .map_err(|e| io_failed(kind, "read", user, &e))?
                .ok_or_else(|| KeyError::Missing {
                    store: kind,
                    user: user.to_owned(),
                }),
            KeyStore::Keyring { worker, .. } => {
                let u = user.to_owned();
                let got = worker
                    .run(move |store| store.build(SERVICE, &u, None)?.get_secret())
                    .await;
                Ok(Zeroizing::new(
                    got.map_err(|e| classify(kind, "read", user, &e))?,
                ))
            }
        }
    }

    /// Deletes the key stored under `user` (cleanup after a failed create).
    pub async fn delete(&self, user: &str) -> Result<(), KeyError> {
        let kind = self.kind();
        match self {
            KeyStore::Memory => Ok(()),
            KeyStore::File(f) => f
                .delete(user)
                .map_err(|e| io_failed(kind, "delete", user, &e)),
            KeyStore::Keyring { worker, .. } => {
                let u = user.to_owned();
                worker
                    .run(move |store| store.build(SERVICE, &u, None)?.delete_credential())
                    .await
                    .map_err(|e| classify(kind, "delete", user, &e))
            }
        }
    }
}

fn io_failed(store: KeyStoreKind, op: &'static str, user: &str, e: &std::io::Error) -> KeyError {
    KeyError::Failed {
        store,
        op,
        user: user.to_owned(),
        reason: e.to_string(),
    }
}

/// The entry user of a device: `<address>/<device_id>`.
pub fn entry_user(address: &str, device_id: &str) -> String {
    format!("{address}/{device_id}")
}

fn classify(store: KeyStoreKind, op: &'static str, user: &str, e: &KrError) -> KeyError {
    match e {
        KrError::NoEntry => KeyError::Missing {
            store,
            user: user.to_owned(),
        },
        KrError::NoStorageAccess(_) => KeyError::Unavailable {
            store,
            reason: describe(e),
            hint: HINT,
        },
        _ => KeyError::Failed {
            store,
            op,
            user: user.to_owned(),
            reason: describe(e),
        },
    }
}

/// Describes a keyring error without ever echoing secret bytes (some variants carry them).
fn describe(e: &KrError) -> String {
    match e {
        KrError::PlatformFailure(inner) | KrError::NoStorageAccess(inner) => inner.to_string(),
        KrError::NoEntry => "no such entry".into(),
        KrError::BadEncoding(_) | KrError::BadDataFormat(..) => {
            "the stored data has an unexpected format".into()
        }
        KrError::BadStoreFormat(s) => format!("bad store format: {s}"),
        KrError::TooLong(what, max) => format!("{what} is longer than {max}"),
        KrError::Invalid(what, why) => format!("invalid {what}: {why}"),
        KrError::Ambiguous(v) => format!("{} matching entries", v.len()),
        KrError::NotSupportedByStore(s) => format!("not supported by the store: {s}"),
        _ => "unknown key store error".into(),
    }
}
