//! What the queue holds (lanes, stats), and keeping every table bounded:
//! delivered rows are deleted as their completions are written (in batches
//! per lane, `claims.rs`), dedup keys after `dedup_window` (in batches here),
//! and webhooks once no delivery needs them (at completion or purge, and
//! here for any a race left behind).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::{PgStore, pg_err, pool_err, to_i64, to_u64};
use crate::queue::{LaneStats, StoreError};

/// Rows one delete statement takes at most: short transactions, short locks.
const BATCH: i64 = 5000;
/// How often `flush` looks for webhooks no delivery needs.
pub(super) const EVERY: Duration = Duration::from_secs(30);

impl PgStore {
    /// One index seek per lane (a loose index scan), not a scan of the queue.
    pub(super) fn lanes_with_work(&self) -> Result<Vec<String>, StoreError> {
        self.call(|pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            let rows = c
                .query(
                    "WITH RECURSIVE l(lane) AS (
                         (SELECT lane FROM shoprelay_deliveries WHERE dead_at_ms IS NULL
                           ORDER BY lane LIMIT 1)
                         UNION ALL
                         SELECT (SELECT d.lane FROM shoprelay_deliveries d
                                  WHERE d.dead_at_ms IS NULL AND d.lane > l.lane
                                  ORDER BY d.lane LIMIT 1)
                           FROM l WHERE l.lane IS NOT NULL
                     )
                     SELECT lane FROM l WHERE lane IS NOT NULL",
                    &[],
                )
                .await
                .map_err(pg_err)?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
    }

    pub(super) fn lane_stats(&self) -> Result<(BTreeMap<String, LaneStats>, u64), StoreError> {
        self.call(|pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            let lanes = c
                .query(
                    "SELECT lane, count(*), min(due_ms) FROM shoprelay_deliveries
                      WHERE dead_at_ms IS NULL GROUP BY lane",
                    &[],
                )
                .await
                .map_err(pg_err)?
                .iter()
                .map(|r| {
                    let stats = LaneStats {
                        pending: to_u64(r.get(1)),
                        oldest_due_ms: r.get::<_, Option<i64>>(2).map(to_u64),
                    };
                    (r.get(0), stats)
                })
                .collect();
            let dead: i64 = c
                .query_one(
                    "SELECT count(*) FROM shoprelay_deliveries WHERE dead_at_ms IS NOT NULL",
                    &[],
                )
                .await
                .map_err(pg_err)?
                .get(0);
            Ok((lanes, to_u64(dead)))
        })
    }

    /// Deletes dedup keys of webhooks received before `before_ms`, a batch
    /// per statement.
    pub(super) fn expire_dedup_keys(&self, before_ms: u64) -> Result<usize, StoreError> {
        self.call(move |pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            let mut total = 0;
            loop {
                let n = c
                    .execute(
                        "DELETE FROM shoprelay_dedup WHERE key IN (
                             SELECT key FROM shoprelay_dedup WHERE accepted_at_ms < $1 LIMIT $2)",
                        &[&to_i64(before_ms), &BATCH],
                    )
                    .await
                    .map_err(pg_err)?;
                total += n as usize;
                if n < BATCH as u64 {
                    return Ok(total);
                }
            }
        })
    }

    /// Every [`EVERY`]: deletes webhooks that no delivery needs (two lanes
    /// completing a webhook's last deliveries at once can each see the
    /// other's and leave it), in batches.
    pub(super) fn sweep(&self) -> Result<(), StoreError> {
        {
            let mut last = self.last_sweep.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|t| t.elapsed() < EVERY) {
                return Ok(());
            }
            *last = Some(Instant::now());
        }
        let n = self.sweep_now()?;
        if n > 0 {
            tracing::debug!(count = n, "deleted webhooks no delivery needs");
        }
        Ok(())
    }

    /// The sweep itself; returns how many webhooks it deleted.
    pub(super) fn sweep_now(&self) -> Result<u64, StoreError> {
        self.call(|pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            let mut total = 0;
            loop {
                let n = c
                    .execute(
                        "DELETE FROM shoprelay_webhooks WHERE id IN (
                             SELECT w.id FROM shoprelay_webhooks w
                              WHERE NOT EXISTS (SELECT 1 FROM shoprelay_deliveries d
                                                 WHERE d.webhook_id = w.id)
                              LIMIT $1)",
                        &[&BATCH],
                    )
                    .await
                    .map_err(pg_err)?;
                total += n;
                if n < BATCH as u64 {
                    return Ok(total);
                }
            }
        })
    }
}
