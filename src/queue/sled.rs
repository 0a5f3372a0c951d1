//! The embedded backend: one sled tree, key prefixes as tables, so that every
//! multi-record change is one atomic `apply_batch`.
//!
//! | prefix | key | value |
//! |---|---|---|
//! | `w` | webhook id | webhook record (meta + where its body is in `bodies/`) |
//! | `k` | source 0 topic 0 dedup id | webhook id, accepted ms |
//! | `t` | accepted ms, webhook id | the `k` key (expiry index) |
//! | `d` | webhook id, slot | delivery record |
//! | `q` | lane 0 due ms, webhook id, slot | — (due index) |
//! | `x` | webhook id, slot | — (dead-letter index) |
//! | `b` | webhook id, chunk no. (u32) | the body of a webhook with a dead letter, in 7 KiB chunks (record `V3`) |
//! | `l` | webhook id, slot | — (leased when a relay before 0.2 stopped; no longer written) |
//!
//! sled facts this relies on (DESIGN.md): writes are lost on a crash unless
//! `flush()` ran, so `accept_batch` flushes before returning; `flush_async`
//! deadlocks under concurrency and is never called; batches are all-or-nothing.
//!
//! Leases are kept in memory. A claim writes nothing: the due entry stays where
//! it is until the outcome is written, so a killed process's in-flight
//! deliveries are simply due again when the next one starts. (A lease used to
//! re-key the due entry and write a marker, four writes per claim: 20% of the
//! relay's CPU in a 5-way fan-out.)
//!
//! Bodies are not in the tree: see [`super::bodies`] for why and for the order
//! of writes that keeps a pointer from ever outliving its bytes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use ::sled::{Batch, IVec, Tree};

use super::bodies::Bodies;
use super::record::{
    StoredWebhook, decode_delivery, decode_webhook, encode_delivery, encode_webhook,
    encode_webhook_in_tree, points_to_segment,
};
use super::*;

/// sled's page cache. With bodies out of the tree its working set is small;
/// 64 MiB let resident memory grow to 140 MB under load with no gain in speed
/// (`loadgen --spawn-binary --destinations 1 --backlog`: 16 MiB gave 13.1k
/// acks/s at 64 MB resident, 64 MiB 12.3–12.9k at 138 MB).
const CACHE_BYTES: u64 = 16 << 20;

/// sled behind [`Store`].
pub struct SledStore {
    dir: std::path::PathBuf,
    db: ::sled::Db,
    tree: Tree,
    /// Webhook bodies, in segment files beside the tree.
    bodies: Bodies,
    /// Serialises the changes that end a delivery, per webhook stripe, so two
    /// lanes finishing the same webhook agree on who deletes it.
    stripes: Vec<Mutex<()>>,
    /// Pending deliveries per lane and the dead-letter count, so `/metrics`
    /// costs a lookup, not a scan of the backlog. Counted from the keys on
    /// first use; afterwards every batch that moves a delivery adjusts it
    /// under this lock, applied together with the batch.
    counts: Mutex<Option<Counts>>,
    /// Deliveries claimed and not yet finished, with the lease end (ms):
    /// until then no claim returns them. Only this process's claims.
    leases: Mutex<HashMap<DeliveryId, u64>>,
    /// Free disk that moving a dead letter's body into the tree must leave
    /// (sled hangs rather than fails on a full disk).
    keep_free: AtomicU64,
    /// Dead letters buried before bodies moved into the tree have been moved.
    moved_old_dead: AtomicBool,
}

/// Largest body moved into the tree with its dead letter (the default
/// `max_body_bytes`); a larger one keeps its segment until purged, rather
/// than make one write of thousands of records.
const MOVE_MAX_BYTES: usize = 1 << 20;

/// A moved body is stored in chunks of at most this. sled splits a leaf past
/// 16 entries and writes a page over 128 KiB as a blob file of its own, which
/// it never fsyncs: 17 chunks of 7 KiB and their keys stay under that, so no
/// leaf of bodies becomes one.
const CHUNK_BYTES: usize = 7 << 10;

/// A due entry that cannot be claimed (see [`SledStore::clear_debris`]).
enum Debris {
    Malformed(IVec),
    Orphan(IVec, DeliveryId),
    Unreadable(IVec, DeliveryRecord, String),
    /// The delivery record itself does not decode.
    BadRecord(IVec, DeliveryId, String),
}

/// What reading a record a due entry needs found.
enum Found<T> {
    Yes(T),
    /// Removed (left behind by an older crash).
    Gone,
    /// There, but it cannot be read: why.
    Unreadable(String),
}

