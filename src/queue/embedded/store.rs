//! `Store` for the embedded backend: each primitive is done where its
//! concern lives (accept.rs, claims.rs, dead.rs, counts.rs, dedup.rs,
//! checkpoint.rs); this is the table of which is where.

use std::collections::BTreeMap;

use super::EmbeddedStore;
use crate::mapping::IdKind;
use crate::queue::*;

impl Store for EmbeddedStore {
    fn accept_batch(
        &self,
        items: &[Accept],
        _now_ms: u64,
    ) -> Result<Vec<AcceptOutcome>, StoreError> {
        self.accept(items)
    }

    fn accepted(&self, items: &[Accept]) -> Result<Vec<Option<WebhookId>>, StoreError> {
        self.accepted_ids(items)
    }

    fn claim_due(
        &self,
        lane: &str,
        now_ms: u64,
        lease_until_ms: u64,
        limit: usize,
    ) -> Result<Vec<Claimed>, StoreError> {
        self.claim(lane, now_ms, lease_until_ms, limit)
    }

    fn next_due(&self, lane: &str) -> Result<Option<u64>, StoreError> {
        self.due_at(lane)
    }

    fn update(&self, rec: &DeliveryRecord, lease: u64) -> Result<(), StoreError> {
        self.reschedule(rec, lease)
    }

    fn complete_many(&self, lane: &str, done: &[(DeliveryId, u64)]) -> Result<(), StoreError> {
        self.complete(lane, done)
    }

    fn complete_in_memory(&self, lane: &str, done: &mut Vec<(DeliveryId, u64)>) {
        self.complete_held(lane, done)
    }

    fn bury(&self, rec: &DeliveryRecord, lease: u64) -> Result<(), StoreError> {
        self.bury_claimed(rec, lease)
    }

    fn dead_letters(
        &self,
        after: Option<DeliveryId>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        self.list_dead(after, limit)
    }

    fn dead_letter(&self, id: DeliveryId) -> Result<Option<DeadLetter>, StoreError> {
        self.one_dead(id)
    }

    fn replay(&self, id: DeliveryId, now_ms: u64) -> Result<Option<String>, StoreError> {
        self.replay_dead(id, now_ms)
    }

    fn purge(&self, id: DeliveryId) -> Result<bool, StoreError> {
        self.purge_dead(id)
    }

    fn lanes(&self) -> Result<Vec<String>, StoreError> {
        self.lanes_with_work()
    }

    fn stats(&self) -> Result<(BTreeMap<String, LaneStats>, u64), StoreError> {
        self.lane_stats()
    }

    fn expire_dedup(&self, before_ms: u64) -> Result<usize, StoreError> {
        self.expire_dedup_ids(before_ms)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.checkpoint().map(|_| ())
    }

    fn identity_get(
        &self,
        scope: &str,
        kind: IdKind,
        key: &str,
    ) -> Result<Option<String>, StoreError> {
        self.identity_read(scope, kind, key)
    }

    fn identity_scan(
        &self,
        scope: &str,
        kind: IdKind,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<(String, String)>, StoreError> {
        self.identity_prefix(scope, kind, prefix, limit)
    }

    fn identity_put(
        &self,
        scope: &str,
        entries: &[(IdKind, String, String)],
        now_ms: u64,
    ) -> Result<(), StoreError> {
        self.identity_write(scope, entries, now_ms)
    }

    fn identity_delete(&self, scope: &str, keys: &[(IdKind, String)]) -> Result<(), StoreError> {
        self.identity_remove(scope, keys)
    }

    fn identity_erase_scope(&self, scope: &str) -> Result<u64, StoreError> {
        self.identity_remove_scope(scope)
    }

    fn identity_expire(&self, before_ms: u64) -> Result<usize, StoreError> {
        self.identity_remove_before(before_ms)
    }

    fn damaged_ranges(&self) -> u64 {
        EmbeddedStore::damaged_ranges(self)
    }

    fn free_bytes(&self) -> Option<u64> {
        let s = rustix::fs::statvfs(&self.dir).ok()?;
        Some(s.f_bavail.saturating_mul(s.f_frsize))
    }
}
