//! Layer 4: the durable queue. Everything the relay promises survives here.
//!
//! [`Store`] is a small set of primitives with no backend types in its
//! signatures (a PostgreSQL backend with `FOR UPDATE SKIP LOCKED` leases fits
//! the same shape); the policy around it — group commit in [`commit`], retry
//! decisions in `delivery` — is shared code. [`embedded`] is the default
//! backend: a write-ahead log that is the queue, and sled as its index.
//! `contract` holds the tests every backend must pass.

pub mod commit;
#[cfg(test)]
pub(crate) mod contract;
pub mod embedded;
pub mod identity;
pub mod postgres;
mod record;

use std::fmt;

use crate::mapping::IdKind;
use crate::sources::Webhook;

pub use record::{DeliveryRecord, DeliveryState};

/// A webhook's id: assigned at accept, monotonic.
pub type WebhookId = u64;

/// One delivery: a webhook to one lane (a destination, or a first-success set).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeliveryId {
    /// The webhook it delivers.
    pub webhook: WebhookId,
    /// Position among the webhook's deliveries (< 5 for fan-out).
    pub slot: u8,
}

impl fmt::Display for DeliveryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}-{}", self.webhook, self.slot)
    }
}

impl std::str::FromStr for DeliveryId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}` is not a delivery id (like 00000000000004d2-0)");
        let (w, slot) = s.split_once('-').ok_or_else(bad)?;
        if w.len() != 16 {
            return Err(bad());
        }
        Ok(DeliveryId {
            webhook: u64::from_str_radix(w, 16).map_err(|_| bad())?,
            slot: slot.parse().map_err(|_| bad())?,
        })
    }
}

/// Renders a webhook id the way the ingest answer and the admin API show it.
pub fn webhook_id_string(id: WebhookId) -> String {
    format!("{id:016x}")
}

/// A delivery to create at accept time.
#[derive(Clone, Debug)]
pub struct NewDelivery {
    /// The lane that works it: a destination name, or `first-success:SOURCE`.
    pub lane: String,
    /// The destinations it goes to, in order (one for fan-out).
    pub targets: Vec<String>,
}

/// One webhook to accept, with its deliveries; written in one atomic step.
#[derive(Clone, Debug)]
pub struct Accept {
    /// The verified webhook.
    pub webhook: Webhook,
    /// One per routed lane.
    pub deliveries: Vec<NewDelivery>,
}

/// What an accept did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcceptOutcome {
    /// Newly stored and flushed.
    Queued(WebhookId),
    /// Already accepted within the dedup window; nothing written.
    Duplicate(WebhookId),
}

/// A claimed delivery with its webhook, leased to the caller until the lease
/// ends or its outcome is written (`update`, `complete`, `bury`) with it.
#[derive(Clone, Debug)]
pub struct Claimed {
    /// The delivery's state as stored.
    pub record: DeliveryRecord,
    /// The webhook to deliver.
    pub webhook: Webhook,
    /// The claim's token: an outcome written with a token whose lease has
    /// ended (and been taken again) changes nothing.
    pub lease: u64,
}

/// A dead letter as listed.
#[derive(Clone, Debug)]
pub struct DeadLetter {
    /// The delivery record (state `Dead`).
    pub record: DeliveryRecord,
    /// The webhook, when it is still stored and readable.
    pub webhook: Option<Webhook>,
}

/// Pending work per lane.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LaneStats {
    /// Deliveries waiting or in flight.
    pub pending: u64,
    /// Due time of the earliest one (in flight or not), ms since the epoch.
    pub oldest_due_ms: Option<u64>,
}

/// Storage failed; the caller answers 503 (ingest) or retries later (delivery).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage error: {0}")]
    Backend(String),
    #[error("stored record is corrupt or from an unknown version: {0}")]
    Corrupt(String),
    #[error("storage is shutting down")]
    Closed,
    #[error("accept queue is full")]
    Overloaded,
    #[error("disk nearly full: {free} bytes free, {reserve} kept in reserve")]
    DiskFull { free: u64, reserve: u64 },
    #[error("storage did not answer within {0:?}")]
    Stalled(std::time::Duration),
}

/// The primitives every backend provides. Times are ms since the Unix epoch,
/// passed in so that tests control the clock.
pub trait Store: Send + Sync + 'static {
    /// Dedups and stores every accept in one atomic, durable (flushed) write.
    /// Outcomes are in input order.
    fn accept_batch(&self, items: &[Accept], now_ms: u64)
    -> Result<Vec<AcceptOutcome>, StoreError>;

    /// For each accept, the webhook id it was already accepted as, if it was
    /// (reads only: lets a full disk still answer duplicates).
    fn accepted(&self, items: &[Accept]) -> Result<Vec<Option<WebhookId>>, StoreError>;

    /// Leases up to `limit` deliveries of `lane` due at `now_ms`, until
    /// `lease_until_ms`: no claim returns them again before then unless their
    /// outcome is written first. A lease does not outlive the process: after a
    /// restart, what was in flight is due at its stored due time.
    fn claim_due(
        &self,
        lane: &str,
        now_ms: u64,
        lease_until_ms: u64,
        limit: usize,
    ) -> Result<Vec<Claimed>, StoreError>;

    /// The earliest due time in `lane`, to sleep until: of what is not in
    /// flight, and of the leases in flight (one may end without an outcome).
    fn next_due(&self, lane: &str) -> Result<Option<u64>, StoreError>;

    /// Saves a changed pending record (progress, or the next attempt's due
    /// time), if `lease` still holds it.
    fn update(&self, record: &DeliveryRecord, lease: u64) -> Result<(), StoreError>;

    /// Deliveries of `lane` succeeded: forget each one whose `lease` still
    /// holds it, in one atomic write where the backend can.
    fn complete_many(&self, lane: &str, done: &[(DeliveryId, u64)]) -> Result<(), StoreError>;

    /// The part of [`Store::complete_many`] that needs no I/O: completes what
    /// it can in memory and leaves the rest in `done`, for `complete_many`.
    /// Called on an async worker, so it must never block; the default
    /// completes nothing.
    fn complete_in_memory(&self, lane: &str, done: &mut Vec<(DeliveryId, u64)>) {
        let _ = (lane, done);
    }

    /// Moves a delivery to the dead letters if `lease` still holds it;
    /// `record.state` must be `Dead`.
    fn bury(&self, record: &DeliveryRecord, lease: u64) -> Result<(), StoreError>;

    /// Dead letters in id order, after `after`, at most `limit`.
    fn dead_letters(
        &self,
        after: Option<DeliveryId>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StoreError>;

    /// One dead letter.
    fn dead_letter(&self, id: DeliveryId) -> Result<Option<DeadLetter>, StoreError>;

    /// Makes a dead letter pending again, due at `now_ms`, with a fresh retry window.
    /// Returns the lane to wake, or None when `id` is not a dead letter.
    fn replay(&self, id: DeliveryId, now_ms: u64) -> Result<Option<String>, StoreError>;

    /// Deletes a dead letter; false when it was not one.
    fn purge(&self, id: DeliveryId) -> Result<bool, StoreError>;

    /// The lanes that hold pending deliveries (one seek per lane, not a scan).
    fn lanes(&self) -> Result<Vec<String>, StoreError>;

    /// Pending deliveries per lane and the dead-letter count.
    fn stats(&self) -> Result<(std::collections::BTreeMap<String, LaneStats>, u64), StoreError>;

    /// Forgets dedup ids accepted before `before_ms`; returns how many.
    fn expire_dedup(&self, before_ms: u64) -> Result<usize, StoreError>;

    /// Makes everything written so far durable (a checkpoint), and frees
    /// what nothing needs any more. Called periodically and at shutdown.
    fn flush(&self) -> Result<(), StoreError>;

    /// The identity map (MAPPING.md → Identity; policy in [`identity`]): the
    /// entry of `kind` at `key` in `scope`.
    fn identity_get(
        &self,
        scope: &str,
        kind: IdKind,
        key: &str,
    ) -> Result<Option<String>, StoreError>;

    /// Entries of `kind` in `scope` whose key starts with `prefix`, in key
    /// order, at most `limit`.
    fn identity_scan(
        &self,
        scope: &str,
        kind: IdKind,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<(String, String)>, StoreError>;

    /// Writes entries (kind, key, value) of `scope`, seen at `now_ms`. A backend
    /// may skip rewriting an unchanged entry seen less than a day ago.
    fn identity_put(
        &self,
        scope: &str,
        entries: &[(IdKind, String, String)],
        now_ms: u64,
    ) -> Result<(), StoreError>;

    /// Deletes entries of `scope`; absent ones are no error.
    fn identity_delete(&self, scope: &str, keys: &[(IdKind, String)]) -> Result<(), StoreError>;

    /// Deletes every entry of `scope`; returns how many.
    fn identity_erase_scope(&self, scope: &str) -> Result<u64, StoreError>;

    /// Deletes entries last seen before `before_ms`; returns how many.
    fn identity_expire(&self, before_ms: u64) -> Result<usize, StoreError>;

    /// Damaged ranges of stored data found and skipped so far.
    fn damaged_ranges(&self) -> u64 {
        0
    }

    /// Free bytes where the data lives, when the backend can tell.
    fn free_bytes(&self) -> Option<u64>;

    /// Whether the backend answers, when it can tell without a write (a
    /// database's probe); None: only writes tell.
    fn reachable(&self) -> Option<bool> {
        None
    }
}
