//! Pending work per lane and the dead-letter count, for `/metrics` and
//! `stats`: kept as counters (the log's per-lane counts in `lanes.rs`, the
//! index's here), never counted by scanning the backlog under a lock that
//! writes take.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::lanes::{LaneLog, Status};
use super::{EmbeddedStore, Got, index};
use crate::queue::*;

/// Retries per lane and dead letters, kept beside the index.
#[derive(Default)]
pub(crate) struct Counts {
    pub(super) retrying: HashMap<String, i64>,
    pub(super) dead: i64,
}

impl Counts {
    pub(super) fn lane(&mut self, lane: &str, by: i64) {
        *self.retrying.entry(lane.to_string()).or_insert(0) += by;
    }
}

impl EmbeddedStore {
    pub(super) fn lanes_with_work(&self) -> Result<Vec<String>, StoreError> {
        let mut out: Vec<String> = self
            .lanes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, l)| {
                let s = l.state();
                s.unfinished() > 0 || (s.unread > 0 && !s.at_end)
            })
            .map(|(n, _)| n.clone())
            .collect();
        let mut from = vec![b'q'];
        while let Some(kv) = self.index.tree.range(from.clone()..vec![b'q' + 1]).next() {
            let (k, _) = kv.map_err(index::err)?;
            let Some(sep) = k.iter().position(|&b| b == 0) else {
                break;
            };
            out.push(String::from_utf8_lossy(&k[1..sep]).into_owned());
            from = k[..sep].to_vec();
            from.push(1);
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    pub(super) fn lane_stats(&self) -> Result<(BTreeMap<String, LaneStats>, u64), StoreError> {
        let (retrying, dead) = {
            let c = self.counts();
            (c.retrying.clone(), c.dead)
        };
        let mut lanes: BTreeMap<String, LaneStats> = BTreeMap::new();
        for (lane, n) in retrying.into_iter().filter(|(_, n)| *n > 0) {
            let oldest_due_ms = self.next_retry(&lane)?;
            lanes.insert(
                lane,
                LaneStats {
                    pending: n as u64,
                    oldest_due_ms,
                },
            );
        }
        let all: Vec<(String, Arc<LaneLog>)> = self
            .lanes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(n, l)| (n.clone(), l.clone()))
            .collect();
        for (name, ll) in all {
            let (pending, oldest, peek) = {
                let s = ll.state();
                let oldest = s
                    .window
                    .iter()
                    .find(|i| i.status != Status::Done)
                    .map(|i| i.pos);
                (s.unfinished() + s.unread, oldest, s.next)
            };
            if pending == 0 {
                continue;
            }
            // The oldest record waiting: read its time (outside every lock).
            let at = oldest.unwrap_or(peek);
            let received = match self.read_record(at)? {
                (Got::Record(e, _), _) => Some(e.meta.received_at_ms),
                _ => None,
            };
            let l = lanes.entry(name).or_default();
            l.pending += pending;
            l.oldest_due_ms = match (l.oldest_due_ms, received) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        Ok((lanes, dead.max(0) as u64))
    }
}
