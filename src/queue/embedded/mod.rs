//! The embedded backend: the log is the queue, sled is its index.
//!
//! ```text
//!  accepts ──► group commit: one writev of checksummed records + one fdatasync ──► 200s
//!                  │
//!                  ├──► lanes read new records in order, a cursor each (lanes.rs)
//!                  │       2xx: the cursor moves on; nothing is written
//!                  │       failure: a retry record (due time) in the index
//!                  ├──► dedup ids: in memory, appended to dedup/ by each checkpoint
//!                  └──► index (sled): retries, dead letters (index.rs; their webhooks
//!                       in the dead-letter log, dead.rs), made durable by checkpoints
//!                       (sync + checkpoint file); start-up replays the log after the
//!                       checkpoint (recovery.rs)
//! ```
//!
//! | file | concern |
//! |---|---|
//! | `io.rs` | the log's file I/O behind a trait (a test cuts the power there) |
//! | `log.rs` | record format, segments, append + sync, reads, resync past damage |
//! | `dedup.rs` | dedup ids: in memory, and durable in files beside the log |
//! | `index.rs` | the sled tables and their keys |
//! | `lanes.rs` | per-lane cursor and window; leases with owners |
//! | `checkpoint.rs` | checkpoints: the file, the cut, reclaiming segments |
//! | `recovery.rs` | opening: layout, broken index, replay, torn tails |
//! | `accept.rs` | accepts: dedup, ids, one synced append, bookkeeping |
//! | `claims.rs` | claims and outcomes of lanes, retries in the index |
//! | `dead.rs` | dead letters, the dead-letter log, replay and purge |
//! | `identity.rs` | the identity map's entries (prefix `i` of the index) |
//! | `counts.rs` | pending per lane and dead letters, without scans |
//! | `store.rs` | `Store`: which of the above does each primitive |

mod accept;
mod checkpoint;
mod claims;
mod counts;
mod dead;
mod dedup;
mod identity;
mod index;
pub mod io;
mod lanes;
mod log;
mod recovery;
mod store;
#[cfg(test)]
mod tests;

/// The dedup key of a webhook (shared with the PostgreSQL backend, so both
/// stores dedup on the same thing).
pub(crate) use dedup::key as dedup_key;

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use self::counts::Counts;
use self::index::Index;
use self::io::Fs;
use self::lanes::LaneLog;
use self::log::{Entry, Log, Pos};

/// A new segment starts (at a batch boundary) once the active one is this big.
pub const SEGMENT_BYTES: u64 = 64 << 20;

/// Records kept in memory after their commit, so that lanes keeping up read
/// them without touching the disk.
const TAIL_RECORDS: usize = 8192;
const TAIL_BYTES: usize = 32 << 20;

/// The embedded store.
pub struct EmbeddedStore {
    dir: PathBuf,
    fs: Arc<dyn Fs>,
    log: Log,
    /// Dead letters' webhooks, moved out of the log (`dead.rs`).
    dead: Log,
    index: Index,
    lanes: RwLock<HashMap<String, Arc<LaneLog>>>,
    commit: Mutex<CommitState>,
    dedup_files: Mutex<dedup::Files>,
    /// Records with a smaller seq are visible to lanes (their lane counts
    /// are in place).
    published: AtomicU64,
    tail: Mutex<TailCache>,
    /// Claims of retries (index records): this process's only.
    leases: Mutex<HashMap<crate::queue::DeliveryId, lanes::Lease>>,
    tokens: AtomicU64,
    /// Serialises the index changes that end a delivery, per webhook stripe.
    stripes: Vec<Mutex<()>>,
    counts: Mutex<Counts>,
    checkpointing: Mutex<()>,
    /// Free disk that writes other than accepts must leave.
    keep_free: AtomicU64,
    /// The first webhook id accepted by this process: records before it may
    /// have been handed to the index after their lane's checkpointed cursor.
    opened_at_seq: u64,
    /// The deliveries the index held at start-up (retries and dead letters)
    /// whose records lie after a lane's checkpointed cursor: the lane skips
    /// them when it reads the log again, even once a retry is delivered and
    /// gone from the index (a lane's cursor lags when checkpoints fail, on a
    /// full disk, or by up to one interval after a crash).
    handed_over: Mutex<HashSet<crate::queue::DeliveryId>>,
    /// The generation of the last checkpoint.
    generation: AtomicU64,
    /// Damaged log ranges found (each counted once).
    damaged: Mutex<HashSet<Pos>>,
}

