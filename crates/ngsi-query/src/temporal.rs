//! Parsing of the DateTime, Date and Time value formats of clause 4.6.3 into
//! keys that order chronologically.
//!
//! Hand-written rather than pulling in `chrono`: the formats are fixed
//! (ISO 8601 extended, complete representation) and only an ordering key is
//! needed.

/// Reads exactly `n` ASCII digits at the start of `s`.
fn digits(s: &[u8], n: usize) -> Option<u32> {
    if s.len() < n {
        return None;
    }
    let mut v = 0u32;
    for &b in &s[..n] {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u32::from(b - b'0');
    }
    Some(v)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (the well-known
/// civil-from-days inverse).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DD` to days since the epoch.
pub(crate) fn parse_date(s: &str) -> Option<i64> {
    let (days, used) = date_prefix(s.as_bytes())?;
    (used == s.len()).then_some(days)
}

fn date_prefix(b: &[u8]) -> Option<(i64, usize)> {
    let y = digits(b, 4)?;
    if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return None;
    }
    let m = digits(&b[5..], 2)?;
    let d = digits(&b[8..], 2)?;
    let y = i64::from(y);
    if !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) {
        return None;
    }
    Some((days_from_civil(y, m, d), 10))
}

/// `hh:mm:ss[.f]` to nanoseconds since midnight, and the bytes used. A comma
/// is accepted as decimal separator where `allow_comma` (stored values may use
/// it, clause 4.6.3).
fn time_prefix(b: &[u8], allow_comma: bool) -> Option<(u64, usize)> {
    let h = digits(b, 2)?;
    if b.get(2) != Some(&b':') || b.get(5) != Some(&b':') {
        return None;
    }
    let mi = digits(&b[3..], 2)?;
    let s = digits(&b[6..], 2)?;
    if h > 23 || mi > 59 || s > 59 {
        return None;
    }
    let mut used = 8;
    let mut nanos = 0u64;
    if matches!(b.get(8), Some(b'.')) || (allow_comma && matches!(b.get(8), Some(b','))) {
        let frac: Vec<u8> = b[9..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .copied()
            .collect();
        if frac.is_empty() || frac.len() > 9 {
            return None;
        }
        for i in 0..9 {
            nanos = nanos * 10 + u64::from(frac.get(i).map_or(0, |c| c - b'0'));
        }
        used = 9 + frac.len();
    }
    let secs = u64::from(h) * 3600 + u64::from(mi) * 60 + u64::from(s);
    Some((secs * 1_000_000_000 + nanos, used))
}

/// A zone designator: `Z` (offset 0) or `+hh:mm` / `-hh:mm` (offset in
/// seconds), and the bytes used.
fn zone(b: &[u8]) -> Option<(i64, usize)> {
    match b.first()? {
        b'Z' => Some((0, 1)),
        sign @ (b'+' | b'-') => {
            let h = digits(&b[1..], 2)?;
            if b.get(3) != Some(&b':') {
                return None;
            }
            let m = digits(&b[4..], 2)?;
            if h > 23 || m > 59 {
                return None;
            }
            let off = i64::from(h * 3600 + m * 60);
            Some((if *sign == b'-' { -off } else { off }, 6))
        }
        _ => None,
    }
}

/// `YYYY-MM-DDThh:mm:ss[.f](Z|±hh:mm)` to nanoseconds since the epoch (UTC).
pub(crate) fn parse_datetime(s: &str) -> Option<i128> {
    let b = s.as_bytes();
    let (days, _) = date_prefix(b)?;
    if b.get(10) != Some(&b'T') {
        return None;
    }
    let (tod, used) = time_prefix(&b[11..], true)?;
    let (off, zused) = zone(&b[11 + used..])?;
    if 11 + used + zused != b.len() {
        return None;
    }
    let secs = i128::from(days) * 86_400 - i128::from(off);
    Some(secs * 1_000_000_000 + i128::from(tod))
}

/// `hh:mm:ss[.f][Z]` to nanoseconds since midnight.
pub(crate) fn parse_time(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    let (tod, used) = time_prefix(b, true)?;
    match &b[used..] {
        [] | [b'Z'] => Some(tod),
        _ => None,
    }
}

/// The length of the longest prefix of `s` that is shaped like a date or a
/// date-time in a query (digits and separators, no comma fraction), so the
/// lexer can cut it out before validating it.
pub(crate) fn lex_date_or_datetime(s: &str) -> usize {
    let b = s.as_bytes();
    if !shape(b, b"dddd-dd-dd") {
        return 0;
    }
    if b.get(10) != Some(&b'T') {
        return 10;
    }
    11 + lex_time(&s[11..])
}

/// Whether `b` starts with `pattern`, where `d` stands for any ASCII digit.
fn shape(b: &[u8], pattern: &[u8]) -> bool {
    b.len() >= pattern.len()
        && b.iter().zip(pattern).all(|(c, p)| match p {
            b'd' => c.is_ascii_digit(),
            p => c == p,
        })
}

/// Like [`lex_date_or_datetime`] for a time of day.
pub(crate) fn lex_time(s: &str) -> usize {
    let b = s.as_bytes();
    if !shape(b, b"dd:dd:dd") {
        return 0;
    }
    let mut i = 8;
    if b.get(i) == Some(&b'.') && b.get(i + 1).is_some_and(u8::is_ascii_digit) {
        i += 1 + b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
    }
    match b.get(i) {
        Some(b'Z') => i + 1,
        Some(b'+' | b'-') if shape(&b[i + 1..], b"dd:dd") => i + 6,
        _ => i,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes_order_chronologically() {
        let a = parse_datetime("2017-12-24T12:00:00Z").unwrap();
        let b = parse_datetime("2017-12-24T13:00:00+01:00").unwrap();
        let c = parse_datetime("2017-12-24T12:00:00.5Z").unwrap();
        let d = parse_datetime("2017-12-24T12:00:00,5Z").unwrap();
        assert_eq!(a, b);
        assert!(c > a);
        assert_eq!(c, d);
        assert_eq!(parse_datetime("1970-01-01T00:00:00Z"), Some(0));
        assert!(parse_datetime("1969-12-31T23:59:59Z").unwrap() < 0);
    }

    #[test]
    fn invalid_temporals_are_rejected() {
        for s in [
            "2017-02-29T00:00:00Z",
            "2017-13-01T00:00:00Z",
            "2017-12-24T24:00:00Z",
            "2017-12-24T12:00:00",
            "2017-12-24T12:00Z",
            "2017-12-24 12:00:00Z",
            "2017-12-24T12:00:00.Z",
        ] {
            assert_eq!(parse_datetime(s), None, "{s}");
        }
        assert_eq!(parse_date("2016-02-29"), Some(days_from_civil(2016, 2, 29)));
        assert_eq!(parse_date("2016-02-30"), None);
        assert_eq!(parse_time("12:00:00Z"), Some(43_200_000_000_000));
        assert_eq!(parse_time("12:60:00Z"), None);
    }
}
