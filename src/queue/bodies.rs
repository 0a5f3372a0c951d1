//! Webhook bodies, kept beside sled in append-only segment files.
//!
//! Why not in sled: sled keeps values inside its B-tree leaves (16 entries a
//! leaf) and rewrites a whole leaf when it consolidates or splits one, so each
//! 3–4 KB body was copied and serialised many times over; storing bodies in the
//! tree made an accepted webhook cost twice the CPU of one without a body
//! (README, Performance). Here a body is written once, and sled keeps a
//! 20-byte pointer to it.
//!
//! Durability: the committer writes a batch's bodies and `fdatasync`s the
//! segment *before* it applies and flushes the sled batch that points to them,
//! so no flushed pointer can name bytes that are not on disk. Bodies written by
//! a batch that then failed are unreferenced bytes, reclaimed with their segment.
//!
//! Segments are named by the first webhook id written to them (ids only grow,
//! and only the committer writes), so segment `F` holds webhooks
//! `F ≤ id < next segment's F`. A segment other than the active one is deleted
//! once sled holds no webhook in that range — after a flush, so that a crash
//! cannot bring back a pointer into a deleted file.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use super::{StoreError, WebhookId};

/// Segment size at which a new one is started (at a batch boundary).
pub const SEGMENT_BYTES: u64 = 64 << 20;

/// Where a body is: segment (its first webhook id), byte offset, length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyRef {
    pub segment: u64,
    pub offset: u64,
    pub len: u32,
}

impl BodyRef {
    pub const ENCODED: usize = 20;

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend(self.segment.to_be_bytes());
        out.extend(self.offset.to_be_bytes());
        out.extend(self.len.to_be_bytes());
    }

    pub fn decode(b: &[u8]) -> Option<BodyRef> {
        if b.len() != Self::ENCODED {
            return None;
        }
        let u64_at = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            u64::from_be_bytes(a)
        };
        Some(BodyRef {
            segment: u64_at(0),
            offset: u64_at(8),
            len: u32::from_be_bytes([b[16], b[17], b[18], b[19]]),
        })
    }
}

struct Active {
    segment: u64,
    file: Arc<File>,
    len: u64,
}

/// The segment files of one data directory.
pub struct Bodies {
    dir: PathBuf,
    /// Open segments by first webhook id (readers share the handles).
    segments: RwLock<BTreeMap<u64, Arc<File>>>,
    /// A new segment starts at a batch boundary once the active one is this big.
    segment_bytes: u64,
    /// The segment being appended to; `None` until the first body or after a
    /// failed write (the next batch starts a fresh segment).
    active: Mutex<Option<Active>>,
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Backend(format!("{what} {}: {e}", path.display()))
}

fn segment_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(format!("{segment:020}.seg"))
}

