//! Request handlers: one module per area. Each returns the response or the error that
//! goes back to the client; `Ok` means the change is already durable.

mod auth;
mod directory;
mod groups;

use sotto_protocol::relay::{DeviceRef, RelayError, RelayErrorKind, Request, Response};

use crate::conn::{Conn, Session};
use crate::hub::Key;
use crate::storage::{ReadOutcome, Store, StoreError};

pub(crate) use groups::read_refusal;

fn err(kind: RelayErrorKind, message: impl Into<String>) -> RelayError {
    RelayError::new(kind, message)
}

fn internal(e: StoreError) -> RelayError {
    tracing::error!(cause = %e, "storage failure");
    err(RelayErrorKind::Internal, "storage failure; retry later")
}

impl<S: Store> Conn<S> {
    /// Dispatches one request.
    pub(crate) async fn handle(&mut self, req: Request) -> Result<Response, RelayError> {
        match req {
            Request::Ping => Ok(Response::Pong),
            Request::Challenge => Ok(Response::Challenge {
                nonce: self.fresh_nonce(),
            }),
            Request::Authenticate {
                address,
                device_id,
                public_key,
                signature,
            } => {
                self.authenticate(address, device_id, public_key, signature, false)
                    .await
            }
            Request::Register {
                address,
                device_id,
                public_key,
                signature,
            } => {
                self.authenticate(address, device_id, public_key, signature, true)
                    .await
            }
            other => {
                let session = self.session.clone().ok_or_else(|| {
                    err(
                        RelayErrorKind::Unauthenticated,
                        "authenticate or register first",
                    )
                })?;
                self.handle_authenticated(session, other).await
            }
        }
    }

    async fn handle_authenticated(
        &mut self,
        me: Session,
        req: Request,
    ) -> Result<Response, RelayError> {
        match req {
            Request::LookupAccount { address } => self.lookup(address).await,
            Request::PublishKeyPackages {
                ciphersuite,
                key_packages,
                last_resort,
            } => {
                self.publish(&me, ciphersuite, key_packages, last_resort)
                    .await
            }
            Request::CountKeyPackages { ciphersuite } => self.count(&me, ciphersuite).await,
            Request::ClaimKeyPackage {
                device,
                ciphersuite,
            } => self.claim(&me, device, ciphersuite).await,
            Request::PostMailbox {
                post_id,
                recipients,
                payload,
            } => self.post_mailbox(&me, post_id, recipients, payload).await,
            Request::SubscribeMailbox { device, after } => {
                owner_only(&me, &device)?;
                self.reg.watch(Key::Mailbox(me.key));
                self.mailbox_cursor = Some(after);
                Ok(Response::Ok)
            }
            Request::AckMailbox { device, up_to } => {
                owner_only(&me, &device)?;
                self.shared
                    .store
                    .ack_mailbox(me.key, up_to)
                    .await
                    .map_err(internal)?;
                Ok(Response::Ok)
            }
            Request::CreateGroup { group_id } => self.create_group(&me, group_id).await,
            Request::PostGroup {
                post_id,
                group_id,
                message,
                added,
                removed,
            } => {
                self.post_group(&me, post_id, group_id, message, added, removed)
                    .await
            }
            Request::ReadGroup {
                group_id,
                after,
                limit,
            } => self.read_group(&me, group_id, after, limit).await,
            Request::SubscribeGroup { group_id, after } => {
                self.subscribe_group(&me, group_id, after).await
            }
            Request::UnsubscribeGroup { group_id } => {
                self.group_subs.remove(&group_id);
                self.reg.unwatch(&Key::Group(group_id));
                Ok(Response::Ok)
            }
            Request::AckGroup { group_id, seq } => {
                self.shared
                    .store
                    .ack_group(group_id, me.key, seq)
                    .await
                    .map_err(internal)?;
                Ok(Response::Ok)
            }
            Request::GroupInfo { group_id } => self.group_info(&me, group_id).await,
            Request::Authenticate { .. } | Request::Register { .. } => Err(err(
                RelayErrorKind::AlreadyAuthenticated,
                "this connection is already authenticated",
            )),
            _ => Err(err(RelayErrorKind::BadRequest, "request not supported")),
        }
    }
}

fn local_only(me: &Session) -> Result<(), RelayError> {
    if me.local {
        Ok(())
    } else {
        Err(err(
            RelayErrorKind::Forbidden,
            "only a device registered on this relay has a mailbox and key packages here",
        ))
    }
}

fn owner_only(me: &Session, device: &DeviceRef) -> Result<(), RelayError> {
    local_only(me)?;
    if device.address == me.address && device.device_id == me.device_id {
        Ok(())
    } else {
        Err(err(
            RelayErrorKind::Forbidden,
            "only the owning device reads or acknowledges a mailbox",
        ))
    }
}

/// Maps a read outcome that is not a list of entries to its error.
fn refusal(outcome: &ReadOutcome) -> RelayError {
    match outcome {
        ReadOutcome::Gap { oldest_seq } => err(
            RelayErrorKind::Gap {
                oldest_seq: *oldest_seq,
            },
            format!("entries were dropped by retention; the oldest retained is {oldest_seq}"),
        ),
        ReadOutcome::NotMember => err(RelayErrorKind::Forbidden, "not a member of this group"),
        ReadOutcome::UnknownGroup => err(RelayErrorKind::UnknownGroup, "no such group"),
        ReadOutcome::Entries { .. } => err(RelayErrorKind::Internal, "unexpected entries"),
    }
}
