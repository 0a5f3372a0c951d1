//! Opening a data directory: its layout, a broken index, the replay of the
//! log after the checkpoint, torn tails and damage.
//!
//! ```text
//! data_dir/
//!   log/00000000000000000001.log   the write-ahead log (the queue)
//!   index/                         sled: dedup keys, retries, dead letters
//!   checkpoint                     how far the index is durable; lane cursors
//! ```
//!
//! Replay is idempotent: dedup entries are rewritten with the same values,
//! and lanes start from their checkpointed cursors, so a record is never
//! queued twice by a replay, only possibly sent again (same messageId).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use super::dedup;
use super::index::{self, Index, OpenError};
use super::io::Fs;
use super::lanes::LaneLog;
use super::log::{Log, Pos, Read};
use super::{CommitState, Counts, EmbeddedStore, TailCache, checkpoint};
use crate::queue::StoreError;

fn io(what: &str, path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Backend(format!("{what} {}: {e}", path.display()))
}

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
    let dedup_dir = dir.join("dedup");
    fs.create_dir_durably(&dedup_dir)
        .map_err(|e| io("create", &dedup_dir, e))?;
    let index_dir = dir.join("index");
    fs.create_dir_durably(&index_dir)
        .map_err(|e| io("create", &index_dir, e))?;

    let (index, rebuilt) = match Index::open(&index_dir) {
        Ok(i) => (i, false),
        Err(OpenError::Locked(e)) => return Err(e),
        Err(OpenError::Broken(e)) => {
            let aside = dir.join(format!("index.broken-{}", crate::timefmt::now_ms()));
            tracing::error!(
                error = %e,
                moved_to = %aside.display(),
                "THE INDEX CANNOT BE OPENED: moved aside, rebuilding it from the log. \
                 Every webhook still in the log is delivered again (same messageId); \
                 dead letters whose bodies had left the log are in the moved copy only"
            );
            std::fs::rename(&index_dir, &aside).map_err(|e| io("move aside", &index_dir, e))?;
            fs.sync_dir(dir).map_err(|e| io("sync", dir, e))?;
            fs.create_dir_durably(&index_dir)
                .map_err(|e| io("create", &index_dir, e))?;
            match Index::open(&index_dir) {
                Ok(i) => (i, true),
                Err(OpenError::Locked(e) | OpenError::Broken(e)) => return Err(e),
            }
        }
    };

    let cp = if rebuilt {
        None
    } else {
        match checkpoint::read(&*fs, dir) {
            Ok(c) => c,
            Err(why) => {
                tracing::warn!(
                    why,
                    "the checkpoint cannot be used; replaying the whole log (what was delivered since is sent again, same messageId)"
                );
                None
            }
        }
    };

    let log = Log::open(fs.clone(), &log_dir, segment_bytes)?;
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
        None => (log.start(), 1),
    };
    if let Some(newest) = log.all().last() {
        next_seq = next_seq.max(newest.first + 1);
    }

    let store = EmbeddedStore {
        dir: dir.to_path_buf(),
        fs,
        log,
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
    *store.counts() = count(&store.index)?;
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