/// Sorts a read into [`Found`]; any other error is the caller's.
fn found<T>(read: Result<Option<T>, StoreError>) -> Result<Found<T>, StoreError> {
    match read {
        Ok(Some(v)) => Ok(Found::Yes(v)),
        Ok(None) => Ok(Found::Gone),
        Err(StoreError::Corrupt(why)) => Ok(Found::Unreadable(why)),
        Err(e) => Err(e),
    }
}

#[derive(Default)]
pub(crate) struct Counts {
    pub(crate) pending: HashMap<String, i64>,
    pub(crate) dead: i64,
}

impl Counts {
    fn lane(&mut self, lane: &str, by: i64) {
        *self.pending.entry(lane.to_string()).or_insert(0) += by;
    }
}

fn be(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

fn read_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    let n = b.len().min(8);
    a[..n].copy_from_slice(&b[..n]);
    u64::from_be_bytes(a)
}

fn key(prefix: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + parts.iter().map(|p| p.len()).sum::<usize>());
    k.push(prefix);
    for p in parts {
        k.extend_from_slice(p);
    }
    k
}

fn wkey(w: WebhookId) -> Vec<u8> {
    key(b'w', &[&be(w)])
}
/// The prefix of webhook `w`'s body chunks.
fn bkey(w: WebhookId) -> Vec<u8> {
    key(b'b', &[&be(w)])
}
fn bchunk(w: WebhookId, n: u32) -> Vec<u8> {
    key(b'b', &[&be(w), &n.to_be_bytes()])
}
fn dkey(id: DeliveryId) -> Vec<u8> {
    key(b'd', &[&be(id.webhook), &[id.slot]])
}
fn xkey(id: DeliveryId) -> Vec<u8> {
    key(b'x', &[&be(id.webhook), &[id.slot]])
}
fn lane_prefix(lane: &str) -> Vec<u8> {
    key(b'q', &[lane.as_bytes(), &[0]])
}
fn qkey(lane: &str, due_ms: u64, id: DeliveryId) -> Vec<u8> {
    let mut k = lane_prefix(lane);
    k.extend_from_slice(&be(due_ms));
    k.extend_from_slice(&be(id.webhook));
    k.push(id.slot);
    k
}
/// (due, id) from the tail of a `q` key.
fn parse_qtail(tail: &[u8]) -> Option<(u64, DeliveryId)> {
    (tail.len() == 17).then(|| {
        let id = DeliveryId {
            webhook: read_u64(&tail[8..16]),
            slot: tail[16],
        };
        (read_u64(&tail[..8]), id)
    })
}

/// `k` + source, topic and dedup id.
fn dedup_key(m: &crate::sources::WebhookMeta) -> Vec<u8> {
    key(
        b'k',
        &[
            m.source.as_bytes(),
            &[0],
            m.topic.as_bytes(),
            &[0],
            m.dedup_id.as_bytes(),
        ],
    )
}

