//! Wall-clock helpers shared by every layer (store, model, engine, service).
//!
//! This module sits below all of them and imports nothing from the crate, so the layers
//! read top-down: service → engine → model → store → clock.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Now as an RFC 3339 UTC string with second precision.
pub fn now_rfc3339() -> String {
    let now = OffsetDateTime::now_utc();
    let now = now.replace_nanosecond(0).unwrap_or(now);
    now.format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}

/// Now as Unix seconds (UTC).
pub fn now_unix() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// A fresh 16-byte id that sorts by creation time: a UUIDv7 (RFC 9562 — 48 bits of Unix
/// milliseconds, then a counter and random bits; monotonic within this process).
///
/// Message ids and relay post ids are index keys — the daemon's `messages` indexes, the
/// relay's idempotency records — and a random key lands on a random leaf page of its B-tree,
/// so a batch of N messages dirtied about N pages of each index (a WAL frame each, every one
/// encrypted by SQLCipher in the daemon). Ids that grow with time append at one edge of the
/// index instead. They reveal only the creation time to the millisecond, which every reader
/// of such an id already learns (the relay from its arrival, members from the envelope's
/// `sent_at`); they stay unique with 74 random bits, and their scope (a sender's posts, a
/// sender's messages in a conversation) keeps anyone else's id from colliding with them.
pub fn ordered_id() -> [u8; 16] {
    uuid::Uuid::now_v7().into_bytes()
}

/// `secs` (Unix seconds, UTC) as an RFC 3339 string, or `None` when out of range.
pub fn rfc3339_from_unix(secs: i64) -> Option<String> {
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_rfc3339_utc_seconds() {
        let now = now_rfc3339();
        assert!(now.ends_with('Z'), "{now}");
        assert!(!now.contains('.'), "second precision: {now}");
        assert_eq!(
            rfc3339_from_unix(0).as_deref(),
            Some("1970-01-01T00:00:00Z")
        );
        assert_eq!(rfc3339_from_unix(i64::MAX), None);
        assert!(now_unix() > 1_600_000_000);
    }

    #[test]
    fn ordered_ids_grow_and_differ() {
        let ids: Vec<[u8; 16]> = (0..10_000).map(|_| ordered_id()).collect();
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "every id sorts after the one made before it"
        );
        // The first 6 bytes are the time in milliseconds, big-endian.
        let mut ms = [0u8; 8];
        ms[2..].copy_from_slice(&ids[0][..6]);
        let ms = u64::from_be_bytes(ms) as i64;
        assert!((ms / 1000 - now_unix()).abs() <= 2, "{ms} ms");
    }
}
