//! [`Store`] for [`PgStore`].

use std::future::Future;

use sotto_protocol::relay::{
    ClaimedKeyPackage, GroupEntry, GroupState, InstallId, KeyPackageCount, MailboxEntry, Principal,
};
use tokio::sync::{broadcast, oneshot};

use deadpool_postgres::{Client, GenericClient};

use super::conn::{Conn, i64_of, u64_of};
use super::writer::Job;
use super::{CHANNEL, OP_TIMEOUT, PgStore, payload};
use crate::storage::{
    AppendOutcome, Change, CreateOutcome, GroupInfoOutcome, InstallOutcome, InviteUse,
    MailboxOutcome, NewGroupEntry, NewKeyPackage, NewMailboxPost, ReadOutcome, RegisterOutcome,
    Store, StoreError,
};

/// An advisory-lock key for a byte string (the lock only has to be the same for equal
/// inputs; collisions just serialise unrelated work briefly).
fn lock_key(class: u8, bytes: &[u8]) -> i64 {
    use sha2::Digest;
    let d = sha2::Sha256::new_with_prefix([class])
        .chain_update(bytes)
        .finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    i64::from_be_bytes(b)
}

impl PgStore {
    /// Runs `f` within the operation timeout, counting failures.
    async fn op<T>(
        &self,
        context: &'static str,
        f: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let r = match tokio::time::timeout(OP_TIMEOUT, f).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Unavailable {
                context,
                reason: format!("no answer from the database within {OP_TIMEOUT:?}"),
            }),
        };
        self.inner.count(r)
    }

    /// A pooled connection whose statements report errors under `context`.
    async fn conn(&self, context: &'static str) -> Result<Conn<Client>, StoreError> {
        Ok(Conn::new(self.inner.client().await?, context))
    }

    /// Runs `f` on a pooled connection within the operation timeout (see [`Self::op`]):
    /// the one place a method names its context, gets its connection and has its
    /// errors mapped and counted.
    async fn with_conn<T, F, Fut>(&self, context: &'static str, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(Conn<Client>) -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        self.op(context, async { f(self.conn(context).await?).await })
            .await
    }

    fn queue<T>(
        &self,
        job: Job,
        rx: oneshot::Receiver<Result<T, StoreError>>,
    ) -> impl Future<Output = Result<T, StoreError>> + Send + use<T>
    where
        T: Send + 'static,
    {
        // Queued now: the call fixes the place in the commit order.
        let queued = self.writer.send(job).is_ok();
        async move {
            if !queued {
                return Err(StoreError::Closed);
            }
            rx.await.map_err(|_| StoreError::Closed)?
        }
    }

    async fn count_kp(
        c: &Conn<impl GenericClient>,
        device: &Principal,
        ciphersuite: u16,
        now: u64,
    ) -> Result<KeyPackageCount, StoreError> {
        let row = c
            .query_one(
                "SELECT count(*) FILTER (WHERE NOT last_resort), count(*) FILTER (WHERE last_resort)
                 FROM key_packages WHERE device = $1 AND ciphersuite = $2
                 AND not_before <= $3 AND not_after > $3",
                &[&&device[..], &i32::from(ciphersuite), &i64_of(now)],
            )
            .await?;
        let available: i64 = row.get(0);
        let last: i64 = row.get(1);
        Ok(KeyPackageCount {
            ciphersuite,
            available: u32::try_from(available).unwrap_or(u32::MAX),
            last_resort: last > 0,
        })
    }
}

