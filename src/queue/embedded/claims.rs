//! Claims (each lane's window, then its retries in the index, then new
//! records from the log) and outcomes, which only ever apply under the lease
//! they were claimed with.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use ::sled::{Batch, IVec};

use super::index::{self, Index, Located, dkey, lane_prefix, parse_qtail, qkey, wkey};
use super::lanes::{Held, Item, LaneLog, MAX_RETRYING, Status, WINDOW_MAX};
use super::log::{Entry, Pos};
use super::{EmbeddedStore, Got};
use crate::queue::*;

/// Most records one claim looks at before it returns (the rest is read by
/// the next claim), so one claim never holds a lane for long.
const MAX_SCAN: usize = 50_000;

/// A due retry that cannot be sent: its due key, the delivery to bury (with
/// its record when that could be read) or none to just drop the key, and why.
type Broken = (IVec, Option<(DeliveryId, Option<DeliveryRecord>)>, String);

fn webhook_of(e: &Entry) -> Webhook {
    Webhook::from_shared(e.meta.clone(), e.body.clone())
}

fn claimed(lane: &str, e: &Entry, slot: u8, token: u64) -> Claimed {
    let targets = e
        .lanes
        .get(slot as usize)
        .map(|l| l.targets.clone())
        .unwrap_or_default();
    let id = DeliveryId {
        webhook: e.seq,
        slot,
    };
    Claimed {
        record: DeliveryRecord::new(id, lane.to_string(), targets, e.meta.received_at_ms),
        webhook: webhook_of(e),
        lease: token,
    }
}

impl EmbeddedStore {
    fn retrying(&self, lane: &str) -> i64 {
        self.counts().retrying.get(lane).copied().unwrap_or(0)
    }

    /// The record at `pos`, which must be webhook `seq`.
    pub(super) fn entry_at(&self, pos: Pos, seq: u64) -> Result<Arc<Entry>, StoreError> {
        match self.read_record(pos)? {
            (Got::Record(e, _), at) if at == pos && e.seq == seq => Ok(e),
            (Got::Record(e, _), _) => Err(StoreError::Corrupt(format!(
                "the log holds webhook {} where {} was",
                webhook_id_string(e.seq),
                webhook_id_string(seq)
            ))),
            (Got::End, _) => Err(StoreError::Corrupt(format!(
                "webhook {} is no longer in the log (segment {} deleted?)",
                webhook_id_string(seq),
                pos.segment
            ))),
            (Got::Damaged(why), _) => Err(StoreError::Corrupt(format!(
                "webhook {} in the log: {why}",
                webhook_id_string(seq)
            ))),
        }
    }

    /// Writes the outcome of a delivery read from the log with `write` (given
    /// where its record is), under the webhook's stripe, if `lease` still
    /// holds it, and lets the cursor pass it. `None`: not a delivery of the
    /// lane's window (a retry, in the index).
    pub(super) fn window_outcome(
        &self,
        rec: &DeliveryRecord,
        lease: u64,
        write: impl FnOnce(Pos) -> Result<(), StoreError>,
    ) -> Option<Result<(), StoreError>> {
        let ll = self.lane(&rec.lane)?;
        let mut s = ll.state();
        match s.held(rec.id.webhook, rec.id.slot, lease) {
            Held::NotHere => None,
            Held::Stale => Some(Ok(())),
            Held::Mine(pos) => {
                let _g = self.stripe(rec.id.webhook);
                Some(write(pos).map(|()| {
                    s.finish(rec.id.webhook, rec.id.slot, lease);
                }))
            }
        }
    }

    /// Whether the index knows where webhook `w` is.
    pub(super) fn has_location(&self, w: WebhookId) -> Result<bool, StoreError> {
        self.index.tree.contains_key(wkey(w)).map_err(index::err)
    }

    /// Webhook `w` as the index locates it.
    pub(super) fn get_webhook(&self, w: WebhookId) -> Result<Option<Webhook>, StoreError> {
        let Some(v) = self.index.tree.get(wkey(w)).map_err(index::err)? else {
            return Ok(None);
        };
        let entry = match index::decode_located(&v)? {
            Located::Log(pos) => self.entry_at(pos, w)?,
            Located::Dead(pos) => self.dead_entry_at(pos, w)?,
        };
        Ok(Some(webhook_of(&entry)))
    }

