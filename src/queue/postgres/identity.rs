//! The identity map (MAPPING.md → Identity) in `shoprelay_identity`: one row
//! per (scope, kind, key), shared by every relay, so a customer learned by
//! one relay's webhook names the events another relay maps.

use super::{PgStore, pg_err, pool_err, to_i64};
use crate::mapping::IdKind;
use crate::queue::StoreError;
use crate::queue::identity::REFRESH_MS;

fn kind(k: IdKind) -> String {
    char::from(k.as_byte()).to_string()
}

/// The smallest string above every string starting with `prefix` (None:
/// no bound), for an index range scan.
fn upper_bound(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = (last as u32 + 1..=char::MAX as u32).find_map(char::from_u32);
        if let Some(n) = next {
            chars.push(n);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

impl PgStore {
    pub(super) fn identity_read(
        &self,
        scope: &str,
        k: IdKind,
        key: &str,
    ) -> Result<Option<String>, StoreError> {
        let (scope, k, key) = (scope.to_string(), kind(k), key.to_string());
        self.call(move |pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            let stmt = c
                .prepare_cached(
                    "SELECT value FROM shoprelay_identity WHERE scope = $1 AND kind = $2 AND key = $3",
                )
                .await
                .map_err(pg_err)?;
            let row = c.query_opt(&stmt, &[&scope, &k, &key]).await.map_err(pg_err)?;
            Ok(row.map(|r| r.get(0)))
        })
    }

    pub(super) fn identity_prefix(
        &self,
        scope: &str,
        k: IdKind,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let (scope, k) = (scope.to_string(), kind(k));
        let (from, to) = (prefix.to_string(), upper_bound(prefix));
        self.call(move |pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            let rows = c
                .query(
                    "SELECT key, value FROM shoprelay_identity
                      WHERE scope = $1 AND kind = $2 AND key >= $3
                        AND ($4::text IS NULL OR key < $4)
                      ORDER BY key LIMIT $5",
                    &[&scope, &k, &from, &to, &(limit as i64)],
                )
                .await
                .map_err(pg_err)?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    }

    pub(super) fn identity_write(
        &self,
        scope: &str,
        entries: &[(IdKind, String, String)],
        now_ms: u64,
    ) -> Result<(), StoreError> {
        // One row per key (the last entry wins), in key order: an upsert may
        // not touch a row twice, and relays writing the same keys lock them
        // in the same order.
        let mut rows: std::collections::BTreeMap<(String, String), String> = Default::default();
        for (k, key, value) in entries {
            rows.insert((kind(*k), key.clone()), value.clone());
        }
        if rows.is_empty() {
            return Ok(());
        }
        let (mut kinds, mut keys, mut values) = (Vec::new(), Vec::new(), Vec::new());
        for ((k, key), v) in rows {
            kinds.push(k);
            keys.push(key);
            values.push(v);
        }
        let scope = scope.to_string();
        // Entries unchanged and seen within a day are left out by a plain
        // read before the upsert: an upsert locks every row it conflicts
        // with, even one its WHERE then leaves alone, and the lock makes the
        // statement a write that waits for a log flush at commit. Every
        // delivery of a customer's webhooks writes the same entries, so with
        // the lock they queued up behind each other's flushes.
        self.call(move |pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            let stmt = c
                .prepare_cached(
                    "INSERT INTO shoprelay_identity AS i (scope, kind, key, value, seen_at_ms)
                     SELECT $1, u.k, u.key, u.v, $5
                       FROM unnest($2::text[], $3::text[], $4::text[]) AS u(k, key, v)
                      WHERE NOT EXISTS (
                            SELECT 1 FROM shoprelay_identity s
                             WHERE s.scope = $1 AND s.kind = u.k AND s.key = u.key
                               AND s.value = u.v AND s.seen_at_ms >= $5::int8 - $6::int8)
                     ON CONFLICT (scope, kind, key) DO UPDATE
                        SET value = EXCLUDED.value, seen_at_ms = EXCLUDED.seen_at_ms
                      WHERE i.value IS DISTINCT FROM EXCLUDED.value
                         OR i.seen_at_ms < EXCLUDED.seen_at_ms - $6",
                )
                .await
                .map_err(pg_err)?;
            c.execute(
                &stmt,
                &[
                    &scope,
                    &kinds,
                    &keys,
                    &values,
                    &to_i64(now_ms),
                    &to_i64(REFRESH_MS),
                ],
            )
            .await
            .map_err(pg_err)?;
            Ok(())
        })
    }

    pub(super) fn identity_remove(
        &self,
        scope: &str,
        gone: &[(IdKind, String)],
    ) -> Result<(), StoreError> {
        if gone.is_empty() {
            return Ok(());
        }
        let mut pairs: Vec<(String, String)> = gone
            .iter()
            .map(|(k, key)| (kind(*k), key.clone()))
            .collect();
        pairs.sort();
        pairs.dedup();
        let (kinds, keys): (Vec<String>, Vec<String>) = pairs.into_iter().unzip();
        let scope = scope.to_string();
        self.call(move |pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            c.execute(
                "DELETE FROM shoprelay_identity i
                  USING unnest($2::text[], $3::text[]) AS u(k, key)
                  WHERE i.scope = $1 AND i.kind = u.k AND i.key = u.key",
                &[&scope, &kinds, &keys],
            )
            .await
            .map_err(pg_err)?;
            Ok(())
        })
    }

    pub(super) fn identity_remove_scope(&self, scope: &str) -> Result<u64, StoreError> {
        let scope = scope.to_string();
        self.call(move |pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            c.execute("DELETE FROM shoprelay_identity WHERE scope = $1", &[&scope])
                .await
                .map_err(pg_err)
        })
    }

    pub(super) fn identity_remove_before(&self, before_ms: u64) -> Result<usize, StoreError> {
        self.delete_before(
            "DELETE FROM shoprelay_identity WHERE ctid IN (
                 SELECT ctid FROM shoprelay_identity WHERE seen_at_ms < $1 LIMIT $2)",
            before_ms,
        )
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn upper_bounds_end_a_prefix_range() {
        assert_eq!(super::upper_bound("7/").as_deref(), Some("70"));
        assert_eq!(super::upper_bound(""), None);
        assert_eq!(super::upper_bound("a\u{10FFFF}").as_deref(), Some("b"));
    }
}
