//! A filesystem that forgets what was not synced when the power is cut: the
//! test implementation of [`Fs`] (as redb's and TigerBeetle's crash tests do).
//!
//! A file's bytes are durable up to its synced length (`fdatasync` makes all
//! of them so); a directory's entries are durable as of its last fsync. At a
//! cut every file keeps its durable bytes, optionally plus a torn piece of
//! what followed, and every directory keeps its durable entries.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rand::Rng;

use super::super::io::{Fs, LogFile};

#[derive(Default)]
struct Node {
    data: Vec<u8>,
    synced: usize,
}

#[derive(Default)]
struct State {
    /// Files by path (the inode: kept while any entry, durable or not, names it).
    files: BTreeMap<PathBuf, Arc<Mutex<Node>>>,
    /// Directory entries as the running program sees them.
    live: BTreeSet<PathBuf>,
    /// Directory entries that survive a cut.
    durable: BTreeSet<PathBuf>,
    /// Fail every `fdatasync` while set (the data stays written, unsynced).
    fail_syncs: bool,
}

/// The simulated filesystem; clones share it.
#[derive(Clone, Default)]
pub struct SimFs(Arc<Mutex<State>>);

struct SimFile {
    fs: SimFs,
    node: Arc<Mutex<Node>>,
}

fn not_found(p: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, p.display().to_string())
}

impl SimFs {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap()
    }

    /// Makes every `fdatasync` fail (ENOSPC-like) until called with false.
    pub fn fail_syncs(&self, on: bool) {
        self.state().fail_syncs = on;
    }

    /// Cuts the power: what was not synced is lost; with `torn`, a file may
    /// keep a random piece of its unsynced tail, and its last byte of that
    /// may be garbage.
    pub fn cut(&self, rng: &mut impl Rng, torn: bool) {
        let mut s = self.state();
        let durable = s.durable.clone();
        s.live = durable.clone();
        s.files.retain(|p, _| durable.contains(p));
        for node in s.files.values() {
            let mut n = node.lock().unwrap();
            let keep = if torn && n.data.len() > n.synced && rng.random_bool(0.5) {
                rng.random_range(n.synced..=n.data.len())
            } else {
                n.synced
            };
            n.data.truncate(keep);
            if keep > n.synced && rng.random_bool(0.3) {
                let last = keep - 1;
                n.data[last] ^= 0x5a;
            }
            n.synced = n.data.len();
        }
    }

    /// Flips one byte of a file (damage outside the relay).
    pub fn flip(&self, path: &Path, offset: usize) {
        let s = self.state();
        let mut n = s.files[path].lock().unwrap();
        n.data[offset] ^= 0xff;
    }

    /// The files under `dir`, by name.
    pub fn names(&self, dir: &Path) -> Vec<String> {
        self.list(dir).unwrap()
    }
}

impl LogFile for SimFile {
    fn append(&self, bufs: &[&[u8]]) -> io::Result<()> {
        let mut n = self.node.lock().unwrap();
        for b in bufs {
            n.data.extend_from_slice(b);
        }
        Ok(())
    }
    fn sync_data(&self) -> io::Result<()> {
        let s = self.fs.state();
        if s.fail_syncs {
            return Err(io::Error::other("simulated fdatasync failure"));
        }
        let mut n = self.node.lock().unwrap();
        n.synced = n.data.len();
        Ok(())
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let n = self.node.lock().unwrap();
        let at = offset as usize;
        if at + buf.len() > n.data.len() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.copy_from_slice(&n.data[at..at + buf.len()]);
        Ok(())
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.node.lock().unwrap().data.len() as u64)
    }
    fn truncate(&self, len: u64) -> io::Result<()> {
        let mut n = self.node.lock().unwrap();
        n.data.truncate(len as usize);
        n.synced = n.synced.min(n.data.len());
        Ok(())
    }
}

impl Fs for SimFs {
    fn create_dir_durably(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.state();
        s.live.insert(dir.to_path_buf());
        s.durable.insert(dir.to_path_buf());
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let s = self.state();
        Ok(s.live
            .iter()
            .filter(|p| p.parent() == Some(dir) && s.files.contains_key(*p))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
            .collect())
    }

    fn create(&self, path: &Path) -> io::Result<Arc<dyn LogFile>> {
        let mut s = self.state();
        if s.live.contains(path) {
            return Err(io::ErrorKind::AlreadyExists.into());
        }
        let node = Arc::new(Mutex::new(Node::default()));
        s.files.insert(path.to_path_buf(), node.clone());
        s.live.insert(path.to_path_buf());
        Ok(Arc::new(SimFile {
            fs: self.clone(),
            node,
        }))
    }

    fn open(&self, path: &Path) -> io::Result<Arc<dyn LogFile>> {
        let s = self.state();
        let node = s.files.get(path).filter(|_| s.live.contains(path));
        let node = node.ok_or_else(|| not_found(path))?.clone();
        Ok(Arc::new(SimFile {
            fs: self.clone(),
            node,
        }))
    }

    fn read(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        let s = self.state();
        Ok(s.files
            .get(path)
            .filter(|_| s.live.contains(path))
            .map(|n| n.lock().unwrap().data.clone()))
    }

    fn replace(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        // tmp + sync + rename + directory sync: durable and atomic on return.
        let mut s = self.state();
        let node = Arc::new(Mutex::new(Node {
            data: bytes.to_vec(),
            synced: bytes.len(),
        }));
        s.files.insert(path.to_path_buf(), node);
        s.live.insert(path.to_path_buf());
        s.durable.insert(path.to_path_buf());
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        self.state().live.remove(path);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.state();
        let State { live, durable, .. } = &mut *s;
        durable.retain(|p| p.parent() != Some(dir));
        for p in live.iter().filter(|p| p.parent() == Some(dir)) {
            durable.insert(p.clone());
        }
        Ok(())
    }
}
