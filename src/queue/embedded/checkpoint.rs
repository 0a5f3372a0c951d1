//! The checkpoint: how far the index is durable, and where each lane's
//! cursor stood, so that start-up replays only the log after it.
//!
//! Written after the index is synced ([`super::index::Index::sync`]): a temp
//! file, `fsync`, rename over `data_dir/checkpoint`, directory `fsync`. A
//! checkpoint that is missing or unreadable means "replay everything": slower,
//! never wrong (replay is idempotent).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::io::Fs;
use super::log::Pos;

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
