//! Accepting: dedup against the ids in memory, one webhook id each, the
//! records appended and synced in one go (the 200 waits for this), then the
//! bookkeeping that makes them visible: dedup ids, lane counts, the tail.

use std::collections::HashMap;
use std::sync::Arc;

use super::EmbeddedStore;
use super::dedup;
use super::lanes::LaneLog;
use super::log::{self, Entry, Pos};
use crate::queue::*;

impl EmbeddedStore {
    /// Dedups and stores every accept; see [`Store::accept_batch`].
    pub(super) fn accept(&self, items: &[Accept]) -> Result<Vec<AcceptOutcome>, StoreError> {
        let mut commit = self.commit.lock().unwrap_or_else(|p| p.into_inner());
        let mut fresh: HashMap<dedup::Key, WebhookId> = HashMap::new();
        let mut out = Vec::with_capacity(items.len());
        let mut records = Vec::new();
        let mut which = Vec::new();
        for (i, a) in items.iter().enumerate() {
            let k = dedup::key(a.webhook.meta());
            if let Some(w) = fresh.get(&k).copied().or_else(|| commit.dedup.get(k)) {
                out.push(AcceptOutcome::Duplicate(w));
                continue;
            }
            let seq = commit.next_seq;
            commit.next_seq += 1;
            records.push(log::encode(
                seq,
                &a.deliveries,
                a.webhook.meta(),
                a.webhook.body(),
            )?);
            which.push(i);
            fresh.insert(k, seq);
            out.push(AcceptOutcome::Queued(seq));
        }
        if records.is_empty() {
            return Ok(out);
        }
        // Durable here: one writev, one fdatasync. Until it returns Ok
        // nothing of the batch exists for anyone (no dedup trace either).
        let at = self.log.append(&records)?;
        for (&i, r) in which.iter().zip(&records) {
            // Received time, as a replay of the record will see it.
            let meta = items[i].webhook.meta();
            let id = (dedup::key(meta), r.seq, meta.received_at_ms);
            commit.dedup.insert(id);
            commit.unpersisted.push(id);
        }
        for ((&i, r), &pos) in which.iter().zip(&records).zip(&at) {
            for d in &items[i].deliveries {
                let existing = self.lane(&d.lane);
                let ll = match existing {
                    Some(l) => l,
                    None => self
                        .lanes
                        .write()
                        .unwrap_or_else(|p| p.into_inner())
                        .entry(d.lane.clone())
                        .or_insert_with(|| Arc::new(LaneLog::new(pos, 0)))
                        .clone(),
                };
                let mut s = ll.state();
                s.unread += 1;
                s.at_end = false;
            }
            let entry = Arc::new(Entry {
                seq: r.seq,
                lanes: items[i].deliveries.clone(),
                meta: items[i].webhook.shared_meta(),
                body: items[i].webhook.body().clone(),
                dead_slot: None,
            });
            let next = Pos {
                segment: pos.segment,
                offset: pos.offset + r.len(),
            };
            self.tail
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(pos, next, entry);
        }
        self.published
            .store(commit.next_seq, std::sync::atomic::Ordering::Release);
        Ok(out)
    }

    pub(super) fn accepted_ids(
        &self,
        items: &[Accept],
    ) -> Result<Vec<Option<WebhookId>>, StoreError> {
        let commit = self.commit.lock().unwrap_or_else(|p| p.into_inner());
        Ok(items
            .iter()
            .map(|a| commit.dedup.get(dedup::key(a.webhook.meta())))
            .collect())
    }
}
