//! Lanes read the log in order, each with its own cursor. What a lane has
//! read and not finished is its window, in memory: a delivery that succeeds
//! leaves no trace anywhere but the cursor moving on, and the cursor is
//! persisted with the checkpoints. A failed attempt hands the delivery over
//! to the index (a retry record) and the cursor moves on past it too.
//!
//! After a crash a lane starts again at its checkpointed cursor, so what it
//! finished since that checkpoint is sent again, with the same messageId:
//! at most one checkpoint interval of deliveries, plus those in flight.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use super::log::Pos;

/// Most read-but-unfinished records (and finished ones behind an unfinished
/// one) a lane keeps; past it the lane reads nothing new until its oldest
/// finishes (each attempt ends within the destination's timeout).
pub const WINDOW_MAX: usize = 65_536;

/// Retries a lane keeps in the index before it stops reading new records:
/// a destination that is down makes its backlog wait in the log (cheap)
/// rather than turn it into a million retry records (sled: ~150 bytes of
/// memory each) whose retry windows all run out together.
pub const MAX_RETRYING: i64 = 10_000;

/// A claim: who holds a delivery, until when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    pub token: u64,
    pub until: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Read, not claimed (a claim's lease ended without an outcome).
    Waiting,
    Leased(Lease),
    /// Delivered, handed to the index, or dead: the cursor may pass it.
    Done,
}

/// One record a lane has read.
#[derive(Clone, Debug)]
pub struct Item {
    pub seq: u64,
    pub pos: Pos,
    pub slot: u8,
    pub status: Status,
}

/// One lane's place in the log.
#[derive(Debug)]
pub struct LaneState {
    /// The next record to read.
    pub next: Pos,
    /// Read and not yet passed by the cursor, in log order.
    pub window: VecDeque<Item>,
    /// Records for this lane at or after `next` (for counts; the reader
    /// decides what is there).
    pub unread: u64,
    /// The last read reached the end of what was published; cleared when a
    /// record for this lane is published.
    pub at_end: bool,
}

impl LaneState {
    pub fn new(next: Pos, unread: u64) -> Self {
        LaneState {
            next,
            window: VecDeque::new(),
            unread,
            at_end: false,
        }
    }

    /// Every record before this is done for the lane.
    pub fn cursor(&self) -> Pos {
        self.window.front().map_or(self.next, |i| i.pos)
    }

    /// Records before `next` the lane has not finished.
    pub fn unfinished(&self) -> u64 {
        self.window
            .iter()
            .filter(|i| i.status != Status::Done)
            .count() as u64
    }

    /// Records from the cursor to the end of the log.
    pub fn ahead(&self) -> u64 {
        self.unread + self.window.len() as u64
    }

    fn find(&mut self, seq: u64, slot: u8) -> Option<&mut Item> {
        let i = self.window.binary_search_by_key(&seq, |i| i.seq).ok()?;
        self.window.get_mut(i).filter(|i| i.slot == slot)
    }

    /// Whether `seq` is in the window (any status).
    pub fn holds(&self, seq: u64) -> bool {
        self.window.binary_search_by_key(&seq, |i| i.seq).is_ok()
    }

    /// Whether (`seq`, `slot`) is the window's and `token` still holds it.
    pub fn held(&mut self, seq: u64, slot: u8, token: u64) -> Held {
        let mine = self
            .find(seq, slot)
            .map(|i| matches!(i.status, Status::Leased(l) if l.token == token).then_some(i.pos));
        match mine {
            Some(Some(pos)) => Held::Mine(pos),
            None if !self.holds(seq) => Held::NotHere,
            _ => Held::Stale,
        }
    }

    /// Marks (`seq`, `slot`) done if `token` still holds it, and moves the
    /// cursor past done records. False for a stale or unknown claim.
    pub fn finish(&mut self, seq: u64, slot: u8, token: u64) -> bool {
        let ok = match self.find(seq, slot) {
            Some(item) if matches!(item.status, Status::Leased(l) if l.token == token) => {
                item.status = Status::Done;
                true
            }
            _ => false,
        };
        while self
            .window
            .front()
            .is_some_and(|i| i.status == Status::Done)
        {
            self.window.pop_front();
        }
        ok
    }