struct CommitState {
    next_seq: u64,
    /// Every dedup id within the window. Only ids of records whose log
    /// sync succeeded enter it: `duplicate` is never answered for a copy
    /// whose first commit failed.
    dedup: dedup::Table,
    /// Ids added since the last checkpoint, which writes them to the files.
    unpersisted: Vec<dedup::Entry>,
}

/// The last records committed, with where each starts and where the next does.
#[derive(Default)]
struct TailCache {
    entries: VecDeque<(Pos, Pos, Arc<Entry>)>,
    bytes: usize,
}

impl TailCache {
    /// Keeps `entry` (at `at`, followed by `next`), dropping the oldest past the bounds.
    fn push(&mut self, at: Pos, next: Pos, entry: Arc<Entry>) {
        self.bytes += entry.body.len();
        self.entries.push_back((at, next, entry));
        while self.entries.len() > TAIL_RECORDS || self.bytes > TAIL_BYTES {
            if let Some((_, _, e)) = self.entries.pop_front() {
                self.bytes -= e.body.len();
            }
        }
    }
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<EmbeddedStore, crate::queue::StoreError> {
        recovery::open(Arc::new(io::RealFs), dir, SEGMENT_BYTES)
    }

    /// Free disk (bytes) that writes other than accepts must leave.
    pub fn keep_free(&self, bytes: u64) {
        self.keep_free.store(bytes, Ordering::Relaxed);
    }

    fn lane(&self, name: &str) -> Option<Arc<LaneLog>> {
        self.lanes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    fn counts(&self) -> MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn token(&self) -> u64 {
        self.tokens.fetch_add(1, Ordering::Relaxed)
    }

    fn stripe_index(&self, w: u64) -> usize {
        (w % self.stripes.len() as u64) as usize
    }

    fn stripe(&self, w: u64) -> MutexGuard<'_, ()> {
        self.stripes[self.stripe_index(w)]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Applies `batch` and adjusts the counts in the same critical section.
    fn apply(
        &self,
        batch: ::sled::Batch,
        adjust: impl FnOnce(&mut Counts),
    ) -> Result<(), crate::queue::StoreError> {
        let mut counts = self.counts();
        self.index.tree.apply_batch(batch).map_err(index::err)?;
        adjust(&mut counts);
        Ok(())
    }

    /// Reads the record at `pos`: from the in-memory tail when it is there.
    fn read_record(&self, pos: Pos) -> Result<(Got, Pos), crate::queue::StoreError> {
        {
            let tail = self.tail.lock().unwrap_or_else(|p| p.into_inner());
            if let Ok(i) = tail.entries.binary_search_by_key(&pos, |(p, _, _)| *p) {
                let (at, next, e) = &tail.entries[i];
                return Ok((Got::Record(e.clone(), *next), *at));
            }
        }
        Ok(match self.log.read(pos)? {
            (log::Read::Record(e, next), at) => (Got::Record(Arc::new(*e), next), at),
            (log::Read::End, at) => (Got::End, at),
            (log::Read::Damaged(why), at) => (Got::Damaged(why), at),
        })
    }

    /// Counts and logs a damaged range once; returns where reading resumes.
    fn skip_damage(&self, at: Pos, why: &str) -> Result<Pos, crate::queue::StoreError> {
        let Some(seg) = self.log.segment(at.segment) else {
            return Ok(at);
        };
        let resume = seg.resync(at.offset)?;
        if self
            .damaged
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(at)
        {
            let next_id = match self.log.read(Pos {
                segment: at.segment,
                offset: resume,
            })? {
                (log::Read::Record(e, _), _) => Some(crate::queue::webhook_id_string(e.seq)),
                _ => None,
            };
            tracing::error!(
                segment = at.segment,
                offset = at.offset,
                bytes = resume - at.offset,
                error = why,
                next_readable_webhook = next_id,
                "damaged log range skipped (counted in shoprelay_log_damaged_ranges); webhooks in it cannot be delivered"
            );
        }
        Ok(Pos {
            segment: at.segment,
            offset: resume,
        })
    }

    /// Damaged log ranges found so far.
    pub fn damaged_ranges(&self) -> u64 {
        self.damaged.lock().unwrap_or_else(|p| p.into_inner()).len() as u64
    }

    /// Log segments (files, bytes), for tests and stats.
    pub fn log_size(&self) -> (usize, u64) {
        self.log.size()
    }
}

/// What a read found.
enum Got {
    Record(Arc<Entry>, Pos),
    End,
    Damaged(String),
}
