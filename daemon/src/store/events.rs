//! The persisted event log behind `events.subscribe {since}`.

use rusqlite::{Connection, OptionalExtension as _, params};
use sotto_protocol::api::{Event, EventPayload};

use super::{Db, StoreError};

/// Pruning runs every this many events, keeping the newest `event_retention`.
const PRUNE_EVERY: u64 = 64;

/// Inserts an event and returns it with its new `seq`.
pub(super) fn append(
    conn: &Connection,
    payload: EventPayload,
    retention: u64,
) -> Result<Event, StoreError> {
    let json = serde_json::to_string(&payload).map_err(|e| StoreError::Decode(e.to_string()))?;
    conn.prepare_cached("INSERT INTO events (type, payload, created_at) VALUES (?1, ?2, ?3)")?
        .execute(params![
            payload.type_name(),
            json,
            crate::clock::now_rfc3339()
        ])?;
    let seq =
        u64::try_from(conn.last_insert_rowid()).map_err(|e| StoreError::Decode(e.to_string()))?;
    if seq % PRUNE_EVERY == 0 || retention < PRUNE_EVERY {
        prune(conn, seq, retention)?;
    }
    Ok(Event { seq, payload })
}

fn prune(conn: &Connection, newest: u64, retention: u64) -> Result<(), StoreError> {
    let Some(through) = newest.checked_sub(retention) else {
        return Ok(());
    };
    if through == 0 {
        return Ok(());
    }
    let deleted = conn.execute(
        "DELETE FROM events WHERE seq <= ?1",
        params![through as i64],
    )?;
    if deleted > 0 {
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('events_pruned_through', ?1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![through.to_string()],
        )?;
    }
    Ok(())
}

/// A page of events for replay.
#[derive(Debug, Clone)]
pub struct EventPage {
    /// Events with `seq > since`, in order.
    pub events: Vec<Event>,
}

impl Db {
    /// The newest event's seq, 0 when none was ever written.
    pub fn last_event_seq(&self) -> Result<u64, StoreError> {
        let seq: Option<i64> = self
            .conn
            .query_row(
                "SELECT seq FROM sqlite_sequence WHERE name = 'events'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        Ok(seq.unwrap_or(0).max(0) as u64)
    }

    /// The highest seq that was pruned (0 when nothing was): `since` below it has expired.
    pub fn events_pruned_through(&self) -> Result<u64, StoreError> {
        let v: Option<String> = self
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'events_pruned_through'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        Ok(v.and_then(|v| v.parse().ok()).unwrap_or(0))
    }

    /// Up to `limit` events with `seq > since`, oldest first.
    pub fn events_after(&self, since: u64, limit: u32) -> Result<EventPage, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, payload FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![since as i64, limit], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut events = Vec::new();
        for row in rows {
            let (seq, json) = row?;
            let payload: EventPayload = serde_json::from_str(&json)
                .map_err(|e| StoreError::Decode(format!("event {seq}: {e}")))?;
            events.push(Event {
                seq: seq as u64,
                payload,
            });
        }
        Ok(EventPage { events })
    }
}