impl PgStore {
    /// Registration in one transaction, serialised per name across processes; with an
    /// invitation, its use is counted in the same transaction (its row locked), so an
    /// invitation is never used more often than it allows.
    async fn register_tx(
        mut c: Conn<Client>,
        name: String,
        device_id: String,
        key: Principal,
        now: u64,
        invite: Option<InviteUse>,
    ) -> Result<RegisterOutcome, StoreError> {
        let tx = c.transaction().await?;
        tx.execute(
            "SELECT pg_advisory_xact_lock($1)",
            &[&lock_key(1, name.as_bytes())],
        )
        .await?;
        let existing = tx
            .query_opt(
                "SELECT name, device_id FROM devices WHERE key = $1",
                &[&&key[..]],
            )
            .await?;
        if let Some(r) = existing {
            let (n, d): (String, String) = (r.get(0), r.get(1));
            return Ok(if n == name && d == device_id {
                RegisterOutcome::AlreadyRegistered
            } else {
                RegisterOutcome::NameTaken
            });
        }
        let taken = tx
            .query_opt("SELECT 1 FROM devices WHERE name = $1 LIMIT 1", &[&name])
            .await?;
        if taken.is_some() {
            return Ok(RegisterOutcome::NameTaken);
        }
        if let Some(invite) = &invite {
            let nonce = &invite.nonce[..];
            tx.execute(
                "INSERT INTO invite_uses (nonce, uses, last_used_at) VALUES ($1, 0, $2)
                 ON CONFLICT DO NOTHING",
                &[&nonce, &i64_of(now)],
            )
            .await?;
            let used: i32 = tx
                .query_one(
                    "SELECT uses FROM invite_uses WHERE nonce = $1 FOR UPDATE",
                    &[&nonce],
                )
                .await?
                .get(0);
            if i64::from(used) >= i64::from(invite.max_uses) {
                // Dropping the transaction rolls it back: nothing stored.
                return Ok(RegisterOutcome::InviteUsedUp);
            }
            tx.execute(
                "UPDATE invite_uses SET uses = uses + 1, last_used_at = $2 WHERE nonce = $1",
                &[&nonce, &i64_of(now)],
            )
            .await?;
        }
        let inserted = tx
            .execute(
                "INSERT INTO devices (key, name, device_id, created_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT DO NOTHING",
                &[&&key[..], &name, &device_id, &i64_of(now)],
            )
            .await?;
        if inserted != 1 {
            // The same key registered under another name meanwhile; the invitation's
            // use rolls back with the transaction.
            return Ok(RegisterOutcome::NameTaken);
        }
        tx.commit().await?;
        Ok(RegisterOutcome::Registered)
    }
}

impl PgStore {
    /// [`Store::claim_install`] in one transaction, serialised per device across
    /// processes; a take-over is announced with a NOTIFY delivered at COMMIT.
    async fn claim_install_tx(
        &self,
        mut c: Conn<Client>,
        key: Principal,
        install: InstallId,
        take_over: bool,
        now: u64,
    ) -> Result<InstallOutcome, StoreError> {
        let tx = c.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock_key(3, &key)])
            .await?;
        let current: Option<InstallId> = tx
            .query_opt(
                "SELECT install_id FROM installs WHERE device = $1",
                &[&&key[..]],
            )
            .await?
            .and_then(|r| r.get::<_, Vec<u8>>(0).try_into().ok());
        if current == Some(install) {
            return Ok(InstallOutcome::Active);
        }
        if current.is_some() && !take_over {
            return Ok(InstallOutcome::Revoked);
        }
        tx.execute(
            "INSERT INTO installs (device, install_id, since) VALUES ($1, $2, $3)
             ON CONFLICT (device) DO UPDATE SET install_id = excluded.install_id, since = excluded.since",
            &[&&key[..], &&install[..], &i64_of(now)],
        )
        .await?;
        if !take_over {
            tx.commit().await?;
            return Ok(InstallOutcome::Active);
        }
        tx.execute("DELETE FROM key_packages WHERE device = $1", &[&&key[..]])
            .await?;
        let change = Change::Revoked { device: key };
        tx.execute(
            &format!("SELECT pg_notify('{CHANNEL}', $1)"),
            &[&payload(&self.inner.origin, &change)],
        )
        .await?;
        tx.commit().await?;
        // This process's own NOTIFYs are skipped by its listener: announce locally.
        let _ = self.inner.changes.send(change);
        Ok(InstallOutcome::TookOver { previous: current })
    }
}

impl Store for PgStore {
    async fn register(
        &self,
        name: String,
        device_id: String,
        key: Principal,
        now: u64,
    ) -> Result<RegisterOutcome, StoreError> {
        self.with_conn("register", |c| {
            Self::register_tx(c, name, device_id, key, now, None)
        })
        .await
    }

    async fn register_invited(
        &self,
        name: String,
        device_id: String,
        key: Principal,
        now: u64,
        invite: InviteUse,
    ) -> Result<RegisterOutcome, StoreError> {
        self.with_conn("register", |c| {
            Self::register_tx(c, name, device_id, key, now, Some(invite))
        })
        .await
    }

