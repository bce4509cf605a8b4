//! SQL for accounts, key packages and mailboxes (run on the writer or a reader).

use rusqlite::{Connection, OptionalExtension, params};
use sotto_protocol::relay::{ClaimedKeyPackage, KeyPackageCount, MailboxEntry, Principal};

use super::{
    Change, InstallOutcome, InviteUse, MailboxOutcome, NewKeyPackage, NewMailboxPost,
    RegisterOutcome,
};
use sotto_protocol::relay::InstallId;

/// `posts.kind` of mailbox posts.
pub const POST_KIND_MAILBOX: i64 = 0;

/// Whether `key` may register `name`: `None` if it may (nothing registered yet).
fn registration_conflict(
    c: &Connection,
    name: &str,
    device_id: &str,
    key: &Principal,
) -> rusqlite::Result<Option<RegisterOutcome>> {
    let existing: Option<(String, String)> = c
        .prepare_cached("SELECT name, device_id FROM devices WHERE key = ?1")?
        .query_row(params![key], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    if let Some((n, d)) = existing {
        return Ok(Some(if n == name && d == device_id {
            RegisterOutcome::AlreadyRegistered
        } else {
            RegisterOutcome::NameTaken
        }));
    }
    let taken: Option<i64> = c
        .prepare_cached("SELECT 1 FROM devices WHERE name = ?1")?
        .query_row(params![name], |r| r.get(0))
        .optional()?;
    Ok(taken.map(|_| RegisterOutcome::NameTaken))
}

pub fn register(
    c: &Connection,
    name: &str,
    device_id: &str,
    key: &Principal,
    now: u64,
) -> rusqlite::Result<RegisterOutcome> {
    if let Some(outcome) = registration_conflict(c, name, device_id, key)? {
        return Ok(outcome);
    }
    c.prepare_cached(
        "INSERT INTO devices (key, name, device_id, created_at) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![key, name, device_id, now])?;
    Ok(RegisterOutcome::Registered)
}

/// [`register`] counting one use of `invite` (in the caller's transaction).
pub fn register_invited(
    c: &Connection,
    name: &str,
    device_id: &str,
    key: &Principal,
    now: u64,
    invite: &InviteUse,
) -> rusqlite::Result<RegisterOutcome> {
    if let Some(outcome) = registration_conflict(c, name, device_id, key)? {
        return Ok(outcome);
    }
    let used: u32 = c
        .query_row(
            "SELECT uses FROM invite_uses WHERE nonce = ?1",
            params![&invite.nonce[..]],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(0);
    if used >= invite.max_uses {
        return Ok(RegisterOutcome::InviteUsedUp);
    }
    c.execute(
        "INSERT INTO invite_uses (nonce, uses, last_used_at) VALUES (?1, 1, ?2)
         ON CONFLICT (nonce) DO UPDATE SET uses = uses + 1, last_used_at = ?2",
        params![&invite.nonce[..], now],
    )?;
    register(c, name, device_id, key, now)
}

pub fn device_key(
    c: &Connection,
    name: &str,
    device_id: &str,
) -> rusqlite::Result<Option<Principal>> {
    c.prepare_cached("SELECT key FROM devices WHERE name = ?1 AND device_id = ?2")?
        .query_row(params![name, device_id], |r| r.get(0))
        .optional()
}

pub fn active_install(c: &Connection, key: &Principal) -> rusqlite::Result<Option<InstallId>> {
    c.prepare_cached("SELECT install_id FROM installs WHERE device = ?1")?
        .query_row(params![key], |r| r.get(0))
        .optional()
}

/// [`super::Store::claim_install`] in the writer's transaction.
pub fn claim_install(
    c: &Connection,
    key: &Principal,
    install: &InstallId,
    take_over: bool,
    now: u64,
    changes: &mut Vec<Change>,
) -> rusqlite::Result<InstallOutcome> {
    let current = active_install(c, key)?;
    if current.as_ref() == Some(install) {
        return Ok(InstallOutcome::Active);
    }
    if current.is_some() && !take_over {
        return Ok(InstallOutcome::Revoked);
    }
    c.prepare_cached(
        "INSERT INTO installs (device, install_id, since) VALUES (?1, ?2, ?3)
         ON CONFLICT (device) DO UPDATE SET install_id = excluded.install_id, since = excluded.since",
    )?
    .execute(params![key, &install[..], now])?;
    if !take_over {
        return Ok(InstallOutcome::Active);
    }
    // The other install may hold these packages' secrets: a Welcome built on one of them
    // would reach it, not this install.
    c.prepare_cached("DELETE FROM key_packages WHERE device = ?1")?
        .execute(params![key])?;
    changes.push(Change::Revoked { device: *key });
    Ok(InstallOutcome::TookOver { previous: current })
}

pub fn devices(c: &Connection, name: &str) -> rusqlite::Result<Vec<(String, Principal)>> {
    let mut st =
        c.prepare_cached("SELECT device_id, key FROM devices WHERE name = ?1 ORDER BY device_id")?;
    let rows = st.query_map(params![name], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

pub fn publish(
    c: &Connection,
    device: &Principal,
    ciphersuite: u16,
    pool: &[NewKeyPackage],
    last_resort: Option<&NewKeyPackage>,
) -> rusqlite::Result<()> {
    let mut ins = c.prepare_cached(
        "INSERT INTO key_packages (device, ciphersuite, last_resort, data, not_before, not_after)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for kp in pool {
        ins.execute(params![
            device,
            ciphersuite,
            0,
            kp.data,
            kp.not_before,
            kp.not_after
        ])?;
    }
    if let Some(kp) = last_resort {
        c.prepare_cached(
            "DELETE FROM key_packages WHERE device = ?1 AND ciphersuite = ?2 AND last_resort = 1",
        )?
        .execute(params![device, ciphersuite])?;
        ins.execute(params![
            device,
            ciphersuite,
            1,
            kp.data,
            kp.not_before,
            kp.not_after
        ])?;
    }
    Ok(())
}

pub fn count(
    c: &Connection,
    device: &Principal,
    ciphersuite: u16,
    now: u64,
) -> rusqlite::Result<KeyPackageCount> {
    let count = |last_resort: i64| -> rusqlite::Result<u32> {
        c.prepare_cached(
            "SELECT COUNT(*) FROM key_packages WHERE device = ?1 AND ciphersuite = ?2
             AND last_resort = ?3 AND not_before <= ?4 AND not_after > ?4",
        )?
        .query_row(params![device, ciphersuite, last_resort, now], |r| r.get(0))
    };
    Ok(KeyPackageCount {
        ciphersuite,
        available: count(0)?,
        last_resort: count(1)? > 0,
    })
}

pub fn claim(
    c: &Connection,
    device: &Principal,
    ciphersuite: u16,
    now: u64,
) -> rusqlite::Result<Option<ClaimedKeyPackage>> {
    let pick = |last_resort: i64| -> rusqlite::Result<Option<(i64, Vec<u8>)>> {
        c.prepare_cached(
            "SELECT id, data FROM key_packages WHERE device = ?1 AND ciphersuite = ?2
             AND last_resort = ?3 AND not_before <= ?4 AND not_after > ?4
             ORDER BY id LIMIT 1",
        )?
        .query_row(params![device, ciphersuite, last_resort, now], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()
    };
    if let Some((id, data)) = pick(0)? {
        // The single-use package leaves the pool in the same transaction that hands it out.
        c.prepare_cached("DELETE FROM key_packages WHERE id = ?1")?
            .execute(params![id])?;
        return Ok(Some(ClaimedKeyPackage {
            key_package: data,
            last_resort: false,
        }));
    }
    Ok(pick(1)?.map(|(_, data)| ClaimedKeyPackage {
        key_package: data,
        last_resort: true,
    }))
}

fn encode_seqs(seqs: &[u64]) -> Vec<u8> {
    seqs.iter().flat_map(|s| s.to_be_bytes()).collect()
}

fn decode_seqs(bytes: &[u8]) -> Vec<u64> {
    bytes
        .chunks_exact(8)
        .map(|c| {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            u64::from_be_bytes(b)
        })
        .collect()
}

pub fn post_mailbox(
    c: &Connection,
    post: &NewMailboxPost,
    changes: &mut Vec<Change>,
) -> rusqlite::Result<MailboxOutcome> {
    let prior: Option<Vec<u8>> = c
        .prepare_cached(
            "SELECT result FROM posts WHERE principal = ?1 AND kind = ?2 AND scope = x''
             AND post_id = ?3",
        )?
        .query_row(params![post.sender, POST_KIND_MAILBOX, post.post_id], |r| {
            r.get(0)
        })
        .optional()?;
    if let Some(prior) = prior {
        return Ok(MailboxOutcome::Posted(decode_seqs(&prior)));
    }
    let mut devices = Vec::with_capacity(post.recipients.len());
    for (i, (name, device_id)) in post.recipients.iter().enumerate() {
        match device_key(c, name, device_id)? {
            Some(key) => devices.push(key),
            None => return Ok(MailboxOutcome::UnknownRecipient(i)),
        }
    }
    c.prepare_cached(
        "INSERT INTO mailbox_blobs (sender, sender_address, post_id, payload, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        post.sender,
        post.sender_address,
        post.post_id,
        post.payload,
        post.now
    ])?;
    let blob = c.last_insert_rowid();
    let mut seqs = Vec::with_capacity(post.recipients.len());
    let mut ins = c.prepare_cached(
        "INSERT INTO mailbox (device, blob, created_at) VALUES (?1, ?2, ?3) RETURNING seq",
    )?;
    for device in &devices {
        let seq: u64 = ins.query_row(params![device, blob, post.now], |r| r.get(0))?;
        seqs.push(seq);
        changes.push(Change::Mailbox { device: *device });
    }
    c.prepare_cached(
        "INSERT INTO posts (principal, kind, scope, post_id, result, created_at)
         VALUES (?1, ?2, x'', ?3, ?4, ?5)",
    )?
    .execute(params![
        post.sender,
        POST_KIND_MAILBOX,
        post.post_id,
        encode_seqs(&seqs),
        post.now
    ])?;
    Ok(MailboxOutcome::Posted(seqs))
}

pub fn read_mailbox(
    c: &Connection,
    device: &Principal,
    after: u64,
    limit: u32,
) -> rusqlite::Result<Vec<MailboxEntry>> {
    let mut st = c.prepare_cached(
        "SELECT m.seq, b.sender, b.sender_address, b.post_id, b.payload, m.created_at
         FROM mailbox m JOIN mailbox_blobs b ON b.id = m.blob
         WHERE m.device = ?1 AND m.seq > ?2 ORDER BY m.seq LIMIT ?3",
    )?;
    let rows = st.query_map(params![device, after, limit], |r| {
        Ok(MailboxEntry {
            seq: r.get(0)?,
            sender: r.get(1)?,
            sender_address: r.get(2)?,
            post_id: r.get(3)?,
            payload: r.get(4)?,
            stored_at: r.get(5)?,
        })
    })?;
    rows.collect()
}

fn delete_orphan_blobs(c: &Connection) -> rusqlite::Result<usize> {
    c.prepare_cached(
        "DELETE FROM mailbox_blobs WHERE NOT EXISTS
         (SELECT 1 FROM mailbox WHERE mailbox.blob = mailbox_blobs.id)",
    )?
    .execute([])
}

pub fn ack_mailbox(c: &Connection, device: &Principal, up_to: u64) -> rusqlite::Result<()> {
    let mut st =
        c.prepare_cached("DELETE FROM mailbox WHERE device = ?1 AND seq <= ?2 RETURNING blob")?;
    let blobs: Vec<i64> = st
        .query_map(params![device, up_to], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut del = c.prepare_cached(
        "DELETE FROM mailbox_blobs WHERE id = ?1
         AND NOT EXISTS (SELECT 1 FROM mailbox WHERE blob = ?1)",
    )?;
    for blob in blobs {
        del.execute(params![blob])?;
    }
    Ok(())
}

pub fn prune(c: &Connection, now: u64, cutoff: u64) -> rusqlite::Result<u64> {
    let mut n = c
        .prepare_cached("DELETE FROM mailbox WHERE created_at < ?1")?
        .execute(params![cutoff])?;
    n += delete_orphan_blobs(c)?;
    n += c
        .prepare_cached("DELETE FROM key_packages WHERE not_after <= ?1")?
        .execute(params![now])?;
    n += c
        .prepare_cached("DELETE FROM posts WHERE created_at < ?1")?
        .execute(params![cutoff])?;
    Ok(n as u64)
}
