//! Request handlers: one module per area. Each returns the response or the error that
//! goes back to the client; `Ok` means the change is already durable.
//!
//! Requests that touch only shared state run through [`Ctx`] and may overlap on one
//! connection (their answers still go out in request order); group and mailbox posts take
//! their place in the commit order when they are started, so one connection's posts are
//! stored in the order it sent them. Requests that change the connection itself
//! (authentication, subscriptions) wait for everything before them.

mod auth;
use auth::{Install, Mode};
mod directory;
mod groups;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use sotto_protocol::relay::{DeviceRef, RelayError, RelayErrorKind, Request, Response};

use crate::conn::{Conn, Session};
use crate::hub::Key;
use crate::server::Shared;
use crate::storage::{ReadOutcome, Store, StoreError};

pub(crate) use groups::read_refusal;

/// A running request.
pub(crate) type Reply = Pin<Box<dyn Future<Output = Result<Response, RelayError>> + Send>>;

/// How a request runs.
pub(crate) enum Plan {
    /// Needs the connection's state: runs after every earlier request has answered.
    Stateful(Request),
    /// Runs beside other requests.
    Concurrent(Reply),
}

/// What the concurrent handlers need (owned, so their futures outlive the borrow).
pub(crate) struct Ctx<S> {
    pub shared: Arc<Shared<S>>,
}

fn err(kind: RelayErrorKind, message: impl Into<String>) -> RelayError {
    RelayError::new(kind, message)
}

fn internal(e: StoreError) -> RelayError {
    if let StoreError::Unavailable { .. } = e {
        // Retryable in the existing wire protocol: clients back off and send the same
        // request again (posts keep their post id, so a retry is never a duplicate).
        tracing::warn!(cause = %e, "storage unavailable");
        return err(
            RelayErrorKind::RateLimited {
                retry_after_ms: 1000,
            },
            "storage temporarily unavailable; retry",
        );
    }
    tracing::error!(cause = %e, "storage failure");
    err(RelayErrorKind::Internal, "storage failure; retry later")
}

fn ready(result: Result<Response, RelayError>) -> Reply {
    Box::pin(std::future::ready(result))
}

impl<S: Store> Conn<S> {
    /// Decides how a request runs.
    pub(crate) fn plan(&self, req: Request) -> Plan {
        match req {
            Request::Challenge
            | Request::Authenticate { .. }
            | Request::Register { .. }
            | Request::RegisterInvited { .. }
            | Request::SubscribeMailbox { .. }
            | Request::SubscribeGroup { .. }
            | Request::UnsubscribeGroup { .. } => Plan::Stateful(req),
            Request::Ping => Plan::Concurrent(ready(Ok(Response::Pong))),
            other => match self.session.clone() {
                None => Plan::Concurrent(ready(Err(unauthenticated()))),
                Some(me) => {
                    let ctx = Ctx {
                        shared: Arc::clone(&self.shared),
                    };
                    Plan::Concurrent(ctx.start(me, other))
                }
            },
        }
    }

    /// Runs a request that changes the connection's state.
    pub(crate) async fn handle_stateful(&mut self, req: Request) -> Result<Response, RelayError> {
        match req {
            Request::Challenge => Ok(Response::Challenge {
                nonce: self.fresh_nonce(),
            }),
            Request::Authenticate {
                address,
                device_id,
                public_key,
                install_id,
                take_over,
                signature,
            } => {
                let install = Install {
                    id: install_id,
                    take_over,
                };
                self.authenticate(
                    address,
                    device_id,
                    public_key,
                    install,
                    signature,
                    Mode::Authenticate,
                )
                .await
            }
            Request::Register {
                address,
                device_id,
                public_key,
                install_id,
                take_over,
                signature,
            } => {
                let install = Install {
                    id: install_id,
                    take_over,
                };
                self.authenticate(
                    address,
                    device_id,
                    public_key,
                    install,
                    signature,
                    Mode::Register { invite: None },
                )
                .await
            }
            Request::RegisterInvited {
                address,
                device_id,
                public_key,
                install_id,
                take_over,
                signature,
                invite,
            } => {
                let install = Install {
                    id: install_id,
                    take_over,
                };
                self.authenticate(
                    address,
                    device_id,
                    public_key,
                    install,
                    signature,
                    Mode::Register {
                        invite: Some(invite),
                    },
                )
                .await
            }
            other => {
                let me = self.session.clone().ok_or_else(unauthenticated)?;
                match other {
                    Request::SubscribeMailbox { device, after } => {
                        owner_only(&me, &device)?;
                        active_only(&self.shared.store, &me).await?;
                        self.reg.watch(Key::Mailbox(me.key));
                        self.mailbox_cursor = Some(after);
                        Ok(Response::Ok)
                    }
                    Request::SubscribeGroup { group_id, after } => {
                        self.subscribe_group(&me, group_id, after).await
                    }
                    Request::UnsubscribeGroup { group_id } => {
                        self.group_subs.remove(&group_id);
                        self.reg.unwatch(&Key::Group(group_id));
                        Ok(Response::Ok)
                    }
                    _ => Err(err(RelayErrorKind::BadRequest, "request not supported")),
                }
            }
        }
    }
}

