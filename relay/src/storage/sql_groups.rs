//! SQL for group logs and their access lists.

use rusqlite::{Connection, OptionalExtension, params};
use sotto_protocol::relay::{GroupEntry, GroupState, Principal, content_type};

use super::{AppendOutcome, Change, CreateOutcome, GroupInfoOutcome, NewGroupEntry, ReadOutcome};

/// `posts.kind` of group posts (scope = the group id).
pub const POST_KIND_GROUP: i64 = 1;

struct GroupRow {
    epoch: u64,
    head: u64,
    pruned_through: u64,
}

fn group_row(c: &Connection, id: &[u8]) -> rusqlite::Result<Option<GroupRow>> {
    c.prepare_cached("SELECT epoch, head, pruned_through FROM groups WHERE id = ?1")?
        .query_row(params![id], |r| {
            Ok(GroupRow {
                epoch: r.get(0)?,
                head: r.get(1)?,
                pruned_through: r.get(2)?,
            })
        })
        .optional()
}

/// `(added_seq, removed_seq)` of a principal's membership row.
fn membership(
    c: &Connection,
    id: &[u8],
    who: &Principal,
) -> rusqlite::Result<Option<(u64, Option<u64>)>> {
    c.prepare_cached(
        "SELECT added_seq, removed_seq FROM group_members WHERE group_id = ?1 AND principal = ?2",
    )?
    .query_row(params![id, who], |r| Ok((r.get(0)?, r.get(1)?)))
    .optional()
}

fn to_state(id: &[u8], g: &GroupRow) -> GroupState {
    GroupState {
        group_id: id.to_vec(),
        epoch: g.epoch,
        head_seq: g.head,
        oldest_seq: g.pruned_through + 1,
    }
}

pub fn create(
    c: &Connection,
    id: &[u8],
    creator: &Principal,
    now: u64,
) -> rusqlite::Result<CreateOutcome> {
    if let Some(g) = group_row(c, id)? {
        return Ok(match membership(c, id, creator)? {
            Some((_, None)) => CreateOutcome::Ok(to_state(id, &g)),
            _ => CreateOutcome::Exists,
        });
    }
    c.prepare_cached(
        "INSERT INTO groups (id, epoch, head, pruned_through, created_at) VALUES (?1, 0, 0, 0, ?2)",
    )?
    .execute(params![id, now])?;
    c.prepare_cached(
        "INSERT INTO group_members (group_id, principal, added_seq, removed_seq, cursor)
         VALUES (?1, ?2, 0, NULL, 0)",
    )?
    .execute(params![id, creator])?;
    Ok(CreateOutcome::Ok(GroupState {
        group_id: id.to_vec(),
        epoch: 0,
        head_seq: 0,
        oldest_seq: 1,
    }))
}

