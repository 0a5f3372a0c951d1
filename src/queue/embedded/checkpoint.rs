//! Checkpoints: how far the index is durable, and where each lane's cursor
//! stood, so that start-up replays only the log after it; and, once one is
//! written, the log segments nothing needs any more go.
//!
//! Written after the index is synced ([`super::index::Index::sync`]): a temp
//! file, `fsync`, rename over `data_dir/checkpoint`, directory `fsync`. A
//! checkpoint that is missing or unreadable means "replay everything": slower,
//! never wrong (replay is idempotent).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use super::io::Fs;
use super::log::Pos;
use super::{EmbeddedStore, index};
use crate::queue::StoreError;

const VERSION: u32 = 1;

/// Where one lane stood.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaneMark {
    /// Every record before this is done for the lane (delivered, retrying in
    /// the index, or dead).
    pub cursor: Pos,
    /// Records for the lane from the cursor up to `replay_from`.
    pub ahead: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub version: u32,
    /// The next webhook id to assign.
    pub next_seq: u64,
    /// Every record before this is in the durable index.
    pub replay_from: Pos,
    pub lanes: BTreeMap<String, LaneMark>,
    /// The generation written into the index with this checkpoint: an index
    /// that holds an older one has lost what this checkpoint relies on.
    #[serde(default)]
    pub index_generation: u64,
}

impl Checkpoint {
    pub fn new(
        next_seq: u64,
        replay_from: Pos,
        lanes: BTreeMap<String, LaneMark>,
        index_generation: u64,
    ) -> Self {
        Checkpoint {
            version: VERSION,
            next_seq,
            replay_from,
            lanes,
            index_generation,
        }
    }
}

pub fn path(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("checkpoint")
}

/// Reads the checkpoint; `Err` says why it cannot be used.
pub fn read(fs: &dyn Fs, data_dir: &Path) -> Result<Option<Checkpoint>, String> {
    let Some(bytes) = fs
        .read(&path(data_dir))
        .map_err(|e| format!("cannot read it: {e}"))?
    else {
        return Ok(None);
    };
    let c: Checkpoint =
        serde_json::from_slice(&bytes).map_err(|e| format!("it does not parse: {e}"))?;
    if c.version != VERSION {
        return Err(format!("unknown version {}", c.version));
    }
    Ok(Some(c))
}

pub fn write(fs: &dyn Fs, data_dir: &Path, c: &Checkpoint) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(c).unwrap_or_default();
    fs.replace(&path(data_dir), &bytes)
}

/// The segment being appended to is retired (and deleted once the
/// checkpoint is written) when every lane has passed it and it is this big
/// (or a 64th of the segment size, if less); smaller, it is not worth a new
/// segment (a directory fsync on the path of the next 200).
const RETIRE_BYTES: u64 = 1 << 20;

impl EmbeddedStore {
    /// Makes the index durable up to now and records the checkpoint; then
    /// deletes the segments every lane has passed that nothing points into.
    pub(super) fn checkpoint(&self) -> Result<u64, StoreError> {
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
                    LaneMark {
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
                Checkpoint::new(
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
            let pointed = self.pinned(first, end)?;
            if !pointed {
                unused.push(first);
            }
        }
        let unused_dead = self.unused_dead_segments()?;
        self.index.set_generation(cp.index_generation)?;
        self.index.sync(&self.dir.join("index"))?;
        write(&*self.fs, &self.dir, &cp)
            .map_err(|e| StoreError::Backend(format!("writing the checkpoint: {e}")))?;
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

    /// Whether webhook `w` has a delivery still due (a retry, or a dead
    /// letter replayed), not dead.
    fn has_retry(&self, w: crate::queue::WebhookId) -> Result<bool, StoreError> {
        for k in self
            .index
            .tree
            .scan_prefix(index::key(b'd', &[&index::be(w)]))
            .keys()
        {
            let k = k.map_err(index::err)?;
            if let Some(id) = index::parse_id(&k) {
                if let Some(rec) = self.index.get_delivery(id)? {
                    if !matches!(rec.state, crate::queue::DeliveryState::Dead { .. }) {
                        return Ok(true);
                    }
                }
            }
        }
        Ok(false)
    }

    /// Whether a retry or dead letter points into log segment `first` or a later one.
    fn log_pointers_from(&self, first: u64) -> Result<bool, StoreError> {
        self.pinned(first, u64::MAX)
    }

    /// Whether the index needs a record of the log's webhooks `from..to`:
    /// one it locates in the log (a retry, a dead letter too large to move),
    /// or one dead in a lane, moved to the dead-letter log, but still due in
    /// another (its record in the log is what an index rebuilt from the logs
    /// would find that retry by: the dead-letter log only recreates dead
    /// letters).
    fn pinned(&self, from: u64, to: u64) -> Result<bool, StoreError> {
        for kv in self.index.tree.range(index::wkey(from)..index::wkey(to)) {
            let (k, v) = kv.map_err(index::err)?;
            let pins = match index::decode_located(&v) {
                Ok(index::Located::Log(_)) => true,
                Ok(index::Located::Dead(_)) => match k.get(1..) {
                    Some(w) => self.has_retry(index::read_u64(w))?,
                    None => false,
                },
                Err(_) => false,
            };
            if pins {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Closed segments of the dead-letter log that no dead letter points
    /// into any more (all purged, or replayed and delivered).
    fn unused_dead_segments(&self) -> Result<Vec<u64>, StoreError> {
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
}