    async fn device_key(
        &self,
        name: String,
        device_id: String,
    ) -> Result<Option<Principal>, StoreError> {
        self.with_conn("device key", |c| async move {
            let row = c
                .query_opt(
                    "SELECT key FROM devices WHERE name = $1 AND device_id = $2",
                    &[&name, &device_id],
                )
                .await?;
            Ok(row.and_then(|r| r.get::<_, Vec<u8>>(0).try_into().ok()))
        })
        .await
    }

    async fn claim_install(
        &self,
        key: Principal,
        install: InstallId,
        take_over: bool,
        now: u64,
    ) -> Result<InstallOutcome, StoreError> {
        self.with_conn("claim install", |c| {
            self.claim_install_tx(c, key, install, take_over, now)
        })
        .await
    }

    async fn active_install(&self, key: Principal) -> Result<Option<InstallId>, StoreError> {
        self.with_conn("active install", |c| async move {
            let row = c
                .query_opt(
                    "SELECT install_id FROM installs WHERE device = $1",
                    &[&&key[..]],
                )
                .await?;
            Ok(row.and_then(|r| r.get::<_, Vec<u8>>(0).try_into().ok()))
        })
        .await
    }

    async fn devices(&self, name: String) -> Result<Vec<(String, Principal)>, StoreError> {
        self.with_conn("devices", |c| async move {
            let rows = c
                .query(
                    "SELECT device_id, key FROM devices WHERE name = $1 ORDER BY device_id",
                    &[&name],
                )
                .await?;
            Ok(rows
                .iter()
                .filter_map(|r| {
                    let key: Vec<u8> = r.get(1);
                    Some((r.get(0), key.try_into().ok()?))
                })
                .collect())
        })
        .await
    }

    async fn publish_key_packages(
        &self,
        device: Principal,
        ciphersuite: u16,
        pool: Vec<NewKeyPackage>,
        last_resort: Option<NewKeyPackage>,
        now: u64,
    ) -> Result<KeyPackageCount, StoreError> {
        self.with_conn("publish key packages", |mut c| async move {
            let tx = c.transaction().await?;
            // One publisher per device at a time: exactly one last-resort package stays.
            tx.execute(
                "SELECT pg_advisory_xact_lock($1)",
                &[&lock_key(2, &device)],
            )
            .await?;
            let cs = i32::from(ciphersuite);
            if !pool.is_empty() {
                let data: Vec<&[u8]> = pool.iter().map(|k| &k.data[..]).collect();
                let nb: Vec<i64> = pool.iter().map(|k| i64_of(k.not_before)).collect();
                let na: Vec<i64> = pool.iter().map(|k| i64_of(k.not_after)).collect();
                tx.execute(
                    "INSERT INTO key_packages (device, ciphersuite, last_resort, data, not_before, not_after)
                     SELECT $1, $2, false, d, b, a FROM unnest($3::bytea[], $4::bigint[], $5::bigint[])
                     WITH ORDINALITY AS t(d, b, a, i) ORDER BY i",
                    &[&&device[..], &cs, &data, &nb, &na],
                )
                .await?;
            }
            if let Some(kp) = &last_resort {
                tx.execute(
                    "DELETE FROM key_packages WHERE device = $1 AND ciphersuite = $2 AND last_resort",
                    &[&&device[..], &cs],
                )
                .await?;
                tx.execute(
                    "INSERT INTO key_packages (device, ciphersuite, last_resort, data, not_before, not_after)
                     VALUES ($1, $2, true, $3, $4, $5)",
                    &[
                        &&device[..],
                        &cs,
                        &kp.data,
                        &i64_of(kp.not_before),
                        &i64_of(kp.not_after),
                    ],
                )
                .await?;
            }
            let count = Self::count_kp(&tx, &device, ciphersuite, now).await?;
            tx.commit().await?;
            Ok(count)
        })
        .await
    }

    async fn count_key_packages(
        &self,
        device: Principal,
        ciphersuite: u16,
        now: u64,
    ) -> Result<KeyPackageCount, StoreError> {
        self.with_conn("count key packages", |c| async move {
            Self::count_kp(&c, &device, ciphersuite, now).await
        })
        .await
    }

