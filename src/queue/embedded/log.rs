//! The write-ahead log: append-only segment files of self-describing,
//! length-prefixed, checksummed records. It is the queue: an acknowledged
//! webhook is a record here, synced, and nothing else is needed to recover it.
//!
//! ```text
//! record  = magic "SRL1" | len u32 LE | crc32c u32 LE | payload (len bytes)
//! payload = version u8 (1; 2 in the dead-letter log, followed by the dead
//!           delivery's slot u8) | seq u64 LE
//!         | lanes u8 | { lane: u16 LE len + UTF-8 | targets u8 | { u16 LE len + UTF-8 } }
//!         | meta_len u32 LE | meta (WebhookMeta as JSON: source, topic, dedup id,
//!           received time, the headers mapping needs)
//!         | body (the rest: the raw bytes, exactly as signed)
//! crc     = crc32c(len bytes ++ payload)
//! ```
//!
//! Segments are named by the sequence number (the webhook id) of their first
//! record, `log/{first:020}.log`. Appends go to the newest one only, one
//! `writev` and one `fdatasync` per group commit; a new segment's name is
//! made durable (directory fsync) before a record in it is acknowledged.
//! Readers never read past a segment's committed end (what was synced), so a
//! batch whose sync failed is never delivered.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::io::{Fs, LogFile, io_err};
use crate::queue::{NewDelivery, StoreError};
use crate::sources::WebhookMeta;

const MAGIC: [u8; 4] = *b"SRL1";
/// Magic, length and checksum.
pub const HEADER: u64 = 12;
const VERSION: u8 = 1;
/// A record of the dead-letter log: version 1 plus the slot of the delivery
/// that died.
const VERSION_DEAD: u8 = 2;
/// Largest payload a reader accepts (a body is capped far below this).
const MAX_PAYLOAD: u32 = 256 << 20;

/// Where a record starts: its segment (first seq) and byte offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Pos {
    pub segment: u64,
    pub offset: u64,
}

/// One decoded record.
#[derive(Clone, Debug)]
pub struct Entry {
    /// The webhook id.
    pub seq: u64,
    /// The lanes it goes to, in slot order.
    pub lanes: Vec<NewDelivery>,
    pub meta: std::sync::Arc<WebhookMeta>,
    pub body: Bytes,
    /// In the dead-letter log: the slot of the delivery that died.
    pub dead_slot: Option<u8>,
}

/// A record ready to append: everything before the body, and the body.
pub struct Encoded {
    pub seq: u64,
    head: Vec<u8>,
    body: Bytes,
}

impl Encoded {
    /// The record's length on disk.
    pub fn len(&self) -> u64 {
        (self.head.len() + self.body.len()) as u64
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) -> Result<(), StoreError> {
    let len = u16::try_from(s.len())
        .map_err(|_| StoreError::Backend(format!("name longer than 64 KiB: {s:.40}…")))?;
    out.extend(len.to_le_bytes());
    out.extend(s.as_bytes());
    Ok(())
}

/// Encodes webhook `seq` with its lanes.
pub fn encode(
    seq: u64,
    lanes: &[NewDelivery],
    meta: &WebhookMeta,
    body: &Bytes,
) -> Result<Encoded, StoreError> {
    encode_with(seq, None, lanes, meta, body)
}

/// Encodes the dead letter of webhook `seq`'s delivery `slot`, for the
/// dead-letter log.
pub fn encode_dead(seq: u64, slot: u8, e: &Entry) -> Result<Encoded, StoreError> {
    encode_with(seq, Some(slot), &e.lanes, &e.meta, &e.body)
}

fn encode_with(
    seq: u64,
    dead_slot: Option<u8>,
    lanes: &[NewDelivery],
    meta: &WebhookMeta,
    body: &Bytes,
) -> Result<Encoded, StoreError> {
    let too_many = || StoreError::Backend("more than 255 lanes or targets".into());
    // The header's place first (filled in at the end), so the head is built
    // in one buffer: `payload` is `head[HEADER..]`.
    let mut head = Vec::with_capacity(512);
    head.extend([0u8; HEADER as usize]);
    let payload = &mut head;
    match dead_slot {
        None => payload.push(VERSION),
        Some(slot) => payload.extend([VERSION_DEAD, slot]),
    }
    payload.extend(seq.to_le_bytes());
    payload.push(u8::try_from(lanes.len()).map_err(|_| too_many())?);
    for l in lanes {
        put_str(payload, &l.lane)?;
        payload.push(u8::try_from(l.targets.len()).map_err(|_| too_many())?);
        for t in &l.targets {
            put_str(payload, t)?;
        }
    }
    // The meta's JSON straight after its length's place (serialising a plain
    // struct to JSON cannot fail).
    let meta_at = payload.len();
    payload.extend([0u8; 4]);
    let _ = serde_json::to_writer(&mut *payload, meta);
    let meta_len = (payload.len() - meta_at - 4) as u32;
    payload[meta_at..meta_at + 4].copy_from_slice(&meta_len.to_le_bytes());
    let len = u32::try_from(head.len() - HEADER as usize + body.len())
        .ok()
        .filter(|&l| l <= MAX_PAYLOAD)
        .ok_or_else(|| StoreError::Backend("a webhook larger than 256 MiB".into()))?;
    let len_bytes = len.to_le_bytes();
    let crc = crc32c::crc32c_append(
        crc32c::crc32c_append(crc32c::crc32c(&len_bytes), &head[HEADER as usize..]),
        body,
    );
    head[..4].copy_from_slice(&MAGIC);
    head[4..8].copy_from_slice(&len_bytes);
    head[8..12].copy_from_slice(&crc.to_le_bytes());
    Ok(Encoded {
        seq,
        head,
        body: body.clone(),
    })
}

struct Cur<'a>(&'a [u8]);

