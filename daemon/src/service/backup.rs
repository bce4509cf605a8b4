//! `backup.export` and `backup.import`: everything this install holds, in one file
//! encrypted under a passphrase (see docs/backup.md).
//!
//! The file is an age file (<https://age-encryption.org/v1>) in passphrase (scrypt) mode,
//! so `age -d` decrypts it; inside is a tar archive of `manifest.json`, `device.key` (the
//! 32-byte Ed25519 seed), `sotto.db` (a plain SQLite image of the database, taken in
//! memory) and `config.toml` when there is one. Nothing is written in clear: the archive
//! is encrypted as it is streamed to `<path>.partial`, which is renamed when complete.

use std::io::{Read as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use age::secrecy::SecretString;
use rusqlite::{OptionalExtension as _, params};
use serde::{Deserialize, Serialize};
use sotto_protocol::api::{Account, BackupInfo, EventPayload, KeyStoreKind};
use sotto_protocol::{Address, ErrorKind};
use zeroize::Zeroizing;

use super::{ApiError, Identity, Service};
use crate::keys::{self, DeviceKey};

/// The format name in the manifest.
pub const FORMAT: &str = "sotto-backup";
/// The manifest version this build writes and reads.
pub const VERSION: u32 = 1;
/// The scrypt work factor (log2 N) of new backups: 2^18, 256 MiB, about a second.
pub const WORK_FACTOR: u8 = 18;
/// The largest work factor an import accepts (2^22: 4 GiB; refuses absurd files).
pub const MAX_WORK_FACTOR: u8 = 22;
/// Lowers the work factor of new backups (tests; at least 10). Never raises the import limit.
pub const WORK_FACTOR_ENV: &str = "SOTTO_BACKUP_WORK_FACTOR";
/// The largest database image an import accepts (bytes).
const MAX_IMAGE: u64 = 16 * 1024 * 1024 * 1024;

/// `manifest.json`: what the archive holds (no secret).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// The manifest version ([`VERSION`]).
    pub version: u32,
    /// When the snapshot was taken.
    pub created_at: String,
    /// The sottod that wrote it.
    pub sottod: String,
    /// The account's address.
    pub address: String,
    /// Its device id.
    pub device_id: String,
    /// Its home relay.
    pub relay: String,
    /// The device key's fingerprint.
    pub fingerprint: String,
    /// The newest schema version of the daemon that wrote it.
    pub schema: i64,
}

/// What an archive held, decrypted (in memory).
struct Archive {
    manifest: Manifest,
    seed: Zeroizing<Vec<u8>>,
    image: Zeroizing<Vec<u8>>,
}

fn corrupt(detail: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        ErrorKind::BackupCorrupt,
        format!("the backup file is damaged or not a Sotto backup: {detail}; nothing was changed"),
    )
}

fn bad_passphrase() -> ApiError {
    ApiError::new(
        ErrorKind::BadPassphrase,
        "the passphrase does not open this backup; nothing was changed",
    )
}

fn check_path(path: &str) -> Result<PathBuf, ApiError> {
    let p = PathBuf::from(path);
    if !p.is_absolute() {
        return Err(ApiError::invalid_params(format!(
            "the backup path must be absolute, got {path:?}"
        )));
    }
    Ok(p)
}

fn work_factor() -> u8 {
    std::env::var(WORK_FACTOR_ENV)
        .ok()
        .and_then(|v| v.parse::<u8>().ok())
        .map_or(WORK_FACTOR, |v| v.clamp(10, WORK_FACTOR))
}

fn append(
    tar: &mut tar::Builder<impl std::io::Write>,
    name: &str,
    bytes: &[u8],
    mtime: u64,
) -> std::io::Result<()> {
    let mut header = tar::Header::new_ustar();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o600);
    header.set_mtime(mtime);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, name, bytes)
}

