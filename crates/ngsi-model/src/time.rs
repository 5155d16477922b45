//! Timestamps: system attributes are microseconds since the Unix epoch and are
//! rendered as ISO 8601 UTC with microseconds.

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};

/// The current time in microseconds since the Unix epoch.
pub fn now_micros() -> i64 {
    Utc::now().timestamp_micros()
}

/// Renders microseconds since the epoch as `YYYY-MM-DDThh:mm:ss.ssssssZ`.
pub fn format_micros(micros: i64) -> String {
    match Utc.timestamp_micros(micros).single() {
        Some(t) => t.to_rfc3339_opts(SecondsFormat::Micros, true),
        None => "1970-01-01T00:00:00.000000Z".to_string(),
    }
}

/// Parses an ISO 8601 DateTime as NGSI-LD accepts it (RFC 3339 with a time
/// zone, or without one meaning UTC) into microseconds since the epoch.
pub fn parse_datetime(s: &str) -> Option<i64> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_micros());
    }
    // Accept a missing zone (UTC assumed), which several clients send.
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|t| t.and_utc().timestamp_micros())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let t = parse_datetime("2024-05-01T08:30:00.123456Z").unwrap();
        assert_eq!(format_micros(t), "2024-05-01T08:30:00.123456Z");
        assert_eq!(
            parse_datetime("2024-05-01T16:30:00+08:00"),
            parse_datetime("2024-05-01T08:30:00Z")
        );
        assert_eq!(
            parse_datetime("2024-05-01T08:30:00"),
            parse_datetime("2024-05-01T08:30:00Z")
        );
        assert!(parse_datetime("yesterday").is_none());
        assert!(parse_datetime("2024-13-01T00:00:00Z").is_none());
    }
}