impl<'a> Cur<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("record ends early".into());
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, String> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    fn str(&mut self) -> Result<String, String> {
        let n = self.u16()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| "a name is not UTF-8".to_string())
    }
}

/// Decodes a payload whose checksum matched.
fn decode(payload: Bytes) -> Result<Entry, String> {
    let mut c = Cur(&payload);
    let dead_slot = match c.u8()? {
        VERSION => None,
        VERSION_DEAD => Some(c.u8()?),
        v => return Err(format!("unknown record version {v}")),
    };
    let seq = c.u64()?;
    let mut lanes = Vec::new();
    for _ in 0..c.u8()? {
        let lane = c.str()?;
        let mut targets = Vec::new();
        for _ in 0..c.u8()? {
            targets.push(c.str()?);
        }
        lanes.push(NewDelivery { lane, targets });
    }
    let meta_len = c.u32()? as usize;
    let meta: WebhookMeta =
        serde_json::from_slice(c.take(meta_len)?).map_err(|e| format!("meta: {e}"))?;
    let body_at = payload.len() - c.0.len();
    Ok(Entry {
        seq,
        lanes,
        meta: std::sync::Arc::new(meta),
        body: payload.slice(body_at..),
        dead_slot,
    })
}

/// What reading at a position found.
#[derive(Debug)]
pub enum Read {
    /// A record and where the next one starts.
    Record(Box<Entry>, Pos),
    /// Nothing more (yet) in this segment.
    End,
    /// Bytes that are not a valid record: why.
    Damaged(String),
}

/// One segment file.
pub struct Segment {
    pub first: u64,
    file: Arc<dyn LogFile>,
    /// Bytes known durable: readers stop here.
    end: AtomicU64,
}

impl Segment {
    pub fn end(&self) -> u64 {
        self.end.load(Ordering::Acquire)
    }

    /// Reads the record at `offset`.
    pub fn read(&self, offset: u64) -> Result<Read, StoreError> {
        let end = self.end();
        if offset + HEADER > end {
            return Ok(if offset >= end {
                Read::End
            } else {
                Read::Damaged("a record header cut short".into())
            });
        }
        let mut head = [0u8; HEADER as usize];
        self.read_exact(&mut head, offset)?;
        if head[..4] != MAGIC {
            return Ok(Read::Damaged("no record starts here".into()));
        }
        let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        let crc = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
        if len > MAX_PAYLOAD || offset + HEADER + u64::from(len) > end {
            return Ok(Read::Damaged(format!("a record of {len} bytes cut short")));
        }
        let mut payload = vec![0u8; len as usize];
        self.read_exact(&mut payload, offset + HEADER)?;
        if crc32c::crc32c_append(crc32c::crc32c(&head[4..8]), &payload) != crc {
            return Ok(Read::Damaged("checksum mismatch".into()));
        }
        let next = Pos {
            segment: self.first,
            offset: offset + HEADER + u64::from(len),
        };
        Ok(match decode(Bytes::from(payload)) {
            Ok(e) => Read::Record(Box::new(e), next),
            Err(why) => Read::Damaged(why),
        })
    }