    /// Reads new records for `lane` into its window, leased.
    fn read_new(
        &self,
        lane: &str,
        ll: &LaneLog,
        until: u64,
        want: usize,
        out: &mut Vec<Claimed>,
    ) -> Result<(), StoreError> {
        let _one = ll.reading.lock().unwrap_or_else(|p| p.into_inner());
        let (mut pos, room) = {
            let s = ll.state();
            (s.next, WINDOW_MAX.saturating_sub(s.window.len()))
        };
        let want = want.min(room);
        if want == 0 {
            return Ok(());
        }
        let published = self.published.load(std::sync::atomic::Ordering::Acquire);
        let mut found: Vec<(Pos, u8, Arc<Entry>)> = Vec::new();
        let mut scanned = 0;
        let mut skipped = 0u64;
        let mut at_end = false;
        while found.len() < want && scanned < MAX_SCAN {
            match self.read_record(pos)? {
                (Got::Record(e, next), at) => {
                    if e.seq >= published {
                        pos = at;
                        at_end = true;
                        break;
                    }
                    scanned += 1;
                    if let Some(slot) = e.lanes.iter().position(|l| l.lane == lane) {
                        let id = DeliveryId {
                            webhook: e.seq,
                            slot: slot as u8,
                        };
                        // A record from before this start that the lane had
                        // handed to the index (a retry or a dead letter) after
                        // its checkpointed cursor: the index has it, or had it
                        // at the start and has delivered it since.
                        let handed_over = e.seq < self.opened_at_seq
                            && self
                                .handed_over
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .remove(&id);
                        if handed_over {
                            skipped += 1;
                        } else {
                            found.push((at, slot as u8, e));
                        }
                    }
                    pos = next;
                }
                (Got::End, at) => {
                    pos = at;
                    at_end = true;
                    break;
                }
                (Got::Damaged(why), at) => pos = self.skip_damage(at, &why)?,
            }
        }
        let mut s = ll.state();
        s.next = pos;
        s.unread = s.unread.saturating_sub(found.len() as u64 + skipped);
        if at_end {
            s.at_end = true;
        }
        for (at, slot, e) in found {
            let token = self.token();
            s.window.push_back(Item {
                seq: e.seq,
                pos: at,
                slot,
                status: Status::Leased(super::lanes::Lease { token, until }),
            });
            out.push(claimed(lane, &e, slot, token));
        }
        Ok(())
    }

    /// Leases due retries of `lane` from the index.
    fn claim_retries(
        &self,
        lane: &str,
        now_ms: u64,
        until: u64,
        limit: usize,
        out: &mut Vec<Claimed>,
    ) -> Result<(), StoreError> {
        let prefix = lane_prefix(lane);
        let mut end = prefix.clone();
        end.extend_from_slice(&index::be(now_ms.saturating_add(1)));
        let mut broken = Vec::new();
        for kv in self.index.tree.range(prefix.clone()..end) {
            if out.len() >= limit {
                break;
            }
            let (k, _) = kv.map_err(index::err)?;
            let Some((_, id)) = parse_qtail(&k[prefix.len()..]) else {
                broken.push((k, None, "a malformed due entry".to_string()));
                continue;
            };
            if self.leases().get(&id).is_some_and(|l| l.until > now_ms) {
                continue; // in flight
            }
            let record = match self.index.get_delivery(id) {
                Ok(Some(r)) => r,
                Ok(None) => {
                    broken.push((k, None, String::new()));
                    continue;
                }
                Err(StoreError::Corrupt(why)) => {
                    broken.push((
                        k,
                        Some((id, None)),
                        format!("the delivery record cannot be read ({why})"),
                    ));
                    continue;
                }
                Err(e) => return Err(e),
            };
            match self.get_webhook(id.webhook) {
                Ok(Some(webhook)) => {
                    let token = self.token();
                    self.leases()
                        .insert(id, super::lanes::Lease { token, until });
                    out.push(Claimed {
                        record,
                        webhook,
                        lease: token,
                    });
                }
                Ok(None) => broken.push((k, None, String::new())),
                Err(StoreError::Corrupt(why)) => broken.push((
                    k,
                    Some((id, Some(record))),
                    format!("the stored webhook cannot be read: {why}"),
                )),
                Err(e) => return Err(e),
            }
        }
        self.clear_broken(lane, now_ms, broken)
    }

