//! Opening a data directory: its layout, a broken index, the replay of the
//! log after the checkpoint, torn tails and damage.
//!
//! ```text
//! data_dir/
//!   log/00000000000000000001.log   the write-ahead log (the queue)
//!   dead/00000000000000000042.log  dead letters' webhooks (same record format)
//!   dedup/00000000000000000481.dedup   dedup ids, one file per hour
//!   index/                         sled: retries, dead letters
//!   checkpoint                     how far the index is durable; lane cursors
//! ```
//!
//! Replay is idempotent: dedup ids are inserted again with the same values,
//! and lanes start from their checkpointed cursors, so a record is never
//! queued twice by a replay, only possibly sent again (same messageId).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use super::counts::Counts;
use super::dedup;
use super::index::{self, Index, OpenError};
use super::io::Fs;
use super::lanes::LaneLog;
use super::log::{Log, Pos, Read};
use super::{CommitState, EmbeddedStore, TailCache, checkpoint};
use crate::queue::StoreError;

use super::io::io_err as io;

/// Opens the store in `dir` with `fs` for the log (tests cut the power there).
pub fn open(fs: Arc<dyn Fs>, dir: &Path, segment_bytes: u64) -> Result<EmbeddedStore, StoreError> {
    for old in ["db", "conf", "bodies"] {
        if dir.join(old).exists() {
            return Err(StoreError::Backend(format!(
                "{} holds a queue written by shoprelay 0.1 (`{old}` at its top), which this version does not read. \
                 Drain it first with the previous version (`shoprelay stats` shows no pending deliveries; replay or purge the dead letters), \
                 then move it away, or set server.data_dir to a new directory",
                dir.display()
            )));
        }
    }
    fs.create_dir_durably(dir)
        .map_err(|e| io("create", dir, e))?;
    let log_dir = dir.join("log");
    fs.create_dir_durably(&log_dir)
        .map_err(|e| io("create", &log_dir, e))?;
    let dead_dir = dir.join("dead");
    fs.create_dir_durably(&dead_dir)
        .map_err(|e| io("create", &dead_dir, e))?;
    let dedup_dir = dir.join("dedup");
    fs.create_dir_durably(&dedup_dir)
        .map_err(|e| io("create", &dedup_dir, e))?;
    let index_dir = dir.join("index");
    fs.create_dir_durably(&index_dir)
        .map_err(|e| io("create", &index_dir, e))?;

    let cp = match checkpoint::read(&*fs, dir) {
        Ok(c) => c,
        Err(why) => {
            tracing::warn!(
                why,
                "the checkpoint cannot be used; replaying the whole log (what was delivered since is sent again, same messageId)"
            );
            None
        }
    };
    let broken = match Index::open(&index_dir) {
        Ok(i) => {
            // An index that opens but is older than the checkpoint (files
            // lost or replaced) is as good as broken.
            let expected = cp.as_ref().map_or(0, |c| c.index_generation);
            match i.generation() {
                Ok(g) if g >= expected => Ok(i),
                Ok(g) => Err((
                    i,
                    StoreError::Backend(format!(
                        "it is older than the checkpoint (generation {g}, expected {expected})"
                    )),
                )),
                Err(e) => Err((i, e)),
            }
        }
        Err(OpenError::Locked(e)) => return Err(e),
        Err(OpenError::Broken(e)) => {
            return open_rebuilt(fs, dir, segment_bytes, e);
        }
    };
    let (index, cp) = match broken {
        Ok(i) => (i, cp),
        Err((i, e)) => {
            drop(i);
            return open_rebuilt(fs, dir, segment_bytes, e);
        }
    };
    finish_open(fs, dir, segment_bytes, index, cp, 0)
}

/// Moves the index aside and opens with a new one, rebuilt from the logs.
fn open_rebuilt(
    fs: Arc<dyn Fs>,
    dir: &Path,
    segment_bytes: u64,
    why: StoreError,
) -> Result<EmbeddedStore, StoreError> {
    let index_dir = dir.join("index");
    let aside = dir.join(format!("index.broken-{}", crate::timefmt::now_ms()));
    tracing::error!(
        error = %why,
        moved_to = %aside.display(),
        "THE INDEX CANNOT BE USED: moved aside, rebuilding it from the log. \
         Every webhook still in the log is delivered again (same messageId); \
         dead letters are recreated from the dead-letter log"
    );
    std::fs::rename(&index_dir, &aside).map_err(|e| io("move aside", &index_dir, e))?;
    fs.sync_dir(dir).map_err(|e| io("sync", dir, e))?;
    fs.create_dir_durably(&index_dir)
        .map_err(|e| io("create", &index_dir, e))?;
    let index = match Index::open(&index_dir) {
        Ok(i) => i,
        Err(OpenError::Locked(e) | OpenError::Broken(e)) => return Err(e),
    };
    // The ids already given out stay given out.
    let floor = checkpoint::read(&*fs, dir)
        .ok()
        .flatten()
        .map_or(1, |c| c.next_seq);
    finish_open(fs, dir, segment_bytes, index, None, floor)
}

