//! Every metric name the relay exposes, in one place: CONTRACT.md lists them and
//! operators' dashboards and alerts use them, so a name is never spelt out anywhere
//! else in the crate. Help text and type are beside them in [`super::family`].

/// Counter: webhooks received, by `source`, `topic` and `outcome`.
pub const WEBHOOKS_RECEIVED: &str = "shoprelay_webhooks_received_total";
/// Counter: requests refused, by `source` and `reason`.
pub const WEBHOOKS_REJECTED: &str = "shoprelay_webhooks_rejected_total";
/// Counter: delivery attempts, by `lane` and `outcome`.
pub const DELIVERIES: &str = "shoprelay_deliveries_total";
/// Counter: events a filter skipped or a transform dropped, by `destination` and `rule`.
pub const EVENTS_SKIPPED: &str = "shoprelay_events_skipped_total";
/// Counter: deliveries moved to the dead letters, by `lane`.
pub const DEAD_LETTERS_TOTAL: &str = "shoprelay_dead_letters_total";
/// Histogram: accept → successful delivery, seconds, by `lane`.
pub const DELIVERY_LATENCY: &str = "shoprelay_delivery_latency_seconds";
/// Histogram: webhooks per group commit.
pub const COMMIT_BATCH_SIZE: &str = "shoprelay_commit_batch_size";
/// Gauge: deliveries pending, by `lane`.
pub const QUEUE_DEPTH: &str = "shoprelay_queue_depth";
/// Gauge: age of the earliest due delivery, seconds, by `lane`.
pub const QUEUE_OLDEST_DUE_AGE: &str = "shoprelay_queue_oldest_due_age_seconds";
/// Gauge: dead letters kept now.
pub const DEAD_LETTERS: &str = "shoprelay_dead_letters";
/// Gauge: damaged write-ahead-log ranges skipped since start.
pub const LOG_DAMAGED_RANGES: &str = "shoprelay_log_damaged_ranges";
/// Gauge: open connections on the ingest listener.
pub const INGEST_CONNECTIONS: &str = "shoprelay_ingest_connections";
/// Gauge: bytes held for bodies whose signature is not verified yet.
pub const UNVERIFIED_BODY_BYTES: &str = "shoprelay_unverified_body_bytes";

/// All of the above, for the test that each has its help text and type.
#[cfg(test)]
pub(super) const ALL: [&str; 13] = [
    WEBHOOKS_RECEIVED,
    WEBHOOKS_REJECTED,
    DELIVERIES,
    EVENTS_SKIPPED,
    DEAD_LETTERS_TOTAL,
    DELIVERY_LATENCY,
    COMMIT_BATCH_SIZE,
    QUEUE_DEPTH,
    QUEUE_OLDEST_DUE_AGE,
    DEAD_LETTERS,
    LOG_DAMAGED_RANGES,
    INGEST_CONNECTIONS,
    UNVERIFIED_BODY_BYTES,
];
