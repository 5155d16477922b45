//! Timestamps: system attributes are microseconds since the Unix epoch and are
//! rendered as ISO 8601 UTC with microseconds.

use chrono::{DateTime, Datelike, SecondsFormat, TimeZone, Utc};

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

/// `s` with a comma before the fraction of the seconds written as a point:
/// requests may use either (clause 4.6.3), answers use the point.
pub fn normalize_datetime(s: &str) -> std::borrow::Cow<'_, str> {
    match s.as_bytes().get(19) {
        Some(b',') if s.as_bytes().get(20).is_some_and(u8::is_ascii_digit) => {
            std::borrow::Cow::Owned(format!("{}.{}", &s[..19], &s[20..]))
        }
        _ => std::borrow::Cow::Borrowed(s),
    }
}

/// Parses an ISO 8601 DateTime as NGSI-LD accepts it (RFC 3339 with a time
/// zone, or without one meaning UTC) into microseconds since the epoch.
pub fn parse_datetime(s: &str) -> Option<i64> {
    let s = &*normalize_datetime(s);
    match parse_common(s.as_bytes()) {
        Some(t) => Some(t),
        None => parse_with_chrono(s),
    }
}

/// [`parse_datetime`] by chrono: every form, at several times the cost.
fn parse_with_chrono(s: &str) -> Option<i64> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_micros());
    }
    // Accept a missing zone (UTC assumed), which several clients send.
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|t| t.and_utc().timestamp_micros())
}

/// The form producers send nearly always, read without chrono:
/// `YYYY-MM-DDThh:mm:ss`, then 1 to 9 fractional digits after a `.`, then
/// `Z` or `+hh:mm`/`-hh:mm`. `None` means "not this form", never "invalid":
/// the caller then asks chrono, which also takes a lower-case `t` or `z`, a
/// space for the `T`, a leap second, longer fractions and a missing zone.
/// Whatever this accepts, chrono reads as the same instant (a property test
/// checks it).
fn parse_common(b: &[u8]) -> Option<i64> {
    fn digits(b: &[u8]) -> Option<i64> {
        b.iter().try_fold(0i64, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0'))
        })
    }
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let year = digits(&b[0..4])?;
    let month = digits(&b[5..7])?;
    let day = digits(&b[8..10])?;
    let hour = digits(&b[11..13])?;
    let minute = digits(&b[14..16])?;
    let second = digits(&b[17..19])?;
    // chrono checks the date (month lengths, leap years) and counts its days.
    let date = chrono::NaiveDate::from_ymd_opt(
        i32::try_from(year).ok()?,
        u32::try_from(month).ok()?,
        u32::try_from(day).ok()?,
    )?;
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut rest = &b[19..];
    let mut nanos = 0i64;
    if let [b'.', tail @ ..] = rest {
        let n = tail.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 || n > 9 {
            return None;
        }
        nanos = digits(&tail[..n])? * 10i64.pow(9 - n as u32);
        rest = &tail[n..];
    }
    let offset = match rest {
        [b'Z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let hours = digits(&[*h1, *h2])?;
            let minutes = digits(&[*m1, *m2])?;
            if hours > 23 || minutes > 59 {
                return None;
            }
            let seconds = hours * 3600 + minutes * 60;
            if *sign == b'-' { -seconds } else { seconds }
        }
        _ => return None,
    };
    // Days from 0001-01-01 (day 1) to 1970-01-01.
    const EPOCH_FROM_CE: i64 = 719_163;
    let days = i64::from(date.num_days_from_ce()) - EPOCH_FROM_CE;
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset;
    Some(seconds * 1_000_000 + nanos / 1000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_common_form_reads_as_chrono_reads_it() {
        for s in [
            "2024-03-01T08:00:00Z",
            "1970-01-01T00:00:00Z",
            "1969-12-31T23:59:59.999999999Z",
            "0000-01-01T00:00:00Z",
            "9999-12-31T23:59:59.1+23:59",
            "2000-02-29T12:00:00-08:30",
            "2024-05-01T16:30:00.123456789+08:00",
        ] {
            assert!(parse_common(s.as_bytes()).is_some(), "{s}");
            assert_eq!(parse_common(s.as_bytes()), parse_with_chrono(s), "{s}");
        }
        // Left to chrono: other spellings, and what is invalid.
        for s in [
            "2024-03-01t08:00:00Z",
            "2024-03-01T08:00:00z",
            "2024-03-01 08:00:00Z",
            "2024-03-01T08:00:60Z",
            "2024-03-01T08:00:00.1234567891Z",
            "2024-03-01T08:00:00",
            "2023-02-29T00:00:00Z",
            "2024-04-31T00:00:00Z",
            "2024-03-01T24:00:00Z",
            "2024-03-01T08:00:00.Z",
            "2024-03-01T08:00:00+24:00",
            "+2024-03-01T08:00:00Z",
        ] {
            assert_eq!(parse_common(s.as_bytes()), None, "{s}");
        }
    }

    proptest! {
        /// Whatever the fast reader takes, chrono reads as the same instant.
        #[test]
        fn the_fast_reader_agrees_with_chrono(
            year in 0i64..10_000, month in 0i64..14, day in 0i64..33,
            hour in 0i64..25, minute in 0i64..61, second in 0i64..61,
            fraction in proptest::option::of("[0-9]{0,11}"),
            zone in prop_oneof![
                Just(String::from("Z")),
                (prop_oneof!["[+]", "-"], 0i64..26, 0i64..61)
                    .prop_map(|(s, h, m)| format!("{s}{h:02}:{m:02}")),
                "[a-zA-Z0-9:+ ]{0,7}",
            ],
        ) {
            let fraction = fraction.map(|f| format!(".{f}")).unwrap_or_default();
            let s = format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}{fraction}{zone}");
            if let Some(t) = parse_common(s.as_bytes()) {
                prop_assert_eq!(Some(t), parse_with_chrono(&s), "{}", s);
            }
            prop_assert_eq!(parse_datetime(&s), parse_with_chrono(&s), "{}", s);
        }
    }

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

    proptest! {
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

    /// `t` plus `k` times this duration, the months counted from `t`: the
    /// k-th monthly period after January 31st starts on the last day of a
    /// shorter month and on the 31st again after it (stepping from the
    /// previous end would drift to the 29th).
    pub fn add_times_to(&self, t: i64, k: u64) -> Option<i64> {
        let mut at = Utc.timestamp_micros(t).single()?;
        let months = u32::try_from(u64::from(self.months).checked_mul(k)?).ok()?;
        if months > 0 {
            at = at.checked_add_months(chrono::Months::new(months))?;
        }
        let micros = self.micros.checked_mul(i64::try_from(k).ok()?)?;
        at.timestamp_micros().checked_add(micros)
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
