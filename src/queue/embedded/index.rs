//! The index: one sled tree, key prefixes as tables (dedup ids are not
//! here: see `dedup.rs` for why). Nothing here is needed
//! to recover an acknowledged webhook (the log has it); what is here is made
//! durable by checkpoints ([`super::checkpoint`]) and rebuilt from the log when
//! sled cannot be opened.
//!
//! | prefix | key | value |
//! |---|---|---|
//! | `d` | webhook id, slot | delivery record: retrying, or dead |
//! | `q` | lane 0 due ms, webhook id, slot | — (due index of retries) |
//! | `x` | webhook id, slot | — (dead-letter index) |
//! | `w` | webhook id | where the webhook is: its record in the log or the dead-letter log |
//! | `i` | scope, kind, key | the identity map: last seen ms, value (`identity.rs`) |
//! | `!generation` | — | the last checkpoint's generation: an index older than the checkpoint file (lost or replaced files) is rebuilt |
//!
//! A delivery that succeeds on its first attempt writes nothing here: only a
//! failed attempt writes a `d` + `q` (and a `w` pointer into the log).

use std::fs::File;
use std::path::Path;

use ::sled::{Batch, Tree};

use super::log::Pos;
use crate::queue::record::{decode_delivery, encode_delivery};
use crate::queue::{DeliveryId, DeliveryRecord, StoreError, WebhookId};

/// The key of the checkpoint generation the index has reached.
const GENERATION: &[u8] = b"!generation";

/// sled's page cache: the index holds retries and dead letters only.
const CACHE_BYTES: u64 = 16 << 20;
/// How long opening waits for another holder of the index's lock.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

pub fn err(e: ::sled::Error) -> StoreError {
    StoreError::Backend(format!("index: {e}"))
}

pub fn be(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

pub fn read_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    let n = b.len().min(8);
    a[..n].copy_from_slice(&b[..n]);
    u64::from_be_bytes(a)
}

pub fn key(prefix: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + parts.iter().map(|p| p.len()).sum::<usize>());
    k.push(prefix);
    for p in parts {
        k.extend_from_slice(p);
    }
    k
}

pub fn wkey(w: WebhookId) -> Vec<u8> {
    key(b'w', &[&be(w)])
}
pub fn dkey(id: DeliveryId) -> Vec<u8> {
    key(b'd', &[&be(id.webhook), &[id.slot]])
}
pub fn xkey(id: DeliveryId) -> Vec<u8> {
    key(b'x', &[&be(id.webhook), &[id.slot]])
}
pub fn lane_prefix(lane: &str) -> Vec<u8> {
    key(b'q', &[lane.as_bytes(), &[0]])
}
pub fn qkey(lane: &str, due_ms: u64, id: DeliveryId) -> Vec<u8> {
    let mut k = lane_prefix(lane);
    k.extend_from_slice(&be(due_ms));
    k.extend_from_slice(&be(id.webhook));
    k.push(id.slot);
    k
}
/// (due, id) from the tail of a `q` key.
pub fn parse_qtail(tail: &[u8]) -> Option<(u64, DeliveryId)> {
    (tail.len() == 17).then(|| {
        let id = DeliveryId {
            webhook: read_u64(&tail[8..16]),
            slot: tail[16],
        };
        (read_u64(&tail[..8]), id)
    })
}
/// The id of an `x` or `d` key.
pub fn parse_id(k: &[u8]) -> Option<DeliveryId> {
    (k.len() == 10).then(|| DeliveryId {
        webhook: read_u64(&k[1..9]),
        slot: k[9],
    })
}

/// Where a webhook is, as its `w` value says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Located {
    /// Its record in the log.
    Log(Pos),
    /// Its record in the dead-letter log (a dead letter's, moved out of the
    /// log so that it does not keep a whole segment).
    Dead(Pos),
}

const LOG_POINTER: u8 = 4;
const DEAD_POINTER: u8 = 5;

