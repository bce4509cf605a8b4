//! `account.create` and `account.info`: the device identity.

use std::sync::Arc;

use rusqlite::{OptionalExtension as _, params};
use sotto_protocol::api::{Account, AccountState, EventPayload, KeyStoreKind};
use sotto_protocol::relay::RelayErrorKind;
use sotto_protocol::{Address, ErrorKind, RelayUrl};

use super::{ApiError, Identity, Service};
use crate::StartError;
use crate::config::Config;
use crate::keys::{self, DeviceKey, KeyError, KeyStore};
use crate::store::{Store, StoreError};

struct AccountRow {
    address: String,
    device_id: String,
    relay: String,
    key_store: String,
    public_key: Vec<u8>,
}

fn read_account(conn: &rusqlite::Connection) -> Result<Option<AccountRow>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT address, device_id, relay, key_store, public_key FROM account WHERE id = 1",
            [],
            |r| {
                Ok(AccountRow {
                    address: r.get(0)?,
                    device_id: r.get(1)?,
                    relay: r.get(2)?,
                    key_store: r.get(3)?,
                    public_key: r.get(4)?,
                })
            },
        )
        .optional()?)
}

/// Loads the account and its key at start; the key store must answer or the daemon stops.
pub(super) async fn load_identity(
    store: &Store,
    config: &Config,
) -> Result<Option<Identity>, StartError> {
    let Some(row) = store.call(|db| read_account(db.conn())).await? else {
        return Ok(None);
    };
    let kind = KeyStoreKind::parse(&row.key_store).ok_or_else(|| {
        StoreError::Decode(format!(
            "unknown key store {:?} in the account",
            row.key_store
        ))
    })?;
    if kind != config.key_store {
        tracing::warn!(
            account_store = %kind,
            configured = %config.key_store,
            "the account's key lives in the {kind} store; the configured key_store applies to new accounts only"
        );
    }
    let address = Address::parse(&row.address).map_err(|e| StoreError::Decode(e.to_string()))?;
    let user = keys::entry_user(&row.address, &row.device_id);
    let key_store = KeyStore::open(kind, config.data_dir.clone()).await?;
    let key = key_store.load(&user).await?;
    if key.public_key()[..] != row.public_key[..] {
        return Err(KeyError::Invalid {
            store: kind,
            user,
            reason: "it does not match the account's public key".into(),
        }
        .into());
    }
    let account = Account {
        address,
        device_id: row.device_id,
        fingerprint: key.fingerprint(),
        relay: row.relay,
        key_store: kind,
        state: AccountState::Active,
    };
    Ok(Some(Identity {
        account,
        key: Arc::new(key),
    }))
}

impl Service {
    /// `account.info`.
    pub async fn account_info(&self) -> Result<Account, ApiError> {
        self.identity
            .read()
            .await
            .as_ref()
            .map(|i| self.with_state(i.account.clone()))
            .ok_or_else(no_account)
    }

    /// The loaded identity, or `no_account`.
    pub async fn identity(&self) -> Result<Identity, ApiError> {
        self.identity.read().await.clone().ok_or_else(no_account)
    }

    /// The loaded identity of an install that is not revoked: for state-changing calls
    /// (`no_account`, `session_revoked`).
    pub async fn active_identity(&self) -> Result<Identity, ApiError> {
        let identity = self.identity().await?;
        self.ensure_active()?;
        Ok(identity)
    }

    /// `account.create` without an invitation.
    pub async fn account_create(&self, name: &str, relay: &str) -> Result<Account, ApiError> {
        self.account_create_invited(name, relay, None).await
    }

