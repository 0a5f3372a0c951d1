//! Claims and outcomes. A claim leases a lane's ready deliveries with
//! `FOR UPDATE SKIP LOCKED` (relays claiming the same lane at once take
//! different rows and never wait on each other): it writes the owner, a
//! fresh token, and the lease's end as the row's `ready_ms`, so a relay that
//! dies leaves rows that become ready again when their leases end. Every
//! outcome is written only where owner and token still match: once a lease
//! has ended and been taken again, a late outcome changes nothing. A burial
//! or a completion writes its change of the lane's counts in the same
//! statement (`retention.rs`, counts).

use bytes::Bytes;
use tokio_postgres::Row;

use super::{PgStore, pg_err, pool_err, to_i64, to_u64};
use crate::queue::{Claimed, DeliveryId, DeliveryRecord, DeliveryState, StoreError};
use crate::sources::{SourceKind, Webhook, WebhookMeta};

/// The delivery columns every read returns, in this order (`record`).
pub(super) const RECORD: &str = "d.webhook_id, d.slot, d.lane, d.targets, d.due_ms, d.attempts, \
     d.first_attempt_at_ms, d.events_done, d.last_error, d.last_status, d.dead_at_ms, d.dead_reason";
/// The webhook columns after them (`webhook`), from a LEFT JOIN as `w`.
pub(super) const WEBHOOK: &str = "w.id, w.kind, w.source, w.topic, w.shop_domain, w.webhook_id, \
     w.event_id, w.api_version, w.triggered_at, w.dedup_id, w.received_at_ms, w.body";
const RECORD_COLUMNS: usize = 12;

const CLAIM: &str = "
WITH c AS (
    UPDATE shoprelay_deliveries d
       SET ready_ms = $3, lease_owner = $4, lease_token = nextval('shoprelay_lease_tokens')
      FROM (SELECT webhook_id, slot FROM shoprelay_deliveries
             WHERE lane = $1 AND dead_at_ms IS NULL AND ready_ms <= $2
             ORDER BY ready_ms, webhook_id, slot
             LIMIT $5
             FOR UPDATE SKIP LOCKED) f
     WHERE d.webhook_id = f.webhook_id AND d.slot = f.slot
 RETURNING d.*
)
SELECT {RECORD}, d.lease_token, {WEBHOOK}
  FROM c d LEFT JOIN shoprelay_webhooks w ON w.id = d.webhook_id
 ORDER BY d.webhook_id, d.slot";

/// A delivery row (the first [`RECORD_COLUMNS`] columns) as a record.
pub(super) fn record(r: &Row) -> DeliveryRecord {
    let targets: Vec<String> = r.get(3);
    let dead_at: Option<i64> = r.get(10);
    DeliveryRecord {
        id: DeliveryId {
            webhook: to_u64(r.get(0)),
            slot: r.get::<_, i16>(1).clamp(0, u8::MAX as i16) as u8,
        },
        lane: r.get(2),
        targets,
        due_ms: to_u64(r.get(4)),
        attempts: r.get::<_, i32>(5).max(0) as u32,
        first_attempt_at_ms: r.get::<_, Option<i64>>(6).map(to_u64),
        events_done: r.get::<_, i32>(7).max(0) as u32,
        last_error: r.get(8),
        last_status: r
            .get::<_, Option<i32>>(9)
            .and_then(|s| u16::try_from(s).ok()),
        state: match dead_at {
            Some(at) => DeliveryState::Dead {
                dead_at_ms: to_u64(at),
                reason: r.get::<_, Option<String>>(11).unwrap_or_default(),
            },
            None => DeliveryState::Pending,
        },
    }
}

