//! `Store` for PostgreSQL: each primitive is done where its concern lives
//! (accept.rs, claims.rs, dead.rs, retention.rs); this is the table of which
//! is where.

use std::collections::BTreeMap;

use super::PgStore;
use crate::mapping::IdKind;
use crate::queue::*;

impl Store for PgStore {
    fn accept_batch(
        &self,
        items: &[Accept],
        now_ms: u64,
    ) -> Result<Vec<AcceptOutcome>, StoreError> {
        self.accept(items, now_ms)
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
        if matches!(rec.state, DeliveryState::Dead { .. }) {
            return Err(StoreError::Backend(
                "update of a dead record; bury it".into(),
            ));
        }
        self.settle(rec, lease)
    }

    fn complete_many(&self, lane: &str, done: &[(DeliveryId, u64)]) -> Result<(), StoreError> {
        self.complete(lane, done)
    }

    fn bury(&self, rec: &DeliveryRecord, lease: u64) -> Result<(), StoreError> {
        if !matches!(rec.state, DeliveryState::Dead { .. }) {
            return Err(StoreError::Backend("bury of a pending record".into()));
        }
        self.settle(rec, lease)
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
        self.expire_dedup_keys(before_ms)
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

    /// Every write is durable at its COMMIT; this folds the lane counts and
    /// runs retention.
    fn flush(&self) -> Result<(), StoreError> {
        self.fold();
        self.sweep()
    }

    fn free_bytes(&self) -> Option<u64> {
        None
    }

    fn reachable(&self) -> Option<bool> {
        Some(self.is_reachable())
    }
}
