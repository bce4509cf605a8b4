//! Group logs: create, post under the epoch rule, read, subscribe.

use sotto_protocol::relay::{
    PostId, Principal, RelayError, RelayErrorKind, Response, content_type,
};

use super::{Ctx, err, internal, refusal};
use std::future::Future;
use std::sync::Arc;

use crate::conn::{Conn, Session};
use crate::hub::Key;
use crate::metrics::Metrics;
use crate::mls::{read_framing, read_group_info};
use crate::storage::{
    AppendOutcome, CreateOutcome, GroupInfoOutcome, NewGroupEntry, ReadOutcome, Store,
};
use crate::unix_now;

/// Longest accepted group id.
const MAX_GROUP_ID: usize = 256;
/// Most principals in one access-list delta.
const MAX_DELTA: usize = 10_000;
/// Most group subscriptions per connection.
const MAX_SUBSCRIPTIONS: usize = 4096;

/// The error for a read that returned no entries.
pub(crate) fn read_refusal(outcome: &ReadOutcome) -> RelayError {
    refusal(outcome)
}

fn check_group_id(id: &[u8]) -> Result<(), RelayError> {
    if id.is_empty() || id.len() > MAX_GROUP_ID {
        return Err(err(
            RelayErrorKind::BadRequest,
            format!("group ids are 1 to {MAX_GROUP_ID} bytes"),
        ));
    }
    Ok(())
}

impl<S: Store> Ctx<S> {
    pub(super) async fn create_group(
        &self,
        me: &Session,
        group_id: Vec<u8>,
    ) -> Result<Response, RelayError> {
        check_group_id(&group_id)?;
        match self
            .shared
            .store
            .create_group(group_id, me.key, unix_now())
            .await
            .map_err(internal)?
        {
            CreateOutcome::Ok(state) => Ok(Response::Group(state)),
            CreateOutcome::Exists => Err(err(
                RelayErrorKind::GroupExists,
                "a group with this id exists and you are not a member",
            )),
        }
    }

    /// Checks the post (and a commit's GroupInfo) and submits it; the returned future waits
    /// for the outcome.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn post_group(
        &self,
        me: &Session,
        post_id: PostId,
        group_id: Vec<u8>,
        message: Vec<u8>,
        added: Vec<Principal>,
        removed: Vec<Principal>,
        group_info: Option<Vec<u8>>,
        after: Option<PostId>,
    ) -> Result<impl Future<Output = Result<Response, RelayError>> + Send + 'static, RelayError>
    {
        check_group_id(&group_id)?;
        let max = self.shared.config.limits.max_group_message;
        if message.len() > max as usize {
            return Err(err(
                RelayErrorKind::PayloadTooLarge { max_bytes: max },
                format!("group messages are limited to {max} bytes"),
            ));
        }
        let framing = read_framing(&message).map_err(|m| err(RelayErrorKind::BadMessage, m))?;
        if framing.group_id != group_id {
            return Err(err(
                RelayErrorKind::BadMessage,
                "the message's framing names another group",
            ));
        }
        let is_commit = framing.content_type == content_type::COMMIT;
        if !is_commit && (!added.is_empty() || !removed.is_empty()) {
            return Err(err(
                RelayErrorKind::BadRequest,
                "only commits change the access list",
            ));
        }
        if let Some(info) = &group_info {
            if info.len() > max as usize {
                return Err(err(
                    RelayErrorKind::PayloadTooLarge { max_bytes: max },
                    format!("GroupInfos are limited to {max} bytes"),
                ));
            }
            if !is_commit {
                return Err(err(
                    RelayErrorKind::BadRequest,
                    "only a commit comes with a GroupInfo",
                ));
            }
            let (info_group, info_epoch) =
                read_group_info(info).map_err(|m| err(RelayErrorKind::BadMessage, m))?;
            if info_group != group_id || Some(info_epoch) != framing.epoch.checked_add(1) {
                return Err(err(
                    RelayErrorKind::BadMessage,
                    "the GroupInfo is not for this group's next epoch",
                ));
            }
        }
        if added.len() + removed.len() > MAX_DELTA {
            return Err(err(
                RelayErrorKind::BadRequest,
                "access-list delta too large",
            ));
        }
        let pending = self.shared.store.append_group(NewGroupEntry {
            group_id,
            sender: me.key,
            post_id,
            epoch: framing.epoch,
            content_type: framing.content_type,
            message,
            added,
            removed,
            group_info,
            after,
            now: unix_now(),
        });
        let shared = Arc::clone(&self.shared);
        Ok(async move {
            let outcome = pending.await.map_err(internal)?;
            accepted(&shared.metrics, framing.epoch, outcome)
        })
    }

    pub(super) async fn read_group(
        &self,
        me: &Session,
        group_id: Vec<u8>,
        after: u64,
        limit: u32,
    ) -> Result<Response, RelayError> {
        let limit = limit.clamp(1, self.shared.config.limits.max_entries_per_frame);
        let outcome = self
            .shared
            .store
            .read_group(group_id, me.key, after, limit)
            .await
            .map_err(internal)?;
        match outcome {
            ReadOutcome::Entries {
                mut entries,
                removed_at,
                head_seq,
            } => {
                let budget =
                    (self.shared.config.limits.max_frame_bytes as usize).saturating_sub(4096);
                let mut total = 0usize;
                let mut keep = 0usize;
                for e in &entries {
                    total = total.saturating_add(e.message.len() + 128);
                    if keep > 0 && total > budget {
                        break;
                    }
                    keep += 1;
                }
                entries.truncate(keep);
                Ok(Response::GroupEntries {
                    entries,
                    removed_at,
                    head_seq,
                })
            }
            other => Err(refusal(&other)),
        }
    }

    pub(super) async fn group_info(
        &self,
        me: &Session,
        group_id: Vec<u8>,
    ) -> Result<Response, RelayError> {
        let outcome = self
            .shared
            .store
            .read_group(group_id.clone(), me.key, u64::MAX >> 1, 1)
            .await
            .map_err(internal)?;
        if !matches!(outcome, ReadOutcome::Entries { .. }) {
            return Err(refusal(&outcome));
        }
        let state = self
            .shared
            .store
            .group_state(group_id)
            .await
            .map_err(internal)?
            .ok_or_else(|| err(RelayErrorKind::UnknownGroup, "no such group"))?;
        Ok(Response::Group(state))
    }
}

