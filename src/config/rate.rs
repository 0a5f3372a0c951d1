//! `rate_limit = "50/s"` (or `"/m"`): the most requests a destination gets
//! from one relay in a second (a minute).

use std::fmt;
use std::time::Duration;

/// At most `count` requests per `per`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests allowed in one `per`.
    pub count: u32,
    /// One second or one minute.
    pub per: Duration,
}

impl RateLimit {
    /// The spacing between two requests at the limit.
    pub fn interval(&self) -> Duration {
        self.per / self.count.max(1)
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = if self.per >= Duration::from_secs(60) {
            "m"
        } else {
            "s"
        };
        write!(f, "{}/{unit}", self.count)
    }
}

/// Parses `"50/s"` or `"600/m"`; the error says what is accepted.
pub fn parse_rate_limit(s: &str) -> Result<RateLimit, String> {
    let bad = || {
        format!(
            "`{s}` is not a rate (use requests per second or minute, e.g. \"50/s\" or \"600/m\")"
        )
    };
    let (count, unit) = s.trim().split_once('/').ok_or_else(bad)?;
    let count: u32 = count.trim().parse().map_err(|_| bad())?;
    let per = match unit.trim() {
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        _ => return Err(bad()),
    };
    if count == 0 {
        return Err(format!(
            "`{s}`: a rate of 0 would never send; remove the key for no limit"
        ));
    }
    if count > 1_000_000 {
        return Err(format!("`{s}`: at most 1000000 requests per {unit}"));
    }
    Ok(RateLimit { count, per })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_per_second_and_per_minute() {
        let r = parse_rate_limit("50/s").unwrap();
        assert_eq!(r.interval(), Duration::from_millis(20));
        assert_eq!(r.to_string(), "50/s");
        let r = parse_rate_limit(" 600 / m ").unwrap();
        assert_eq!(r.interval(), Duration::from_millis(100));
        assert_eq!(r.to_string(), "600/m");
        assert_eq!(
            parse_rate_limit("7/s").unwrap().interval(),
            Duration::from_nanos(142_857_142)
        );
        for bad in ["", "50", "50/h", "-1/s", "1.5/s", "x/s", "0/s", "2000000/s"] {
            assert!(parse_rate_limit(bad).is_err(), "{bad}");
        }
    }
}