pub fn encode_located(at: Located) -> Vec<u8> {
    let (kind, pos) = match at {
        Located::Log(p) => (LOG_POINTER, p),
        Located::Dead(p) => (DEAD_POINTER, p),
    };
    let mut v = vec![kind];
    v.extend(be(pos.segment));
    v.extend(be(pos.offset));
    v
}

pub fn decode_located(v: &[u8]) -> Result<Located, StoreError> {
    match v.split_first() {
        Some((&kind, rest)) if rest.len() == 16 => {
            let pos = Pos {
                segment: read_u64(&rest[..8]),
                offset: read_u64(&rest[8..]),
            };
            match kind {
                LOG_POINTER => Ok(Located::Log(pos)),
                DEAD_POINTER => Ok(Located::Dead(pos)),
                _ => Err(StoreError::Corrupt(format!(
                    "webhook record of kind {kind}"
                ))),
            }
        }
        _ => Err(StoreError::Corrupt(
            "webhook record of an unknown kind".into(),
        )),
    }
}

/// The sled side of the store.
pub struct Index {
    pub db: ::sled::Db,
    pub tree: Tree,
}

/// Why the index could not be opened.
pub enum OpenError {
    /// Another process holds it: never moved aside.
    Locked(StoreError),
    /// It is damaged (or unreadable): rebuild it from the log.
    Broken(StoreError),
}

impl Index {
    /// Opens (or creates) the index in `dir`. sled locks its files; a store
    /// closed a moment ago in this process can still hold the lock while
    /// sled's threads finish, so a lock held elsewhere is waited for briefly
    /// before it is reported as what it most likely is.
    pub fn open(dir: &Path) -> Result<Index, OpenError> {
        let started = std::time::Instant::now();
        let db = loop {
            match ::sled::Config::new()
                .path(dir)
                .cache_capacity(CACHE_BYTES)
                .open()
            {
                Ok(db) => break db,
                Err(::sled::Error::Io(e))
                    if e.to_string().contains("could not acquire lock")
                        && e.to_string().contains("WouldBlock") =>
                {
                    if started.elapsed() >= LOCK_WAIT {
                        return Err(OpenError::Locked(StoreError::Backend(format!(
                            "it is in use by another process (is another relay running on this data_dir?): {e}"
                        ))));
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => return Err(OpenError::Broken(err(e))),
            }
        };
        let tree = db
            .open_tree("relay")
            .map_err(|e| OpenError::Broken(err(e)))?;
        Ok(Index { db, tree })
    }

    /// The generation of the last checkpoint written into this index (0
    /// for a new one).
    pub fn generation(&self) -> Result<u64, StoreError> {
        Ok(self
            .tree
            .get(GENERATION)
            .map_err(err)?
            .map_or(0, |v| read_u64(&v)))
    }

    /// Records checkpoint generation `g` (made durable by the next `sync`).
    pub fn set_generation(&self, g: u64) -> Result<(), StoreError> {
        self.tree.insert(GENERATION, &be(g)).map_err(err)?;
        Ok(())
    }

    pub fn get_delivery(&self, id: DeliveryId) -> Result<Option<DeliveryRecord>, StoreError> {
        self.tree
            .get(dkey(id))
            .map_err(err)?
            .map(|v| decode_delivery(&v))
            .transpose()
    }

    pub fn put_delivery(batch: &mut Batch, rec: &DeliveryRecord) {
        batch.insert(dkey(rec.id), encode_delivery(rec));
    }

    /// Makes what was written durable: sled's `flush()` (which ends in
    /// `sync_file_range`, no barrier), then an `fsync` of each of sled's
    /// files and directories.
    pub fn sync(&self, dir: &Path) -> Result<(), StoreError> {
        self.db.flush().map_err(err)?;
        sync_tree(dir).map_err(|e| StoreError::Backend(format!("syncing the index: {e}")))
    }
}

fn sync_tree(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let ty = entry.file_type()?;
        if ty.is_dir() {
            sync_tree(&entry.path())?;
        } else if ty.is_file() {
            File::open(entry.path())?.sync_all()?;
        }
    }
    File::open(dir)?.sync_all()
}