impl Bodies {
    /// Opens the segments under `dir` (created if missing). Appends always go
    /// to a new segment, so a torn tail left by a crash is never written after.
    pub fn open(dir: &Path, segment_bytes: u64) -> Result<Bodies, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| io_err("create", dir, e))?;
        let mut segments = BTreeMap::new();
        for entry in std::fs::read_dir(dir).map_err(|e| io_err("list", dir, e))? {
            let path = entry.map_err(|e| io_err("list", dir, e))?.path();
            let Some(first) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".seg"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            let file = File::open(&path).map_err(|e| io_err("open", &path, e))?;
            segments.insert(first, Arc::new(file));
        }
        Ok(Bodies {
            dir: dir.to_path_buf(),
            segments: RwLock::new(segments),
            segment_bytes,
            active: Mutex::new(None),
        })
    }

    /// Writes one batch's bodies, the first of which belongs to webhook
    /// `first_id`, and makes them durable. Returns where each one is.
    pub fn append(
        &self,
        first_id: WebhookId,
        bodies: &[&[u8]],
    ) -> Result<Vec<BodyRef>, StoreError> {
        if bodies.is_empty() {
            return Ok(Vec::new());
        }
        let mut active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        if active.as_ref().is_none_or(|a| a.len >= self.segment_bytes) {
            *active = Some(self.create(first_id)?);
        }
        let a = active.as_mut().ok_or_else(|| {
            StoreError::Backend("no active body segment after creating one".into())
        })?;
        let mut refs = Vec::with_capacity(bodies.len());
        let mut end = a.len;
        for b in bodies {
            let len = u32::try_from(b.len())
                .map_err(|_| StoreError::Backend("a body larger than 4 GiB".into()))?;
            refs.push(BodyRef {
                segment: a.segment,
                offset: end,
                len,
            });
            end += b.len() as u64;
        }
        let path = segment_path(&self.dir, a.segment);
        let written = write_all_vectored(&a.file, bodies).and_then(|()| a.file.sync_data());
        if let Err(e) = written {
            // Where the file ends is unknown now: the next batch starts afresh.
            *active = None;
            return Err(io_err("write", &path, e));
        }
        a.len = end;
        Ok(refs)
    }

    fn create(&self, first_id: WebhookId) -> Result<Active, StoreError> {
        let path = segment_path(&self.dir, first_id);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&path)
            .map_err(|e| io_err("create", &path, e))?;
        let len = file.metadata().map_err(|e| io_err("stat", &path, e))?.len();
        // The new name must be durable before any pointer to it is.
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_err("sync", &self.dir, e))?;
        let file = Arc::new(file);
        self.segments
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(first_id, file.clone());
        Ok(Active {
            segment: first_id,
            file,
            len,
        })
    }

    /// Reads one body.
    pub fn read(&self, r: BodyRef) -> Result<Vec<u8>, StoreError> {
        let file = self
            .segments
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&r.segment)
            .cloned()
            .ok_or_else(|| StoreError::Corrupt(format!("body segment {} is missing", r.segment)))?;
        let mut buf = vec![0u8; r.len as usize];
        file.read_exact_at(&mut buf, r.offset).map_err(|e| {
            let what = format!(
                "body at {}+{} in segment {}: {e}",
                r.offset, r.len, r.segment
            );
            // Past the end of the file is damage; anything else (EIO, say)
            // may pass, and must not turn a delivery into a dead letter.
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                StoreError::Corrupt(what)
            } else {
                StoreError::Backend(what)
            }
        })?;
        Ok(buf)
    }

    /// Segments other than the active one, each with the end of its id range
    /// (the next segment's first id).
    ///
    /// The active segment is read under the same lock that `append` holds
    /// while it starts a new one, so a segment started meanwhile is never
    /// listed (it would look empty until its batch is applied).
    pub fn closed(&self) -> Vec<(u64, u64)> {
        let active_guard = self.active.lock().unwrap_or_else(|p| p.into_inner());
        let active = active_guard.as_ref().map(|a| a.segment);
        let segments = self.segments.read().unwrap_or_else(|p| p.into_inner());
        let firsts: Vec<u64> = segments.keys().copied().collect();
        firsts
            .windows(2)
            .map(|w| (w[0], w[1]))
            .chain(firsts.last().map(|&l| (l, u64::MAX)))
            .filter(|(first, _)| Some(*first) != active)
            .collect()
    }

    /// Deletes segment `first` (its range holds no webhook any more).
    pub fn delete(&self, first: u64) -> Result<u64, StoreError> {
        let path = segment_path(&self.dir, first);
        let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        self.segments
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&first);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(io_err("delete", &path, e)),
        }
    }

    /// Number of segment files (for tests and stats).
    pub fn segment_count(&self) -> usize {
        self.segments
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }
}

/// Writes every slice, in order, with as few `writev` calls as the kernel
/// allows (no copy of the batch into one buffer).
fn write_all_vectored(mut file: &File, bodies: &[&[u8]]) -> std::io::Result<()> {
    use std::io::IoSlice;
    const MAX_IOV: usize = 1024; // IOV_MAX on Linux
    for chunk in bodies.chunks(MAX_IOV) {
        let mut slices: Vec<IoSlice<'_>> = chunk.iter().map(|b| IoSlice::new(b)).collect();
        let mut rest = &mut slices[..];
        while !rest.is_empty() {
            match file.write_vectored(rest) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => IoSlice::advance_slices(&mut rest, n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}
