//! Dead letters: burying, listing, replay and purge, and moving a dead
//! letter's body out of the log so that it does not keep a whole segment
//! (up to 64 MiB) until it is purged.

use std::sync::Arc;

use ::sled::{Batch, IVec};

use super::EmbeddedStore;
use super::index::{self, Index, Located, bchunk, wkey, xkey};
use super::log::{Entry, Pos};
use crate::queue::*;

/// Largest body moved into the index with its dead letter (the default
/// `max_body_bytes`); a larger one keeps its segment until purged.
const MOVE_MAX_BYTES: usize = 1 << 20;

/// A moved body is stored in chunks of at most this. sled splits a leaf past
/// 16 entries and writes a page over 128 KiB as a blob file of its own: 17
/// chunks of 7 KiB and their keys stay under that.
const CHUNK_BYTES: usize = 7 << 10;

impl EmbeddedStore {
    /// Adds to `batch` where webhook `w`'s dead letter finds its body: moved
    /// into the index in chunks when there is room, else a pointer into the
    /// log. `from` is the record when the caller has it (a delivery that was
    /// never a retry has no `w` entry yet). Caller holds `w`'s stripe.
    pub(super) fn move_body_into_tree(
        &self,
        w: WebhookId,
        from: Option<(Pos, Arc<Entry>)>,
        batch: &mut Batch,
    ) {
        let (pos, entry) = match from {
            Some((pos, e)) => (Some(pos), Some(e)),
            None => match self.index.tree.get(wkey(w)) {
                Ok(Some(v)) => match index::decode_located(&v) {
                    Ok(Located::Log(pos)) => (Some(pos), self.entry_at(pos, w).ok()),
                    _ => return, // in the index already
                },
                _ => return,
            },
        };
        let Some(pos) = pos else { return };
        let room = |len: u64| {
            let need = self
                .keep_free
                .load(std::sync::atomic::Ordering::Relaxed)
                .saturating_add(4 * len);
            self.free_bytes().is_some_and(|free| free >= need)
        };
        match entry {
            Some(e) if e.body.len() <= MOVE_MAX_BYTES && room(e.body.len() as u64) => {
                // At least one chunk, so that a moved empty body is found.
                let chunks = e
                    .body
                    .chunks(CHUNK_BYTES)
                    .chain(e.body.is_empty().then_some(&[][..]));
                for (n, chunk) in chunks.enumerate() {
                    batch.insert(bchunk(w, n as u32), chunk);
                }
                batch.insert(wkey(w), index::encode_in_tree(&e.meta));
            }
            _ => {
                batch.insert(wkey(w), index::encode_pointer(pos));
            }
        }
    }

    /// Buries a claimed delivery if `lease` still holds it.
    pub(super) fn bury_claimed(&self, rec: &DeliveryRecord, lease: u64) -> Result<(), StoreError> {
        if let Some(ll) = self.lane(&rec.lane) {
            let mut s = ll.state();
            if s.holds(rec.id.webhook) {
                if s.lease_of(rec.id.webhook, rec.id.slot).map(|l| l.token) != Some(lease) {
                    return Ok(());
                }
                let pos = s
                    .window
                    .iter()
                    .find(|i| i.seq == rec.id.webhook)
                    .map(|i| i.pos);
                let _g = self.stripe(rec.id.webhook);
                let mut batch = Batch::default();
                Index::put_delivery(&mut batch, rec);
                batch.insert(xkey(rec.id), IVec::default());
                let has_w = self
                    .index
                    .tree
                    .contains_key(wkey(rec.id.webhook))
                    .map_err(index::err)?;
                if let Some(pos) = pos {
                    if has_w {
                        self.move_body_into_tree(rec.id.webhook, None, &mut batch);
                    } else if let Ok(e) = self.entry_at(pos, rec.id.webhook) {
                        self.move_body_into_tree(rec.id.webhook, Some((pos, e)), &mut batch);
                    }
                }
                self.apply(batch, |c| c.dead += 1)?;
                s.finish(rec.id.webhook, rec.id.slot, lease);
                return Ok(());
            }
        }
        self.record_outcome_dead(rec, lease)
    }

    fn record_outcome_dead(&self, rec: &DeliveryRecord, lease: u64) -> Result<(), StoreError> {
        let id = rec.id;
        let _g = self.stripe(id.webhook);
        if self.leases().get(&id).is_none_or(|l| l.token != lease) {
            return Ok(());
        }
        if let Some(old) = self.index.get_delivery(id)? {
            let mut batch = Batch::default();
            batch.remove(index::qkey(&old.lane, old.due_ms, id));
            Index::put_delivery(&mut batch, rec);
            batch.insert(xkey(id), IVec::default());
            self.move_body_into_tree(id.webhook, None, &mut batch);
            let was_pending = old.state == DeliveryState::Pending;
            self.apply(batch, |c| {
                if was_pending {
                    c.lane(&old.lane, -1);
                    c.dead += 1;
                }
            })?;
        }
        self.leases().remove(&id);
        Ok(())
    }

    pub(super) fn list_dead(
        &self,
        after: Option<DeliveryId>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let start = match after {
            Some(id) => {
                let mut k = xkey(id);
                k.push(0);
                k
            }
            None => vec![b'x'],
        };
        let mut out = Vec::new();
        for kv in self.index.tree.range(start..vec![b'x' + 1]).take(limit) {
            let (k, _) = kv.map_err(index::err)?;
            if let Some(id) = index::parse_id(&k) {
                if let Some(d) = self.one_dead(id)? {
                    out.push(d);
                }
            }
        }
        Ok(out)
    }

    pub(super) fn one_dead(&self, id: DeliveryId) -> Result<Option<DeadLetter>, StoreError> {
        match self.index.get_delivery(id)? {
            Some(record) if matches!(record.state, DeliveryState::Dead { .. }) => {
                // An unreadable webhook still lists, without it.
                let webhook = match self.get_webhook(id.webhook) {
                    Err(StoreError::Corrupt(_)) => None,
                    other => other?,
                };
                Ok(Some(DeadLetter { webhook, record }))
            }
            _ => Ok(None),
        }
    }

    pub(super) fn replay_dead(
        &self,
        id: DeliveryId,
        now_ms: u64,
    ) -> Result<Option<String>, StoreError> {
        let _g = self.stripe(id.webhook);
        let Some(mut rec) = self.index.get_delivery(id)? else {
            return Ok(None);
        };
        if !matches!(rec.state, DeliveryState::Dead { .. }) {
            return Ok(None);
        }
        rec.state = DeliveryState::Pending;
        rec.due_ms = now_ms;
        rec.attempts = 0;
        rec.first_attempt_at_ms = None;
        let mut batch = Batch::default();
        batch.remove(xkey(id));
        Index::put_delivery(&mut batch, &rec);
        batch.insert(index::qkey(&rec.lane, now_ms, id), IVec::default());
        self.apply(batch, |c| {
            c.dead -= 1;
            c.lane(&rec.lane, 1);
        })?;
        // An operator's action: kept across a crash at once.
        self.index.db.flush().map_err(index::err)?;
        Ok(Some(rec.lane))
    }

    pub(super) fn purge_dead(&self, id: DeliveryId) -> Result<bool, StoreError> {
        let _g = self.stripe(id.webhook);
        match self.index.get_delivery(id)? {
            Some(rec) if matches!(rec.state, DeliveryState::Dead { .. }) => {
                let mut batch = Batch::default();
                batch.remove(xkey(id));
                self.remove_deliveries(&[id], &mut batch);
                self.apply(batch, |c| c.dead -= 1)?;
                self.index.db.flush().map_err(index::err)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}