/// Encrypts and writes the archive to `path` (via `<path>.partial`, renamed when complete).
fn write_archive(
    path: &Path,
    passphrase: SecretString,
    manifest: &Manifest,
    seed: &[u8],
    image: &[u8],
    config: Option<&[u8]>,
) -> std::io::Result<u64> {
    let partial = PathBuf::from(format!("{}.partial", path.display()));
    let _ = std::fs::remove_file(&partial);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&partial)?;
    let written = (|| {
        let mut recipient = age::scrypt::Recipient::new(passphrase);
        recipient.set_work_factor(work_factor());
        let encryptor =
            age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
                .map_err(std::io::Error::other)?;
        let out = encryptor.wrap_output(std::io::BufWriter::new(&file))?;
        let mut tar = tar::Builder::new(out);
        let mtime = time::OffsetDateTime::now_utc().unix_timestamp().max(0) as u64;
        let manifest_json = serde_json::to_vec_pretty(manifest).map_err(std::io::Error::other)?;
        append(&mut tar, "manifest.json", &manifest_json, mtime)?;
        append(&mut tar, "device.key", seed, mtime)?;
        append(&mut tar, "sotto.db", image, mtime)?;
        if let Some(config) = config {
            append(&mut tar, "config.toml", config, mtime)?;
        }
        let out = tar.into_inner()?;
        let mut buffered = out.finish()?;
        buffered.flush()?;
        drop(buffered);
        file.sync_all()?;
        std::fs::rename(&partial, path)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        std::fs::metadata(path).map(|m| m.len())
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    written
}

/// Decrypts and unpacks the archive at `path`, entirely in memory.
fn read_archive(path: &Path, passphrase: SecretString) -> Result<Archive, ApiError> {
    let file = std::fs::File::open(path).map_err(|e| {
        ApiError::new(
            ErrorKind::NotFound,
            format!("cannot open the backup {}: {e}", path.display()),
        )
    })?;
    let decryptor = age::Decryptor::new_buffered(std::io::BufReader::new(file))
        .map_err(|e| corrupt(format!("not an age file ({e})")))?;
    if !decryptor.is_scrypt() {
        return Err(corrupt("it is not encrypted to a passphrase"));
    }
    let mut identity = age::scrypt::Identity::new(passphrase);
    identity.set_max_work_factor(MAX_WORK_FACTOR);
    let reader = decryptor
        .decrypt(std::iter::once(&identity as &dyn age::Identity))
        .map_err(|e| match e {
            age::DecryptError::DecryptionFailed
            | age::DecryptError::KeyDecryptionFailed
            | age::DecryptError::NoMatchingKeys => bad_passphrase(),
            age::DecryptError::ExcessiveWork { required, .. } => corrupt(format!(
                "its scrypt work factor {required} is above the limit {MAX_WORK_FACTOR}"
            )),
            other => corrupt(other),
        })?;
    let mut tar = tar::Archive::new(reader);
    let (mut manifest, mut seed, mut image) = (None, None, None);
    let entries = tar.entries().map_err(corrupt)?;
    for entry in entries {
        let mut entry = entry.map_err(corrupt)?;
        let name = entry
            .path()
            .map_err(corrupt)?
            .to_string_lossy()
            .into_owned();
        let size = entry.header().size().map_err(corrupt)?;
        if size > MAX_IMAGE {
            return Err(corrupt(format!("{name} is implausibly large")));
        }
        let mut bytes = Zeroizing::new(Vec::with_capacity(size as usize));
        entry.read_to_end(&mut bytes).map_err(corrupt)?;
        match name.as_str() {
            "manifest.json" => {
                manifest = Some(
                    serde_json::from_slice::<Manifest>(&bytes)
                        .map_err(|e| corrupt(format!("manifest.json: {e}")))?,
                );
            }
            "device.key" => seed = Some(bytes),
            "sotto.db" => image = Some(bytes),
            // config.toml and anything newer: not applied.
            _ => {}
        }
    }
    // The tar reader stops at the end-of-archive blocks; read the rest so a damaged or
    // truncated age stream (its last chunk authenticated separately) is caught here.
    let mut rest = tar.into_inner();
    let mut sink = Vec::new();
    rest.read_to_end(&mut sink).map_err(corrupt)?;
    let manifest = manifest.ok_or_else(|| corrupt("no manifest.json"))?;
    if manifest.format != FORMAT {
        return Err(corrupt(format!("format {:?}", manifest.format)));
    }
    if manifest.version != VERSION {
        return Err(corrupt(format!(
            "manifest version {} (this sottod reads {VERSION}); upgrade sottod",
            manifest.version
        )));
    }
    Ok(Archive {
        manifest,
        seed: seed.ok_or_else(|| corrupt("no device.key"))?,
        image: image.ok_or_else(|| corrupt("no sotto.db"))?,
    })
}

impl Service {
    /// `backup.export`.
    pub async fn backup_export(
        &self,
        path: &str,
        passphrase: &str,
    ) -> Result<BackupInfo, ApiError> {
        let identity = self.identity().await?;
        let path = check_path(path)?;
        if passphrase.is_empty() {
            return Err(ApiError::invalid_params("the passphrase is empty"));
        }
        let image = self.store.call(|db| db.snapshot()).await?;
        let created_at = crate::clock::now_rfc3339();
        let manifest = Manifest {
            format: FORMAT.into(),
            version: VERSION,
            created_at: created_at.clone(),
            sottod: env!("CARGO_PKG_VERSION").into(),
            address: identity.account.address.to_string(),
            device_id: identity.account.device_id.clone(),
            relay: identity.account.relay.clone(),
            fingerprint: identity.account.fingerprint.clone(),
            schema: crate::store::SCHEMA_VERSION,
        };
        let config = crate::paths::config_file()
            .ok()
            .and_then(|p| std::fs::read(p).ok());
        let seed = identity.key.seed();
        let passphrase = SecretString::from(passphrase.to_owned());
        let target = path.clone();
        let bytes = tokio::task::spawn_blocking(move || {
            write_archive(
                &target,
                passphrase,
                &manifest,
                &seed[..],
                &image,
                config.as_deref(),
            )
        })
        .await
        .map_err(|e| ApiError::new(ErrorKind::Internal, e.to_string()))?
        .map_err(|e| {
            ApiError::new(
                ErrorKind::Storage,
                format!("cannot write the backup {}: {e}", path.display()),
            )
        })?;
        tracing::info!(path = %path.display(), bytes, "backup written");
        Ok(BackupInfo {
            path: path.display().to_string(),
            bytes,
            created_at,
        })
    }

    /// `backup.import`: restores a backup on a daemon without an account and takes the
    /// account over (a fresh install id, registered with the home relay by the engine).
    pub async fn backup_import(&self, path: &str, passphrase: &str) -> Result<Account, ApiError> {
        let mut slot = self.identity.write().await;
        if let Some(existing) = slot.as_ref() {
            return Err(ApiError::new(
                ErrorKind::AccountExists,
                format!(
                    "this device already has the account {}; import a backup only into a fresh data directory",
                    existing.account.address
                ),
            )
            .with("address", existing.account.address.to_string()));
        }
        let path = check_path(path)?;
        let passphrase = SecretString::from(passphrase.to_owned());
        let archive = tokio::task::spawn_blocking(move || read_archive(&path, passphrase))
            .await
            .map_err(|e| ApiError::new(ErrorKind::Internal, e.to_string()))??;
        let key = DeviceKey::from_seed(&archive.seed)
            .ok_or_else(|| corrupt("device.key is not a 32-byte key"))?;
        let image = archive.image;
        let checked = tokio::task::spawn_blocking(move || {
            let conn = crate::store::image_connection(&image).map_err(corrupt)?;
            let row: Option<(String, String, String, Vec<u8>)> = conn
                .query_row(
                    "SELECT address, device_id, relay, public_key FROM account WHERE id = 1",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()
                .map_err(corrupt)?;
            let version: i64 = conn
                .query_row(
                    "SELECT COALESCE(MAX(version), 0) FROM sotto_migrations",
                    [],
                    |r| r.get(0),
                )
                .map_err(corrupt)?;
            Ok::<_, ApiError>((conn, row, version))
        })
        .await
        .map_err(|e| ApiError::new(ErrorKind::Internal, e.to_string()))??;
        let (conn, row, version) = checked;
        let (address, device_id, relay, public_key) =
            row.ok_or_else(|| corrupt("its database has no account"))?;
        if public_key != key.public_key() {
            return Err(corrupt(
                "device.key does not match the account's public key",
            ));
        }
        if address != archive.manifest.address || device_id != archive.manifest.device_id {
            return Err(corrupt("the manifest does not match the database"));
        }
        if version > crate::store::SCHEMA_VERSION {
            return Err(ApiError::new(
                ErrorKind::InvalidState,
                format!(
                    "the backup was written by a newer sottod (schema {version}, this one knows {}); upgrade sottod; nothing was changed",
                    crate::store::SCHEMA_VERSION
                ),
            ));
        }
        let parsed =
            Address::parse(&address).map_err(|e| corrupt(format!("address {address:?}: {e}")))?;
        let kind: KeyStoreKind = self.config.key_store;
        let key_store = self.open_key_store(kind).await?;
        let user = keys::entry_user(&address, &device_id);
        key_store.save(&user, &key).await?;
        let install_id = crate::relay::install::new_install_id();
        let account = Account {
            address: parsed,
            device_id: device_id.clone(),
            fingerprint: key.fingerprint(),
            relay: relay.clone(),
            key_store: kind,
            state: sotto_protocol::api::AccountState::Active,
        };
        let row_account = account.clone();
        let restored = self
            .store
            .call(move |db| {
                db.restore(conn, |tx| {
                    tx.execute(
                        "UPDATE account SET key_store = ?1 WHERE id = 1",
                        params![kind.as_str()],
                    )?;
                    crate::relay::install::record_restore(tx, &install_id)?;
                    let queued =
                        crate::relay::install::queue_key_updates(tx, &crate::clock::now_rfc3339())?;
                    tracing::info!(
                        conversations = queued,
                        "key updates queued after the restore"
                    );
                    Ok(())
                })?;
                db.write(|tx| {
                    tx.emit(EventPayload::AccountCreated {
                        account: row_account,
                    })?;
                    Ok(())
                })
            })
            .await;
        if let Err(e) = restored {
            if let Err(cleanup) = key_store.delete(&user).await {
                tracing::warn!(cause = %cleanup, "could not remove the key of the failed import");
            }
            return Err(e.into());
        }
        tracing::info!(address = %account.address, key_store = %kind, "backup restored; taking the account over");
        let identity = Identity {
            account: account.clone(),
            key: Arc::new(key),
        };
        self.start_engine(&identity).await?;
        *slot = Some(identity);
        Ok(account)
    }
}
