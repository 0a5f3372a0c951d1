//! One HTTP attempt → what happens to the delivery: done, retried later, or a dead
//! letter now. Pure: the status, headers and the start of the body (or a transport
//! error) come in, the clock comes in as `now_ms`; reqwest appears only in the thin
//! [`from_reqwest_error`] adapter.
//!
//! Retried: 5xx, 408, 429, 1xx and anything outside 100–599 (a confused peer may
//! recover), timeouts and connection errors. Not retried: 3xx (redirects are not
//! followed: a followed 302 turns a POST into a GET that would count as delivered) and
//! every other 4xx, which a retry cannot fix. `Retry-After` is read on 429 and 503,
//! as delay-seconds or an IMF-fixdate HTTP-date.
//!
//! A [`Failure`] keeps our words (safe to log) apart from the destination's (the
//! body may echo the payload, a Location our URL's token), so nothing downstream
//! has to cut a message apart to log it.

use std::time::Duration;

use http::{HeaderMap, StatusCode, header};

use crate::timefmt::{days_from_civil, days_in_month};

/// How many characters of a response body an error message keeps.
pub const BODY_EXCERPT_CHARS: usize = 200;

/// The verdict on one attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx: the destination has it.
    Delivered,
    /// Try again later (see [`super::retry::next_step`]).
    Retry {
        /// What the destination asked for in `Retry-After`, already relative to now.
        retry_after: Option<Duration>,
        /// What went wrong.
        failure: Failure,
    },
    /// Dead-letter now; retrying cannot help.
    Fail(Failure),
}

impl Outcome {
    /// What went wrong, if the attempt did not deliver.
    pub fn failure(&self) -> Option<&Failure> {
        match self {
            Outcome::Delivered => None,
            Outcome::Retry { failure, .. } | Outcome::Fail(failure) => Some(failure),
        }
    }
}

/// Why an attempt did not deliver, split by who may read what: the log gets the
/// [`summary`](Failure::summary), in our own words; the dead letter (and
/// `last_error`) gets the [`reason`](Failure::reason), which adds what the
/// destination sent back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The HTTP status, when there was an answer.
    pub status: Option<u16>,
    /// Safe to log: "HTTP 503 Service Unavailable (Retry-After 30s)", "HTTP 302
    /// Found (redirects are not followed)", "timed out after 5s", "destination
    /// `x` is no longer in relay.toml".
    pub summary: String,
    /// A 3xx answer's `Location`, one line: it may hand our URL back, with any
    /// token in it. Dead letters only.
    pub location: Option<String>,
    /// The start of the answer body, one line: it may echo the payload (PII).
    /// Dead letters only.
    pub excerpt: Option<String>,
}

impl Failure {
    /// A failure with no answer from the destination (a transport error, or
    /// nothing sent): all in our own words, so the summary is the whole story.
    pub fn no_answer(summary: String) -> Failure {
        Failure {
            status: None,
            summary,
            location: None,
            excerpt: None,
        }
    }

    /// The full text, for `last_error` and the dead letter's reason, e.g.
    /// `HTTP 302 Found (redirects are not followed; Location: https://…): <body start>`.
    pub fn reason(&self) -> String {
        let mut text = match (self.status, &self.location) {
            // A Location goes inside the redirect note that ends the summary, so
            // the status line and the note are written afresh around it.
            (Some(status), Some(to)) => {
                format!("{} ({NOT_FOLLOWED}; Location: {to})", status_line(status))
            }
            _ => self.summary.clone(),
        };
        if let Some(excerpt) = &self.excerpt {
            text.push_str(": ");
            text.push_str(excerpt);
        }
        text
    }
}

/// The note on a 3xx answer.
const NOT_FOLLOWED: &str = "redirects are not followed";

/// An attempt that got no response, reduced to what the decision needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    /// The per-request timeout elapsed.
    Timeout,
    /// Nothing listens at the address.
    ConnectionRefused,
    /// DNS, TLS, or another failure to connect; the detail is for operators.
    Connect(String),
    /// The connection broke mid-request, or anything else.
    Other(String),
}

/// Classifies a response. `body_start` is whatever of the body the caller read (a
/// few hundred bytes are enough); `now_ms` resolves an HTTP-date `Retry-After`.
pub fn classify_response(
    status: u16,
    headers: &HeaderMap,
    body_start: &[u8],
    now_ms: u64,
) -> Outcome {
    let redirect = match status {
        200..=299 => return Outcome::Delivered,
        300..=399 => true,
        _ => false,
    };
    let mut summary = status_line(status);
    if redirect {
        summary.push_str(&format!(" ({NOT_FOLLOWED})"));
    }
    let retry_after = match status {
        429 | 503 => headers
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, now_ms)),
        _ => None,
    };
    if let Some(d) = retry_after {
        summary.push_str(&format!(" (Retry-After {}s)", d.as_secs()));
    }
    let failure = Failure {
        status: Some(status),
        summary,
        location: headers
            .get(header::LOCATION)
            .filter(|_| redirect)
            .map(|to| one_line(to.as_bytes(), BODY_EXCERPT_CHARS)),
        excerpt: Some(one_line(body_start, BODY_EXCERPT_CHARS)).filter(|e| !e.is_empty()),
    };
    match status {
        408 | 429 => Outcome::Retry {
            retry_after,
            failure,
        },
        300..=499 => Outcome::Fail(failure),
        _ => Outcome::Retry {
            retry_after,
            failure,
        },
    }
}

