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

/// Formats a producer's instant (an observedAt read back from history) in
/// UTC with the fewest fractional digits that keep it exact: whole seconds
/// as `2020-08-01T12:03:00Z`, as producers and the ETSI tests write them.
pub fn format_instant(micros: i64) -> String {
    let format = if micros % 1_000_000 == 0 {
        SecondsFormat::Secs
    } else if micros % 1_000 == 0 {
        SecondsFormat::Millis
    } else {
        SecondsFormat::Micros
    };
    match Utc.timestamp_micros(micros).single() {
        Some(t) => t.to_rfc3339_opts(format, true),
        None => "1970-01-01T00:00:00Z".to_string(),
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
    #[test]
    fn durations() {
        let d = |s| IsoDuration::parse(s);
        assert_eq!(d("P1D").unwrap().micros, 86_400_000_000);
        assert_eq!(d("PT1H").unwrap().micros, 3_600_000_000);
        assert_eq!(d("PT0S").unwrap(), IsoDuration::default());
        assert_eq!(d("P1Y2M").unwrap().months, 14);
        assert_eq!(d("P1W").unwrap().micros, 7 * 86_400_000_000);
        assert_eq!(d("PT1.5S").unwrap().micros, 1_500_000);
        assert_eq!(
            d("P3Y6M4DT12H30M5S").unwrap(),
            IsoDuration {
                months: 42,
                micros: ((4 * 24 + 12) * 3600 + 30 * 60 + 5) * 1_000_000
            }
        );
        for bad in [
            "",
            "P",
            "PT",
            "1D",
            "P1",
            "PD",
            "P1H",
            "PT1D",
            "P1DT",
            "P-1D",
            "P1.5D",
            "PT1M1H",
            "P1D1Y",
            "P1DD",
            "PT.5S",
            "PT1.S",
            "P99999999999999999999D",
            "P1Y T1H",
            "p1d",
        ] {
            assert_eq!(d(bad), None, "{bad}");
        }
        let jan31 = parse_datetime("2024-01-31T00:00:00Z").unwrap();
        assert_eq!(
            d("P1M").unwrap().add_to(jan31),
            parse_datetime("2024-02-29T00:00:00Z")
        );
    }

    proptest::proptest! {
        #[test]
        fn duration_parsing_never_panics(s in "\\PC{0,24}") {
            let _ = IsoDuration::parse(&s);
        }

        #[test]
        fn durations_round_trip(y in 0u32..100, mo in 0u32..100, dd in 0i64..1000, h in 0i64..100, s in 0i64..100_000) {
            let text = format!("P{y}Y{mo}M{dd}DT{h}H{s}S");
            let parsed = IsoDuration::parse(&text).unwrap();
            proptest::prop_assert_eq!(parsed.months, y * 12 + mo);
            proptest::prop_assert_eq!(parsed.micros, ((dd * 24 + h) * 3600 + s) * 1_000_000);
            let _ = parsed.add_to(i64::MAX);
            let _ = parsed.add_to(i64::MIN);
        }
    }
}

/// An ISO 8601 duration as `aggrPeriodDuration` takes it (clause 4.5.19):
/// `P[n]Y[n]M[n]W[n]DT[n]H[n]M[n]S`, with a decimal fraction allowed on the
/// seconds only. Years and months are calendar units, kept apart from the
/// fixed part so that `P1M` ends on the same day of the next month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IsoDuration {
    /// Years × 12 + months.
    pub months: u32,
    /// Weeks, days, hours, minutes and seconds in microseconds.
    pub micros: i64,
}

/// The most of each duration component (a century of seconds), so that no
/// sum of components overflows.
const MAX_COMPONENT: u64 = 3_155_760_000;

impl IsoDuration {
    /// Parses `s`; `None` when it is not an ISO 8601 duration of the form
    /// above (alternative and negative forms are refused).
    pub fn parse(s: &str) -> Option<Self> {
        let rest = s.strip_prefix('P')?;
        if rest.is_empty() {
            return None;
        }
        let (date, time) = match rest.split_once('T') {
            Some((d, t)) => {
                if t.is_empty() {
                    return None;
                }
                (d, Some(t))
            }
            None => (rest, None),
        };
        let mut out = Self::default();
        let mut months: u64 = 0;
        let mut micros: u64 = 0;
        // Each designator once and in order: the position of the last one.
        let mut order = 0usize;
        for (part, designators, is_time) in
            [(date, "YMWD", false), (time.unwrap_or(""), "HMS", true)]
        {
            let mut digits = String::new();
            for c in part.chars() {
                if c.is_ascii_digit() || (c == '.' && is_time) {
                    digits.push(c);
                    continue;
                }
                let pos = designators.find(c)? + if is_time { 4 } else { 0 };
                if pos < order || digits.is_empty() || digits.len() > 18 {
                    return None;
                }
                order = pos + 1;
                let (whole, frac) = match digits.split_once('.') {
                    Some((w, f)) if c == 'S' && !w.is_empty() && !f.is_empty() && f.len() <= 6 => {
                        (w, f)
                    }
                    Some(_) => return None,
                    None => (digits.as_str(), ""),
                };
                let n: u64 = whole.parse().ok()?;
                if n > MAX_COMPONENT {
                    return None;
                }
                let frac_micros: u64 = if frac.is_empty() {
                    0
                } else {
                    format!("{frac:0<6}").parse().ok()?
                };
                match (c, is_time) {
                    ('Y', false) => months += n * 12,
                    ('M', false) => months += n,
                    ('W', false) => micros += n * 7 * 86_400_000_000,
                    ('D', false) => micros += n * 86_400_000_000,
                    ('H', true) => micros += n * 3_600_000_000,
                    ('M', true) => micros += n * 60_000_000,
                    ('S', true) => micros += n * 1_000_000 + frac_micros,
                    _ => return None,
                }
                digits.clear();
            }
            if !digits.is_empty() {
                return None;
            }
        }
        out.months = u32::try_from(months).ok()?;
        out.micros = i64::try_from(micros).ok()?;
        Some(out)
    }

    /// Whether the duration is zero (`PT0S`, `P0D`): one period spanning the
    /// whole time range of the query.
    pub fn is_zero(&self) -> bool {
        self.months == 0 && self.micros == 0
    }

    /// `t` (microseconds since the epoch) plus the duration, in UTC; `None`
    /// when the result leaves the representable range.
    pub fn add_to(&self, t: i64) -> Option<i64> {
        let mut at = Utc.timestamp_micros(t).single()?;
        if self.months > 0 {
            at = at.checked_add_months(chrono::Months::new(self.months))?;
        }
        at.timestamp_micros().checked_add(self.micros)
    }
}

#[cfg(test)]
mod instant_tests {
    use super::*;

    #[test]
    fn instants_keep_only_the_digits_they_need() {
        for text in [
            "2020-08-01T12:03:00Z",
            "2020-08-01T12:03:00.250Z",
            "2020-08-01T12:03:00.000001Z",
        ] {
            assert_eq!(format_instant(parse_datetime(text).unwrap()), text);
        }
        let offset = parse_datetime("2020-08-01T20:03:00+08:00").unwrap();
        assert_eq!(format_instant(offset), "2020-08-01T12:03:00Z");
    }
}
