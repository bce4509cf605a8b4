//! Messages: send (queued durably, then encrypted and posted by the actor) and history.

use std::future::Future;
use std::pin::Pin;

use rusqlite::{OptionalExtension as _, params};
use sotto_protocol::ErrorKind;
use sotto_protocol::api::{EventPayload, Message};
use sotto_protocol::methods::{MessageListParams, MessageSendParams};

use super::{ApiError, Service};
use crate::engine::outbound_payloads::MessagePayload;
use crate::model;

/// The most messages one `message.list` returns.
pub const MAX_LIST: u32 = 1000;

/// A `message.send` whose write is queued at the store: resolves once it is durable.
pub type PendingSend = Pin<Box<dyn Future<Output = Result<Message, ApiError>> + Send>>;

impl Service {
    /// `message.send`.
    pub async fn message_send(&self, p: MessageSendParams) -> Result<Message, ApiError> {
        self.message_send_queued(p).await?.await
    }

    /// `message.send` up to the point where its write is queued at the store (so anything
    /// queued afterwards runs after it); the returned future answers once it is durable.
    /// The conversation is resolved inside that write, so consecutive sends queue without
    /// waiting for each other and share a commit (group commit, `store` module doc).
    pub async fn message_send_queued(&self, p: MessageSendParams) -> Result<PendingSend, ApiError> {
        self.ensure_active()?;
        let identity = self.identity().await?;
        let engine = self.engine().await?;
        if p.text.len() as u64 > self.config.max_text_bytes {
            return Err(ApiError::new(
                ErrorKind::TooLong,
                format!(
                    "the text is {} bytes; at most {} are allowed",
                    p.text.len(),
                    self.config.max_text_bytes
                ),
            )
            .with("max_text_bytes", self.config.max_text_bytes));
        }
        if p.text.is_empty() {
            return Err(ApiError::invalid_params("the text is empty"));
        }
        let reply_to = match &p.reply_to {
            Some(r) if r.len() == 32 && r.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Some(r.to_ascii_lowercase())
            }
            Some(r) => {
                return Err(ApiError::invalid_params(format!(
                    "reply_to {r:?} is not a message id"
                )));
            }
            None => None,
        };
        let input = p.conversation.clone();
        let sign_key = identity.key.clone();
        let me = identity.account.address.to_string();
        let idem = p.idempotency_key.clone();
        let text = p.text;
        // Every refusal below is an `Ok(Err(..))` returned before the first change, and an
        // error after it is the database's: the write needs no savepoint of its own.
        let written = self.store.submit_write_atomic(move |tx| {
                    let row = match super::conversations::resolve(tx.conn(), &input)? {
                        Ok(row) => row,
                        Err(e) => return Ok(Err(e)),
                    };
                    if !matches!(row.state.as_str(), "active" | "pending") {
                        return Ok(Err(ApiError::new(
                            ErrorKind::InvalidState,
                            format!("the conversation is {}; nothing can be sent", row.state),
                        )));
                    }
                    let conv = row.id.clone();
                    let active = row.state == "active";
                    let params_json = serde_json::to_string(&(&conv, &text, &reply_to)).unwrap_or_default();
                    // Blocked: a verified member's key changed and was not accepted yet.
                    let blocked: Option<String> = tx
                        .conn()
                        .prepare_cached(
                            "SELECT c.address FROM contacts c JOIN members m ON m.address = c.address
                             WHERE m.conversation = ?1 AND c.blocked_key IS NOT NULL LIMIT 1",
                        )?
                        .query_row([&conv], |r| r.get(0))
                        .optional()?;
                    if let Some(who) = blocked {
                        return Ok(Err(ApiError::new(
                            ErrorKind::IdentityUntrusted,
                            format!("{who}'s identity key changed since you verified it; compare safety numbers (`sotto contact verify`) or accept it (`sotto contact trust`)"),
                        )
                        .with("address", who)));
                    }
                    if let Some(key) = &idem {
                        let found: Option<(String, String, String)> = tx
                            .conn()
                            .query_row(
                                "SELECT params, message_id, conversation FROM idempotency WHERE key = ?1",
                                [key],
                                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                            )
                            .optional()?;
                        if let Some((stored, mid, c)) = found {
                            if stored != params_json {
                                return Ok(Err(ApiError::new(ErrorKind::IdempotencyConflict, "this idempotency key was used with different params")));
                            }
                            return Ok(model::message(tx.conn(), &c, &me, &mid)?
                                .ok_or_else(|| ApiError::new(ErrorKind::NotFound, "the original message is gone")));
                        }
                    }
                    let id_bytes = crate::clock::ordered_id();
                    let id = hex::encode(id_bytes);
                    let now = crate::clock::now_unix();
                    tx.conn().prepare_cached(
                        "INSERT INTO messages (id, conversation, sender, kind, text, reply_to, sent_at, state)
                         VALUES (?1, ?2, ?3, 'text', ?4, ?5, ?6, 'queued')",
                    )?.execute(params![id, conv, me, text, reply_to, crate::clock::now_rfc3339()])?;
                    let payload = serde_json::to_string(&MessagePayload {
                        id: id.clone(),
                        text: text.clone(),
                        reply_to: reply_to.clone(),
                        sent_at: now,
                    })
                    .unwrap_or_default();
                    tx.conn().prepare_cached(
                        "INSERT INTO outbox (conversation, op, payload, message_id, created_at) VALUES (?1, 'message', ?2, ?3, ?4)",
                    )?.execute(params![conv, payload, id, crate::clock::now_rfc3339()])?;
                    if active {
                        crate::engine::prepare_if_alone(tx, &conv, &sign_key)?;
                    }
                    if let Some(key) = &idem {
                        tx.conn().execute(
                            "INSERT INTO idempotency (key, params, message_id, conversation, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                            params![key, params_json, id, conv, crate::clock::now_rfc3339()],
                        )?;
                    }
                    let message = model::message(tx.conn(), &conv, &me, &id)?
                        .ok_or_else(|| crate::store::StoreError::Decode("the new message vanished".into()))?;
                    tx.emit(EventPayload::MessageCreated { message: message.clone() })?;
                    Ok(Ok(message))
                })?;
        Ok(Box::pin(async move {
            let message = written.await??;
            engine.wake(&message.conversation);
            Ok(message)
        }))
    }

    /// `message.list`.
    pub async fn message_list(&self, p: MessageListParams) -> Result<Vec<Message>, ApiError> {
        let row = self.resolve(&p.conversation).await?;
        let limit = p.limit.unwrap_or(50).clamp(1, MAX_LIST);
        let before = p.before.clone();
        self.store
            .call(move |db| {
                Ok(model::messages(
                    db.conn(),
                    &row.id,
                    before.as_deref(),
                    limit,
                ))
            })
            .await?
            .map_err(|e| ApiError::new(ErrorKind::NotFound, e.to_string()))
    }
}
