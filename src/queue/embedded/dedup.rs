//! Dedup ids: which webhooks were accepted within `dedup_window`, answered
//! from memory and kept durable in append-only files beside the log.
//!
//! Why not in sled: dedup ids are random keys, so each insert dirtied a
//! random leaf that sled rewrote whole at the next flush; indexing them there
//! cost more than the rest of an accept together (measured: 32k acks/s with
//! no index writes, 17–18k with two sled inserts per webhook, and p99 from 9
//! to 50 ms while the checkpoint's fsync of sled's files queued in front of
//! the log's `fdatasync`). Here an id costs 32 bytes written once.
//!
//! ```text
//! dedup/{hour:020}.dedup   one file per hour of accept times (ms of the hour's start)
//! block = magic "SRD1" | count u32 LE | crc32c u32 LE of the entries | count × entry
//! entry = hash u128 LE (SHA-256 of source, topic and dedup id, first 16 bytes)
//!       | webhook id u64 LE | accepted ms u64 LE
//! ```
//!
//! The checkpoint appends the ids committed since the last one and syncs them
//! before it writes the checkpoint file, so ids of records before the
//! checkpoint are here, and those after it are replayed from the log. A torn
//! block at a file's end is cut off at start-up (its ids are in the log
//! after the checkpoint, which was not written).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::io::{Fs, LogFile, io_err};
use crate::queue::StoreError;
use crate::sources::WebhookMeta;

const MAGIC: [u8; 4] = *b"SRD1";
const ENTRY: usize = 32;
const HOUR_MS: u64 = 3_600_000;

/// A dedup id, hashed.
pub type Key = u128;

/// The hash of a webhook's (source, topic, dedup id).
pub fn key(m: &WebhookMeta) -> Key {
    let mut h = Sha256::new();
    h.update(m.source.as_bytes());
    h.update([0]);
    h.update(m.topic.as_bytes());
    h.update([0]);
    h.update(m.dedup_id.as_bytes());
    let d = h.finalize();
    let mut a = [0u8; 16];
    a.copy_from_slice(&d[..16]);
    u128::from_le_bytes(a)
}

/// One id to remember: key, webhook id, accepted ms.
pub type Entry = (Key, u64, u64);

/// Every id within the window, in memory, by hour.
#[derive(Default)]
pub struct Table {
    hours: BTreeMap<u64, HashMap<Key, (u64, u64)>>,
}

impl Table {
    pub fn get(&self, k: Key) -> Option<u64> {
        // Newest first: a hit is most likely recent.
        self.hours
            .values()
            .rev()
            .find_map(|m| m.get(&k))
            .map(|&(w, _)| w)
    }

    pub fn insert(&mut self, (k, w, ms): Entry) {
        self.hours
            .entry(ms / HOUR_MS)
            .or_default()
            .insert(k, (w, ms));
    }

    /// Forgets the ids of one hour (the first at or after `from_hour`)
    /// accepted before `before_ms`, so a caller can let others in between
    /// hours. Returns the hour, how many went, whether it is now empty, and
    /// a whole expired hour's map for the caller to free after letting go of
    /// its lock (freeing 300k ids took longer than an ingest may wait).
    /// `None` once no hour before `before_ms` is left.
    pub fn expire_hour(&mut self, before_ms: u64, from_hour: u64) -> Option<Expired> {
        let (&hour, map) = self.hours.range_mut(from_hour..).next()?;
        if hour * HOUR_MS >= before_ms {
            return None;
        }
        if (hour + 1) * HOUR_MS <= before_ms {
            let whole = self.hours.remove(&hour)?;
            return Some(Expired {
                hour,
                gone: whole.len(),
                empty: true,
                whole: Some(whole),
            });
        }
        let n = map.len();
        map.retain(|_, &mut (_, ms)| ms >= before_ms);
        let gone = n - map.len();
        let empty = map.is_empty();
        if empty {
            self.hours.remove(&hour);
        }
        Some(Expired {
            hour,
            gone,
            empty,
            whole: None,
        })
    }
}

/// What one step of expiry did.
pub struct Expired {
    pub hour: u64,
    pub gone: usize,
    pub empty: bool,
    /// A whole hour taken out, to be freed outside the lock.
    pub whole: Option<HashMap<Key, (u64, u64)>>,
}

/// The files.
pub struct Files {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    open: BTreeMap<u64, Arc<dyn LogFile>>,
}

impl Files {
    fn path(&self, hour: u64) -> PathBuf {
        self.dir.join(format!("{hour:020}.dedup"))
    }