    fn read_exact(&self, buf: &mut [u8], offset: u64) -> Result<(), StoreError> {
        self.file.read_at(buf, offset).map_err(|e| {
            StoreError::Backend(format!(
                "reading log segment {} at {offset}: {e}",
                self.first
            ))
        })
    }

    /// The next offset after `from` where a valid record starts, or the end.
    pub fn resync(&self, from: u64) -> Result<u64, StoreError> {
        let end = self.end();
        let mut at = from + 1;
        let mut buf = vec![0u8; 1 << 20];
        while at + HEADER <= end {
            let n = (end - at).min(buf.len() as u64) as usize;
            self.read_exact(&mut buf[..n], at)?;
            let mut i = 0;
            while i + 4 <= n {
                if buf[i..i + 4] == MAGIC {
                    if let Read::Record(..) = self.read(at + i as u64)? {
                        return Ok(at + i as u64);
                    }
                }
                i += 1;
            }
            // Keep 3 bytes: a magic may straddle the chunks.
            at += (n.saturating_sub(3)).max(1) as u64;
        }
        Ok(end)
    }
}

struct Active {
    seg: Arc<Segment>,
    len: u64,
}

/// The segment files of one data directory.
pub struct Log {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    segments: RwLock<BTreeMap<u64, Arc<Segment>>>,
    /// The segment appended to; `None` until the first append after opening
    /// (a reopened log never appends after a possibly torn tail) or after a
    /// failed write.
    active: Mutex<Option<Active>>,
    segment_bytes: u64,
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.log"))
}

impl Log {
    /// Opens the segments in `dir` (which exists).
    pub fn open(fs: Arc<dyn Fs>, dir: &Path, segment_bytes: u64) -> Result<Log, StoreError> {
        let mut segments = BTreeMap::new();
        for name in fs.list(dir).map_err(|e| io_err("list", dir, e))? {
            let Some(first) = name
                .strip_suffix(".log")
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            let path = dir.join(&name);
            let file = fs.open(&path).map_err(|e| io_err("open", &path, e))?;
            let end = file.size().map_err(|e| io_err("stat", &path, e))?;
            segments.insert(
                first,
                Arc::new(Segment {
                    first,
                    file,
                    end: AtomicU64::new(end),
                }),
            );
        }
        Ok(Log {
            fs,
            dir: dir.to_path_buf(),
            segments: RwLock::new(segments),
            active: Mutex::new(None),
            segment_bytes,
        })
    }