/// The webhook columns starting at `at`; None when the row is missing.
pub(super) fn webhook(r: &Row, at: usize) -> Result<Option<Webhook>, StoreError> {
    let Some(_id) = r.get::<_, Option<i64>>(at) else {
        return Ok(None);
    };
    let kind = match r.get::<_, &str>(at + 1) {
        "shopify" => SourceKind::Shopify,
        "convertedin" => SourceKind::Convertedin,
        other => {
            return Err(StoreError::Corrupt(format!(
                "webhook of unknown kind `{other}`"
            )));
        }
    };
    let meta = WebhookMeta {
        kind,
        source: r.get(at + 2),
        topic: r.get(at + 3),
        shop_domain: r.get(at + 4),
        webhook_id: r.get(at + 5),
        event_id: r.get(at + 6),
        api_version: r.get(at + 7),
        triggered_at: r.get(at + 8),
        dedup_id: r.get(at + 9),
        received_at_ms: to_u64(r.get(at + 10)),
    };
    Ok(Some(Webhook::from_store(
        meta,
        Bytes::from(r.get::<_, Vec<u8>>(at + 11)),
    )))
}

fn opt_i64(v: Option<u64>) -> Option<i64> {
    v.map(to_i64)
}

impl PgStore {
    pub(super) fn claim(
        &self,
        lane: &str,
        now_ms: u64,
        lease_until_ms: u64,
        limit: usize,
    ) -> Result<Vec<Claimed>, StoreError> {
        let (lane, owner) = (lane.to_string(), self.owner.clone());
        let rows = self.call(move |pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            let q = CLAIM
                .replace("{RECORD}", RECORD)
                .replace("{WEBHOOK}", WEBHOOK);
            let stmt = c.prepare_cached(&q).await.map_err(pg_err)?;
            c.query(
                &stmt,
                &[
                    &lane,
                    &to_i64(now_ms),
                    &to_i64(lease_until_ms),
                    &&*owner,
                    &(limit as i64),
                ],
            )
            .await
            .map_err(pg_err)
        })?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let mut rec = record(r);
            let lease = to_u64(r.get(RECORD_COLUMNS));
            match webhook(r, RECORD_COLUMNS + 1) {
                Ok(Some(webhook)) => out.push(Claimed {
                    record: rec,
                    webhook,
                    lease,
                }),
                missing => {
                    let why = match missing {
                        Err(e) => e.to_string(),
                        _ => "its webhook is missing from the database".to_string(),
                    };
                    tracing::error!(id = %rec.id, error = why, "delivery cannot be read; moved to the dead letters");
                    rec.state = DeliveryState::Dead {
                        dead_at_ms: now_ms,
                        reason: why,
                    };
                    self.settle(&rec, lease)?;
                }
            }
        }
        Ok(out)
    }

    pub(super) fn due_at(&self, lane: &str) -> Result<Option<u64>, StoreError> {
        let lane = lane.to_string();
        self.call(move |pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            let stmt = c
                .prepare_cached(
                    "SELECT min(ready_ms) FROM shoprelay_deliveries
                      WHERE lane = $1 AND dead_at_ms IS NULL",
                )
                .await
                .map_err(pg_err)?;
            let row = c.query_one(&stmt, &[&lane]).await.map_err(pg_err)?;
            Ok(row.get::<_, Option<i64>>(0).map(to_u64))
        })
    }

    /// Writes a pending record's new state, or buries it (`rec.state` Dead),
    /// if `lease` still holds it; the lease ends either way.
    pub(super) fn settle(&self, rec: &DeliveryRecord, lease: u64) -> Result<(), StoreError> {
        let (dead_at, reason) = match &rec.state {
            DeliveryState::Pending => (None, None),
            DeliveryState::Dead { dead_at_ms, reason } => {
                (Some(to_i64(*dead_at_ms)), Some(reason.clone()))
            }
        };
        let (rec, owner) = (rec.clone(), self.owner.clone());
        self.call(move |pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            let stmt = c
                .prepare_cached(
                    "WITH u AS (
                         UPDATE shoprelay_deliveries
                            SET due_ms = $3, ready_ms = $3, attempts = $4, first_attempt_at_ms = $5,
                                events_done = $6, last_error = $7, last_status = $8, targets = $9,
                                dead_at_ms = $10, dead_reason = $11,
                                lease_owner = NULL, lease_token = NULL
                          WHERE webhook_id = $1 AND slot = $2 AND dead_at_ms IS NULL
                            AND lease_token = $12 AND lease_owner = $13
                      RETURNING lane, dead_at_ms)
                     INSERT INTO shoprelay_lane_deltas (lane, pending, dead)
                     SELECT lane, -1, 1 FROM u WHERE dead_at_ms IS NOT NULL",
                )
                .await
                .map_err(pg_err)?;
            c.execute(
                &stmt,
                &[
                    &to_i64(rec.id.webhook),
                    &(rec.id.slot as i16),
                    &to_i64(rec.due_ms),
                    &(rec.attempts.min(i32::MAX as u32) as i32),
                    &opt_i64(rec.first_attempt_at_ms),
                    &(rec.events_done.min(i32::MAX as u32) as i32),
                    &rec.last_error,
                    &rec.last_status.map(i32::from),
                    &rec.targets,
                    &dead_at,
                    &reason,
                    &to_i64(lease),
                    &&*owner,
                ],
            )
            .await
            .map_err(pg_err)?;
            Ok(())
        })
    }

    /// Forgets delivered deliveries whose leases still hold, in one
    /// statement, then the webhooks nothing needs any more, in a second one
    /// sent with it.
    pub(super) fn complete(
        &self,
        lane: &str,
        done: &[(DeliveryId, u64)],
    ) -> Result<(), StoreError> {
        if done.is_empty() {
            return Ok(());
        }
        // A lease token is drawn from a sequence for each delivery a claim
        // takes, so it names one delivery: the token matching is the
        // delivery matching, and its lease still holding. The webhook ids
        // only lead to the rows through the primary key. (No join with
        // unnest: planned on the stale statistics of a queue that grew
        // fast, it rescanned the arrays for every row, 180 ms for 265.)
        let webhooks: Vec<i64> = done.iter().map(|(id, _)| to_i64(id.webhook)).collect();
        let tokens: Vec<i64> = done.iter().map(|(_, t)| to_i64(*t)).collect();
        let (lane, owner) = (lane.to_string(), self.owner.clone());
        let mut ids = webhooks.clone();
        ids.sort_unstable();
        ids.dedup();
        self.call(move |pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            let stmt = c
                .prepare_cached(
                    "WITH gone AS (
                         DELETE FROM shoprelay_deliveries d
                          WHERE d.webhook_id = ANY($2) AND d.lease_token = ANY($3)
                            AND d.lane = $1 AND d.lease_owner = $4 AND d.dead_at_ms IS NULL
                      RETURNING 1)
                     INSERT INTO shoprelay_lane_deltas (lane, pending, dead)
                     SELECT $1, -count(*), 0 FROM gone HAVING count(*) > 0",
                )
                .await
                .map_err(pg_err)?;
            // Sent together, one round trip; the server runs them in order,
            // each in its own transaction: the webhooks are looked at once
            // the completions are committed, and the completions stand even
            // if that fails (retention finds what it missed).
            let owner: &str = &owner;
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
                [&lane, &webhooks, &tokens, &owner];
            let (completed, forgot) =
                tokio::join!(c.execute(&stmt, &params), forget_webhooks(&c, &ids));
            completed.map_err(pg_err)?;
            if let Err(e) = forgot {
                tracing::debug!(error = %e, "webhooks left to retention");
            }
            Ok(())
        })
    }
}

/// Deletes those of `ids` that no delivery needs any more. (`LIMIT 1` keeps
/// the `NOT EXISTS` a lookup by primary key per webhook: as an anti join,
/// planned on the stale statistics of a queue that grew fast, it hashed the
/// whole table, 15-40 ms a call.)
pub(super) async fn forget_webhooks(
    c: &deadpool_postgres::Object,
    ids: &[i64],
) -> Result<u64, StoreError> {
    if ids.is_empty() {
        return Ok(0);
    }
    let stmt = c
        .prepare_cached(
            "DELETE FROM shoprelay_webhooks w
              WHERE w.id = ANY($1)
                AND NOT EXISTS (SELECT 1 FROM shoprelay_deliveries d
                                 WHERE d.webhook_id = w.id LIMIT 1)",
        )
        .await
        .map_err(pg_err)?;
    c.execute(&stmt, &[&ids]).await.map_err(pg_err)
}