fn finish_open(
    fs: Arc<dyn Fs>,
    dir: &Path,
    segment_bytes: u64,
    index: Index,
    cp: Option<checkpoint::Checkpoint>,
    rebuilt_above: u64,
) -> Result<EmbeddedStore, StoreError> {
    // 0: the index is sound; else it was rebuilt, and ids below this were given out.
    let rebuilt = rebuilt_above > 0;
    let log_dir = dir.join("log");
    let dead_dir = dir.join("dead");
    let dedup_dir = dir.join("dedup");
    let log = Log::open(fs.clone(), &log_dir, segment_bytes)?;
    let dead = Log::open(fs.clone(), &dead_dir, segment_bytes)?;
    let mut table = dedup::Table::default();
    let dedup_files = dedup::Files::open(fs.clone(), &dedup_dir, &mut table)?;
    let mut lanes: HashMap<String, Arc<LaneLog>> = HashMap::new();
    let (replay_from, mut next_seq) = match &cp {
        Some(c) => {
            for (name, m) in &c.lanes {
                lanes.insert(name.clone(), Arc::new(LaneLog::new(m.cursor, m.ahead)));
            }
            (c.replay_from, c.next_seq)
        }
        None => (log.start(), rebuilt_above.max(1)),
    };
    if let Some(newest) = log.all().last() {
        next_seq = next_seq.max(newest.first + 1);
    }

    let store = EmbeddedStore {
        dir: dir.to_path_buf(),
        fs,
        log,
        dead,
        index,
        lanes: RwLock::new(HashMap::new()),
        commit: Mutex::new(CommitState {
            next_seq,
            dedup: table,
            unpersisted: Vec::new(),
        }),
        dedup_files: Mutex::new(dedup_files),
        published: AtomicU64::new(0),
        tail: Mutex::new(TailCache::default()),
        leases: Mutex::new(HashMap::new()),
        tokens: AtomicU64::new(1),
        stripes: (0..64).map(|_| Mutex::new(())).collect(),
        counts: Mutex::new(Counts::default()),
        checkpointing: Mutex::new(()),
        keep_free: AtomicU64::new(256 << 20),
        damaged: Mutex::new(HashSet::new()),
        opened_at_seq: u64::MAX,
        handed_over: Mutex::new(HashSet::new()),
        generation: AtomicU64::new(cp.as_ref().map_or(0, |c| c.index_generation)),
    };

    let mut store = store;
    let replayed = replay(&store, replay_from, &mut lanes, &mut next_seq)?;
    store.opened_at_seq = next_seq;
    *store.lanes.write().unwrap_or_else(|p| p.into_inner()) = lanes;
    store
        .commit
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .next_seq = next_seq;
    store.published.store(next_seq, Ordering::Release);
    if rebuilt {
        let n = rebuild_dead_letters(&store)?;
        tracing::error!(
            dead_letters = n,
            "dead letters recreated from the dead-letter log (their original reasons are in the moved-aside index)"
        );
    }
    *store.counts() = count(&store.index)?;
    // Records after the oldest cursor have ids at least its segment's name.
    let oldest = store
        .lanes
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .map(|l| l.state().cursor().segment)
        .min();
    if let Some(from) = oldest {
        let mut handed = store.handed_over.lock().unwrap_or_else(|p| p.into_inner());
        for kv in store
            .index
            .tree
            .range(index::key(b'd', &[&index::be(from)])..vec![b'd' + 1])
        {
            let (k, _) = kv.map_err(index::err)?;
            if let Some(id) = index::parse_id(&k) {
                handed.insert(id);
            }
        }
    }
    if replayed > 0 || rebuilt {
        tracing::info!(
            records = replayed,
            rebuilt,
            "replayed the log after the last checkpoint"
        );
    }
    // What the replay indexed is made durable now, not replayed again.
    store.checkpoint()?;
    Ok(store)
}

