//! The identity map in the index: prefix `i`, keyed by scope, kind and key,
//! each value led by when it was last seen (for retention). Made durable by
//! checkpoints like the rest of the index. What a crash loses since the last
//! checkpoint is learned again: the deliveries that taught it are after the
//! lanes' checkpointed cursors, so they are mapped again. A rebuilt index
//! starts with an empty map (docs/STORAGE.md).

use ::sled::Batch;

use super::EmbeddedStore;
use super::index::{be, err, read_u64};
use crate::mapping::IdKind;
use crate::queue::StoreError;
use crate::queue::identity::REFRESH_MS;

const PREFIX: u8 = b'i';

/// `i`, scope length (u16), scope, kind: the prefix of one scope's kind.
fn kind_prefix(scope: &str, kind: IdKind) -> Result<Vec<u8>, StoreError> {
    let len = u16::try_from(scope.len())
        .map_err(|_| StoreError::Backend("identity scope longer than 65,535 bytes".into()))?;
    let mut k = Vec::with_capacity(4 + scope.len());
    k.push(PREFIX);
    k.extend_from_slice(&len.to_be_bytes());
    k.extend_from_slice(scope.as_bytes());
    k.push(kind.as_byte());
    Ok(k)
}

fn entry_key(scope: &str, kind: IdKind, key: &str) -> Result<Vec<u8>, StoreError> {
    let mut k = kind_prefix(scope, kind)?;
    k.extend_from_slice(key.as_bytes());
    Ok(k)
}

fn decode_value(v: &[u8]) -> Result<(u64, String), StoreError> {
    if v.len() < 8 {
        return Err(StoreError::Corrupt(
            "identity entry shorter than its time".into(),
        ));
    }
    let text = std::str::from_utf8(&v[8..])
        .map_err(|_| StoreError::Corrupt("identity entry is not UTF-8".into()))?;
    Ok((read_u64(&v[..8]), text.to_owned()))
}

impl EmbeddedStore {
    pub(super) fn identity_read(
        &self,
        scope: &str,
        kind: IdKind,
        key: &str,
    ) -> Result<Option<String>, StoreError> {
        let k = entry_key(scope, kind, key)?;
        match self.index.tree.get(k).map_err(err)? {
            Some(v) => Ok(Some(decode_value(&v)?.1)),
            None => Ok(None),
        }
    }

    pub(super) fn identity_prefix(
        &self,
        scope: &str,
        kind: IdKind,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let head = kind_prefix(scope, kind)?;
        let mut start = head.clone();
        start.extend_from_slice(prefix.as_bytes());
        let mut out = Vec::new();
        for kv in self.index.tree.scan_prefix(&start).take(limit) {
            let (k, v) = kv.map_err(err)?;
            let key = std::str::from_utf8(&k[head.len()..])
                .map_err(|_| StoreError::Corrupt("identity key is not UTF-8".into()))?;
            out.push((key.to_owned(), decode_value(&v)?.1));
        }
        Ok(out)
    }

    pub(super) fn identity_write(
        &self,
        scope: &str,
        entries: &[(IdKind, String, String)],
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let mut batch = Batch::default();
        let mut any = false;
        for (kind, key, value) in entries {
            let k = entry_key(scope, *kind, key)?;
            if let Some(old) = self.index.tree.get(&k).map_err(err)? {
                let (seen, text) = decode_value(&old)?;
                if text == *value && now_ms.saturating_sub(seen) < REFRESH_MS {
                    continue;
                }
            }
            let mut v = Vec::with_capacity(8 + value.len());
            v.extend_from_slice(&be(now_ms));
            v.extend_from_slice(value.as_bytes());
            batch.insert(k, v);
            any = true;
        }
        if any {
            self.index.tree.apply_batch(batch).map_err(err)?;
        }
        Ok(())
    }

    pub(super) fn identity_remove(
        &self,
        scope: &str,
        keys: &[(IdKind, String)],
    ) -> Result<(), StoreError> {
        let mut batch = Batch::default();
        for (kind, key) in keys {
            batch.remove(entry_key(scope, *kind, key)?);
        }
        self.index.tree.apply_batch(batch).map_err(err)
    }

    pub(super) fn identity_remove_scope(&self, scope: &str) -> Result<u64, StoreError> {
        let head = kind_prefix(scope, IdKind::Customer)?;
        // Every kind of the scope: the prefix without its kind byte.
        let scope_prefix = &head[..head.len() - 1];
        self.remove_where(self.index.tree.scan_prefix(scope_prefix), |_| true)
    }

    pub(super) fn identity_remove_before(&self, before_ms: u64) -> Result<usize, StoreError> {
        let n = self.remove_where(self.index.tree.scan_prefix([PREFIX]), |v| {
            v.len() >= 8 && read_u64(&v[..8]) < before_ms
        })?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    /// Removes the scanned entries `keep_not` says to, in batches.
    fn remove_where(
        &self,
        scan: ::sled::Iter,
        remove: impl Fn(&[u8]) -> bool,
    ) -> Result<u64, StoreError> {
        const BATCH: usize = 4096;
        let mut batch = Batch::default();
        let (mut pending, mut removed) = (0usize, 0u64);
        for kv in scan {
            let (k, v) = kv.map_err(err)?;
            if !remove(&v) {
                continue;
            }
            batch.remove(k);
            pending += 1;
            removed += 1;
            if pending == BATCH {
                self.index
                    .tree
                    .apply_batch(std::mem::take(&mut batch))
                    .map_err(err)?;
                pending = 0;
            }
        }
        if pending > 0 {
            self.index.tree.apply_batch(batch).map_err(err)?;
        }
        Ok(removed)
    }
}