pub fn append(
    c: &Connection,
    e: &NewGroupEntry,
    changes: &mut Vec<Change>,
) -> rusqlite::Result<AppendOutcome> {
    let prior: Option<Vec<u8>> = c
        .prepare_cached(
            "SELECT result FROM posts WHERE principal = ?1 AND kind = ?2 AND scope = ?3
             AND post_id = ?4",
        )?
        .query_row(
            params![e.sender, POST_KIND_GROUP, e.group_id, e.post_id],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(p) = prior.filter(|p| p.len() == 16) {
        let (s, ep) = p.split_at(8);
        let seq = u64::from_be_bytes(s.try_into().unwrap_or_default());
        let epoch = u64::from_be_bytes(ep.try_into().unwrap_or_default());
        return Ok(AppendOutcome::Accepted { seq, epoch });
    }
    let Some(g) = group_row(c, &e.group_id)? else {
        return Ok(AppendOutcome::UnknownGroup);
    };
    if !matches!(membership(c, &e.group_id, &e.sender)?, Some((_, None))) {
        return Ok(AppendOutcome::NotMember);
    }
    // The order precondition: the sender's previous post of a pipelined run is stored
    // (earlier in this batch's transaction, or committed), else nothing is.
    if let Some(after) = &e.after {
        let found = c
            .prepare_cached(
                "SELECT 1 FROM posts WHERE principal = ?1 AND kind = ?2 AND scope = ?3
                 AND post_id = ?4",
            )?
            .query_row(
                params![e.sender, POST_KIND_GROUP, e.group_id, after],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
        if !found {
            return Ok(AppendOutcome::OutOfOrder);
        }
    }
    let conflict = AppendOutcome::Conflict {
        current_epoch: g.epoch,
        head_seq: g.head,
    };
    if e.epoch != g.epoch {
        return Ok(conflict);
    }
    let is_commit = e.content_type == content_type::COMMIT;
    // The conditional update: exactly one row, or someone else moved the epoch first.
    let touched = if is_commit {
        c.prepare_cached(
            "UPDATE groups SET epoch = ?2 + 1, head = head + 1 WHERE id = ?1 AND epoch = ?2",
        )?
        .execute(params![e.group_id, e.epoch])?
    } else {
        c.prepare_cached("UPDATE groups SET head = head + 1 WHERE id = ?1 AND epoch = ?2")?
            .execute(params![e.group_id, e.epoch])?
    };
    if touched != 1 {
        return Ok(conflict);
    }
    let seq = g.head + 1;
    let epoch = if is_commit { e.epoch + 1 } else { e.epoch };
    c.prepare_cached("INSERT INTO group_log (group_id, seq, epoch, content_type, sender, post_id, message, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)")?.execute(params![e.group_id, seq, e.epoch, e.content_type, e.sender, e.post_id, e.message, e.now],
    )?;
    if is_commit {
        apply_delta(c, &e.group_id, seq, &e.added, &e.removed)?;
        if let Some(info) = &e.group_info {
            c.prepare_cached(
                "INSERT INTO group_infos (group_id, epoch, seq, data) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (group_id) DO UPDATE
                 SET epoch = excluded.epoch, seq = excluded.seq, data = excluded.data
                 WHERE excluded.seq > group_infos.seq",
            )?
            .execute(params![e.group_id, epoch, seq, info])?;
        }
    }
    let mut result = seq.to_be_bytes().to_vec();
    result.extend_from_slice(&epoch.to_be_bytes());
    c.prepare_cached(
        "INSERT INTO posts (principal, kind, scope, post_id, result, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        e.sender,
        POST_KIND_GROUP,
        e.group_id,
        e.post_id,
        result,
        e.now
    ])?;
    changes.push(Change::Group {
        group_id: e.group_id.clone(),
        head: seq,
    });
    Ok(AppendOutcome::Accepted { seq, epoch })
}

fn apply_delta(
    c: &Connection,
    id: &[u8],
    seq: u64,
    added: &[Principal],
    removed: &[Principal],
) -> rusqlite::Result<()> {
    for p in removed {
        c.prepare_cached(
            "UPDATE group_members SET removed_seq = ?3
             WHERE group_id = ?1 AND principal = ?2 AND removed_seq IS NULL",
        )?
        .execute(params![id, p, seq])?;
    }
    for p in added {
        // A new member reads from the entry after the commit that added it; re-adding a
        // removed principal starts a new membership.
        c.prepare_cached(
            "INSERT INTO group_members (group_id, principal, added_seq, removed_seq, cursor)
             VALUES (?1, ?2, ?3, NULL, ?3)
             ON CONFLICT (group_id, principal) DO UPDATE
             SET added_seq = excluded.added_seq, removed_seq = NULL, cursor = excluded.cursor
             WHERE group_members.removed_seq IS NOT NULL",
        )?
        .execute(params![id, p, seq])?;
    }
    Ok(())
}

pub fn read(
    c: &Connection,
    id: &[u8],
    reader: &Principal,
    after: u64,
    limit: u32,
) -> rusqlite::Result<ReadOutcome> {
    let Some(g) = group_row(c, id)? else {
        return Ok(ReadOutcome::UnknownGroup);
    };
    let Some((added, removed)) = membership(c, id, reader)? else {
        return Ok(ReadOutcome::NotMember);
    };
    let start = after.max(added);
    if start < g.pruned_through {
        return Ok(ReadOutcome::Gap {
            oldest_seq: g.pruned_through + 1,
        });
    }
    // Each statement may see a newer snapshot than the one before: entries are bounded by
    // the head read first, so none lies past a removal this read did not see.
    let end = removed.unwrap_or(i64::MAX as u64).min(g.head);
    let mut st = c.prepare_cached(
        "SELECT seq, epoch, content_type, sender, post_id, message FROM group_log
         WHERE group_id = ?1 AND seq > ?2 AND seq <= ?3 ORDER BY seq LIMIT ?4",
    )?;
    let rows = st.query_map(params![id, start, end, limit], |r| {
        Ok(GroupEntry {
            seq: r.get(0)?,
            epoch: r.get(1)?,
            content_type: r.get(2)?,
            sender: r.get(3)?,
            post_id: r.get(4)?,
            message: r.get(5)?,
        })
    })?;
    Ok(ReadOutcome::Entries {
        entries: rows.collect::<rusqlite::Result<_>>()?,
        removed_at: removed,
        head_seq: g.head,
    })
}

pub fn ack(c: &Connection, id: &[u8], who: &Principal, seq: u64) -> rusqlite::Result<()> {
    c.prepare_cached("UPDATE group_members SET cursor = MAX(cursor, MIN(?3, (SELECT head FROM groups WHERE id = ?1)))
         WHERE group_id = ?1 AND principal = ?2")?.execute(params![id, who, seq],
    )?;
    Ok(())
}

pub fn member_groups(
    c: &Connection,
    member: &Principal,
    limit: u32,
) -> rusqlite::Result<Vec<GroupState>> {
    let mut st = c.prepare_cached(
        "SELECT g.id, g.epoch, g.head, g.pruned_through FROM group_members m
         JOIN groups g ON g.id = m.group_id
         WHERE m.principal = ?1 AND m.removed_seq IS NULL ORDER BY g.id LIMIT ?2",
    )?;
    let rows = st.query_map(params![member, limit], |r| {
        let id: Vec<u8> = r.get(0)?;
        let g = GroupRow {
            epoch: r.get(1)?,
            head: r.get(2)?,
            pruned_through: r.get(3)?,
        };
        Ok(to_state(&id, &g))
    })?;
    rows.collect()
}

pub fn group_info(
    c: &Connection,
    id: &[u8],
    reader: &Principal,
) -> rusqlite::Result<GroupInfoOutcome> {
    if group_row(c, id)?.is_none() {
        return Ok(GroupInfoOutcome::UnknownGroup);
    }
    if !matches!(membership(c, id, reader)?, Some((_, None))) {
        return Ok(GroupInfoOutcome::NotMember);
    }
    let found = c
        .prepare_cached("SELECT epoch, seq, data FROM group_infos WHERE group_id = ?1")?
        .query_row(params![id], |r| {
            Ok(GroupInfoOutcome::Found {
                epoch: r.get(0)?,
                seq: r.get(1)?,
                data: r.get(2)?,
            })
        })
        .optional()?;
    Ok(found.unwrap_or(GroupInfoOutcome::None))
}

pub fn state(c: &Connection, id: &[u8]) -> rusqlite::Result<Option<GroupState>> {
    Ok(group_row(c, id)?.map(|g| to_state(id, &g)))
}

/// Drops entries every interested member has acknowledged, and entries older than
/// `cutoff` regardless. Returns the number of entries dropped.
pub fn prune(c: &Connection, cutoff: u64) -> rusqlite::Result<u64> {
    let mut st = c.prepare_cached(
        "SELECT g.id, g.head, g.pruned_through,
            (SELECT MIN(m.cursor) FROM group_members m WHERE m.group_id = g.id
               AND (m.removed_seq IS NULL OR m.cursor < m.removed_seq)),
            (SELECT MAX(l.seq) FROM group_log l WHERE l.group_id = g.id AND l.created_at < ?1)
         FROM groups g",
    )?;
    type Row = (Vec<u8>, u64, u64, Option<u64>, Option<u64>);
    let rows: Vec<Row> = st
        .query_map(params![cutoff], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut dropped = 0u64;
    for (id, head, pruned, min_cursor, aged) in rows {
        let read_by_all = min_cursor.unwrap_or(head);
        let through = read_by_all.max(aged.unwrap_or(0)).min(head);
        if through <= pruned {
            continue;
        }
        dropped += c
            .prepare_cached("DELETE FROM group_log WHERE group_id = ?1 AND seq <= ?2")?
            .execute(params![id, through])? as u64;
        c.prepare_cached("UPDATE groups SET pruned_through = ?2 WHERE id = ?1")?
            .execute(params![id, through])?;
    }
    Ok(dropped)
}
