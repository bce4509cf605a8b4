//! Conversations: create, list, get, add members — changes are queued in the outbox and
//! completed by the conversation's actor.

use rusqlite::params;
use sotto_protocol::api::{Conversation, EventPayload};
use sotto_protocol::methods::{
    ConversationCreateParams, ConversationMarkReadParams, ConversationMembersParams,
    ConversationRenameParams,
};
use sotto_protocol::{Address, ErrorKind};

use super::{ApiError, Service};
use crate::engine::outbound_payloads::{MembersPayload, RenamePayload};
use crate::mls::{self, Provider};
use crate::model::{self, ConvRow};
use crate::store::StoreError;

/// The distinct addresses of `members` other than `me`, sorted; an error saying `what`
/// when none is left.
fn others(members: &[Address], me: &str, what: &str) -> Result<Vec<String>, ApiError> {
    let mut out: Vec<String> = members
        .iter()
        .map(Address::to_string)
        .filter(|m| m != me)
        .collect();
    out.sort();
    out.dedup();
    if out.is_empty() {
        return Err(ApiError::invalid_params(what.to_owned()));
    }
    Ok(out)
}

fn looks_like_id(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Resolves a `conversation` param: id, then a peer's address (the direct conversation),
/// then a unique name.
pub fn resolve(
    conn: &rusqlite::Connection,
    input: &str,
) -> Result<Result<ConvRow, ApiError>, StoreError> {
    if let Some(row) = model::conversation(conn, input)? {
        return Ok(Ok(row));
    }
    let all = model::conversations(conn)?;
    if let Ok(address) = Address::parse(input) {
        let a = address.to_string();
        let mut direct: Vec<&ConvRow> = all
            .iter()
            .filter(|c| c.kind == "direct" && c.peer.as_deref() == Some(a.as_str()))
            .collect();
        direct.sort_by_key(|c| {
            (
                !matches!(c.state.as_str(), "active" | "pending"),
                c.id.clone(),
            )
        });
        return Ok(direct.first().map(|c| (*c).clone()).ok_or_else(|| {
            ApiError::new(
                ErrorKind::NotFound,
                format!("no direct conversation with {a}"),
            )
            .with("conversation", input)
        }));
    }
    if looks_like_id(input) {
        return Ok(Err(ApiError::new(
            ErrorKind::NotFound,
            format!("no conversation {input}"),
        )
        .with("conversation", input)));
    }
    let named: Vec<&ConvRow> = all
        .iter()
        .filter(|c| c.name.as_deref() == Some(input))
        .collect();
    Ok(match named.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(ApiError::new(
            ErrorKind::NotFound,
            format!("no conversation named {input:?}"),
        )
        .with("conversation", input)),
        many => Err(ApiError::new(
            ErrorKind::Ambiguous,
            format!(
                "{} conversations are named {input:?}; use an id",
                many.len()
            ),
        )
        .with(
            "candidates",
            many.iter().map(|c| c.id.clone()).collect::<Vec<_>>(),
        )),
    })
}

impl Service {
    pub(crate) async fn resolve(&self, input: &str) -> Result<ConvRow, ApiError> {
        let input = input.to_owned();
        self.store
            .call(move |db| resolve(db.conn(), &input))
            .await?
    }

    /// `conversation.list`: the one with the newest activity (a message, a change) first.
    pub async fn conversation_list(&self) -> Result<Vec<Conversation>, ApiError> {
        Ok(self
            .store
            .call(|db| model::conversations_api(db.conn()))
            .await?)
    }

    /// `conversation.mark_read`: moves the read marker forward to `up_to` (default: every
    /// message so far), never backwards; emits `conversation.read` when it moved.
    pub async fn conversation_mark_read(
        &self,
        p: ConversationMarkReadParams,
    ) -> Result<Conversation, ApiError> {
        self.ensure_active()?;
        let row = self.resolve(&p.conversation).await?;
        let up_to = p.up_to.map(|m| m.to_ascii_lowercase());
        self.store
            .call(move |db| {
                db.write(|tx| {
                    let Some(target) = model::read_target(tx.conn(), &row.id, up_to.as_deref())?
                    else {
                        return Ok(Err(ApiError::new(
                            ErrorKind::NotFound,
                            format!(
                                "no message {} in this conversation",
                                up_to.as_deref().unwrap_or_default()
                            ),
                        )
                        .with("up_to", up_to.clone().unwrap_or_default())));
                    };
                    let moved = tx.conn().execute(
                        "UPDATE conversations SET read_position = ?2 WHERE id = ?1 AND read_position < ?2",
                        params![row.id, target as i64],
                    )?;
                    let row = model::conversation(tx.conn(), &row.id)?
                        .ok_or_else(|| StoreError::Decode("conversation vanished".into()))?;
                    let conversation = model::conversation_api(tx.conn(), &row)?;
                    if moved > 0 {
                        tx.emit(EventPayload::ConversationRead {
                            conversation: conversation.clone(),
                        })?;
                    }
                    Ok(Ok(conversation))
                })
            })
            .await?
    }

