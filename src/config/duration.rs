//! Durations in relay.toml: `"500ms"`, `"5s"`, `"10m"`, `"4h"`, `"1d"`, `"1h30m"`.

use std::time::Duration;

/// Parses a duration; the error says what is accepted.
///
/// ```
/// use std::time::Duration;
/// use shoprelay::config::parse_duration;
/// assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
/// assert!(parse_duration("4 hours").is_err());
/// ```
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("`{s}` is not a duration (use e.g. \"500ms\", \"5s\", \"10m\", \"4h\")");
    let mut total: u128 = 0;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let n: u128 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let ms = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(bad()),
        };
        total = total
            .checked_add(n.checked_mul(ms).ok_or_else(bad)?)
            .ok_or_else(bad)?;
        rest = &rest[unit_len..];
    }
    let ms = u64::try_from(total).map_err(|_| bad())?;
    Ok(Duration::from_millis(ms))
}

/// The shortest exact form `parse_duration` reads back: `4h`, `1h30m`, `500ms`.
///
/// ```
/// use std::time::Duration;
/// use shoprelay::config::format_duration;
/// assert_eq!(format_duration(Duration::from_secs(14_400)), "4h");
/// ```
pub fn format_duration(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [
        ("d", 86_400_000u128),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ] {
        if ms >= size {
            out.push_str(&format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let ok: &[(&str, u64)] = &[
            ("500ms", 500),
            ("5s", 5_000),
            ("10m", 600_000),
            ("4h", 14_400_000),
            ("1d", 86_400_000),
            ("1h30m", 5_400_000),
            ("0s", 0),
        ];
        for (s, ms) in ok {
            assert_eq!(parse_duration(s), Ok(Duration::from_millis(*ms)), "{s}");
        }
        for s in [
            "",
            "5",
            "s",
            "5x",
            "-1s",
            "1.5s",
            "5 s",
            "99999999999999999999999h",
        ] {
            assert!(parse_duration(s).is_err(), "{s} should be refused");
        }
    }
}
