//! Authentication and registration.

use ed25519_dalek::{Signature, VerifyingKey};
use sotto_protocol::relay::{
    InstallId, Principal, RelayError, RelayErrorKind, Response, auth_message,
};

use super::{err, internal};
use crate::conn::{Conn, Session};
use crate::hub::Key;
use crate::invite::Invite;
use crate::net::{parse_address, valid_device_id};
use crate::storage::{InstallOutcome, InviteUse, RegisterOutcome, Store};
use crate::unix_now;

/// Which install speaks, and whether it takes the device over.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Install {
    pub id: InstallId,
    pub take_over: bool,
}

/// What an authentication request asks for.
#[derive(Debug)]
pub(crate) enum Mode {
    /// Prove a key (a registered local device, or a foreign principal).
    Authenticate,
    /// Register a local address, with an invitation where the relay is invite-only.
    Register {
        /// The invitation token, if one was given.
        invite: Option<String>,
    },
}

impl<S: Store> Conn<S> {
    pub(super) async fn authenticate(
        &mut self,
        address: String,
        device_id: String,
        public_key: Principal,
        install: Install,
        signature: Vec<u8>,
        mode: Mode,
    ) -> Result<Response, RelayError> {
        if self.session.is_some() {
            return Err(err(
                RelayErrorKind::AlreadyAuthenticated,
                "this connection is already authenticated",
            ));
        }
        // The challenge is single-use: whatever happens next, it is gone.
        let nonce = self.nonce.take().ok_or_else(|| {
            err(
                RelayErrorKind::BadProof,
                "no unused challenge on this connection; request a new one",
            )
        })?;
        let parsed = parse_address(&address).ok_or_else(|| {
            err(
                RelayErrorKind::InvalidAddress,
                format!("{address:?} is not an address name@host[:port]"),
            )
        })?;
        if !valid_device_id(&device_id) {
            return Err(err(
                RelayErrorKind::InvalidAddress,
                "device id must be 1 to 64 of [A-Za-z0-9._-]",
            ));
        }
        let url = self.shared.config.public_url.as_str();
        let message = auth_message(
            url,
            &nonce,
            &address,
            &device_id,
            &install.id,
            install.take_over,
        );
        let bad = || {
            err(
                RelayErrorKind::BadProof,
                format!("signature does not verify for this connection's challenge and {url}"),
            )
        };
        let key = VerifyingKey::from_bytes(&public_key).map_err(|_| bad())?;
        let sig = Signature::from_slice(&signature).map_err(|_| bad())?;
        key.verify_strict(&message, &sig).map_err(|_| bad())?;

        let local_host = self.shared.config.public_url.authority();
        let is_local = parsed.host == local_host;
        let (name, host) = (parsed.name.to_owned(), parsed.host.to_owned());
        if let Mode::Register { invite } = mode {
            if !is_local {
                return Err(err(
                    RelayErrorKind::InvalidAddress,
                    format!("this relay registers addresses @{local_host}, not @{host}"),
                ));
            }
            let now = unix_now();
            let outcome = match (&self.shared.config.invite_key, invite) {
                (None, _) => self
                    .shared
                    .store
                    .register(name, device_id.clone(), public_key, now)
                    .await
                    .map_err(internal)?,
                (Some(_), None) => {
                    // Re-registering an existing device needs no invitation.
                    let known = self
                        .shared
                        .store
                        .device_key(name, device_id.clone())
                        .await
                        .map_err(internal)?;
                    if known != Some(public_key) {
                        return Err(err(
                            RelayErrorKind::InviteRequired,
                            "this relay is invite-only: registering needs an invitation from its admin",
                        ));
                    }
                    RegisterOutcome::AlreadyRegistered
                }
                (Some(admin), Some(token)) => {
                    let invite = Invite::verify(&token, admin, now)
                        .map_err(|e| err(RelayErrorKind::InviteInvalid, e.to_string()))?;
                    self.shared
                        .store
                        .register_invited(
                            name,
                            device_id.clone(),
                            public_key,
                            now,
                            InviteUse {
                                nonce: invite.nonce,
                                max_uses: invite.uses,
                            },
                        )
                        .await
                        .map_err(internal)?
                }
            };
            match outcome {
                RegisterOutcome::NameTaken => {
                    return Err(err(
                        RelayErrorKind::NameTaken,
                        format!(
                            "{address} is registered to another key, or this key to another address"
                        ),
                    ));
                }
                RegisterOutcome::InviteUsedUp => {
                    return Err(err(
                        RelayErrorKind::InviteInvalid,
                        "the invitation has been used up",
                    ));
                }
                RegisterOutcome::Registered | RegisterOutcome::AlreadyRegistered => {}
            }
            tracing::info!(%address, %device_id, "registered");
        } else if is_local {
            let registered = self
                .shared
                .store
                .device_key(name, device_id.clone())
                .await
                .map_err(internal)?;
            match registered {
                None => {
                    return Err(err(
                        RelayErrorKind::UnknownAccount,
                        format!("{address}/{device_id} is not registered here"),
                    ));
                }
                Some(k) if k != public_key => {
                    return Err(err(
                        RelayErrorKind::BadProof,
                        format!("the key is not the one registered for {address}/{device_id}"),
                    ));
                }
                Some(_) => {}
            }
        }
        if is_local {
            // The key is proven and registered here: now the install.
            let outcome = self
                .shared
                .store
                .claim_install(public_key, install.id, install.take_over, unix_now())
                .await
                .map_err(internal)?;
            match outcome {
                InstallOutcome::Active => {}
                InstallOutcome::TookOver { previous } => tracing::info!(
                    %address,
                    %device_id,
                    had_install = previous.is_some(),
                    "an install took the device over; the others are revoked"
                ),
                InstallOutcome::Revoked => {
                    return Err(revoked(&address, &device_id));
                }
            }
            self.reg.watch(Key::Device(public_key));
        }
        self.session = Some(Session {
            key: public_key,
            address,
            device_id,
            local: is_local,
            install_id: install.id,
        });
        Ok(Response::Authenticated { local: is_local })
    }
}

/// The refusal for an install that is not the device's active one.
pub(crate) fn revoked(address: &str, device_id: &str) -> RelayError {
    err(
        RelayErrorKind::SessionRevoked,
        format!(
            "{address}/{device_id}: another install (a restored backup) took the account over; this install is revoked"
        ),
    )
}
