//! `[server]` keys that bound what unauthenticated traffic can hold on the
//! public listener: time (head, body, idle), connections, and memory for
//! bodies whose signature is not verified yet.

use std::time::Duration;

use super::build::{check, optional};
use super::parse_duration;
use super::reader::Reader;

/// How the public listener bounds unauthenticated traffic. Every bound has a
/// default; the README's Security section lists them with what happens past each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenerLimits {
    /// A request head (request line and headers) must arrive whole within
    /// this, counted from the connection's start or from the first byte after
    /// an idle spell; otherwise the connection is closed (slowloris).
    pub header_read_timeout: Duration,
    /// A request body must arrive whole within this, counted from the end of
    /// its head; otherwise 408 and the connection is closed.
    pub body_read_timeout: Duration,
    /// A keep-alive connection that sends no new request for this long is closed.
    pub idle_timeout: Duration,
    /// Open ingest connections at most; `None`: min(10,000, RLIMIT_NOFILE / 2),
    /// read at start, so the admin listener and storage always have descriptors.
    pub max_connections: Option<usize>,
    /// Bytes held, across all connections, for request bodies whose
    /// signature is not verified yet. Past it: 503 with `Retry-After: 1`.
    pub unverified_body_budget: u64,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        ListenerLimits {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(75),
            max_connections: None,
            unverified_body_budget: 64 << 20,
        }
    }
}

/// The largest `max_connections` accepted (the accept loop counts in u32).
pub const MAX_CONNECTIONS_LIMIT: i64 = 1_000_000;

/// Reads the limit keys of `[server]`; `max_body_bytes` is the effective
/// per-request cap the budget must be able to hold.
pub(super) fn read(r: &Reader<'_>, max_body_bytes: u64) -> Option<ListenerLimits> {
    let d = ListenerLimits::default();
    let duration = |name: &str, default: Duration| {
        let value = optional(r, name, default, |k| r.parsed(k, parse_duration));
        check(r, name, value, |v| {
            v.is_zero().then(|| "must be greater than 0".into())
        })
    };
    let header_read_timeout = duration("header_read_timeout", d.header_read_timeout);
    let body_read_timeout = duration("body_read_timeout", d.body_read_timeout);
    let idle_timeout = duration("idle_timeout", d.idle_timeout);
    let max_connections = optional(r, "max_connections", None, |k| {
        r.integer(k, 1, MAX_CONNECTIONS_LIMIT)
            .map(|v| Some(v as usize))
    });
    // max_body_bytes is at most 64 MiB, so the default always holds one body.
    let unverified_body_budget =
        optional(r, "unverified_body_budget", d.unverified_body_budget, |k| {
            r.integer(k, 1024, 1 << 40).map(|v| v as u64)
        });
    let unverified_body_budget = check(r, "unverified_body_budget", unverified_body_budget, |v| {
        (*v < max_body_bytes).then(|| {
            format!(
                "{v} is less than max_body_bytes ({max_body_bytes}): a body of that size could never be read"
            )
        })
    });
    Some(ListenerLimits {
        header_read_timeout: header_read_timeout?,
        body_read_timeout: body_read_timeout?,
        idle_timeout: idle_timeout?,
        max_connections: max_connections?,
        unverified_body_budget: unverified_body_budget?,
    })
}