    /// `conversation.get`.
    pub async fn conversation_get(&self, input: &str) -> Result<Conversation, ApiError> {
        let row = self.resolve(input).await?;
        Ok(self
            .store
            .call(move |db| model::conversation_api(db.conn(), &row))
            .await?)
    }

    /// `conversation.create`: the group is created locally at once; creating it at the
    /// relay, claiming members' key packages, the commit and the Welcomes are queued.
    pub async fn conversation_create(
        &self,
        p: ConversationCreateParams,
    ) -> Result<Conversation, ApiError> {
        self.ensure_active()?;
        // An explicit ciphersuite is checked before anything else: an unknown one is an
        // error whatever else is wrong with the request.
        let suite = match &p.ciphersuite {
            Some(s) => mls::parse_ciphersuite(s).ok_or_else(|| {
                ApiError::invalid_params(format!(
                    "unknown or unsupported ciphersuite {s:?}; supported: {}",
                    mls::supported_names()
                ))
                .with("ciphersuite", s.as_str())
            })?,
            None => self.config.default_ciphersuite,
        };
        let identity = self.identity().await?;
        let engine = self.engine().await?;
        let me = identity.account.address.to_string();
        let members = others(
            &p.members,
            &me,
            "a conversation needs at least one other member",
        )?;
        let name = p.name.clone().filter(|n| !n.trim().is_empty());
        if name.as_ref().is_some_and(|n| n.len() > 256) {
            return Err(ApiError::new(
                ErrorKind::TooLong,
                "a conversation name is at most 256 bytes",
            ));
        }
        let direct = name.is_none() && members.len() == 1;
        if direct {
            // A direct conversation with this peer in this ciphersuite already exists: return
            // it. One in another ciphersuite is never returned in its place; a new one is
            // created (asking for the post-quantum suite must not hand back a classical one).
            let peer = members[0].clone();
            let wanted = u16::from(suite);
            let existing = self
                .store
                .call(move |db| {
                    let rows = model::conversations(db.conn())?;
                    let found = rows
                        .into_iter()
                        .filter(|c| {
                            c.kind == "direct"
                                && c.peer.as_deref() == Some(peer.as_str())
                                && c.ciphersuite == wanted
                                && matches!(c.state.as_str(), "active" | "pending")
                        })
                        .min_by(|a, b| a.id.cmp(&b.id));
                    found
                        .map(|r| model::conversation_api(db.conn(), &r))
                        .transpose()
                })
                .await?;
            if let Some(c) = existing {
                return Ok(c);
            }
        }
        let group_id: [u8; 16] = rand::random();
        let conv_id = hex::encode(group_id);
        let (key, account) = (identity.key.clone(), identity.account.clone());
        let home = account.relay.clone();
        let (id, members_c, name_c) = (conv_id.clone(), members.clone(), name.clone());
        let conversation = self
            .store
            .call(move |db| {
                db.write(|tx| {
                    let provider = Provider::new(tx.conn());
                    let cred = mls::credential(&account.address.to_string(), &account.device_id, &key.public_key());
                    let group = mls::new_group(&provider, key.as_ref(), cred, &group_id, suite, name_c.as_deref())
                        .map_err(StoreError::Decode)?;
                    let peer = direct.then(|| members_c[0].as_str());
                    model::insert_pending_conversation(tx.conn(), &id, name_c.as_deref(), &home, u16::from(suite), peer)?;
                    model::set_members(tx.conn(), &id, &mls::members(&group))?;
                    let payload = serde_json::to_string(&MembersPayload { members: members_c.clone() }).unwrap_or_default();
                    tx.conn().execute(
                        "INSERT INTO outbox (conversation, op, payload, created_at) VALUES (?1, 'create', ?2, ?3)",
                        params![id, payload, crate::clock::now_rfc3339()],
                    )?;
                    let row = model::conversation(tx.conn(), &id)?.ok_or_else(|| StoreError::Decode("conversation vanished".into()))?;
                    model::conversation_api(tx.conn(), &row)
                })
            })
            .await?;
        engine.wake(&conv_id);
        Ok(conversation)
    }