fn unauthenticated() -> RelayError {
    err(
        RelayErrorKind::Unauthenticated,
        "authenticate or register first",
    )
}

impl<S: Store> Ctx<S> {
    /// Starts a concurrent request. Posts are submitted to storage before this returns.
    fn start(self, me: Session, req: Request) -> Reply {
        match req {
            Request::PostGroup {
                post_id,
                group_id,
                message,
                added,
                removed,
            } => match self.post_group(&me, post_id, group_id, message, added, removed, None, None)
            {
                Ok(reply) => Box::pin(reply),
                Err(e) => ready(Err(e)),
            },
            Request::PostGroupAfter {
                post_id,
                group_id,
                message,
                after,
            } => match self.post_group(
                &me,
                post_id,
                group_id,
                message,
                Vec::new(),
                Vec::new(),
                None,
                Some(after),
            ) {
                Ok(reply) => Box::pin(reply),
                Err(e) => ready(Err(e)),
            },
            Request::PostCommit {
                post_id,
                group_id,
                message,
                added,
                removed,
                group_info,
            } => match self.post_group(
                &me,
                post_id,
                group_id,
                message,
                added,
                removed,
                Some(group_info),
                None,
            ) {
                Ok(reply) => Box::pin(reply),
                Err(e) => ready(Err(e)),
            },
            Request::PostMailbox {
                post_id,
                recipients,
                payload,
            } => match self.post_mailbox(&me, post_id, recipients, payload) {
                Ok(reply) => Box::pin(reply),
                Err(e) => ready(Err(e)),
            },
            other => Box::pin(async move { self.handle(me, other).await }),
        }
    }

    async fn handle(&self, me: Session, req: Request) -> Result<Response, RelayError> {
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
            Request::AckMailbox { device, up_to } => {
                owner_only(&me, &device)?;
                active_only(&self.shared.store, &me).await?;
                self.shared
                    .store
                    .ack_mailbox(me.key, up_to)
                    .await
                    .map_err(internal)?;
                Ok(Response::Ok)
            }
            Request::CreateGroup { group_id } => self.create_group(&me, group_id).await,
            Request::ReadGroup {
                group_id,
                after,
                limit,
            } => self.read_group(&me, group_id, after, limit).await,
            Request::AckGroup { group_id, seq } => {
                self.shared
                    .store
                    .ack_group(group_id, me.key, seq)
                    .await
                    .map_err(internal)?;
                Ok(Response::Ok)
            }
            Request::GroupInfo { group_id } => self.group_info(&me, group_id).await,
            Request::GetGroupInfo { group_id } => self.get_group_info(&me, group_id).await,
            Request::ListGroups => {
                let limit =
                    u32::try_from(sotto_protocol::relay::MAX_LISTED_GROUPS).unwrap_or(u32::MAX);
                let groups = self
                    .shared
                    .store
                    .member_groups(me.key, limit)
                    .await
                    .map_err(internal)?;
                Ok(Response::Groups { groups })
            }
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

/// Refuses a local device's install that is no longer the active one (its connection is
/// being closed; this covers the moment before the close).
async fn active_only<S: Store>(store: &S, me: &Session) -> Result<(), RelayError> {
    if !me.local {
        return Ok(());
    }
    match store.active_install(me.key).await.map_err(internal)? {
        Some(active) if active != me.install_id => Err(auth::revoked(&me.address, &me.device_id)),
        _ => Ok(()),
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
