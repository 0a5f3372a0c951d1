//! Dead letters: burying, listing, replay and purge. A dead letter's webhook
//! moves out of the log into the dead-letter log (`data_dir/dead/`, the same
//! record format, with the slot of the delivery that died), so that one
//! rejected event does not keep a whole 64 MiB log segment, and so that an
//! index that cannot be opened loses no dead letter: the rebuild recreates
//! them from there. The dead-letter log is synced by the checkpoint, before
//! the index that points into it; until then the lane's cursor has not
//! passed the record either, so a crash sends it again rather than lose it.

use std::sync::Arc;

use ::sled::{Batch, IVec};

use super::EmbeddedStore;
use super::index::{self, Index, Located, wkey, xkey};
use super::log::{self, Entry, Pos};
use crate::queue::*;

impl EmbeddedStore {
    /// Adds to `batch` where webhook `w`'s dead letter (delivery `slot`)
    /// finds its webhook: a new record in the dead-letter log when there is
    /// room, else a pointer into the log. `from` is the log record when the
    /// caller has it (a delivery that was never a retry has no `w` entry
    /// yet). Caller holds `w`'s stripe.
    pub(super) fn move_to_dead_log(
        &self,
        w: WebhookId,
        slot: u8,
        from: Option<(Pos, Arc<Entry>)>,
        batch: &mut Batch,
    ) {
        let (pos, entry) = match from {
            Some((pos, e)) => (Located::Log(pos), Some(e)),
            None => match self.index.tree.get(wkey(w)) {
                Ok(Some(v)) => match index::decode_located(&v) {
                    Ok(Located::Log(pos)) => (Located::Log(pos), self.entry_at(pos, w).ok()),
                    // Dead in another lane already: a record of its own for
                    // this one too, so that a rebuild finds both (the index
                    // points to the newest; an older dead-letter segment
                    // goes once nothing points into it).
                    Ok(Located::Dead(at)) => match self.dead_entry_at(at, w) {
                        Ok(e) if e.dead_slot == Some(slot) => return,
                        Ok(e) => (Located::Dead(at), Some(e)),
                        Err(_) => return,
                    },
                    Err(_) => return,
                },
                _ => return,
            },
        };
        let room = |len: u64| {
            let need = self
                .keep_free
                .load(std::sync::atomic::Ordering::Relaxed)
                .saturating_add(4 * len);
            self.free_bytes().is_some_and(|free| free >= need)
        };
        let moved = entry
            .filter(|e| room(e.body.len() as u64))
            .and_then(|e| log::encode_dead(w, slot, &e).ok())
            .and_then(|r| match self.dead.append(&[r]) {
                Ok(at) => at.first().copied(),
                Err(e) => {
                    tracing::warn!(webhook = %webhook_id_string(w), error = %e, "dead letter's webhook left in the log");
                    None
                }
            });
        let at = moved.map_or(pos, Located::Dead);
        batch.insert(wkey(w), index::encode_located(at));
    }

    /// The record at `pos` of the dead-letter log, which must be webhook `seq`'s.
    pub(super) fn dead_entry_at(&self, pos: Pos, seq: u64) -> Result<Arc<Entry>, StoreError> {
        match self.dead.read(pos)? {
            (log::Read::Record(e, _), at) if at == pos && e.seq == seq => Ok(Arc::new(*e)),
            (log::Read::Damaged(why), _) => Err(StoreError::Corrupt(format!(
                "dead letter of webhook {} in the dead-letter log: {why}",
                webhook_id_string(seq)
            ))),
            _ => Err(StoreError::Corrupt(format!(
                "dead letter of webhook {} is not in the dead-letter log",
                webhook_id_string(seq)
            ))),
        }
    }

    /// Buries a claimed delivery if `lease` still holds it.
    pub(super) fn bury_claimed(&self, rec: &DeliveryRecord, lease: u64) -> Result<(), StoreError> {
        self.room_for_index()?;
        let outcome = self.window_outcome(rec, lease, |pos| {
            let mut batch = Batch::default();
            Index::put_delivery(&mut batch, rec);
            batch.insert(xkey(rec.id), IVec::default());
            let from = if self.has_location(rec.id.webhook)? {
                None
            } else {
                self.entry_at(pos, rec.id.webhook).ok().map(|e| (pos, e))
            };
            self.move_to_dead_log(rec.id.webhook, rec.id.slot, from, &mut batch);
            self.apply(batch, |c| c.dead += 1)
        });
        if let Some(done) = outcome {
            return done;
        }
        // A retry, in the index.
        let id = rec.id;
        self.record_outcome(id, lease, |old| {
            let mut batch = Batch::default();
            batch.remove(index::qkey(&old.lane, old.due_ms, id));
            Index::put_delivery(&mut batch, rec);
            batch.insert(xkey(id), IVec::default());
            self.move_to_dead_log(id.webhook, id.slot, None, &mut batch);
            let was_pending = old.state == DeliveryState::Pending;
            self.apply(batch, |c| {
                if was_pending {
                    c.lane(&old.lane, -1);
                    c.dead += 1;
                }
            })
        })
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
