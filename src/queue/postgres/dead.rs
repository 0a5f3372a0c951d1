//! Dead letters: rows of `shoprelay_deliveries` with `dead_at_ms` set, listed,
//! replayed and purged from the database, so every relay answers for all.

use super::accept::notify;
use super::claims::{RECORD, WEBHOOK, forget_webhooks, record, webhook};
use super::{PgStore, pg_err, pool_err, to_i64};
use crate::queue::{DeadLetter, DeliveryId, StoreError};

impl PgStore {
    pub(super) fn list_dead(
        &self,
        after: Option<DeliveryId>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let (w, s) = after.map_or((-1, -1), |a| (to_i64(a.webhook), a.slot as i16));
        let rows = self.call(move |pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            c.query(
                &format!(
                    "SELECT {RECORD}, {WEBHOOK}
                       FROM shoprelay_deliveries d
                       LEFT JOIN shoprelay_webhooks w ON w.id = d.webhook_id
                      WHERE d.dead_at_ms IS NOT NULL AND (d.webhook_id, d.slot) > ($1, $2)
                      ORDER BY d.webhook_id, d.slot
                      LIMIT $3"
                ),
                &[&w, &s, &(limit as i64)],
            )
            .await
            .map_err(pg_err)
        })?;
        rows.iter().map(dead_letter).collect()
    }

    pub(super) fn one_dead(&self, id: DeliveryId) -> Result<Option<DeadLetter>, StoreError> {
        let rows = self.call(move |pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            c.query(
                &format!(
                    "SELECT {RECORD}, {WEBHOOK}
                       FROM shoprelay_deliveries d
                       LEFT JOIN shoprelay_webhooks w ON w.id = d.webhook_id
                      WHERE d.dead_at_ms IS NOT NULL AND d.webhook_id = $1 AND d.slot = $2"
                ),
                &[&to_i64(id.webhook), &(id.slot as i16)],
            )
            .await
            .map_err(pg_err)
        })?;
        rows.first().map(dead_letter).transpose()
    }

    /// Pending again, due now, with a fresh retry window; the lane is woken
    /// on every relay.
    pub(super) fn replay_dead(
        &self,
        id: DeliveryId,
        now_ms: u64,
    ) -> Result<Option<String>, StoreError> {
        let instance = self.instance;
        self.call(move |pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            let lane: Option<String> = c
                .query_opt(
                    "WITH u AS (
                         UPDATE shoprelay_deliveries
                            SET dead_at_ms = NULL, dead_reason = NULL, due_ms = $3, ready_ms = $3,
                                attempts = 0, first_attempt_at_ms = NULL,
                                lease_owner = NULL, lease_token = NULL
                          WHERE webhook_id = $1 AND slot = $2 AND dead_at_ms IS NOT NULL
                      RETURNING lane),
                     counted AS (
                         INSERT INTO shoprelay_lane_deltas (lane, pending, dead)
                         SELECT lane, 1, -1 FROM u)
                     SELECT lane FROM u",
                    &[&to_i64(id.webhook), &(id.slot as i16), &to_i64(now_ms)],
                )
                .await
                .map_err(pg_err)?
                .map(|r| r.get(0));
            drop(c);
            if let Some(l) = &lane {
                notify(pool, instance, vec![l.clone()]).await;
            }
            Ok(lane)
        })
    }

    pub(super) fn purge_dead(&self, id: DeliveryId) -> Result<bool, StoreError> {
        self.call(move |pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            let gone: Vec<i64> = c
                .query(
                    "WITH gone AS (
                         DELETE FROM shoprelay_deliveries
                          WHERE webhook_id = $1 AND slot = $2 AND dead_at_ms IS NOT NULL
                      RETURNING webhook_id, lane),
                     counted AS (
                         INSERT INTO shoprelay_lane_deltas (lane, pending, dead)
                         SELECT lane, 0, -1 FROM gone)
                     SELECT webhook_id FROM gone",
                    &[&to_i64(id.webhook), &(id.slot as i16)],
                )
                .await
                .map_err(pg_err)?
                .iter()
                .map(|r| r.get(0))
                .collect();
            forget_webhooks(&c, &gone).await?;
            Ok(!gone.is_empty())
        })
    }
}

fn dead_letter(r: &tokio_postgres::Row) -> Result<DeadLetter, StoreError> {
    Ok(DeadLetter {
        record: record(r),
        webhook: webhook(r, 12)?,
    })
}