/// Indexes every record from `from` on, creates lanes for the ones it names,
/// truncates a torn tail and skips damage. Returns how many records it read.
fn replay(
    store: &EmbeddedStore,
    from: Pos,
    lanes: &mut HashMap<String, Arc<LaneLog>>,
    next_seq: &mut u64,
) -> Result<u64, StoreError> {
    let newest = store.log.all().last().map(|s| s.first);
    let mut pos = from;
    let mut n = 0u64;
    let mut commit = store.commit.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        let (read, at) = store.log.read(pos)?;
        match read {
            Read::Record(e, next) => {
                let id = (dedup::key(&e.meta), e.seq, e.meta.received_at_ms);
                commit.dedup.insert(id);
                commit.unpersisted.push(id);
                for l in &e.lanes {
                    match lanes.get(&l.lane) {
                        Some(lane) => lane.state().unread += 1,
                        None => {
                            lanes.insert(l.lane.clone(), Arc::new(LaneLog::new(at, 1)));
                        }
                    }
                }
                *next_seq = (*next_seq).max(e.seq + 1);
                n += 1;
                pos = next;
            }
            Read::End => break,
            Read::Damaged(why) => {
                let seg = store
                    .log
                    .segment(at.segment)
                    .ok_or_else(|| StoreError::Backend("a log segment vanished".into()))?;
                let resume = seg.resync(at.offset)?;
                if Some(at.segment) == newest && resume >= seg.end() {
                    // Nothing valid after it in the newest segment: a write
                    // the power cut short, never acknowledged.
                    tracing::warn!(
                        segment = at.segment,
                        offset = at.offset,
                        bytes = seg.end() - at.offset,
                        why,
                        "torn write at the end of the log (never acknowledged): truncated"
                    );
                    store.log.truncate(at.segment, at.offset)?;
                    break;
                }
                pos = store.skip_damage(at, &why)?;
            }
        }
    }
    Ok(n)
}

/// Recreates the dead letters of the dead-letter log in a rebuilt index.
/// Returns how many.
fn rebuild_dead_letters(store: &EmbeddedStore) -> Result<u64, StoreError> {
    use crate::queue::{DeliveryId, DeliveryRecord, DeliveryState};
    let now = crate::timefmt::now_ms();
    let mut pos = store.dead.start();
    let mut n = 0;
    loop {
        let (read, at) = store.dead.read(pos)?;
        match read {
            Read::Record(e, next) => {
                pos = next;
                let Some((slot, lane)) = e
                    .dead_slot
                    .and_then(|s| e.lanes.get(s as usize).map(|l| (s, l)))
                else {
                    continue;
                };
                let id = DeliveryId {
                    webhook: e.seq,
                    slot,
                };
                let mut rec = DeliveryRecord::new(id, lane.lane.clone(), lane.targets.clone(), now);
                rec.state = DeliveryState::Dead {
                    dead_at_ms: now,
                    reason: "rebuilt from the dead-letter log after the index could not be opened (the original reason is in the moved-aside index)".into(),
                };
                let mut batch = ::sled::Batch::default();
                Index::put_delivery(&mut batch, &rec);
                batch.insert(index::xkey(id), ::sled::IVec::default());
                batch.insert(
                    index::wkey(e.seq),
                    index::encode_located(index::Located::Dead(at)),
                );
                store.index.tree.apply_batch(batch).map_err(index::err)?;
                n += 1;
            }
            Read::End => return Ok(n),
            Read::Damaged(why) => {
                let seg = store
                    .dead
                    .segment(at.segment)
                    .ok_or_else(|| StoreError::Backend("a dead-letter segment vanished".into()))?;
                tracing::error!(
                    segment = at.segment,
                    offset = at.offset,
                    why,
                    "damaged dead-letter log range skipped"
                );
                pos = Pos {
                    segment: at.segment,
                    offset: seg.resync(at.offset)?,
                };
            }
        }
    }
}

/// Retries per lane and dead letters, from the index's keys (at start-up,
/// before anything else runs; retries per lane are bounded).
fn count(index: &Index) -> Result<Counts, StoreError> {
    let mut c = Counts::default();
    for kv in index.tree.scan_prefix([b'q']) {
        let (k, _) = kv.map_err(index::err)?;
        if let Some(sep) = k.iter().position(|&b| b == 0) {
            c.lane(&String::from_utf8_lossy(&k[1..sep]), 1);
        }
    }
    c.dead = index.tree.scan_prefix([b'x']).keys().count() as i64;
    Ok(c)
}
