//! Account lookup, the key-package directory and mailbox posts.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use sotto_protocol::relay::{
    Account, AccountDevice, DeviceRef, PostId, RelayError, RelayErrorKind, Response,
    credential_identity,
};

use super::{Ctx, err, internal, local_only};
use crate::conn::Session;
use crate::metrics::Metrics;
use crate::mls::{ExpectedKeyPackage, check_key_package};
use crate::net::parse_address;
use crate::storage::{MailboxOutcome, NewMailboxPost, Store};
use crate::unix_now;

/// Most key packages in one publish request.
const MAX_BATCH: usize = 256;
/// Most unclaimed single-use packages a device may keep per ciphersuite.
const MAX_POOL: u32 = 1000;
/// Most recipients of one mailbox post.
const MAX_RECIPIENTS: usize = sotto_protocol::relay::MAX_MAILBOX_RECIPIENTS;

fn unknown_recipient(recipients: &[DeviceRef], i: usize) -> RelayError {
    let (address, device_id) = recipients
        .get(i)
        .map_or(("?", "?"), |r| (r.address.as_str(), r.device_id.as_str()));
    err(
        RelayErrorKind::UnknownRecipient {
            index: u32::try_from(i).unwrap_or(u32::MAX),
        },
        format!("{address}/{device_id} has no mailbox here"),
    )
}

fn rate_limited(wait: std::time::Duration, what: &str) -> RelayError {
    err(
        RelayErrorKind::RateLimited {
            retry_after_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1),
        },
        format!("too many {what}; slow down"),
    )
}

impl<S: Store> Ctx<S> {
    /// Resolves a local `address/device_id` to its key.
    async fn local_device(&self, device: &DeviceRef) -> Result<Option<[u8; 32]>, RelayError> {
        let Some(parsed) = parse_address(&device.address) else {
            return Ok(None);
        };
        if parsed.host != self.shared.config.public_url.authority() {
            return Ok(None);
        }
        self.shared
            .store
            .device_key(parsed.name.to_owned(), device.device_id.clone())
            .await
            .map_err(internal)
    }

    pub(super) async fn lookup(&self, address: String) -> Result<Response, RelayError> {
        let unknown = || {
            err(
                RelayErrorKind::UnknownAccount,
                format!("{address} is not registered here"),
            )
        };
        let parsed = parse_address(&address).ok_or_else(unknown)?;
        if parsed.host != self.shared.config.public_url.authority() {
            return Err(unknown());
        }
        let devices = self
            .shared
            .store
            .devices(parsed.name.to_owned())
            .await
            .map_err(internal)?;
        if devices.is_empty() {
            return Err(unknown());
        }
        Ok(Response::Account(Account {
            address: address.clone(),
            devices: devices
                .into_iter()
                .map(|(device_id, identity_key)| AccountDevice {
                    device_id,
                    identity_key,
                })
                .collect(),
        }))
    }

    pub(super) async fn publish(
        &self,
        me: &Session,
        ciphersuite: u16,
        pool: Vec<Vec<u8>>,
        last_resort: Option<Vec<u8>>,
    ) -> Result<Response, RelayError> {
        local_only(me)?;
        if pool.len() > MAX_BATCH {
            return Err(err(
                RelayErrorKind::BadRequest,
                format!("at most {MAX_BATCH} key packages per request"),
            ));
        }
        let have = self
            .shared
            .store
            .count_key_packages(me.key, ciphersuite, unix_now())
            .await
            .map_err(internal)?;
        if have.available.saturating_add(pool.len() as u32) > MAX_POOL {
            return Err(err(
                RelayErrorKind::BadRequest,
                format!(
                    "at most {MAX_POOL} unclaimed key packages per device and ciphersuite ({} stored)",
                    have.available
                ),
            ));
        }
        let identity = credential_identity(&me.address, &me.device_id);
        let shared = std::sync::Arc::clone(&self.shared);
        let key = me.key;
        // Signature checks are CPU work: keep them off the async workers.
        let checked = tokio::task::spawn_blocking(move || {
            let mut want = ExpectedKeyPackage {
                identity: &identity,
                key: &key,
                ciphersuite,
                last_resort: false,
            };
            let mut out = Vec::with_capacity(pool.len());
            for (i, kp) in pool.iter().enumerate() {
                let index = u32::try_from(i).unwrap_or(u32::MAX);
                out.push(check_key_package(&shared.crypto, kp, want).map_err(|m| (index, m))?);
            }
            want.last_resort = true;
            let lr = match &last_resort {
                Some(kp) => {
                    Some(check_key_package(&shared.crypto, kp, want).map_err(|m| (u32::MAX, m))?)
                }
                None => None,
            };
            Ok::<_, (u32, String)>((out, lr))
        })
        .await
        .map_err(|_| err(RelayErrorKind::Internal, "validation task failed"))?;
        let (pool, last_resort) = checked
            .map_err(|(index, message)| err(RelayErrorKind::BadKeyPackage { index }, message))?;
        let count = self
            .shared
            .store
            .publish_key_packages(me.key, ciphersuite, pool, last_resort, unix_now())
            .await
            .map_err(internal)?;
        Ok(Response::KeyPackageCount(count))
    }

