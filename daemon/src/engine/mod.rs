//! The messaging engine: relay connections, one actor per conversation (its log and its
//! outbox, strictly in order), the mailbox follower (Welcomes) and key-package upkeep.
//!
//! Durability rules (docs/architecture.md draws them):
//! - an outbox row exists before the API call returns;
//! - a post's exact bytes and `post_id` are stored before the first attempt, and retries
//!   resend them; the daemon recognises its own log entries by `post_id`;
//! - a log entry is processed (MLS state, app rows, cursor) in one transaction, and only
//!   then acknowledged to the relay.

mod actor;
/// The harness of the MLS fuzz targets (fuzz/): tests, and the `fuzzing` feature.
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod inbound;
pub mod keypackages;
mod outbound;
mod resync;

/// Outbox payload shapes, shared with the service layer that queues them.
pub mod outbound_payloads {
    pub use super::outbound::{MembersPayload, MessagePayload, RenamePayload};
}
mod welcome;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sotto_protocol::relay::{GroupEntry, MailboxEntry, Push};
use tokio::sync::{Notify, mpsc, watch};

use crate::keys::DeviceKey;
use crate::relay::{Credentials, Relays};
use crate::store::Store;

/// The most pushed entries an inbox holds; past it they are dropped and the actor reads
/// the log instead.
const MAX_PUSHED: usize = 4096;

/// One conversation actor's wake-up and the log entries the relay pushed for it.
#[derive(Debug, Default)]
pub(crate) struct Inbox {
    notify: Notify,
    pushed: Mutex<Pushed>,
}

#[derive(Debug, Default)]
struct Pushed {
    entries: Vec<GroupEntry>,
    /// Something the pushes cannot say (overflow, an error, the end of a membership):
    /// the actor reads the log itself.
    reread: bool,
}

impl Inbox {
    /// Takes what was pushed: the entries in arrival order, and whether to read the log.
    fn take(&self) -> (Vec<GroupEntry>, bool) {
        let mut p = lock(&self.pushed);
        (
            std::mem::take(&mut p.entries),
            std::mem::take(&mut p.reread),
        )
    }

    fn push(&self, entries: Vec<GroupEntry>, reread: bool) {
        let mut p = lock(&self.pushed);
        if p.entries.len() + entries.len() > MAX_PUSHED {
            p.entries.clear();
            p.reread = true;
        } else {
            p.entries.extend(entries);
        }
        p.reread |= reread;
    }
}