/// Classifies an attempt that got no response: always retried.
pub fn classify_transport(err: &Transport, timeout: Duration) -> Outcome {
    let summary = match err {
        Transport::Timeout => format!("timed out after {timeout:?}"),
        Transport::ConnectionRefused => "connection refused".to_string(),
        Transport::Connect(detail) => format!("connection failed: {detail}"),
        Transport::Other(detail) => format!("request failed: {detail}"),
    };
    Outcome::Retry {
        retry_after: None,
        failure: Failure::no_answer(summary),
    }
}

/// The adapter for reqwest errors. The message is built from the error's sources,
/// never from reqwest's own `Display`, which includes the URL (and any token in it).
pub fn from_reqwest_error(e: &reqwest::Error, timeout: Duration) -> Outcome {
    classify_transport(&transport_of(e), timeout)
}

fn transport_of(e: &reqwest::Error) -> Transport {
    if e.is_timeout() {
        return Transport::Timeout;
    }
    let mut detail = Vec::new();
    let mut refused = false;
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            refused |= io.kind() == std::io::ErrorKind::ConnectionRefused;
        }
        detail.push(s.to_string());
        source = s.source();
    }
    let detail = if detail.is_empty() {
        kind_word(e).to_string()
    } else {
        one_line(detail.join(": ").as_bytes(), BODY_EXCERPT_CHARS)
    };
    match (e.is_connect(), refused) {
        (_, true) => Transport::ConnectionRefused,
        (true, false) => Transport::Connect(detail),
        (false, false) => Transport::Other(detail),
    }
}

fn kind_word(e: &reqwest::Error) -> &'static str {
    if e.is_builder() {
        "invalid request"
    } else if e.is_body() {
        "request body error"
    } else if e.is_request() {
        "error sending request"
    } else {
        "unknown error"
    }
}

fn status_line(status: u16) -> String {
    let reason = StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason());
    match reason {
        Some(r) => format!("HTTP {status} {r}"),
        None => format!("HTTP {status}"),
    }
}

/// The first `max` characters of `bytes` as one line: invalid UTF-8 replaced, control
/// characters and runs of whitespace folded to one space, "…" when cut.
pub fn one_line(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::new();
    let mut count = 0;
    let mut pending_space = false;
    for c in text.chars() {
        if c.is_whitespace() || c.is_control() {
            pending_space = !out.is_empty();
            continue;
        }
        if count + usize::from(pending_space) >= max {
            out.push('…');
            return out;
        }
        if pending_space {
            out.push(' ');
            count += 1;
            pending_space = false;
        }
        out.push(c);
        count += 1;
    }
    out
}

/// `Retry-After` (RFC 9110 §10.2.3) as a wait from `now_ms`: delay-seconds, or an
/// HTTP-date (a date in the past waits zero). `None` when unreadable.
pub fn parse_retry_after(value: &str, now_ms: u64) -> Option<Duration> {
    let v = value.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        // More digits than u64 holds is still "a very long time", not garbage.
        return Some(Duration::from_secs(v.parse().unwrap_or(u64::MAX)));
    }
    parse_http_date(v).map(|at| Duration::from_millis(at.saturating_sub(now_ms)))
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) as ms since the epoch. The
/// obsolete RFC 850 and asctime forms are not accepted; no server we target sends them.
pub fn parse_http_date(s: &str) -> Option<u64> {
    const DAYS: [&str; 7] = ["Mon,", "Tue,", "Wed,", "Thu,", "Fri,", "Sat,", "Sun,"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let parts: Vec<&str> = s.split(' ').collect();
    let [wday, day, month, year, clock, "GMT"] = parts.as_slice() else {
        return None;
    };
    if !DAYS.contains(wday) {
        return None;
    }
    let day = digits(day, 2)?;
    let month = MONTHS.iter().position(|m| m == month)? as u32 + 1;
    let year = i64::from(digits(year, 4)?);
    let mut hms = clock.split(':');
    let (h, m, sec) = (
        digits(hms.next()?, 2)?,
        digits(hms.next()?, 2)?,
        digits(hms.next()?, 2)?,
    );
    if hms.next().is_some() || h > 23 || m > 59 || sec > 60 || year < 1970 {
        return None;
    }
    if day == 0 || day > days_in_month(year, month) {
        return None;
    }
    let days = u64::try_from(days_from_civil(year, month, day)).ok()?;
    let secs = days * 86_400 + u64::from(h * 3600 + m * 60 + sec);
    Some(secs * 1000)
}

/// Exactly `n` ASCII digits.
fn digits(s: &str, n: usize) -> Option<u32> {
    if s.len() == n && s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse().ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests;