    pub(super) async fn count(
        &self,
        me: &Session,
        ciphersuite: u16,
    ) -> Result<Response, RelayError> {
        local_only(me)?;
        let count = self
            .shared
            .store
            .count_key_packages(me.key, ciphersuite, unix_now())
            .await
            .map_err(internal)?;
        Ok(Response::KeyPackageCount(count))
    }

    pub(super) async fn claim(
        &self,
        me: &Session,
        device: DeviceRef,
        ciphersuite: u16,
    ) -> Result<Response, RelayError> {
        let target = self.local_device(&device).await?.ok_or_else(|| {
            err(
                RelayErrorKind::UnknownAccount,
                format!(
                    "{}/{} is not registered here",
                    device.address, device.device_id
                ),
            )
        })?;
        // Shared across relay processes when the backend can (PostgreSQL); else this
        // process's buckets.
        let limits = &self.shared.config.limits;
        for (bucket, key, per_min, what) in [
            (
                "claims_by_claimer",
                me.key,
                limits.claims_per_min_per_claimer,
                "key-package claims by this principal",
            ),
            (
                "claims_by_target",
                target,
                limits.claims_per_min_per_target,
                "key-package claims for this device",
            ),
        ] {
            let shared = self
                .shared
                .store
                .take_shared_token(bucket, key, per_min)
                .await
                .map_err(internal)?;
            let taken = match shared {
                Some(taken) => taken,
                None if bucket == "claims_by_claimer" => {
                    self.shared.claims_by_claimer.take(&key, Instant::now())
                }
                None => self.shared.claims_by_target.take(&key, Instant::now()),
            };
            taken.map_err(|w| rate_limited(w, what))?;
        }
        let claimed = self
            .shared
            .store
            .claim_key_package(target, ciphersuite, unix_now())
            .await
            .map_err(internal)?
            .ok_or_else(|| {
                err(
                    RelayErrorKind::NoKeyPackage,
                    format!("no valid key package for ciphersuite {ciphersuite:#06x}"),
                )
            })?;
        Metrics::inc(&self.shared.metrics.claims);
        if claimed.last_resort {
            Metrics::inc(&self.shared.metrics.last_resort_claims);
        }
        Ok(Response::KeyPackage(claimed))
    }

    /// Checks the post and submits it; the returned future waits for the outcome.
    pub(super) fn post_mailbox(
        &self,
        me: &Session,
        post_id: PostId,
        recipients: Vec<DeviceRef>,
        payload: Vec<u8>,
    ) -> Result<impl Future<Output = Result<Response, RelayError>> + Send + 'static, RelayError>
    {
        let max = self.shared.config.limits.max_mailbox_payload;
        if payload.len() > max as usize {
            return Err(err(
                RelayErrorKind::PayloadTooLarge { max_bytes: max },
                format!("mailbox payloads are limited to {max} bytes"),
            ));
        }
        if recipients.is_empty() || recipients.len() > MAX_RECIPIENTS {
            return Err(err(
                RelayErrorKind::BadRequest,
                format!("a mailbox post needs 1 to {MAX_RECIPIENTS} recipients"),
            ));
        }
        self.shared
            .mailbox_posts
            .take(&me.key, Instant::now())
            .map_err(|w| rate_limited(w, "mailbox posts"))?;
        let local = self.shared.config.public_url.authority();
        let mut names = Vec::with_capacity(recipients.len());
        for (i, r) in recipients.iter().enumerate() {
            match parse_address(&r.address) {
                Some(p) if p.host == local => names.push((p.name.to_owned(), r.device_id.clone())),
                _ => return Err(unknown_recipient(&recipients, i)),
            }
        }
        let n = names.len() as u64;
        let pending = self.shared.store.post_mailbox(NewMailboxPost {
            sender: me.key,
            sender_address: me.address.clone(),
            post_id,
            recipients: names,
            payload,
            now: unix_now(),
        });
        let shared = Arc::clone(&self.shared);
        Ok(async move {
            let seqs = match pending.await.map_err(internal)? {
                MailboxOutcome::Posted(seqs) => seqs,
                MailboxOutcome::UnknownRecipient(i) => {
                    return Err(unknown_recipient(&recipients, i));
                }
            };
            shared
                .metrics
                .mailbox_stored
                .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            Ok(Response::Posted { seqs })
        })
    }
}