    /// Due entries that cannot be delivered: one whose record is gone is
    /// dropped; one whose webhook or record cannot be read becomes a dead
    /// letter that says why, rather than a lane stuck on it.
    fn clear_broken(&self, lane: &str, now_ms: u64, broken: Vec<Broken>) -> Result<(), StoreError> {
        let now_ms = now_ms.min(crate::timefmt::now_ms());
        for (k, dead, why) in broken {
            let _g = dead.as_ref().map(|(id, _)| self.stripe(id.webhook));
            if !self.index.tree.contains_key(&k).map_err(index::err)? {
                continue;
            }
            let mut batch = Batch::default();
            batch.remove(k);
            let buried = dead.is_some();
            if let Some((id, rec)) = dead {
                let mut rec = rec.unwrap_or_else(|| {
                    // What the record held is lost; the webhook is not. No
                    // targets: a replay sends to the lane's destinations.
                    DeliveryRecord::new(id, lane.to_string(), Vec::new(), now_ms)
                });
                tracing::error!(lane, %id, error = %why, "undeliverable retry moved to the dead letters");
                rec.state = DeliveryState::Dead {
                    dead_at_ms: now_ms,
                    reason: if rec.targets.is_empty() {
                        format!("{why}; a replay sends the webhook again to lane `{lane}`")
                    } else {
                        why
                    },
                };
                Index::put_delivery(&mut batch, &rec);
                batch.insert(index::xkey(id), IVec::default());
                self.move_to_dead_log(id.webhook, id.slot, None, &mut batch);
            }
            self.apply(batch, |c| {
                c.lane(lane, -1);
                if buried {
                    c.dead += 1;
                }
            })?;
        }
        Ok(())
    }