    async fn claim_key_package(
        &self,
        device: Principal,
        ciphersuite: u16,
        now: u64,
    ) -> Result<Option<ClaimedKeyPackage>, StoreError> {
        self.with_conn("claim key package", |c| async move {
            let (dev, cs, now) = (&device[..], i32::from(ciphersuite), i64_of(now));
            // Exactly once across processes: the row is locked by the one claim that
            // deletes it; concurrent claims skip it and take the next.
            let single = c
                .query_opt(
                    "DELETE FROM key_packages WHERE id = (
                         SELECT id FROM key_packages WHERE device = $1 AND ciphersuite = $2
                         AND NOT last_resort AND not_before <= $3 AND not_after > $3
                         ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
                     RETURNING data",
                    &[&dev, &cs, &now],
                )
                .await?;
            if let Some(r) = single {
                return Ok(Some(ClaimedKeyPackage {
                    key_package: r.get(0),
                    last_resort: false,
                }));
            }
            let last = c
                .query_opt(
                    "SELECT data FROM key_packages WHERE device = $1 AND ciphersuite = $2
                     AND last_resort AND not_before <= $3 AND not_after > $3
                     ORDER BY id DESC LIMIT 1",
                    &[&dev, &cs, &now],
                )
                .await?;
            Ok(last.map(|r| ClaimedKeyPackage {
                key_package: r.get(0),
                last_resort: true,
            }))
        })
        .await
    }

    fn post_mailbox(
        &self,
        post: NewMailboxPost,
    ) -> impl Future<Output = Result<MailboxOutcome, StoreError>> + Send + use<> {
        let (tx, rx) = oneshot::channel();
        self.queue(Job::Mailbox(post, tx), rx)
    }

    async fn read_mailbox(
        &self,
        device: Principal,
        after: u64,
        limit: u32,
    ) -> Result<Vec<MailboxEntry>, StoreError> {
        self.with_conn("read mailbox", |c| async move {
            let rows = c
                .query(
                    "SELECT m.seq, b.sender, b.sender_address, b.post_id, b.payload, m.created_at
                     FROM mailbox m JOIN mailbox_blobs b ON b.id = m.blob
                     WHERE m.device = $1 AND m.seq > $2 ORDER BY m.seq LIMIT $3",
                    &[&&device[..], &i64_of(after), &i64::from(limit)],
                )
                .await?;
            Ok(rows
                .iter()
                .filter_map(|r| {
                    let sender: Vec<u8> = r.get(1);
                    let post_id: Vec<u8> = r.get(3);
                    Some(MailboxEntry {
                        seq: u64_of(r.get(0)),
                        sender: sender.try_into().ok()?,
                        sender_address: r.get(2),
                        post_id: post_id.try_into().ok()?,
                        payload: r.get(4),
                        stored_at: u64_of(r.get(5)),
                    })
                })
                .collect())
        })
        .await
    }

    async fn ack_mailbox(&self, device: Principal, up_to: u64) -> Result<(), StoreError> {
        self.with_conn("ack mailbox", |mut c| async move {
            let tx = c.transaction().await?;
            let rows = tx
                .query(
                    "DELETE FROM mailbox WHERE device = $1 AND seq <= $2 RETURNING blob",
                    &[&&device[..], &i64_of(up_to)],
                )
                .await?;
            let blobs: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
            if !blobs.is_empty() {
                // Blobs still referenced by another mailbox stay; a blob whose last two
                // references are acknowledged at the same moment is left to retention.
                tx.execute(
                    "DELETE FROM mailbox_blobs b WHERE b.id = ANY ($1)
                     AND NOT EXISTS (SELECT 1 FROM mailbox m WHERE m.blob = b.id)",
                    &[&blobs],
                )
                .await?;
            }
            tx.commit().await
        })
        .await
    }

