//! The database's time format (SPEC §4): UTC `YYYY-MM-DD HH:MM:SS` text.
//!
//! The seed's `sqlite3` queries compare stored times with `datetime('now')`, so every time is
//! written as this preformatted string rather than a driver's RFC 3339 encoding. Legacy rows may
//! hold ISO 8601 forms (`2026-01-19T22:51:50Z`, with or without fractional seconds); readers
//! accept those too.

use chrono::{DateTime, NaiveDateTime, Utc};

/// `strftime` pattern of the stored form.
pub const DB_FORMAT: &str = "%Y-%m-%d %H:%M:%S";

/// Formats a time the way the database stores it.
pub fn to_db(t: DateTime<Utc>) -> String {
    t.format(DB_FORMAT).to_string()
}

/// Parses a stored time: the canonical form, or the ISO 8601 forms legacy rows may carry.
/// Times without an offset are UTC. Returns `None` for text that is no time at all.
pub fn from_db(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    for fmt in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s.trim_end_matches('Z'), fmt) {
            return Some(t.and_utc());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn round_trips_the_stored_form() {
        let t = Utc.with_ymd_and_hms(2026, 1, 19, 0, 45, 30).unwrap();
        assert_eq!(to_db(t), "2026-01-19 00:45:30");
        assert_eq!(from_db("2026-01-19 00:45:30"), Some(t));
    }

    #[test]
    fn accepts_legacy_iso_forms() {
        let t = Utc.with_ymd_and_hms(2026, 1, 19, 22, 51, 50).unwrap();
        for s in [
            "2026-01-19T22:51:50Z",
            "2026-01-19T22:51:50",
            "2026-01-19T22:51:50.000Z",
            "2026-01-19T23:51:50+01:00",
            "2026-01-19 22:51:50.000",
        ] {
            assert_eq!(from_db(s), Some(t), "{s}");
        }
        assert_eq!(from_db("yesterday"), None);
    }
}
