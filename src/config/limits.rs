//! `[server]` keys that bound what unauthenticated traffic can hold on the
//! public listener: time (head, body, idle), connections, and memory for
//! bodies whose signature is not verified yet.

use std::time::Duration;

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
    let mut ok = true;
    let mut duration = |name: &str, default: Duration| {
        if !r.has(name) {
            return default;
        }
        match r.parsed(name, parse_duration) {
            Some(v) if v.is_zero() => {
                r.problem(name, "must be greater than 0");
                ok = false;
                default
            }
            Some(v) => v,
            None => {
                ok = false;
                default
            }
        }
    };
    let header_read_timeout = duration("header_read_timeout", d.header_read_timeout);
    let body_read_timeout = duration("body_read_timeout", d.body_read_timeout);
    let idle_timeout = duration("idle_timeout", d.idle_timeout);
    let max_connections = if r.has("max_connections") {
        let v = r.integer("max_connections", 1, MAX_CONNECTIONS_LIMIT);
        ok &= v.is_some();
        v.map(|v| v as usize)
    } else {
        None
    };
    let unverified_body_budget = if r.has("unverified_body_budget") {
        match r.integer("unverified_body_budget", 1024, 1 << 40) {
            Some(v) if (v as u64) < max_body_bytes => {
                r.problem(
                    "unverified_body_budget",
                    format!(
                        "{v} is less than max_body_bytes ({max_body_bytes}): a body of that size could never be read"
                    ),
                );
                ok = false;
                d.unverified_body_budget
            }
            Some(v) => v as u64,
            None => {
                ok = false;
                d.unverified_body_budget
            }
        }
    } else {
        // max_body_bytes is at most 64 MiB, so the default always holds one body.
        d.unverified_body_budget
    };
    ok.then_some(ListenerLimits {
        header_read_timeout,
        body_read_timeout,
        idle_timeout,
        max_connections,
        unverified_body_budget,
    })
}