    async fn create_group(
        &self,
        group_id: Vec<u8>,
        creator: Principal,
        now: u64,
    ) -> Result<CreateOutcome, StoreError> {
        self.with_conn("create group", |mut c| async move {
            let tx = c.transaction().await?;
            let created = tx
                .execute(
                    "INSERT INTO groups (id, epoch, head, pruned_through, created_at)
                     VALUES ($1, 0, 0, 0, $2) ON CONFLICT DO NOTHING",
                    &[&group_id, &i64_of(now)],
                )
                .await?;
            if created == 1 {
                tx.execute(
                    "INSERT INTO group_members (group_id, principal, added_seq, removed_seq, cursor)
                     VALUES ($1, $2, 0, NULL, 0)",
                    &[&group_id, &&creator[..]],
                )
                .await?;
                tx.commit().await?;
                return Ok(CreateOutcome::Ok(GroupState {
                    group_id,
                    epoch: 0,
                    head_seq: 0,
                    oldest_seq: 1,
                }));
            }
            let row = tx
                .query_one(
                    "SELECT g.epoch, g.head, g.pruned_through,
                        EXISTS (SELECT 1 FROM group_members m WHERE m.group_id = g.id
                                AND m.principal = $2 AND m.removed_seq IS NULL)
                     FROM groups g WHERE g.id = $1",
                    &[&group_id, &&creator[..]],
                )
                .await?;
            let member: bool = row.get(3);
            Ok(if member {
                CreateOutcome::Ok(GroupState {
                    group_id,
                    epoch: u64_of(row.get(0)),
                    head_seq: u64_of(row.get(1)),
                    oldest_seq: u64_of(row.get(2)) + 1,
                })
            } else {
                CreateOutcome::Exists
            })
        })
        .await
    }

    fn append_group(
        &self,
        entry: NewGroupEntry,
    ) -> impl Future<Output = Result<AppendOutcome, StoreError>> + Send + use<> {
        let (tx, rx) = oneshot::channel();
        self.queue(Job::Append(entry, tx), rx)
    }

    async fn read_group(
        &self,
        group_id: Vec<u8>,
        reader: Principal,
        after: u64,
        limit: u32,
    ) -> Result<ReadOutcome, StoreError> {
        self.with_conn("read group", |c| async move {
            let head = c
                .query_opt(
                    "SELECT g.head, g.pruned_through, m.added_seq, m.removed_seq, m.principal IS NOT NULL
                     FROM groups g LEFT JOIN group_members m
                       ON m.group_id = g.id AND m.principal = $2
                     WHERE g.id = $1",
                    &[&group_id, &&reader[..]],
                )
                .await?;
            let Some(h) = head else {
                return Ok(ReadOutcome::UnknownGroup);
            };
            if !h.get::<_, bool>(4) {
                return Ok(ReadOutcome::NotMember);
            }
            let (head, pruned) = (u64_of(h.get(0)), u64_of(h.get(1)));
            let added = u64_of(h.get(2));
            let removed: Option<u64> = h.get::<_, Option<i64>>(3).map(u64_of);
            let start = after.max(added);
            if start < pruned {
                return Ok(ReadOutcome::Gap {
                    oldest_seq: pruned + 1,
                });
            }
            // The two statements see different snapshots (READ COMMITTED): entries are
            // bounded by the head the first one saw, with the membership that goes with it.
            // Unbounded, a removal committed in between let a removed member read its
            // removal without `removed_at`, and the entries after it.
            let end = removed.unwrap_or(u64::MAX).min(head);
            let rows = c
                .query(
                    "SELECT seq, epoch, content_type, sender, post_id, message FROM group_log
                     WHERE group_id = $1 AND seq > $2 AND seq <= $3 ORDER BY seq LIMIT $4",
                    &[&group_id, &i64_of(start), &i64_of(end), &i64::from(limit)],
                )
                .await?;
            let entries = rows
                .iter()
                .filter_map(|r| {
                    let sender: Vec<u8> = r.get(3);
                    let post_id: Vec<u8> = r.get(4);
                    Some(GroupEntry {
                        seq: u64_of(r.get(0)),
                        epoch: u64_of(r.get(1)),
                        content_type: u8::try_from(r.get::<_, i16>(2)).ok()?,
                        sender: sender.try_into().ok()?,
                        post_id: post_id.try_into().ok()?,
                        message: r.get(5),
                    })
                })
                .collect();
            Ok(ReadOutcome::Entries {
                entries,
                removed_at: removed,
                head_seq: head,
            })
        })
        .await
    }