fn err(e: ::sled::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// How long opening waits for another holder of the data dir's lock.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Opens sled in `dir`. sled takes an exclusive lock on its file; a store
/// closed a moment ago in this process can still hold it while sled's
/// background threads finish (sled's own tests block on it for that reason),
/// so a lock held by someone else is waited for, a short while, before it is
/// reported as what it most likely is: another relay on the same `data_dir`.
fn open_db(dir: &Path) -> Result<::sled::Db, StoreError> {
    let started = std::time::Instant::now();
    loop {
        match ::sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE_BYTES)
            .open()
        {
            Ok(db) => return Ok(db),
            // sled's message for a lock someone else holds (EWOULDBLOCK);
            // any other failure to lock is reported as it is.
            Err(::sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && e.to_string().contains("WouldBlock") =>
            {
                if started.elapsed() >= LOCK_WAIT {
                    return Err(StoreError::Backend(format!(
                        "it is in use by another process (is another relay running on this data_dir?): {e}"
                    )));
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => return Err(err(e)),
        }
    }
}

impl SledStore {
    /// Opens (or creates) the database in `dir`.
    pub fn open(dir: &Path) -> Result<SledStore, StoreError> {
        Self::open_with(dir, super::bodies::SEGMENT_BYTES)
    }

    /// Opens with body segments of `segment_bytes` (small in tests, so that
    /// a few webhooks span several segments).
    pub(crate) fn open_with(dir: &Path, segment_bytes: u64) -> Result<SledStore, StoreError> {
        let db = open_db(dir)?;
        let tree = db.open_tree("relay").map_err(err)?;
        let bodies = Bodies::open(&dir.join("bodies"), segment_bytes)?;
        let stripes = (0..64).map(|_| Mutex::new(())).collect();
        Ok(SledStore {
            dir: dir.to_path_buf(),
            db,
            tree,
            bodies,
            stripes,
            counts: Mutex::new(None),
            leases: Mutex::new(HashMap::new()),
            keep_free: AtomicU64::new(256 << 20),
            moved_old_dead: AtomicBool::new(false),
        })
    }

    fn leases(&self) -> std::sync::MutexGuard<'_, HashMap<DeliveryId, u64>> {
        self.leases.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The lease end of `id` if it is leased at `now_ms`.
    fn leased(&self, id: DeliveryId, now_ms: u64) -> Option<u64> {
        self.leases()
            .get(&id)
            .copied()
            .filter(|&until| until > now_ms)
    }

    fn stripe_index(&self, w: WebhookId) -> usize {
        (w % self.stripes.len() as u64) as usize
    }

    fn stripe(&self, w: WebhookId) -> std::sync::MutexGuard<'_, ()> {
        self.stripes[self.stripe_index(w)]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn get_delivery(&self, id: DeliveryId) -> Result<Option<DeliveryRecord>, StoreError> {
        self.tree
            .get(dkey(id))
            .map_err(err)?
            .map(|v| decode_delivery(&v))
            .transpose()
    }

    /// Free disk (bytes) that writes other than accepts must leave: the
    /// accept reserve, `min_free_bytes`.
    pub fn keep_free(&self, bytes: u64) {
        self.keep_free.store(bytes, Ordering::Relaxed);
    }

    pub(crate) fn get_webhook(&self, w: WebhookId) -> Result<Option<Webhook>, StoreError> {
        match self.read_webhook(w) {
            // The body may have moved into the tree (and its segment gone)
            // between reading the record and reading the body: read again.
            Err(StoreError::Corrupt(_)) => self.read_webhook(w),
            other => other,
        }
    }

    fn read_webhook(&self, w: WebhookId) -> Result<Option<Webhook>, StoreError> {
        let Some(v) = self.tree.get(wkey(w)).map_err(err)? else {
            return Ok(None);
        };
        match decode_webhook(&v)? {
            StoredWebhook::Inline(w) => Ok(Some(w)),
            StoredWebhook::Pointer(meta, at) => Ok(Some(Webhook::from_store(
                meta,
                self.bodies.read(at)?.into(),
            ))),
            StoredWebhook::InTree(meta) => {
                let mut body = Vec::new();
                let mut chunks = 0;
                for kv in self.tree.scan_prefix(bkey(w)) {
                    body.extend_from_slice(&kv.map_err(err)?.1);
                    chunks += 1;
                }
                if chunks == 0 {
                    return Err(StoreError::Corrupt(format!(
                        "the body of webhook {} is missing",
                        webhook_id_string(w)
                    )));
                }
                Ok(Some(Webhook::from_store(meta, body.into())))
            }
        }
    }

    /// Adds to `batch` the move of webhook `w`'s body from its segment into
    /// the tree, so that a dead letter does not keep a whole segment file
    /// (up to 64 MiB) until it is purged. Nothing is added when the body is
    /// elsewhere already, cannot be read, is larger than [`MOVE_MAX_BYTES`],
    /// or the disk is short of room (`unflushed`: bytes already moved and not
    /// yet flushed, which free space does not show yet). Never an error: the
    /// move is an economy, and the caller's write must not fail for it.
    /// Caller holds `w`'s stripe. Returns the bytes moved.
    fn move_body_into_tree(&self, w: WebhookId, batch: &mut Batch, unflushed: u64) -> u64 {
        let Ok(Some(v)) = self.tree.get(wkey(w)) else {
            return 0;
        };
        if !points_to_segment(&v) {
            return 0;
        }
        let Ok(StoredWebhook::Pointer(meta, at)) = decode_webhook(&v) else {
            return 0;
        };
        let len = u64::from(at.len);
        let room = self
            .keep_free
            .load(Ordering::Relaxed)
            .saturating_add(unflushed)
            .saturating_add(4 * len);
        if len > MOVE_MAX_BYTES as u64 || self.free_bytes().is_none_or(|free| free < room) {
            return 0;
        }
        match self.bodies.read(at) {
            Ok(body) => {
                // At least one chunk, so that a moved empty body is found.
                let chunks = body
                    .chunks(CHUNK_BYTES)
                    .chain((body.is_empty()).then_some(&[][..]));
                for (n, chunk) in chunks.enumerate() {
                    batch.insert(bchunk(w, n as u32), chunk);
                }
                batch.insert(wkey(w), encode_webhook_in_tree(&meta));
                len
            }
            Err(e) => {
                tracing::warn!(webhook = %webhook_id_string(w), error = %e, "dead letter's body left in its segment");
                0
            }
        }
    }

    /// Body segment files (for tests).
    #[cfg(test)]
    pub(crate) fn body_segments(&self) -> usize {
        self.bodies.segment_count()
    }

    /// Stores a lease as relays before 0.2 did: due entry re-keyed to the
    /// lease end, record updated, marker written (tests of the upgrade path).
    #[cfg(test)]
    pub(crate) fn put_old_lease(&self, id: DeliveryId, until_ms: u64) {
        let mut rec = self.get_delivery(id).unwrap().unwrap();
        let mut batch = Batch::default();
        batch.remove(qkey(&rec.lane, rec.due_ms, id));
        rec.due_ms = until_ms;
        batch.insert(qkey(&rec.lane, until_ms, id), IVec::default());
        batch.insert(dkey(id), encode_delivery(&rec));
        batch.insert(key(b'l', &[&be(id.webhook), &[id.slot]]), IVec::default());
        self.tree.apply_batch(batch).unwrap();
    }

    /// Writes webhook `w`'s record as given (tests of older record formats).
    #[cfg(test)]
    pub(crate) fn put_webhook_record(&self, w: WebhookId, record: Vec<u8>) {
        self.tree.insert(wkey(w), record).unwrap();
    }

    /// Number of keys with `prefix` (tests).
    #[cfg(test)]
    pub(crate) fn keys_with_prefix(&self, prefix: u8) -> usize {
        self.tree.scan_prefix([prefix]).count()
    }

    /// Buries as relays did before dead letters' bodies moved into the tree
    /// (tests of the upgrade path).
    #[cfg(test)]
    pub(crate) fn bury_keeping_segment(&self, rec: &DeliveryRecord) {
        let mut batch = Batch::default();
        batch.insert(dkey(rec.id), encode_delivery(rec));
        batch.insert(xkey(rec.id), IVec::default());
        if let Some(old) = self.get_delivery(rec.id).unwrap() {
            batch.remove(qkey(&old.lane, old.due_ms, rec.id));
        }
        self.tree.apply_batch(batch).unwrap();
        self.leases().remove(&rec.id);
    }

    /// Writes delivery `id`'s record as given (tests of damaged records).
    #[cfg(test)]
    pub(crate) fn put_delivery_record(&self, id: DeliveryId, record: Vec<u8>) {
        self.tree.insert(dkey(id), record).unwrap();
    }

    /// Claims into `out` (see [`Store::claim_due`]); due entries found broken
    /// are set right afterwards, see [`Self::clear_debris`].
    fn claim_into(
        &self,
        lane: &str,
        now_ms: u64,
        lease_until_ms: u64,
        limit: usize,
        out: &mut Vec<Claimed>,
    ) -> Result<(), StoreError> {
        let prefix = lane_prefix(lane);
        let mut end = prefix.clone();
        end.extend_from_slice(&be(now_ms.saturating_add(1)));
        let mut debris = Vec::new();
        for kv in self.tree.range(prefix.clone()..end) {
            if out.len() >= limit {
                break;
            }
            let (k, _) = kv.map_err(err)?;
            let Some((_, id)) = parse_qtail(&k[prefix.len()..]) else {
                debris.push(Debris::Malformed(k));
                continue;
            };
            if self.leased(id, now_ms).is_some() {
                continue; // in flight (at most the lane's concurrency of these)
            }
            match self.read_due(k, id)? {
                Ok(claimed) => {
                    self.leases().insert(id, lease_until_ms);
                    out.push(claimed);
                }
                Err(d) => debris.push(d),
            }
        }
        self.clear_debris(lane, now_ms, debris)
    }

    /// The delivery behind due entry `k` with its webhook, or what is wrong
    /// with it (left for [`Self::clear_debris`]).
    fn read_due(&self, k: IVec, id: DeliveryId) -> Result<Result<Claimed, Debris>, StoreError> {
        let record = match found(self.get_delivery(id))? {
            Found::Yes(r) => r,
            Found::Gone => return Ok(Err(Debris::Orphan(k, id))),
            Found::Unreadable(why) => return Ok(Err(Debris::BadRecord(k, id, why))),
        };
        Ok(match found(self.get_webhook(id.webhook))? {
            Found::Yes(webhook) => Ok(Claimed { record, webhook }),
            Found::Gone => Err(Debris::Orphan(k, id)),
            Found::Unreadable(why) => Err(Debris::Unreadable(k, record, why)),
        })
    }

    /// Due entries that cannot be delivered: a key that does not parse or
    /// whose record or webhook is gone (left by an older crash) is dropped; a
    /// webhook whose body cannot be read (a segment file deleted or damaged
    /// outside the relay), or whose delivery record does not decode, becomes a
    /// dead letter that says so, rather than a lane stuck on it. Each is
    /// checked again under its webhook's stripe, so one that a completion
    /// removed meanwhile is not counted twice.
    fn clear_debris(&self, lane: &str, now_ms: u64, debris: Vec<Debris>) -> Result<(), StoreError> {
        // A lane being emptied claims with a time far in the future (to
        // take everything); a dead letter is dated by the clock.
        let now_ms = now_ms.min(crate::timefmt::now_ms());
        for d in debris {
            let (k, id) = match &d {
                Debris::Malformed(k) => (k.clone(), None),
                Debris::Orphan(k, id) => (k.clone(), Some(*id)),
                Debris::Unreadable(k, rec, _) => (k.clone(), Some(rec.id)),
                Debris::BadRecord(k, id, _) => (k.clone(), Some(*id)),
            };
            let _g = id.map(|id| self.stripe(id.webhook));
            if !self.tree.contains_key(&k).map_err(err)? {
                continue;
            }
            // What the entry becomes: nothing, or a dead letter saying why.
            let dead = match d {
                Debris::Malformed(_) => None,
                Debris::Orphan(_, id) => {
                    let whole = self.get_delivery(id)?.is_some()
                        && self.get_webhook(id.webhook).is_ok_and(|w| w.is_some());
                    if whole {
                        continue; // set right meanwhile
                    }
                    None
                }
                Debris::Unreadable(_, mut rec, why) => {
                    tracing::error!(lane, id = %rec.id, error = %why, "stored webhook unreadable; moved to the dead letters");
                    rec.state = DeliveryState::Dead {
                        dead_at_ms: now_ms,
                        reason: format!("the stored webhook cannot be read: {why}"),
                    };
                    Some(rec)
                }
                Debris::BadRecord(_, id, why) => {
                    if !matches!(self.get_delivery(id), Err(StoreError::Corrupt(_))) {
                        continue; // rewritten meanwhile
                    }
                    tracing::error!(lane, %id, error = %why, "delivery record unreadable; moved to the dead letters");
                    // What the record held is lost; the webhook is not. No
                    // targets: a replay sends to the lane's destinations as
                    // relay.toml has them then.
                    let mut rec = DeliveryRecord::new(id, lane.to_string(), Vec::new(), now_ms);
                    rec.state = DeliveryState::Dead {
                        dead_at_ms: now_ms,
                        reason: format!(
                            "the delivery record cannot be read ({why}); a replay sends the webhook again to lane `{lane}`"
                        ),
                    };
                    Some(rec)
                }
            };
            let mut batch = Batch::default();
            batch.remove(k);
            let buried = dead.is_some();
            if let Some(rec) = dead {
                batch.insert(dkey(rec.id), encode_delivery(&rec));
                batch.insert(xkey(rec.id), IVec::default());
                self.move_body_into_tree(rec.id.webhook, &mut batch, 0);
            }
            self.apply(batch, |c| {
                c.lane(lane, -1);
                if buried {
                    c.dead += 1;
                }
            })?;
        }
        Ok(())
    }

    /// Writes the outcome of an attempt on delivery `id` with `write`, given
    /// the record as stored, under the webhook's stripe; the lease ends once
    /// it is written (or when the record is already gone). A failed write
    /// keeps the lease: the delivery is due again when it ends.
    fn record_outcome(
        &self,
        id: DeliveryId,
        write: impl FnOnce(DeliveryRecord) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let _g = self.stripe(id.webhook);
        if let Some(old) = self.get_delivery(id)? {
            write(old)?;
        }
        self.leases().remove(&id);
        Ok(())
    }

    /// Applies `batch` and, if the counts are loaded, `adjust`s them in the
    /// same critical section (so a first count never sees half of a change).
    fn apply(&self, batch: Batch, adjust: impl FnOnce(&mut Counts)) -> Result<(), StoreError> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        self.tree.apply_batch(batch).map_err(err)?;
        if let Some(c) = counts.as_mut() {
            adjust(c);
        }
        Ok(())
    }

    /// Counts pending deliveries per lane and dead letters from the keys.
    pub(crate) fn count(&self) -> Result<Counts, StoreError> {
        let mut c = Counts::default();
        for name in self.lanes()? {
            let n = self.tree.scan_prefix(lane_prefix(&name)).keys().count();
            c.lane(&name, n as i64);
        }
        c.dead = self.tree.scan_prefix([b'x']).keys().count() as i64;
        Ok(c)
    }

    /// Removes the deliveries `ids` in `batch`, and each webhook none of whose
    /// other deliveries (pending or dead) remains. Caller holds the stripe locks.
    fn remove_deliveries(&self, ids: &[DeliveryId], batch: &mut Batch) {
        let removing: HashSet<Vec<u8>> = ids.iter().map(|&id| dkey(id)).collect();
        let mut webhooks: Vec<WebhookId> = ids.iter().map(|id| id.webhook).collect();
        webhooks.sort_unstable();
        webhooks.dedup();
        for k in &removing {
            batch.remove(k.as_slice());
        }
        for w in webhooks {
            let others = self
                .tree
                .scan_prefix(key(b'd', &[&be(w)]))
                .keys()
                .any(|k| k.map_or(true, |k| !removing.contains(k.as_ref())));
            if !others {
                batch.remove(wkey(w));
                // Body chunks, if a dead letter moved the body here.
                for k in self.tree.scan_prefix(bkey(w)).keys().flatten() {
                    batch.remove(k);
                }
            }
        }
    }
}

impl Store for SledStore {
    fn accept_batch(
        &self,
        items: &[Accept],
        now_ms: u64,
    ) -> Result<Vec<AcceptOutcome>, StoreError> {
        let mut batch = Batch::default();
        let mut added: Vec<&str> = Vec::new();
        let mut fresh: HashMap<Vec<u8>, WebhookId> = HashMap::new();
        let mut out = Vec::with_capacity(items.len());
        // Webhooks that have deliveries keep their body: written to a segment
        // and synced before the batch that points to them is applied.
        let mut kept: Vec<(WebhookId, &Accept)> = Vec::new();
        for a in items {
            let k = dedup_key(a.webhook.meta());
            if let Some(&w) = fresh.get(&k) {
                out.push(AcceptOutcome::Duplicate(w));
                continue;
            }
            if let Some(v) = self.tree.get(&k).map_err(err)? {
                out.push(AcceptOutcome::Duplicate(read_u64(&v)));
                continue;
            }
            let w = self.db.generate_id().map_err(err)?;
            let mut kv = be(w).to_vec();
            kv.extend_from_slice(&be(now_ms));
            batch.insert(k.clone(), kv);
            batch.insert(key(b't', &[&be(now_ms), &be(w)]), k.clone());
            if !a.deliveries.is_empty() {
                kept.push((w, a));
            }
            for (slot, d) in a.deliveries.iter().enumerate() {
                let id = DeliveryId {
                    webhook: w,
                    slot: slot as u8,
                };
                let rec = DeliveryRecord::new(id, d.lane.clone(), d.targets.clone(), now_ms);
                batch.insert(dkey(id), encode_delivery(&rec));
                batch.insert(qkey(&d.lane, now_ms, id), IVec::default());
                added.push(&d.lane);
            }
            fresh.insert(k, w);
            out.push(AcceptOutcome::Queued(w));
        }
        if let Some(&(first, _)) = kept.first() {
            let bodies: Vec<&[u8]> = kept.iter().map(|(_, a)| &a.webhook.body()[..]).collect();
            let at = self.bodies.append(first, &bodies)?;
            for ((w, a), at) in kept.iter().zip(at) {
                batch.insert(wkey(*w), encode_webhook(a.webhook.meta(), at));
            }
        }
        self.apply(batch, |c| added.iter().for_each(|l| c.lane(l, 1)))?;
        self.db.flush().map_err(err)?;
        Ok(out)
    }

    fn accepted(&self, items: &[Accept]) -> Result<Vec<Option<WebhookId>>, StoreError> {
        items
            .iter()
            .map(|a| {
                let v = self.tree.get(dedup_key(a.webhook.meta())).map_err(err)?;
                Ok(v.map(|v| read_u64(&v)))
            })
            .collect()
    }

    fn claim_due(
        &self,
        lane: &str,
        now_ms: u64,
        lease_until_ms: u64,
        limit: usize,
    ) -> Result<Vec<Claimed>, StoreError> {
        let mut out = Vec::new();
        match self.claim_into(lane, now_ms, lease_until_ms, limit, &mut out) {
            Ok(()) => Ok(out),
            Err(e) => {
                // Nobody receives these: they must not stay leased.
                let mut leases = self.leases();
                for c in &out {
                    leases.remove(&c.record.id);
                }
                Err(e)
            }
        }
    }

    fn release_leases(&self, now_ms: u64) -> Result<usize, StoreError> {
        let mut n = 0;
        for kv in self.tree.scan_prefix([b'l']) {
            let (k, _) = kv.map_err(err)?;
            let mut batch = Batch::default();
            batch.remove(k.clone());
            if k.len() == 10 {
                let id = DeliveryId {
                    webhook: read_u64(&k[1..9]),
                    slot: k[9],
                };
                if let Some(mut rec) = self.get_delivery(id)? {
                    if rec.state == DeliveryState::Pending && rec.due_ms > now_ms {
                        batch.remove(qkey(&rec.lane, rec.due_ms, id));
                        rec.due_ms = now_ms;
                        batch.insert(qkey(&rec.lane, now_ms, id), IVec::default());
                        batch.insert(dkey(id), encode_delivery(&rec));
                        n += 1;
                    }
                }
            }
            self.apply(batch, |_| {})?;
        }
        Ok(n)
    }

    fn next_due(&self, lane: &str) -> Result<Option<u64>, StoreError> {
        // The first entry not in flight; before it, in-flight ones whose lease
        // may end first (then they are due again).
        let prefix = lane_prefix(lane);
        let mut earliest: Option<u64> = None;
        for kv in self.tree.scan_prefix(&prefix) {
            let (k, _) = kv.map_err(err)?;
            let Some((due, id)) = parse_qtail(&k[prefix.len()..]) else {
                continue;
            };
            match self.leases().get(&id).copied() {
                Some(until) => earliest = Some(earliest.map_or(until, |e| e.min(until))),
                None => return Ok(Some(earliest.map_or(due, |e| e.min(due)))),
            }
        }
        Ok(earliest)
    }

    fn update(&self, rec: &DeliveryRecord) -> Result<(), StoreError> {
        self.record_outcome(rec.id, |old| {
            let mut batch = Batch::default();
            batch.remove(qkey(&old.lane, old.due_ms, rec.id));
            batch.insert(qkey(&rec.lane, rec.due_ms, rec.id), IVec::default());
            batch.insert(dkey(rec.id), encode_delivery(rec));
            self.apply(batch, |c| {
                c.lane(&old.lane, -1);
                c.lane(&rec.lane, 1);
            })
        })
    }

    fn complete(&self, id: DeliveryId) -> Result<(), StoreError> {
        self.complete_many(&[id])
    }

    fn complete_many(&self, ids: &[DeliveryId]) -> Result<(), StoreError> {
        // Every stripe involved, in ascending order (others hold at most one,
        // so this cannot deadlock), so that no other lane's completion of a
        // sibling interleaves with the sibling check below.
        let mut stripes: Vec<usize> = ids.iter().map(|id| self.stripe_index(id.webhook)).collect();
        stripes.sort_unstable();
        stripes.dedup();
        let _guards: Vec<_> = stripes
            .iter()
            .map(|&i| self.stripes[i].lock().unwrap_or_else(|p| p.into_inner()))
            .collect();
        let mut batch = Batch::default();
        let mut lanes: Vec<String> = Vec::new();
        let mut found = Vec::with_capacity(ids.len());
        let mut seen = HashSet::with_capacity(ids.len());
        for &id in ids {
            if !seen.insert(id) {
                continue;
            }
            let Some(old) = self.get_delivery(id)? else {
                continue;
            };
            batch.remove(qkey(&old.lane, old.due_ms, id));
            lanes.push(old.lane);
            found.push(id);
        }
        self.remove_deliveries(&found, &mut batch);
        self.apply(batch, |c| lanes.iter().for_each(|l| c.lane(l, -1)))?;
        let mut leases = self.leases();
        for id in ids {
            leases.remove(id);
        }
        Ok(())
    }

    fn bury(&self, rec: &DeliveryRecord) -> Result<(), StoreError> {
        self.record_outcome(rec.id, |old| {
            let mut batch = Batch::default();
            batch.remove(qkey(&old.lane, old.due_ms, rec.id));
            batch.insert(dkey(rec.id), encode_delivery(rec));
            batch.insert(xkey(rec.id), IVec::default());
            self.move_body_into_tree(rec.id.webhook, &mut batch, 0);
            let was_pending = old.state == DeliveryState::Pending;
            self.apply(batch, |c| {
                if was_pending {
                    c.lane(&old.lane, -1);
                    c.dead += 1;
                }
            })?;
            self.db.flush().map_err(err).map(|_| ())
        })
    }

    fn dead_letters(
        &self,
        after: Option<DeliveryId>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let start = match after {
            Some(id) => {
                let mut k = xkey(id);
                k.push(0);
                k
            }
            None => vec![b'x'],
        };
        let mut out = Vec::new();
        for kv in self.tree.range(start..vec![b'x' + 1]).take(limit) {
            let (k, _) = kv.map_err(err)?;
            if k.len() != 10 {
                continue;
            }
            let id = DeliveryId {
                webhook: read_u64(&k[1..9]),
                slot: k[9],
            };
            if let Some(d) = self.dead_letter(id)? {
                out.push(d);
            }
        }
        Ok(out)
    }

    fn dead_letter(&self, id: DeliveryId) -> Result<Option<DeadLetter>, StoreError> {
        match self.get_delivery(id)? {
            Some(record) if matches!(record.state, DeliveryState::Dead { .. }) => {
                // An unreadable webhook still lists, without it.
                let webhook = match self.get_webhook(id.webhook) {
                    Err(StoreError::Corrupt(_)) => None,
                    other => other?,
                };
                Ok(Some(DeadLetter { webhook, record }))
            }
            _ => Ok(None),
        }
    }

    fn replay(&self, id: DeliveryId, now_ms: u64) -> Result<Option<String>, StoreError> {
        let _g = self.stripe(id.webhook);
        let Some(mut rec) = self.get_delivery(id)? else {
            return Ok(None);
        };
        if !matches!(rec.state, DeliveryState::Dead { .. }) {
            return Ok(None);
        }
        rec.state = DeliveryState::Pending;
        rec.due_ms = now_ms;
        rec.attempts = 0;
        rec.first_attempt_at_ms = None;
        let mut batch = Batch::default();
        batch.remove(xkey(id));
        batch.insert(dkey(id), encode_delivery(&rec));
        batch.insert(qkey(&rec.lane, now_ms, id), IVec::default());
        self.apply(batch, |c| {
            c.dead -= 1;
            c.lane(&rec.lane, 1);
        })?;
        self.db.flush().map_err(err)?;
        Ok(Some(rec.lane))
    }

    fn purge(&self, id: DeliveryId) -> Result<bool, StoreError> {
        let _g = self.stripe(id.webhook);
        match self.get_delivery(id)? {
            Some(rec) if matches!(rec.state, DeliveryState::Dead { .. }) => {
                let mut batch = Batch::default();
                batch.remove(xkey(id));
                self.remove_deliveries(&[id], &mut batch);
                self.apply(batch, |c| c.dead -= 1)?;
                self.db.flush().map_err(err)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn lanes(&self) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        let mut from = vec![b'q'];
        while let Some(kv) = self.tree.range(from.clone()..vec![b'q' + 1]).next() {
            let (k, _) = kv.map_err(err)?;
            let Some(sep) = k.iter().position(|&b| b == 0) else {
                break;
            };
            out.push(String::from_utf8_lossy(&k[1..sep]).into_owned());
            // Skip past every key of this lane: `q lane 0 …` < `q lane 1`.
            from = k[..sep].to_vec();
            from.push(1);
        }
        Ok(out)
    }

    fn stats(&self) -> Result<(BTreeMap<String, LaneStats>, u64), StoreError> {
        let (pending, dead) = {
            let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
            if counts.is_none() {
                *counts = Some(self.count()?);
            }
            counts
                .as_ref()
                .map(|c| (c.pending.clone(), c.dead))
                .unwrap_or_default()
        };
        let mut lanes = BTreeMap::new();
        for (lane, n) in pending.into_iter().filter(|(_, n)| *n > 0) {
            let oldest_due_ms = self.next_due(&lane)?;
            lanes.insert(
                lane,
                LaneStats {
                    pending: n as u64,
                    oldest_due_ms,
                },
            );
        }
        Ok((lanes, dead.max(0) as u64))
    }

    fn expire_dedup(&self, before_ms: u64) -> Result<usize, StoreError> {
        let mut batch = Batch::default();
        let mut n = 0;
        for kv in self.tree.range(vec![b't']..key(b't', &[&be(before_ms)])) {
            let (k, v) = kv.map_err(err)?;
            batch.remove(k);
            batch.remove(v);
            n += 1;
        }
        self.tree.apply_batch(batch).map_err(err)?;
        Ok(n)
    }

    fn reclaim(&self) -> Result<u64, StoreError> {
        if !self.moved_old_dead.load(Ordering::Relaxed) {
            // Dead letters buried before their bodies moved into the tree;
            // flushed every 8 MiB so that free space keeps telling the truth.
            let mut unflushed = 0;
            for kv in self.tree.scan_prefix([b'x']) {
                let (k, _) = kv.map_err(err)?;
                let w = read_u64(&k[1..]);
                let _g = self.stripe(w);
                let mut batch = Batch::default();
                let moved = self.move_body_into_tree(w, &mut batch, unflushed);
                if moved > 0 {
                    self.apply(batch, |_| {})?;
                    unflushed += moved;
                }
                if unflushed > 8 << 20 {
                    self.db.flush().map_err(err)?;
                    unflushed = 0;
                }
            }
            self.moved_old_dead.store(true, Ordering::Relaxed);
        }
        let mut unused = Vec::new();
        for (first, end) in self.bodies.closed() {
            // In use while a webhook in its id range points into it (a dead
            // letter does, until purged; records written before bodies moved
            // to segments hold their body themselves).
            let mut in_use = false;
            for kv in self.tree.range(wkey(first)..wkey(end)) {
                if points_to_segment(&kv.map_err(err)?.1) {
                    in_use = true;
                    break;
                }
            }
            if !in_use {
                unused.push(first);
            }
        }
        if unused.is_empty() {
            return Ok(0);
        }
        // The removals that emptied these ranges may not be on disk yet; once
        // flushed, no crash can bring back a pointer into a deleted segment.
        self.db.flush().map_err(err)?;
        let mut freed = 0;
        for first in unused {
            freed += self.bodies.delete(first)?;
        }
        Ok(freed)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(|_| ()).map_err(err)
    }

    fn free_bytes(&self) -> Option<u64> {
        let s = rustix::fs::statvfs(&self.dir).ok()?;
        Some(s.f_bavail.saturating_mul(s.f_frsize))
    }
}