    fn segments(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<u64, Arc<Segment>>> {
        self.segments.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The segment whose first seq is `first`.
    pub fn segment(&self, first: u64) -> Option<Arc<Segment>> {
        self.segments().get(&first).cloned()
    }

    /// Every segment, oldest first.
    pub fn all(&self) -> Vec<Arc<Segment>> {
        self.segments().values().cloned().collect()
    }

    /// Where reading starts when nothing has been read: the oldest segment.
    pub fn start(&self) -> Pos {
        Pos {
            segment: self.segments().keys().next().copied().unwrap_or(0),
            offset: 0,
        }
    }

    /// Where the next append will land once synced (the end of the newest).
    pub fn tail(&self) -> Pos {
        let segs = self.segments();
        match segs.iter().next_back() {
            Some((&first, s)) => Pos {
                segment: first,
                offset: s.end(),
            },
            None => Pos {
                segment: 0,
                offset: 0,
            },
        }
    }

    /// Reads the record at `pos`; at the end of a closed segment, goes on
    /// with the next one.
    pub fn read(&self, mut pos: Pos) -> Result<(Read, Pos), StoreError> {
        loop {
            let (seg, next) = {
                let segs = self.segments();
                let seg = segs.range(pos.segment..).next().map(|(_, s)| s.clone());
                let Some(seg) = seg else {
                    return Ok((Read::End, pos));
                };
                if seg.first != pos.segment {
                    // Deleted under the reader (or never there): the next one.
                    pos = Pos {
                        segment: seg.first,
                        offset: 0,
                    };
                }
                let next = segs.range(seg.first + 1..).next().map(|(&f, _)| f);
                (seg, next)
            };
            match seg.read(pos.offset)? {
                Read::End => match next {
                    // A closed segment ends here; its successor holds the rest.
                    Some(n) if pos.offset >= seg.end() => {
                        pos = Pos {
                            segment: n,
                            offset: 0,
                        }
                    }
                    _ => return Ok((Read::End, pos)),
                },
                other => return Ok((other, pos)),
            }
        }
    }

    /// Appends `records` (ascending seqs) and syncs them. Returns where each
    /// one is. On failure nothing of the batch is ever read.
    pub fn append(&self, records: &[Encoded]) -> Result<Vec<Pos>, StoreError> {
        let Some(first) = records.first() else {
            return Ok(Vec::new());
        };
        let mut active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        if active.as_ref().is_none_or(|a| a.len >= self.segment_bytes) {
            // Named by its first record's seq; never below a name in use (the
            // dead-letter log holds old webhooks in the order they died).
            let newest = self.segments().keys().next_back().map_or(0, |&n| n + 1);
            *active = Some(self.create(first.seq.max(newest))?);
        }
        let a = active.as_mut().ok_or_else(|| {
            StoreError::Backend("no active log segment after creating one".into())
        })?;
        let mut out = Vec::with_capacity(records.len());
        let mut end = a.len;
        let mut bufs: Vec<&[u8]> = Vec::with_capacity(2 * records.len());
        for r in records {
            out.push(Pos {
                segment: a.seg.first,
                offset: end,
            });
            end += r.len();
            bufs.push(&r.head);
            if !r.body.is_empty() {
                bufs.push(&r.body);
            }
        }
        let written = a
            .seg
            .file
            .append(&bufs)
            .and_then(|()| a.seg.file.sync_data());
        if let Err(e) = written {
            let path = segment_path(&self.dir, a.seg.first);
            // Take the failed bytes back where possible; either way the next
            // batch starts a fresh segment (after a failed fsync the file's
            // state is unknown), and readers stop at the committed end.
            let _ = a.seg.file.truncate(a.len);
            *active = None;
            return Err(io_err("write", &path, e));
        }
        a.len = end;
        a.seg.end.store(end, Ordering::Release);
        Ok(out)
    }

    fn create(&self, first: u64) -> Result<Active, StoreError> {
        // The new name is durable before any record in it is acknowledged.
        let file = self.fs.create_durably(&segment_path(&self.dir, first))?;
        let seg = Arc::new(Segment {
            first,
            file,
            end: AtomicU64::new(0),
        });
        self.segments
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(first, seg.clone());
        Ok(Active { seg, len: 0 })
    }

    /// Stops appending to the active segment (the next append starts a new
    /// one); returns its first seq. Caller holds the commit lock, so nothing
    /// is being appended.
    pub fn retire_active(&self) -> Option<u64> {
        let taken = self.active.lock().unwrap_or_else(|p| p.into_inner()).take();
        // After a restart nothing is active yet: the newest segment is the one.
        taken
            .map(|a| a.seg.first)
            .or_else(|| self.segments().keys().next_back().copied())
    }

    /// Segment size at which a new one starts.
    pub fn segment_bytes(&self) -> u64 {
        self.segment_bytes
    }

    /// Cuts segment `first` at `offset` (a torn tail found at start-up).
    pub fn truncate(&self, first: u64, offset: u64) -> Result<(), StoreError> {
        if let Some(seg) = self.segment(first) {
            seg.file
                .truncate(offset)
                .map_err(|e| io_err("truncate", &segment_path(&self.dir, first), e))?;
            seg.end.store(offset, Ordering::Release);
        }
        Ok(())
    }

    /// Segments before the newest, each with the first seq of the next.
    pub fn closed(&self) -> Vec<(u64, u64)> {
        let active = self
            .active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|a| a.seg.first);
        let firsts: Vec<u64> = self.segments().keys().copied().collect();
        firsts
            .windows(2)
            .map(|w| (w[0], w[1]))
            .filter(|(first, _)| Some(*first) != active)
            .collect()
    }

    /// Deletes segment `first`; returns its size.
    pub fn delete(&self, first: u64) -> Result<u64, StoreError> {
        let path = segment_path(&self.dir, first);
        let seg = self
            .segments
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&first);
        let bytes = seg.map_or(0, |s| s.end());
        self.fs
            .remove(&path)
            .map_err(|e| io_err("delete", &path, e))?;
        Ok(bytes)
    }

    /// Number of segment files and their bytes.
    pub fn size(&self) -> (usize, u64) {
        let segs = self.segments();
        (segs.len(), segs.values().map(|s| s.end()).sum())
    }
}