    /// `conversation.add`: queue adding members.
    pub async fn conversation_add(
        &self,
        p: ConversationMembersParams,
    ) -> Result<Conversation, ApiError> {
        self.ensure_active()?;
        let me = self.identity().await?.account.address.to_string();
        let row = self.resolve(&p.conversation).await?;
        if row.kind == "direct" {
            return Err(ApiError::new(
                ErrorKind::DirectConversation,
                "members cannot be added to a direct conversation; create a group",
            ));
        }
        if !matches!(row.state.as_str(), "active" | "pending") {
            return Err(ApiError::new(
                ErrorKind::InvalidState,
                format!("the conversation is {}", row.state),
            ));
        }
        let members = others(&p.members, &me, "no members to add")?;
        let payload = serde_json::to_string(&MembersPayload { members }).unwrap_or_default();
        self.queue_change(&row.id, "add", payload).await
    }
}

impl Service {
    /// Queues a change `op` with `payload` on the conversation `input`.
    async fn queue_change(
        &self,
        input: &str,
        op: &'static str,
        payload: String,
    ) -> Result<Conversation, ApiError> {
        self.identity().await?;
        let engine = self.engine().await?;
        let row = self.resolve(input).await?;
        if !matches!(row.state.as_str(), "active" | "pending") {
            return Err(ApiError::new(
                ErrorKind::InvalidState,
                format!("the conversation is {}", row.state),
            ));
        }
        let id = row.id.clone();
        let conversation = self
            .store
            .call(move |db| {
                db.write(|tx| {
                    tx.conn().execute(
                        "INSERT INTO outbox (conversation, op, payload, created_at) VALUES (?1, ?2, ?3, ?4)",
                        params![id, op, payload, crate::clock::now_rfc3339()],
                    )?;
                    let row = model::conversation(tx.conn(), &id)?.ok_or_else(|| StoreError::Decode("conversation vanished".into()))?;
                    model::conversation_api(tx.conn(), &row)
                })
            })
            .await?;
        engine.wake(&row.id);
        Ok(conversation)
    }

    /// `conversation.remove`: queue removing members (every device of each address).
    pub async fn conversation_remove(
        &self,
        p: ConversationMembersParams,
    ) -> Result<Conversation, ApiError> {
        self.ensure_active()?;
        let me = self.identity().await?.account.address.to_string();
        let row = self.resolve(&p.conversation).await?;
        if row.kind == "direct" {
            return Err(ApiError::new(
                ErrorKind::DirectConversation,
                "members cannot be removed from a direct conversation; leave it instead",
            ));
        }
        if p.members.iter().any(|m| m.to_string() == me) {
            return Err(ApiError::invalid_params(
                "to remove yourself, leave the conversation",
            ));
        }
        let members = others(&p.members, &me, "no members to remove")?;
        let payload = serde_json::to_string(&MembersPayload { members }).unwrap_or_default();
        self.queue_change(&row.id, "remove", payload).await
    }

    /// `conversation.leave`: queue our Remove proposal; another member commits it.
    pub async fn conversation_leave(&self, input: &str) -> Result<Conversation, ApiError> {
        self.ensure_active()?;
        self.queue_change(input, "leave", "{}".into()).await
    }

    /// `conversation.rename`: queue a GroupContext update with the new name.
    pub async fn conversation_rename(
        &self,
        p: ConversationRenameParams,
    ) -> Result<Conversation, ApiError> {
        self.ensure_active()?;
        if p.name.len() > 256 {
            return Err(ApiError::new(
                ErrorKind::TooLong,
                "a conversation name is at most 256 bytes",
            ));
        }
        let row = self.resolve(&p.conversation).await?;
        if row.kind == "direct" {
            return Err(ApiError::new(
                ErrorKind::DirectConversation,
                "a direct conversation has no name",
            ));
        }
        let payload = serde_json::to_string(&RenamePayload {
            name: p.name.trim().to_owned(),
        })
        .unwrap_or_default();
        self.queue_change(&row.id, "rename", payload).await
    }

    /// `conversation.rotate_keys`: queue a self-update of this device's leaf.
    pub async fn conversation_rotate_keys(&self, input: &str) -> Result<Conversation, ApiError> {
        self.ensure_active()?;
        self.queue_change(input, "rotate_keys", "{}".into()).await
    }
}