    async fn ack_group(
        &self,
        group_id: Vec<u8>,
        member: Principal,
        seq: u64,
    ) -> Result<(), StoreError> {
        self.with_conn("ack group", |c| async move {
            c.execute(
                "UPDATE group_members SET cursor = GREATEST(cursor,
                     LEAST($3, (SELECT head FROM groups WHERE id = $1)))
                 WHERE group_id = $1 AND principal = $2",
                &[&group_id, &&member[..], &i64_of(seq)],
            )
            .await?;
            Ok(())
        })
        .await
    }

    async fn member_groups(
        &self,
        member: Principal,
        limit: u32,
    ) -> Result<Vec<GroupState>, StoreError> {
        self.with_conn("member groups", |c| async move {
            let rows = c
                .query(
                    "SELECT g.id, g.epoch, g.head, g.pruned_through FROM group_members m
                     JOIN groups g ON g.id = m.group_id
                     WHERE m.principal = $1 AND m.removed_seq IS NULL ORDER BY g.id LIMIT $2",
                    &[&&member[..], &i64::from(limit)],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| GroupState {
                    group_id: r.get(0),
                    epoch: u64_of(r.get(1)),
                    head_seq: u64_of(r.get(2)),
                    oldest_seq: u64_of(r.get(3)) + 1,
                })
                .collect())
        })
        .await
    }

    async fn group_info(
        &self,
        group_id: Vec<u8>,
        reader: Principal,
    ) -> Result<GroupInfoOutcome, StoreError> {
        self.with_conn("group info", |c| async move {
            let row = c
                .query_opt(
                    "SELECT EXISTS (SELECT 1 FROM group_members m WHERE m.group_id = g.id
                            AND m.principal = $2 AND m.removed_seq IS NULL),
                        i.epoch, i.seq, i.data
                     FROM groups g LEFT JOIN group_infos i ON i.group_id = g.id
                     WHERE g.id = $1",
                    &[&group_id, &&reader[..]],
                )
                .await?;
            let Some(r) = row else {
                return Ok(GroupInfoOutcome::UnknownGroup);
            };
            if !r.get::<_, bool>(0) {
                return Ok(GroupInfoOutcome::NotMember);
            }
            Ok(match r.get::<_, Option<Vec<u8>>>(3) {
                Some(data) => GroupInfoOutcome::Found {
                    epoch: u64_of(r.get(1)),
                    seq: u64_of(r.get(2)),
                    data,
                },
                None => GroupInfoOutcome::None,
            })
        })
        .await
    }

    async fn group_state(&self, group_id: Vec<u8>) -> Result<Option<GroupState>, StoreError> {
        self.with_conn("group state", |c| async move {
            let row = c
                .query_opt(
                    "SELECT epoch, head, pruned_through FROM groups WHERE id = $1",
                    &[&group_id],
                )
                .await?;
            Ok(row.map(|r| GroupState {
                group_id,
                epoch: u64_of(r.get(0)),
                head_seq: u64_of(r.get(1)),
                oldest_seq: u64_of(r.get(2)) + 1,
            }))
        })
        .await
    }

    async fn prune(&self, now: u64, max_age_secs: u64) -> Result<u64, StoreError> {
        // Not bounded by OP_TIMEOUT as a whole (each statement is, server-side); every
        // statement commits on its own and never holds more than one group's lock, so
        // retention cannot deadlock with the post writers of any process.
        let r = async {
            let c = self.conn("prune").await?;
            let cutoff = i64_of(now.saturating_sub(max_age_secs));
            let rows = c
                .query(
                    "SELECT g.id, g.head, g.pruned_through,
                        (SELECT MIN(m.cursor) FROM group_members m WHERE m.group_id = g.id
                           AND (m.removed_seq IS NULL OR m.cursor < m.removed_seq)),
                        (SELECT MAX(l.seq) FROM group_log l WHERE l.group_id = g.id
                           AND l.created_at < $1)
                     FROM groups g",
                    &[&cutoff],
                )
                .await?;
            let mut dropped = 0u64;
            for r in rows {
                let id: Vec<u8> = r.get(0);
                let (head, pruned): (i64, i64) = (r.get(1), r.get(2));
                let min_cursor: Option<i64> = r.get(3);
                let aged: Option<i64> = r.get(4);
                let through = min_cursor.unwrap_or(head).max(aged.unwrap_or(0)).min(head);
                if through <= pruned {
                    continue;
                }
                // Raise the mark first: a crash in between leaves entries behind a gap
                // (harmless), never a hole without a gap.
                c.execute(
                    "UPDATE groups SET pruned_through = GREATEST(pruned_through, $2) WHERE id = $1",
                    &[&id, &through],
                )
                .await?;
                dropped += c
                    .execute(
                        "DELETE FROM group_log WHERE group_id = $1 AND seq <= $2",
                        &[&id, &through],
                    )
                    .await?;
            }
            let exec = |sql: &'static str, v: i64| {
                let c = &c;
                async move {
                    let p: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&v];
                    c.execute(sql, &p[..]).await
                }
            };
            dropped += exec("DELETE FROM mailbox WHERE created_at < $1", cutoff).await?;
            // A blob nobody references any more (uncommitted ones are invisible here).
            dropped += exec(
                "DELETE FROM mailbox_blobs b WHERE b.created_at <= $1
                 AND NOT EXISTS (SELECT 1 FROM mailbox m WHERE m.blob = b.id)",
                i64_of(now),
            )
            .await?;
            dropped += exec(
                "DELETE FROM key_packages WHERE not_after <= $1",
                i64_of(now),
            )
            .await?;
            dropped += exec("DELETE FROM posts WHERE created_at < $1", cutoff).await?;
            // Buckets untouched for ten minutes are full again at any configured rate of
            // at least one a minute: dropping them changes nothing.
            c.execute(
                "DELETE FROM rate_buckets WHERE at_ms < (extract(epoch FROM clock_timestamp()) * 1000)::bigint - 600000",
                &[],
            )
            .await?;
            Ok(dropped)
        }
        .await;
        self.inner.count(r)
    }

    fn changes(&self) -> broadcast::Receiver<Change> {
        self.inner.changes.subscribe()
    }

    fn durability(&self) -> &str {
        self.durability_text()
    }

    fn healthy(&self) -> bool {
        self.inner
            .healthy
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn render_metrics(&self, out: &mut String) {
        self.render_pg_metrics(out);
    }

    async fn take_shared_token(
        &self,
        bucket: &'static str,
        key: Principal,
        per_min: f64,
    ) -> Result<Option<Result<(), std::time::Duration>>, StoreError> {
        self.with_conn("rate limit", |c| async move {
            let k = &key[..];
            let burst = per_min.max(1.0);
            let per_ms = per_min / 60_000.0;
            // One statement: refill by the database's clock, take a token if there is
            // one. The row lock of the upsert serialises takers of one bucket across
            // processes. No row back means refused.
            let taken = c
                .query_opt(
                    "INSERT INTO rate_buckets AS b (bucket, key, tokens, at_ms)
                     VALUES ($1::text, $2::bytea, $3::float8 - 1, (extract(epoch FROM clock_timestamp()) * 1000)::bigint)
                     ON CONFLICT (bucket, key) DO UPDATE SET
                        tokens = LEAST($3::float8, b.tokens + (EXCLUDED.at_ms - b.at_ms) * $4::float8) - 1,
                        at_ms = EXCLUDED.at_ms
                     WHERE LEAST($3::float8, b.tokens + (EXCLUDED.at_ms - b.at_ms) * $4::float8) >= 1
                     RETURNING tokens",
                    &[&bucket, &k, &burst, &per_ms],
                )
                .await?;
            if taken.is_some() {
                return Ok(Some(Ok(())));
            }
            let row = c
                .query_opt(
                    "SELECT LEAST($3::float8, tokens + ((extract(epoch FROM clock_timestamp()) * 1000)::bigint - at_ms) * $4::float8)
                     FROM rate_buckets WHERE bucket = $1::text AND key = $2::bytea",
                    &[&bucket, &k, &burst, &per_ms],
                )
                .await?;
            let have: f64 = row.map_or(0.0, |r| r.get(0));
            let wait_ms = if per_ms > 0.0 {
                ((1.0 - have) / per_ms).clamp(1.0, 3_600_000.0)
            } else {
                3_600_000.0
            };
            Ok(Some(Err(std::time::Duration::from_millis(wait_ms as u64))))
        })
        .await
    }
}
