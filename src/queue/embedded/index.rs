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
//! | `w` | webhook id | where the webhook is: its log record, or `b` chunks |
//! | `b` | webhook id, chunk no. (u32) | a dead letter's body, in 7 KiB chunks |
//!
//! A delivery that succeeds on its first attempt writes nothing here: only a
//! failed attempt writes a `d` + `q` (and a `w` pointer into the log).

use std::fs::File;
use std::path::Path;

use ::sled::{Batch, Tree};

use super::log::Pos;
use crate::queue::record::{decode_delivery, encode_delivery};
use crate::queue::{DeliveryId, DeliveryRecord, StoreError, WebhookId};
use crate::sources::WebhookMeta;

/// sled's page cache: the index holds dedup keys and retries only.
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
pub fn bkey(w: WebhookId) -> Vec<u8> {
    key(b'b', &[&be(w)])
}
pub fn bchunk(w: WebhookId, n: u32) -> Vec<u8> {
    key(b'b', &[&be(w), &n.to_be_bytes()])
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
pub enum Located {
    /// Its record in the log.
    Log(Pos),
    /// Its body in `b` chunks (a dead letter's, moved out of the log); the meta here.
    Chunks(WebhookMeta),
}

const LOG_POINTER: u8 = 4;
const IN_TREE: u8 = 3;

pub fn encode_pointer(pos: Pos) -> Vec<u8> {
    let mut v = vec![LOG_POINTER];
    v.extend(be(pos.segment));
    v.extend(be(pos.offset));
    v
}

pub fn encode_in_tree(meta: &WebhookMeta) -> Vec<u8> {
    let mut v = vec![IN_TREE];
    v.extend(serde_json::to_vec(meta).unwrap_or_default());
    v
}

pub fn decode_located(v: &[u8]) -> Result<Located, StoreError> {
    match v.split_first() {
        Some((&LOG_POINTER, rest)) if rest.len() == 16 => Ok(Located::Log(Pos {
            segment: read_u64(&rest[..8]),
            offset: read_u64(&rest[8..]),
        })),
        Some((&IN_TREE, rest)) => serde_json::from_slice(rest)
            .map(Located::Chunks)
            .map_err(|e| StoreError::Corrupt(format!("webhook record: {e}"))),
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
