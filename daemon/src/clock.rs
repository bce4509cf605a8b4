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
}