    /// Leases up to `limit` read records that are waiting or whose lease has
    /// ended by `now`. Returns them.
    pub fn lease_due(
        &mut self,
        now: u64,
        until: u64,
        limit: usize,
        token: &mut impl FnMut() -> u64,
    ) -> Vec<Item> {
        let mut out = Vec::new();
        for item in self.window.iter_mut() {
            if out.len() >= limit {
                break;
            }
            let due = match item.status {
                Status::Waiting => true,
                Status::Leased(l) => l.until <= now,
                Status::Done => false,
            };
            if due {
                item.status = Status::Leased(Lease {
                    token: token(),
                    until,
                });
                out.push(item.clone());
            }
        }
        out
    }

    /// When something read becomes claimable: now for a waiting one, else
    /// the earliest lease end.
    pub fn next_due(&self) -> Option<u64> {
        self.window
            .iter()
            .filter_map(|i| match i.status {
                Status::Waiting => Some(0),
                Status::Leased(l) => Some(l.until),
                Status::Done => None,
            })
            .min()
    }

    /// Gives back leases taken for claims that were then not returned.
    pub fn unlease(&mut self, seq: u64, slot: u8, token: u64) {
        if let Some(item) = self.find(seq, slot) {
            if matches!(item.status, Status::Leased(l) if l.token == token) {
                item.status = Status::Waiting;
            }
        }
    }
}

/// Who holds a delivery of the window, for an outcome.
pub enum Held {
    /// Not a record of the window: a retry, in the index.
    NotHere,
    /// Finished, or claimed again since: the outcome changes nothing.
    Stale,
    /// Held by the caller's lease; where its record is.
    Mine(Pos),
}

/// One lane of the log: its state, and a lock that makes its reads of new
/// records one at a time (the state lock is not held across disk reads).
#[derive(Debug)]
pub struct LaneLog {
    pub reading: Mutex<()>,
    state: Mutex<LaneState>,
}

impl LaneLog {
    pub fn new(next: Pos, unread: u64) -> Self {
        LaneLog {
            reading: Mutex::new(()),
            state: Mutex::new(LaneState::new(next, unread)),
        }
    }

    pub fn state(&self) -> MutexGuard<'_, LaneState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(o: u64) -> Pos {
        Pos {
            segment: 1,
            offset: o,
        }
    }

    #[test]
    fn the_cursor_passes_only_a_finished_prefix_and_stale_claims_change_nothing() {
        let mut s = LaneState::new(pos(0), 3);
        let mut n = 0;
        let mut token = || {
            n += 1;
            n
        };
        for seq in 1..=3 {
            s.window.push_back(Item {
                seq,
                pos: pos(seq * 100),
                slot: 0,
                status: Status::Waiting,
            });
        }
        s.next = pos(400);
        let got = s.lease_due(10, 20, 10, &mut token);
        assert_eq!(got.len(), 3);
        let tok = |i: &Item| match i.status {
            Status::Leased(l) => l.token,
            _ => panic!(),
        };
        // The second finishes first: the cursor stays at the first.
        assert!(s.finish(2, 0, tok(&got[1])));
        assert_eq!(s.cursor(), pos(100));
        // A stale token (lease re-taken after it ended) is ignored.
        let again = s.lease_due(25, 40, 10, &mut token);
        assert_eq!(again.len(), 2, "the first and third were due again");
        assert!(!s.finish(1, 0, tok(&got[0])), "stale claim");
        assert_eq!(s.cursor(), pos(100));
        assert!(s.finish(1, 0, tok(&again[0])));
        assert_eq!(s.cursor(), pos(300));
        assert!(s.finish(3, 0, tok(&again[1])));
        assert_eq!(s.cursor(), pos(400));
        assert_eq!(s.unfinished(), 0);
    }
}