    pub(super) fn leases(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<DeliveryId, super::lanes::Lease>> {
        self.leases.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes the outcome of an attempt on retry `id` under its stripe, if
    /// `lease` still holds it; the lease ends once written.
    pub(super) fn record_outcome(
        &self,
        id: DeliveryId,
        lease: u64,
        write: impl FnOnce(DeliveryRecord) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let _g = self.stripe(id.webhook);
        if self.leases().get(&id).is_none_or(|l| l.token != lease) {
            tracing::debug!(%id, "outcome of an attempt whose lease ended ignored");
            return Ok(());
        }
        if let Some(old) = self.index.get_delivery(id)? {
            write(old)?;
        }
        self.leases().remove(&id);
        Ok(())
    }

    /// The earliest due retry in the index, or lease end of one in flight.
    pub(super) fn next_retry(&self, lane: &str) -> Result<Option<u64>, StoreError> {
        let prefix = lane_prefix(lane);
        let mut earliest: Option<u64> = None;
        for kv in self.index.tree.scan_prefix(&prefix) {
            let (k, _) = kv.map_err(index::err)?;
            let Some((due, id)) = parse_qtail(&k[prefix.len()..]) else {
                continue;
            };
            match self.leases().get(&id).copied() {
                Some(l) => earliest = Some(earliest.map_or(l.until, |e| e.min(l.until))),
                None => return Ok(Some(earliest.map_or(due, |e| e.min(due)))),
            }
        }
        Ok(earliest)
    }

    /// Removes the index deliveries `ids` in `batch`, and each webhook none of
    /// whose other index deliveries remains. Caller holds the stripe locks.
    pub(super) fn remove_deliveries(&self, ids: &[DeliveryId], batch: &mut Batch) {
        let removing: HashSet<Vec<u8>> = ids.iter().map(|&id| dkey(id)).collect();
        let mut webhooks: Vec<WebhookId> = ids.iter().map(|id| id.webhook).collect();
        webhooks.sort_unstable();
        webhooks.dedup();
        for k in &removing {
            batch.remove(k.as_slice());
        }
        for w in webhooks {
            let others = self
                .index
                .tree
                .scan_prefix(index::key(b'd', &[&index::be(w)]))
                .keys()
                .any(|k| k.map_or(true, |k| !removing.contains(k.as_ref())));
            if !others {
                batch.remove(wkey(w));
            }
        }
    }
}

impl EmbeddedStore {
    /// Leases what is due of `lane`; see [`Store::claim_due`].
    pub(super) fn claim(
        &self,
        lane: &str,
        now_ms: u64,
        lease_until_ms: u64,
        limit: usize,
    ) -> Result<Vec<Claimed>, StoreError> {
        let mut out = Vec::new();
        let ll = self.lane(lane);
        if let Some(ll) = &ll {
            let items = ll
                .state()
                .lease_due(now_ms, lease_until_ms, limit, &mut || self.token());
            for item in items {
                let token = match item.status {
                    Status::Leased(l) => l.token,
                    _ => continue,
                };
                match self.entry_at(item.pos, item.seq) {
                    Ok(e) => out.push(claimed(lane, &e, item.slot, token)),
                    Err(StoreError::Corrupt(why)) => {
                        // Read once, unreadable now: a dead letter that says so.
                        let id = DeliveryId {
                            webhook: item.seq,
                            slot: item.slot,
                        };
                        let mut rec = DeliveryRecord::new(id, lane.to_string(), Vec::new(), now_ms);
                        rec.state = DeliveryState::Dead {
                            dead_at_ms: crate::timefmt::now_ms(),
                            reason: format!(
                                "the stored webhook cannot be read: {why}; a replay sends it again to lane `{lane}`"
                            ),
                        };
                        self.bury(&rec, token)?;
                    }
                    Err(e) => {
                        ll.state().unlease(item.seq, item.slot, token);
                        return Err(e);
                    }
                }
            }
        }
        if out.len() < limit {
            if let Err(e) =
                self.claim_retries(lane, now_ms, lease_until_ms, limit - out.len(), &mut out)
            {
                self.give_back(lane, &out);
                return Err(e);
            }
        }
        if let Some(ll) = &ll {
            if out.len() < limit && self.retrying(lane) < MAX_RETRYING {
                if let Err(e) = self.read_new(lane, ll, lease_until_ms, limit - out.len(), &mut out)
                {
                    self.give_back(lane, &out);
                    return Err(e);
                }
            }
        }
        Ok(out)
    }

    /// When `lane` next has work; see [`Store::next_due`].
    pub(super) fn due_at(&self, lane: &str) -> Result<Option<u64>, StoreError> {
        let mut best = self.next_retry(lane)?;
        let paused = self.retrying(lane) >= MAX_RETRYING;
        if let Some(ll) = self.lane(lane) {
            let s = ll.state();
            let mut min = |d: u64| best = Some(best.map_or(d, |b| b.min(d)));
            if let Some(d) = s.next_due() {
                min(d);
            }
            if s.unread > 0 && !s.at_end && !paused && s.window.len() < WINDOW_MAX {
                min(0);
            }
        }
        Ok(best)
    }

    /// A failed attempt, due again at `rec.due_ms`; see [`Store::update`].
    pub(super) fn reschedule(&self, rec: &DeliveryRecord, lease: u64) -> Result<(), StoreError> {
        self.room_for_index()?;
        let outcome = self.window_outcome(rec, lease, |pos| {
            // Handed over to the index: a retry record, and where the
            // webhook is (unless a sibling lane's retry wrote it).
            let mut batch = Batch::default();
            Index::put_delivery(&mut batch, rec);
            batch.insert(qkey(&rec.lane, rec.due_ms, rec.id), IVec::default());
            if !self.has_location(rec.id.webhook)? {
                batch.insert(
                    wkey(rec.id.webhook),
                    index::encode_located(Located::Log(pos)),
                );
            }
            self.apply(batch, |c| c.lane(&rec.lane, 1))
        });
        if let Some(done) = outcome {
            return done;
        }
        self.record_outcome(rec.id, lease, |old| {
            let mut batch = Batch::default();
            batch.remove(qkey(&old.lane, old.due_ms, rec.id));
            batch.insert(qkey(&rec.lane, rec.due_ms, rec.id), IVec::default());
            Index::put_delivery(&mut batch, rec);
            self.apply(batch, |c| {
                c.lane(&old.lane, -1);
                c.lane(&rec.lane, 1);
            })
        })
    }

    /// Delivered; see [`Store::complete_many`].
    /// Completes the deliveries the lane's window holds (a first attempt
    /// that succeeded: memory only, nothing written) and keeps the others
    /// (retries, whose records are in the index) in `done`.
    pub(super) fn complete_held(&self, lane: &str, done: &mut Vec<(DeliveryId, u64)>) {
        if let Some(ll) = self.lane(lane) {
            let mut s = ll.state();
            done.retain(|&(id, lease)| {
                if s.holds(id.webhook) {
                    s.finish(id.webhook, id.slot, lease);
                    false
                } else {
                    true
                }
            });
        }
    }

    pub(super) fn complete(
        &self,
        lane: &str,
        done: &[(DeliveryId, u64)],
    ) -> Result<(), StoreError> {
        // First attempts the lane's window holds end in memory; what is left
        // are retries, whose records are in the index.
        let mut retries = done.to_vec();
        self.complete_held(lane, &mut retries);
        if retries.is_empty() {
            return Ok(());
        }
        // A retry's completion writes to the index: kept off a full disk too
        // (refused, its lease ends and it is sent again, same messageId).
        self.room_for_index()?;
        // Every stripe involved, in ascending order (others hold at most one).
        let mut stripes: Vec<usize> = retries
            .iter()
            .map(|(id, _)| self.stripe_index(id.webhook))
            .collect();
        stripes.sort_unstable();
        stripes.dedup();
        let _guards: Vec<_> = stripes
            .iter()
            .map(|&i| self.stripes[i].lock().unwrap_or_else(|p| p.into_inner()))
            .collect();
        let mut batch = Batch::default();
        let mut lanes: Vec<String> = Vec::new();
        let mut found = Vec::with_capacity(retries.len());
        let mut seen = HashSet::with_capacity(retries.len());
        {
            let leases = self.leases();
            retries.retain(|(id, lease)| {
                leases.get(id).is_some_and(|l| l.token == *lease) && seen.insert(*id)
            });
        }
        for &(id, _) in &retries {
            let Some(old) = self.index.get_delivery(id)? else {
                continue;
            };
            if old.state != DeliveryState::Pending {
                continue;
            }
            batch.remove(qkey(&old.lane, old.due_ms, id));
            lanes.push(old.lane);
            found.push(id);
        }
        self.remove_deliveries(&found, &mut batch);
        self.apply(batch, |c| lanes.iter().for_each(|l| c.lane(l, -1)))?;
        let mut leases = self.leases();
        for (id, _) in &retries {
            leases.remove(id);
        }
        Ok(())
    }

    /// A retry or dead letter is written to the index only while half of
    /// `min_free_bytes` is still free (accepts stop at all of it): sled must
    /// never meet a full disk. Refused, the attempt keeps its lease and comes
    /// due again when it ends.
    pub(super) fn room_for_index(&self) -> Result<(), StoreError> {
        let reserve = self.keep_free.load(std::sync::atomic::Ordering::Relaxed) / 2;
        match self.free_bytes() {
            Some(free) if free < reserve => Err(StoreError::DiskFull { free, reserve }),
            _ => Ok(()),
        }
    }

    /// Gives back the leases of claims that are not returned after all.
    fn give_back(&self, lane: &str, claims: &[Claimed]) {
        let ll = self.lane(lane);
        for c in claims {
            if let Some(ll) = &ll {
                ll.state()
                    .unlease(c.record.id.webhook, c.record.id.slot, c.lease);
            }
            let mut leases = self.leases();
            if leases.get(&c.record.id).is_some_and(|l| l.token == c.lease) {
                leases.remove(&c.record.id);
            }
        }
    }
}