    /// `account.create`: registers a new device key with the relay (with `invite` on an
    /// invite-only relay), stores the key in the configured key store and the account row,
    /// and publishes key packages.
    pub async fn account_create_invited(
        &self,
        name: &str,
        relay: &str,
        invite: Option<&str>,
    ) -> Result<Account, ApiError> {
        let mut slot = self.identity.write().await;
        if let Some(existing) = slot.as_ref() {
            return Err(ApiError::new(
                ErrorKind::AccountExists,
                format!(
                    "this device already has the account {}",
                    existing.account.address
                ),
            )
            .with("address", existing.account.address.to_string()));
        }
        let relay_url = RelayUrl::parse(relay, false)
            .map_err(|e| ApiError::new(ErrorKind::InvalidAddress, e.to_string()))?;
        let address = Address::new(name, relay_url.host().clone())
            .map_err(|e| ApiError::new(ErrorKind::InvalidAddress, e.to_string()))?;
        let kind = self.config.key_store;
        let key_store = self.open_key_store(kind).await?;
        let key = Arc::new(DeviceKey::generate());
        if self.config.ephemeral {
            lock_in_memory(&key);
        }
        let device_id = hex::encode(rand::random::<[u8; 8]>());
        let install_hex = crate::relay::install::new_install_id();
        let install_id: sotto_protocol::relay::InstallId = hex::decode(&install_hex)
            .ok()
            .and_then(|b| b.try_into().ok())
            .unwrap_or_default();
        // Register first: a taken name or an unreachable relay fails the call with nothing
        // stored anywhere.
        let creds = crate::relay::Credentials {
            address: address.to_string(),
            device_id: device_id.clone(),
            key: key.clone(),
            invite: invite.map(str::to_owned),
            install_id,
            take_over: Arc::default(),
        };
        let (pushes, _ignored) = tokio::sync::mpsc::unbounded_channel();
        let conn = crate::relay::RelayConn::connect(&relay_url, &creds, true, pushes)
            .await
            .map_err(|e| match e {
                crate::relay::RelayCallError::Refused(r) if r.kind.name() == "name_taken" => {
                    ApiError::new(
                        ErrorKind::AccountExists,
                        format!("the name {name} is taken on {relay_url}"),
                    )
                }
                crate::relay::RelayCallError::Refused(r)
                    if r.kind == RelayErrorKind::InviteRequired =>
                {
                    ApiError::new(
                        ErrorKind::InviteRequired,
                        format!("{relay_url} is invite-only: ask its admin for an invitation and give it with --invite"),
                    )
                }
                crate::relay::RelayCallError::Refused(r)
                    if r.kind == RelayErrorKind::InviteInvalid =>
                {
                    ApiError::new(
                        ErrorKind::InviteInvalid,
                        format!("{relay_url} refused the invitation: {}", r.message),
                    )
                }
                other => super::contacts::relay_error(other),
            })?;
        let user = keys::entry_user(&address.to_string(), &device_id);
        key_store.save(&user, &key).await?;
        let account = Account {
            address: address.clone(),
            device_id: device_id.clone(),
            fingerprint: key.fingerprint(),
            relay: relay_url.to_string(),
            key_store: kind,
            state: AccountState::Active,
        };
        let row_account = account.clone();
        let public_key = key.public_key();
        let kp_key = key.clone();
        let stored = self
            .store
            .call(move |db| {
                db.write(|tx| {
                    tx.conn().execute(
                        "INSERT INTO account (id, address, device_id, relay, key_store, public_key, created_at)
                         VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6)",
                        params![
                            row_account.address.to_string(),
                            row_account.device_id,
                            row_account.relay,
                            row_account.key_store.as_str(),
                            &public_key[..],
                            crate::clock::now_rfc3339()
                        ],
                    )?;
                    crate::relay::install::record_new(tx.conn(), &install_hex)?;
                    let mut batches = Vec::new();
                    for suite in crate::mls::SUPPORTED_CIPHERSUITES.iter().copied() {
                        batches.push(crate::engine::keypackages::generate(
                            tx.conn(),
                            &kp_key,
                            &row_account.address.to_string(),
                            &row_account.device_id,
                            suite,
                            crate::mls::KEY_PACKAGE_BATCH,
                            true,
                        )?);
                    }
                    tx.emit(EventPayload::AccountCreated {
                        account: row_account.clone(),
                    })?;
                    Ok(batches)
                })
            })
            .await;
        let batches = match stored {
            Ok(b) => b,
            Err(e) => {
                if let Err(cleanup) = key_store.delete(&user).await {
                    tracing::warn!(cause = %cleanup, "could not remove the key of the failed account");
                }
                return Err(e.into());
            }
        };
        if let Err(e) = crate::engine::keypackages::publish(&conn, batches).await {
            tracing::warn!(cause = %e, "publishing key packages failed; the daemon retries in the background");
        }
        drop(conn);
        tracing::info!(address = %account.address, key_store = %kind, "account created");
        let identity = Identity {
            account: account.clone(),
            key,
        };
        self.start_engine(&identity).await?;
        *slot = Some(identity);
        Ok(account)
    }
}

pub(super) fn no_account() -> ApiError {
    ApiError::new(
        ErrorKind::NoAccount,
        "this device has no account yet: run `sotto account create --relay RELAY NAME`",
    )
}

/// Locks the pages holding `key` into RAM (`mlock`) so an ephemeral daemon's key never
/// reaches swap, where RLIMIT_MEMLOCK allows; they stay locked until the process exits.
/// Only these pages: `mlockall(MCL_FUTURE)` would make later allocations fail at the limit.
fn lock_in_memory(key: &Arc<DeviceKey>) {
    let ptr = Arc::as_ptr(key).cast::<u8>();
    match region::lock(ptr, std::mem::size_of::<DeviceKey>()) {
        Ok(guard) => {
            // Never unlocked: the key lives as long as the daemon.
            std::mem::forget(guard);
            tracing::debug!("device key pages locked in memory");
        }
        Err(e) => {
            tracing::info!(cause = %e, "could not mlock the device key (RLIMIT_MEMLOCK?); it may be swapped")
        }
    }
}