impl<S: Store> Ctx<S> {
    /// The group's latest GroupInfo, for current members only.
    pub(super) async fn get_group_info(
        &self,
        me: &Session,
        group_id: Vec<u8>,
    ) -> Result<Response, RelayError> {
        check_group_id(&group_id)?;
        match self
            .shared
            .store
            .group_info(group_id, me.key)
            .await
            .map_err(internal)?
        {
            GroupInfoOutcome::Found { epoch, seq, data } => Ok(Response::GroupInfoMessage {
                epoch,
                seq,
                group_info: data,
            }),
            GroupInfoOutcome::None => Err(err(
                RelayErrorKind::UnknownGroup,
                "no commit of this group has carried a GroupInfo yet",
            )),
            GroupInfoOutcome::NotMember => {
                Err(err(RelayErrorKind::Forbidden, "not a member of this group"))
            }
            GroupInfoOutcome::UnknownGroup => {
                Err(err(RelayErrorKind::UnknownGroup, "no such group"))
            }
        }
    }
}

impl<S: Store> Conn<S> {
    pub(super) async fn subscribe_group(
        &mut self,
        me: &Session,
        group_id: Vec<u8>,
        after: u64,
    ) -> Result<Response, RelayError> {
        if self.group_subs.len() >= MAX_SUBSCRIPTIONS && !self.group_subs.contains_key(&group_id) {
            return Err(err(
                RelayErrorKind::BadRequest,
                format!("at most {MAX_SUBSCRIPTIONS} group subscriptions per connection"),
            ));
        }
        // Check access (and the cursor) now, so the answer says what is wrong.
        let outcome = self
            .shared
            .store
            .read_group(group_id.clone(), me.key, after, 1)
            .await
            .map_err(internal)?;
        if !matches!(outcome, ReadOutcome::Entries { .. }) {
            return Err(refusal(&outcome));
        }
        self.reg.watch(Key::Group(group_id.clone()));
        self.group_subs.insert(group_id, after);
        Ok(Response::Ok)
    }
}

fn accepted(
    metrics: &Metrics,
    epoch_of_message: u64,
    outcome: AppendOutcome,
) -> Result<Response, RelayError> {
    match outcome {
        AppendOutcome::Accepted { seq, epoch } => {
            Metrics::inc(&metrics.group_entries_stored);
            Ok(Response::Accepted { seq, epoch })
        }
        AppendOutcome::Conflict {
            current_epoch,
            head_seq,
        } => {
            Metrics::inc(&metrics.conflicts);
            Err(err(
                RelayErrorKind::Conflict {
                    current_epoch,
                    head_seq,
                },
                format!(
                    "message is for epoch {}, the group is at epoch {current_epoch}",
                    epoch_of_message
                ),
            ))
        }
        AppendOutcome::NotMember => {
            Err(err(RelayErrorKind::Forbidden, "not a member of this group"))
        }
        AppendOutcome::UnknownGroup => Err(err(RelayErrorKind::UnknownGroup, "no such group")),
        AppendOutcome::OutOfOrder => Err(err(
            RelayErrorKind::OutOfOrder,
            "the post this one must follow is not in the group's log; post it first",
        )),
    }
}
