//! The log's file I/O, behind a small trait so that a test can cut the power.
//!
//! Everything the log and the checkpoint rely on for durability goes through
//! [`Fs`]: appends, `fdatasync`, directory fsyncs, renames. [`RealFs`] is the
//! operating system; the power-cut tests use an implementation that keeps
//! only what was synced when the "power" is cut (`tests/power_cut.rs` in this
//! module). sled is not behind it: sled is an index, rebuilt from the log.

use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One open file of the log.
pub trait LogFile: Send + Sync {
    /// Appends every slice in order (one `writev` where the kernel allows).
    fn append(&self, bufs: &[&[u8]]) -> io::Result<()>;
    /// `fdatasync`: what was appended is on stable storage once this returns.
    fn sync_data(&self) -> io::Result<()>;
    /// Reads exactly `buf.len()` bytes at `offset`.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// The file's length.
    fn size(&self) -> io::Result<u64>;
    /// Cuts the file to `len` bytes (a torn tail, or a failed batch).
    fn truncate(&self, len: u64) -> io::Result<()>;
}

/// The directory operations the log needs.
pub trait Fs: Send + Sync {
    /// Creates `dir` and, for each directory it had to create, fsyncs its
    /// parent, so that the new entries survive a power cut.
    fn create_dir_durably(&self, dir: &Path) -> io::Result<()>;
    /// The names of the entries in `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Creates a new empty file for appending (its directory is not synced).
    fn create(&self, path: &Path) -> io::Result<Arc<dyn LogFile>>;
    /// Creates a new empty file and fsyncs its directory, so that its name
    /// is durable before anything written to it is relied on.
    fn create_durably(&self, path: &Path) -> Result<Arc<dyn LogFile>, crate::queue::StoreError> {
        let file = self.create(path).map_err(|e| io_err("create", path, e))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        self.sync_dir(dir).map_err(|e| io_err("sync", dir, e))?;
        Ok(file)
    }
    /// Opens an existing file for reading and truncating.
    fn open(&self, path: &Path) -> io::Result<Arc<dyn LogFile>>;
    /// Reads a whole (small) file; `None` when it does not exist.
    fn read(&self, path: &Path) -> io::Result<Option<Vec<u8>>>;
    /// Atomically replaces `path` with `bytes`: a temporary file, synced,
    /// renamed over it, then the directory synced.
    fn replace(&self, path: &Path, bytes: &[u8]) -> io::Result<()>;
    /// Removes a file (its directory is not synced).
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// fsyncs a directory, making creations, renames and removals in it durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// A storage error naming what failed on which path.
pub fn io_err(what: &str, path: &Path, e: io::Error) -> crate::queue::StoreError {
    crate::queue::StoreError::Backend(format!("{what} {}: {e}", path.display()))
}

/// The operating system's files.
#[derive(Clone, Copy, Debug, Default)]
pub struct RealFs;

struct RealFile(File);

impl LogFile for RealFile {
    fn append(&self, bufs: &[&[u8]]) -> io::Result<()> {
        write_all_vectored(&self.0, bufs)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    fn truncate(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)?;
        self.0.sync_all()
    }
}

impl Fs for RealFs {
    fn create_dir_durably(&self, dir: &Path) -> io::Result<()> {
        let mut missing: Vec<PathBuf> = Vec::new();
        let mut at = Some(dir);
        while let Some(d) = at {
            if d.as_os_str().is_empty() || d.exists() {
                break;
            }
            missing.push(d.to_path_buf());
            at = d.parent();
        }
        for d in missing.iter().rev() {
            match std::fs::create_dir(d) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
            // The new entry lives in the parent: sync it there.
            let parent = d.parent().filter(|p| !p.as_os_str().is_empty());
            self.sync_dir(parent.unwrap_or(Path::new(".")))?;
        }
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            if let Some(name) = entry?.file_name().to_str() {
                out.push(name.to_string());
            }
        }
        Ok(out)
    }

    fn create(&self, path: &Path) -> io::Result<Arc<dyn LogFile>> {
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .read(true)
            .open(path)?;
        Ok(Arc::new(RealFile(file)))
    }

    fn open(&self, path: &Path) -> io::Result<Arc<dyn LogFile>> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(Arc::new(RealFile(file)))
    }

    fn read(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        match std::fs::read(path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn replace(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let tmp = path.with_extension("tmp");
        {
            let mut f = File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        self.sync_dir(path.parent().unwrap_or(Path::new(".")))
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

/// Writes every slice, in order, with as few `writev` calls as the kernel
/// allows (no copy of the batch into one buffer).
fn write_all_vectored(mut file: &File, bufs: &[&[u8]]) -> io::Result<()> {
    const MAX_IOV: usize = 1024; // IOV_MAX on Linux
    for chunk in bufs.chunks(MAX_IOV) {
        let mut slices: Vec<IoSlice<'_>> = chunk.iter().map(|b| IoSlice::new(b)).collect();
        let mut rest = &mut slices[..];
        while !rest.is_empty() {
            match file.write_vectored(rest) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => IoSlice::advance_slices(&mut rest, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}