/// Everything the engine's tasks share.
pub struct Engine {
    store: Store,
    relays: Arc<Relays>,
    address: String,
    device_id: String,
    key: Arc<DeviceKey>,
    actors: Mutex<HashMap<String, Arc<Inbox>>>,
    mailbox: Mutex<Option<mpsc::UnboundedSender<Vec<MailboxEntry>>>>,
    shutdown: watch::Receiver<bool>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Starts the engine for an account: connects to its home relay, follows the mailbox,
    /// and starts an actor for every conversation that is not finished.
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        store: Store,
        address: String,
        device_id: String,
        home: String,
        key: Arc<DeviceKey>,
        standing: crate::relay::install::Standing,
        revoked: Arc<watch::Sender<bool>>,
        shutdown: watch::Receiver<bool>,
    ) -> Arc<Engine> {
        let creds = Credentials {
            address: address.clone(),
            device_id: device_id.clone(),
            key: key.clone(),
            invite: None,
            install_id: standing.install_id,
            take_over: Arc::new(std::sync::atomic::AtomicBool::new(standing.take_over)),
        };
        let (relays, pushes) = Relays::new(creds, home, store.clone(), shutdown.clone(), revoked);
        let engine = Arc::new(Engine {
            store,
            relays,
            address,
            device_id,
            key,
            actors: Mutex::new(HashMap::new()),
            mailbox: Mutex::new(None),
            shutdown,
        });
        let (mb_tx, mb_rx) = mpsc::unbounded_channel();
        *lock(&engine.mailbox) = Some(mb_tx);
        tokio::spawn(engine.clone().route_pushes(pushes));
        tokio::spawn(engine.clone().wake_on_reconnect());
        tokio::spawn(welcome::follow(engine.clone(), mb_rx));
        tokio::spawn(keypackages::upkeep(engine.clone()));
        let ids = engine
            .store
            .call(|db| {
                Ok(crate::model::conversations(db.conn())?
                    .into_iter()
                    .filter(|c| matches!(c.state.as_str(), "pending" | "active"))
                    .map(|c| c.id)
                    .collect::<Vec<_>>())
            })
            .await
            .unwrap_or_default();
        for id in ids {
            engine.wake(&id);
        }
        let discover = engine
            .store
            .call(|db| {
                Ok(db.conn().query_row(
                    "SELECT EXISTS (SELECT 1 FROM meta WHERE key = ?1)",
                    [resync::DISCOVER],
                    |r| r.get::<_, bool>(0),
                )?)
            })
            .await
            .unwrap_or(false);
        if discover {
            tokio::spawn(resync::discover(engine.clone()));
        }
        engine
    }

    /// The relay manager.
    pub fn relays(&self) -> &Arc<Relays> {
        &self.relays
    }

    /// The database.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// This account's address.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// This device's id.
    pub fn device_id(&self) -> &str {
        &self.device_id
    }

    /// This device's key.
    pub fn key(&self) -> &Arc<DeviceKey> {
        &self.key
    }

    /// Wakes (starting if needed) the actor of conversation `id`.
    pub fn wake(self: &Arc<Self>, id: &str) {
        self.inbox(id).notify.notify_one();
    }

    /// The inbox of conversation `id`'s actor, starting the actor if needed.
    fn inbox(self: &Arc<Self>, id: &str) -> Arc<Inbox> {
        let mut actors = lock(&self.actors);
        if let Some(inbox) = actors.get(id) {
            return inbox.clone();
        }
        let inbox = Arc::new(Inbox::default());
        actors.insert(id.to_owned(), inbox.clone());
        let this = self.clone();
        let (id, handle) = (id.to_owned(), inbox.clone());
        tokio::spawn(async move {
            actor::run(this.clone(), id.clone(), handle).await;
            lock(&this.actors).remove(&id);
        });
        inbox
    }

    /// Wakes every actor when a relay connection is made: an actor that backed off while
    /// the relay was away would otherwise sleep out its backoff (up to 30 s) before
    /// posting what it queued.
    async fn wake_on_reconnect(self: Arc<Self>) {
        let mut connected = self.relays.connected();
        let mut shutdown = self.shutdown.clone();
        loop {
            tokio::select! {
                r = connected.recv() => match r {
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
                _ = shutdown.wait_for(|s| *s) => return,
            }
            let inboxes: Vec<Arc<Inbox>> = lock(&self.actors).values().cloned().collect();
            for inbox in inboxes {
                inbox.notify.notify_one();
            }
        }
    }

    async fn route_pushes(self: Arc<Self>, mut pushes: mpsc::UnboundedReceiver<(String, Push)>) {
        while let Some((_url, push)) = pushes.recv().await {
            match push {
                Push::Group {
                    group_id,
                    entries,
                    removed_at,
                } => {
                    let inbox = self.inbox(&hex::encode(group_id));
                    inbox.push(entries, removed_at.is_some());
                    inbox.notify.notify_one();
                }
                Push::GroupError { group_id, .. } => {
                    let inbox = self.inbox(&hex::encode(group_id));
                    inbox.push(Vec::new(), true);
                    inbox.notify.notify_one();
                }
                Push::Mailbox { entries } => {
                    if let Some(tx) = lock(&self.mailbox).as_ref() {
                        let _ = tx.send(entries);
                    }
                }
                _ => {}
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Checks one device's key against the pinned one (pinning it on first use; a change
/// raises `contact.identity_changed`).
pub fn check_key(
    tx: &mut crate::store::Tx<'_>,
    own_address: &str,
    address: &str,
    device_id: &str,
    key: &[u8],
) -> Result<(), crate::store::StoreError> {
    inbound::check_member_keys(
        tx,
        own_address,
        &[crate::mls::MemberInfo {
            address: address.to_owned(),
            device_id: device_id.to_owned(),
            public_key: key.to_vec(),
            leaf: 0,
        }],
    )
}

/// Encrypts a just-queued message right away when it is alone in its conversation's outbox
/// (so the actor only has to post it). Anything that stops it — pending proposals, a group
/// that is not operational — leaves the row for the actor, which handles those cases.
pub fn prepare_if_alone(
    tx: &mut crate::store::Tx<'_>,
    conv: &str,
    key: &DeviceKey,
) -> Result<(), crate::store::StoreError> {
    // At most two index entries read, not the whole queue (a pipelining client keeps
    // hundreds queued; this runs in every `message.send`).
    let queued: i64 = tx
        .conn()
        .prepare_cached(
            "SELECT COUNT(*) FROM (SELECT 1 FROM outbox WHERE conversation = ?1 LIMIT 2)",
        )?
        .query_row([conv], |r| r.get(0))?;
    if queued != 1 {
        return Ok(());
    }
    let Some(head) = outbound::head(tx.conn(), conv)? else {
        return Ok(());
    };
    if head.op != "message" || head.mls_message.is_some() {
        return Ok(());
    }
    match outbound::prepare_message(tx, conv, &head, key) {
        Ok(()) => Ok(()),
        Err(outbound::PrepareError::Store(e)) => Err(e),
        Err(outbound::PrepareError::Invalid(why)) => {
            tracing::debug!(conversation = %conv, %why, "left for the actor");
            Ok(())
        }
    }
}
