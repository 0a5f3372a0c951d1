//! Timestamps: Shopify's ISO-8601 with offsets (`2008-01-10T11:00:00-05:00`) →
//! Segment's UTC with milliseconds (`2008-01-10T16:00:00.000Z`).
//!
//! A dozen lines of calendar arithmetic instead of a date crate: we only read
//! RFC 3339 style times and write one format. Fractions beyond milliseconds are
//! truncated, never rounded, so a time never moves into the next second.

// Times are written by `crate::timefmt`, the one formatter; the receive time,
// which always exists, is clamped into the printable range.
pub(crate) use crate::timefmt::iso8601_ms as from_unix_ms;
use crate::timefmt::{DAY_MS, iso8601 as format};

// The calendar lives in `crate::timefmt`; these adapt it to this parser's i64 fields.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    crate::timefmt::days_from_civil(year, month as u32, day as u32)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    i64::from(crate::timefmt::days_in_month(year, month as u32))
}

/// A byte cursor over the text being parsed.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn eat(&mut self, wanted: &[u8]) -> Option<u8> {
        let b = self.peek().filter(|b| wanted.contains(b))?;
        self.at += 1;
        Some(b)
    }

    /// Exactly `n` ASCII digits as a number.
    fn digits(&mut self, n: usize) -> Option<i64> {
        let mut value = 0;
        for _ in 0..n {
            let b = self.peek().filter(u8::is_ascii_digit)?;
            value = value * 10 + i64::from(b - b'0');
            self.at += 1;
        }
        Some(value)
    }
}

/// Milliseconds since the Unix epoch of an ISO-8601 date-time with a zone
/// (`Z`, `±HH:MM`, `±HHMM` or `±HH`); `T`, `t` or a space between date and time;
/// seconds optional. A time without a zone is ambiguous and yields `None`.
pub(crate) fn parse(text: &str) -> Option<i64> {
    let mut c = Cursor {
        bytes: text.trim().as_bytes(),
        at: 0,
    };
    let year = c.digits(4)?;
    c.eat(b"-")?;
    let month = c.digits(2)?;
    c.eat(b"-")?;
    let day = c.digits(2)?;
    c.eat(b"Tt ")?;
    let hour = c.digits(2)?;
    c.eat(b":")?;
    let minute = c.digits(2)?;
    let (mut second, mut millis) = (0, 0);
    if c.eat(b":").is_some() {
        second = c.digits(2)?;
        if c.eat(b".,").is_some() {
            let mut places = 0;
            while let Some(d) = c.peek().filter(u8::is_ascii_digit) {
                if places < 3 {
                    millis = millis * 10 + i64::from(d - b'0');
                }
                places += 1;
                c.at += 1;
            }
            if places == 0 {
                return None;
            }
            for _ in places..3 {
                millis *= 10;
            }
        }
    }
    let offset_minutes = match c.eat(b"Zz+-")? {
        b'Z' | b'z' => 0,
        sign => {
            let hours = c.digits(2)?;
            let minutes = if c.peek().is_none() {
                0
            } else {
                c.eat(b":");
                c.digits(2)?
            };
            if hours > 23 || minutes > 59 {
                return None;
            }
            let total = hours * 60 + minutes;
            if sign == b'-' { -total } else { total }
        }
    };
    if c.peek().is_some()
        || !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let local = days_from_civil(year, month, day) * DAY_MS
        + ((hour * 60 + minute) * 60 + second) * 1000
        + millis;
    Some(local - offset_minutes * 60_000)
}

/// A payload time in Segment's form, if it parses and lands in years 0000–9999.
pub(crate) fn normalize(text: &str) -> Option<String> {
    parse(text).and_then(format)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_iso_times_to_utc_millis() {
        let table: &[(&str, Option<&str>)] = &[
            (
                "2008-01-10T11:00:00-05:00",
                Some("2008-01-10T16:00:00.000Z"),
            ),
            (
                "2021-10-01T17:01:53-04:00",
                Some("2021-10-01T21:01:53.000Z"),
            ),
            (
                "2024-03-01T00:30:00+05:30",
                Some("2024-02-29T19:00:00.000Z"),
            ),
            ("2023-12-31T22:00:00-0300", Some("2024-01-01T01:00:00.000Z")),
            ("2023-12-31T22:00:00-03", Some("2024-01-01T01:00:00.000Z")),
            (
                "2023-03-29T18:00:27.877041743Z",
                Some("2023-03-29T18:00:27.877Z"),
            ),
            ("2023-03-29T18:00:27.9Z", Some("2023-03-29T18:00:27.900Z")),
            (
                "2023-03-29T18:00:27.999999Z",
                Some("2023-03-29T18:00:27.999Z"),
            ),
            ("2023-03-29 18:00Z", Some("2023-03-29T18:00:00.000Z")),
            ("1970-01-01T00:00:00Z", Some("1970-01-01T00:00:00.000Z")),
            ("1969-12-31T23:59:59.5Z", Some("1969-12-31T23:59:59.500Z")),
            ("2000-02-29T12:00:00Z", Some("2000-02-29T12:00:00.000Z")),
            ("  2000-02-29T12:00:00Z ", Some("2000-02-29T12:00:00.000Z")),
            ("9999-12-31T23:59:59.999Z", Some("9999-12-31T23:59:59.999Z")),
            ("9999-12-31T23:59:59-01:00", None),
            ("0000-01-01T00:30:00+01:00", None),
            ("1900-02-29T12:00:00Z", None),
            ("2023-02-30T12:00:00Z", None),
            ("2023-13-01T12:00:00Z", None),
            ("2023-01-01T24:00:00Z", None),
            ("2023-01-01T23:60:00Z", None),
            ("2023-01-01T23:59:60Z", None),
            ("2023-01-01T12:00:00", None),
            ("2023-01-01T12:00:00+24:00", None),
            ("2023-01-01T12:00:00.Z", None),
            ("2023-01-01T12:00:00Zjunk", None),
            ("2023-01-01", None),
            ("", None),
            ("２０２３-01-01T12:00:00Z", None),
        ];
        for (input, want) in table {
            assert_eq!(normalize(input).as_deref(), *want, "input {input:?}");
        }
    }

    #[test]
    fn formats_receive_times() {
        assert_eq!(from_unix_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(from_unix_ms(1_719_835_200_123), "2024-07-01T12:00:00.123Z");
        assert_eq!(from_unix_ms(u64::MAX), "9999-12-31T23:59:59.999Z");
    }
}
