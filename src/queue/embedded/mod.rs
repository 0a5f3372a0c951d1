//! The embedded backend: the log is the queue, sled is its index.
//!
//! ```text
//!  accepts ──► group commit: one writev of checksummed records + one fdatasync ──► 200s
//!                  │
//!                  ├──► lanes read new records in order, a cursor each (lanes.rs)
//!                  │       2xx: the cursor moves on; nothing is written
//!                  │       failure: a retry record (due time) in the index
//!                  └──► index (sled): dedup keys, retries, dead letters (index.rs),
//!                       made durable by checkpoints (sync + checkpoint file);
//!                       start-up replays the log after the checkpoint (recovery.rs)
//! ```
//!
//! | file | concern |
//! |---|---|
//! | `io.rs` | the log's file I/O behind a trait (a test cuts the power there) |
//! | `log.rs` | record format, segments, append + sync, reads, resync past damage |
//! | `dedup.rs` | dedup ids: in memory, and durable in files beside the log |
//! | `index.rs` | the sled tables and their keys |
//! | `lanes.rs` | per-lane cursor and window; leases with owners |
//! | `checkpoint.rs` | the checkpoint file |
//! | `recovery.rs` | opening: layout, broken index, replay, torn tails |
//! | `claims.rs` | claims and outcomes (`Store` for the delivery side) |
//! | `dead.rs` | dead letters, the dead-letter log, replay and purge |

mod checkpoint;
mod claims;
mod dead;
mod dedup;
mod index;
pub mod io;
mod lanes;
mod log;
mod recovery;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use self::index::Index;
use self::io::Fs;
use self::lanes::LaneLog;
use self::log::{Entry, Log, Pos};

/// A new segment starts (at a batch boundary) once the active one is this big.
pub const SEGMENT_BYTES: u64 = 64 << 20;

/// The segment being appended to is retired (and deleted once the
/// checkpoint is written) when every lane has passed it and it is this big
/// (or a 64th of the segment size, if less); smaller, it is not worth a new
/// segment (a directory fsync on the path of the next 200).
const RETIRE_BYTES: u64 = 1 << 20;

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

#[derive(Default)]
struct TailCache {
    entries: VecDeque<(Pos, Pos, Arc<Entry>)>,
    bytes: usize,
}

/// Retries per lane and dead letters, kept beside the index.
#[derive(Default)]
pub(crate) struct Counts {
    retrying: HashMap<String, i64>,
    dead: i64,
}

impl Counts {
    fn lane(&mut self, lane: &str, by: i64) {
        *self.retrying.entry(lane.to_string()).or_insert(0) += by;
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

    /// Makes the index durable up to now and records the checkpoint; then
    /// deletes the segments every lane has passed that nothing points into.
    fn checkpoint(&self) -> Result<u64, crate::queue::StoreError> {
        let _one = self.checkpointing.lock().unwrap_or_else(|p| p.into_inner());
        // A consistent cut: no commit in progress, every lane's state at once.
        let (cp, min_cursor, ids, retired) = {
            let mut commit = self.commit.lock().unwrap_or_else(|p| p.into_inner());
            let ids = std::mem::take(&mut commit.unpersisted);
            let tail = self.log.tail();
            let lanes = self.lanes.read().unwrap_or_else(|p| p.into_inner());
            let mut marks = BTreeMap::new();
            let mut min_cursor = tail;
            for (name, l) in lanes.iter() {
                let mut s = l.state();
                if s.window.is_empty() && (s.unread == 0 || s.next == tail) {
                    // Nothing left for it: its cursor is the end.
                    s.next = tail;
                    s.unread = 0;
                }
                let cursor = s.cursor();
                min_cursor = min_cursor.min(cursor);
                marks.insert(
                    name.clone(),
                    checkpoint::LaneMark {
                        cursor,
                        ahead: s.ahead(),
                    },
                );
            }
            drop(lanes);
            // Everything delivered, even the segment being appended to: retire
            // it (the next commit starts a new one), so that a drained queue
            // frees its disk, which a full disk needs to take webhooks again.
            let retired = (min_cursor == tail
                && tail.offset >= (self.log.segment_bytes() / 64).clamp(1, RETIRE_BYTES)
                && !self.log_pointers_from(tail.segment)?)
            .then(|| self.log.retire_active())
            .flatten();
            (
                checkpoint::Checkpoint::new(
                    commit.next_seq,
                    tail,
                    marks,
                    self.generation.load(Ordering::Relaxed) + 1,
                ),
                min_cursor,
                ids,
                retired,
            )
        };
        // Every record before the cut has its dedup id in the files.
        if let Err(e) = self
            .dedup_files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .append(&ids)
        {
            let mut commit = self.commit.lock().unwrap_or_else(|p| p.into_inner());
            let newer = std::mem::replace(&mut commit.unpersisted, ids);
            commit.unpersisted.extend(newer);
            return Err(e);
        }
        // Segments wholly before every cursor whose webhooks nothing in the
        // index points to (retries, dead letters too large to move). Decided
        // before the sync, so what made them free is durable before they go.
        let mut unused: Vec<u64> = retired.into_iter().collect();
        for (first, end) in self.log.closed() {
            if end > min_cursor.segment {
                break;
            }
            let mut pointed = false;
            for kv in self.index.tree.range(index::wkey(first)..index::wkey(end)) {
                let (_, v) = kv.map_err(index::err)?;
                if matches!(index::decode_located(&v), Ok(index::Located::Log(_))) {
                    pointed = true;
                    break;
                }
            }
            if !pointed {
                unused.push(first);
            }
        }
        let unused_dead = self.unused_dead_segments()?;
        self.index.set_generation(cp.index_generation)?;
        self.index.sync(&self.dir.join("index"))?;
        checkpoint::write(&*self.fs, &self.dir, &cp).map_err(|e| {
            crate::queue::StoreError::Backend(format!("writing the checkpoint: {e}"))
        })?;
        self.generation
            .store(cp.index_generation, Ordering::Relaxed);
        let mut freed = 0;
        for first in &unused {
            freed += self.log.delete(*first)?;
        }
        if !unused.is_empty() {
            let _ = self.fs.sync_dir(&self.dir.join("log"));
        }
        for first in &unused_dead {
            freed += self.dead.delete(*first)?;
        }
        if !unused_dead.is_empty() {
            let _ = self.fs.sync_dir(&self.dir.join("dead"));
        }
        Ok(freed)
    }

    /// Whether a retry or dead letter points into log segment `first` or a later one.
    fn log_pointers_from(&self, first: u64) -> Result<bool, crate::queue::StoreError> {
        for kv in self
            .index
            .tree
            .range(index::wkey(first)..index::wkey(u64::MAX))
        {
            let (_, v) = kv.map_err(index::err)?;
            if matches!(index::decode_located(&v), Ok(index::Located::Log(_))) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Closed segments of the dead-letter log that no dead letter points
    /// into any more (all purged, or replayed and delivered).
    fn unused_dead_segments(&self) -> Result<Vec<u64>, crate::queue::StoreError> {
        let closed = self.dead.closed();
        if closed.is_empty() {
            return Ok(Vec::new());
        }
        let mut used = HashSet::new();
        for kv in self.index.tree.scan_prefix([b'w']) {
            let (_, v) = kv.map_err(index::err)?;
            if let Ok(index::Located::Dead(p)) = index::decode_located(&v) {
                used.insert(p.segment);
            }
        }
        Ok(closed
            .into_iter()
            .map(|(first, _)| first)
            .filter(|f| !used.contains(f))
            .collect())
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