    /// Opens `dir` (which exists) and loads every id in it into `table`.
    pub fn open(fs: Arc<dyn Fs>, dir: &Path, table: &mut Table) -> Result<Files, StoreError> {
        let mut files = Files {
            fs: fs.clone(),
            dir: dir.to_path_buf(),
            open: BTreeMap::new(),
        };
        for name in fs.list(dir).map_err(|e| io_err("list", dir, e))? {
            let Some(hour) = name
                .strip_suffix(".dedup")
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            let path = files.path(hour);
            let file = fs.open(&path).map_err(|e| io_err("open", &path, e))?;
            let len = file.size().map_err(|e| io_err("stat", &path, e))? as usize;
            let mut bytes = vec![0u8; len];
            file.read_at(&mut bytes, 0)
                .map_err(|e| io_err("read", &path, e))?;
            let good = load(&bytes, table);
            if good < len {
                tracing::warn!(file = %path.display(), bytes = len - good, "torn dedup block cut off (its ids are replayed from the log)");
                file.truncate(good as u64)
                    .map_err(|e| io_err("truncate", &path, e))?;
            }
            files.open.insert(hour, file);
        }
        Ok(files)
    }

    /// Appends `entries` and syncs them.
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), StoreError> {
        let mut by_hour: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        for &(k, w, ms) in entries {
            let b = by_hour.entry(ms / HOUR_MS).or_default();
            b.extend(k.to_le_bytes());
            b.extend(w.to_le_bytes());
            b.extend(ms.to_le_bytes());
        }
        for (hour, body) in by_hour {
            let file = match self.open.get(&hour) {
                Some(f) => f.clone(),
                None => {
                    let f = self.fs.create_durably(&self.path(hour))?;
                    self.open.insert(hour, f.clone());
                    f
                }
            };
            let mut head = Vec::with_capacity(12);
            head.extend(MAGIC);
            head.extend(((body.len() / ENTRY) as u32).to_le_bytes());
            head.extend(crc32c::crc32c(&body).to_le_bytes());
            let path = self.path(hour);
            file.append(&[&head, &body])
                .and_then(|()| file.sync_data())
                .map_err(|e| io_err("write", &path, e))?;
        }
        Ok(())
    }

    /// Deletes the file of `hour` (every id in it expired).
    pub fn delete(&mut self, hour: u64) -> Result<(), StoreError> {
        self.open.remove(&hour);
        let path = self.path(hour);
        self.fs
            .remove(&path)
            .map_err(|e| io_err("delete", &path, e))
    }
}

/// Loads the blocks of one file; returns the length of its valid prefix.
fn load(bytes: &[u8], table: &mut Table) -> usize {
    let mut at = 0;
    while at + 12 <= bytes.len() {
        if bytes[at..at + 4] != MAGIC {
            break;
        }
        let count = u32::from_le_bytes([bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]])
            as usize;
        let crc =
            u32::from_le_bytes([bytes[at + 8], bytes[at + 9], bytes[at + 10], bytes[at + 11]]);
        let end = at + 12 + count * ENTRY;
        if end > bytes.len() || crc32c::crc32c(&bytes[at + 12..end]) != crc {
            break;
        }
        for e in bytes[at + 12..end].chunks_exact(ENTRY) {
            let mut k = [0u8; 16];
            k.copy_from_slice(&e[..16]);
            let mut w = [0u8; 8];
            w.copy_from_slice(&e[16..24]);
            let mut ms = [0u8; 8];
            ms.copy_from_slice(&e[24..32]);
            table.insert((
                u128::from_le_bytes(k),
                u64::from_le_bytes(w),
                u64::from_le_bytes(ms),
            ));
        }
        at = end;
    }
    at
}

impl super::EmbeddedStore {
    /// Forgets ids accepted before `before_ms`; see [`crate::queue::Store::expire_dedup`].
    pub(super) fn expire_dedup_ids(&self, before_ms: u64) -> Result<usize, StoreError> {
        // One hour of ids at a time, so that ingest (which takes the same
        // lock) waits for one hour's sweep at most, whatever the backlog.
        let mut n = 0;
        let mut from = 0;
        loop {
            let step = self
                .commit
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .dedup
                .expire_hour(before_ms, from);
            let Some(step) = step else {
                return Ok(n);
            };
            drop(step.whole);
            n += step.gone;
            from = step.hour + 1;
            if step.empty {
                self.dedup_files
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .delete(step.hour)?;
            }
        }
    }
}
