//! What the queue holds (lanes, stats), and keeping every table bounded.
//!
//! Counts: stats and /metrics never count the backlog. Each statement that
//! adds, buries, replays or removes deliveries inserts its change of the
//! lane's counts into `shoprelay_lane_deltas` (in the same statement, so in
//! the same transaction); every second a relay folds the deltas into
//! `shoprelay_lane_counts` under an advisory lock. A scrape reads both in
//! one snapshot, so it is exact, and costs the number of lanes plus about a
//! second's deltas (a few hundred rows at 10k webhooks/s), whatever is
//! pending.
//!
//! Bounded tables:
//! delivered rows are deleted as their completions are written (in batches
//! per lane, `claims.rs`), dedup keys after `dedup_window` (in batches here),
//! and webhooks once no delivery needs them (at completion or purge, and
//! here for any a race left behind).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use super::{DELETE_BATCH, PgStore, delete_in_batches, pg_err, pool_err, to_u64};
use crate::queue::{LaneStats, StoreError};

/// How often `flush` looks for webhooks no delivery needs.
pub(super) const EVERY: Duration = Duration::from_secs(30);
/// How often `flush` folds the lanes' count deltas (the relay flushes every
/// 250 ms): a scrape adds up at most about this long's deltas.
pub(super) const FOLD_EVERY: Duration = Duration::from_secs(1);
/// `pg_try_advisory_xact_lock` key of the fold (MIGRATION_LOCK + 1).
const FOLD_LOCK: i64 = 0x73_686f_7072_656d;

/// The lanes with pending deliveries: one index seek per lane (a loose
/// index scan), not a scan of the queue.
pub(super) const LANES: &str = "WITH RECURSIVE l(lane) AS (
         (SELECT lane FROM shoprelay_deliveries WHERE dead_at_ms IS NULL
           ORDER BY lane LIMIT 1)
         UNION ALL
         SELECT (SELECT d.lane FROM shoprelay_deliveries d
                  WHERE d.dead_at_ms IS NULL AND d.lane > l.lane
                  ORDER BY d.lane LIMIT 1)
           FROM l WHERE l.lane IS NOT NULL
     )
     SELECT lane FROM l WHERE lane IS NOT NULL";

impl PgStore {
    /// One index seek per lane (a loose index scan), not a scan of the queue.
    pub(super) fn lanes_with_work(&self) -> Result<Vec<String>, StoreError> {
        self.call(|pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            let rows = c.query(LANES, &[]).await.map_err(pg_err)?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
    }

    /// The counts (`shoprelay_lane_counts` plus the deltas not folded yet,
    /// in one snapshot), then each lane's oldest due time in two index
    /// seeks: O(lanes + deltas of the last second), whatever the backlog.
    pub(super) fn lane_stats(&self) -> Result<(BTreeMap<String, LaneStats>, u64), StoreError> {
        self.call(|pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            let counts = c
                .prepare_cached(
                    "SELECT lane, sum(pending)::int8, sum(dead)::int8
                       FROM (SELECT lane, pending, dead FROM shoprelay_lane_counts
                             UNION ALL
                             SELECT lane, pending, dead FROM shoprelay_lane_deltas) t
                      GROUP BY lane",
                )
                .await
                .map_err(pg_err)?;
            let mut dead = 0;
            let mut pending = Vec::new();
            for r in c.query(&counts, &[]).await.map_err(pg_err)? {
                dead += r.get::<_, i64>(2);
                let n: i64 = r.get(1);
                if n > 0 {
                    pending.push((r.get::<_, String>(0), to_u64(n)));
                }
            }
            let names: Vec<&str> = pending.iter().map(|(l, _)| l.as_str()).collect();
            // Waiting ones are due at their ready_ms; one in flight has its
            // lease's end there, so its due_ms comes from the leased index.
            let oldest = c
                .prepare_cached(
                    "SELECT l, least(
                         (SELECT ready_ms FROM shoprelay_deliveries
                           WHERE lane = l AND dead_at_ms IS NULL ORDER BY ready_ms LIMIT 1),
                         (SELECT due_ms FROM shoprelay_deliveries
                           WHERE lane = l AND lease_token IS NOT NULL AND dead_at_ms IS NULL
                           ORDER BY due_ms LIMIT 1))
                       FROM unnest($1::text[]) AS l",
                )
                .await
                .map_err(pg_err)?;
            let due: HashMap<String, Option<i64>> = c
                .query(&oldest, &[&names])
                .await
                .map_err(pg_err)?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            let lanes = pending
                .into_iter()
                .map(|(lane, n)| {
                    let stats = LaneStats {
                        pending: n,
                        oldest_due_ms: due.get(&lane).copied().flatten().map(to_u64),
                    };
                    (lane, stats)
                })
                .collect();
            Ok((lanes, to_u64(dead)))
        })
    }

    /// At most every [`FOLD_EVERY`]: adds the deltas up into
    /// `shoprelay_lane_counts`. One relay at a time (the others skip); a
    /// failure leaves the deltas for the next time.
    pub(super) fn fold(&self) {
        {
            let mut last = self.last_fold.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|t| t.elapsed() < FOLD_EVERY) {
                return;
            }
            *last = Some(Instant::now());
        }
        if let Err(e) = self.fold_now() {
            tracing::debug!(error = %e, "lane counts not folded; next time");
        }
    }

    /// The fold itself; false when another relay was folding.
    pub(super) fn fold_now(&self) -> Result<bool, StoreError> {
        self.call(|pool| async move {
            let mut c = pool.get().await.map_err(pool_err)?;
            let tx = c.transaction().await.map_err(pg_err)?;
            let locked: bool = tx
                .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&FOLD_LOCK])
                .await
                .map_err(pg_err)?
                .get(0);
            if !locked {
                return Ok(false);
            }
            // Nothing is acknowledged on this commit: a fold lost in a crash
            // leaves its deltas in place, as if it had not run.
            tx.batch_execute(
                "SET LOCAL synchronous_commit = off;
                 WITH d AS (DELETE FROM shoprelay_lane_deltas RETURNING lane, pending, dead)
                 INSERT INTO shoprelay_lane_counts AS c (lane, pending, dead)
                 SELECT lane, sum(pending), sum(dead) FROM d GROUP BY lane
                 ON CONFLICT (lane) DO UPDATE
                    SET pending = c.pending + excluded.pending, dead = c.dead + excluded.dead;
                 DELETE FROM shoprelay_lane_counts WHERE pending = 0 AND dead = 0;",
            )
            .await
            .map_err(pg_err)?;
            tx.commit().await.map_err(pg_err)?;
            Ok(true)
        })
    }

    /// Deletes dedup keys of webhooks received before `before_ms`, a batch
    /// per statement.
    pub(super) fn expire_dedup_keys(&self, before_ms: u64) -> Result<usize, StoreError> {
        self.delete_before(
            "DELETE FROM shoprelay_dedup WHERE key IN (
                 SELECT key FROM shoprelay_dedup WHERE accepted_at_ms < $1 LIMIT $2)",
            before_ms,
        )
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
            delete_in_batches(
                &c,
                "DELETE FROM shoprelay_webhooks WHERE id IN (
                     SELECT w.id FROM shoprelay_webhooks w
                      WHERE NOT EXISTS (SELECT 1 FROM shoprelay_deliveries d
                                         WHERE d.webhook_id = w.id)
                      LIMIT $1)",
                &[&DELETE_BATCH],
            )
            .await
        })
    }
}
