//! Accepts: one transaction per group-commit batch. Dedup is the primary key
//! of `shoprelay_dedup` with `ON CONFLICT DO NOTHING`, which also holds across
//! relays: a second relay inserting the same key waits for the first's
//! transaction and, once it commits, inserts nothing and answers `duplicate`.
//! The answer goes out after COMMIT returns, and connections run with
//! `synchronous_commit = on`, so it is on the database's disk. The lanes'
//! pending counts grow in the same statement as their deliveries
//! (`retention.rs`, counts).

use std::collections::{HashMap, HashSet};

use deadpool_postgres::Pool;

use super::{PgStore, pg_err, pool_err, to_i64, to_u64};
use crate::queue::embedded::dedup_key;
use crate::queue::{Accept, AcceptOutcome, StoreError, WebhookId};

/// The NOTIFY channel that wakes lanes; the payload is `INSTANCE LANE`.
pub(super) const CHANNEL: &str = "shoprelay_lanes";

type Key = [u8; 16];

fn key(a: &Accept) -> Key {
    dedup_key(a.webhook.meta()).to_le_bytes()
}

/// Column arrays of the webhooks and deliveries to insert.
#[derive(Default)]
struct Rows {
    id: Vec<i64>,
    kind: Vec<&'static str>,
    source: Vec<String>,
    topic: Vec<String>,
    shop_domain: Vec<Option<String>>,
    webhook_id: Vec<Option<String>>,
    event_id: Vec<Option<String>>,
    api_version: Vec<Option<String>>,
    triggered_at: Vec<Option<String>>,
    dedup_id: Vec<String>,
    received_at_ms: Vec<i64>,
    body: Vec<Vec<u8>>,
    d_webhook: Vec<i64>,
    d_slot: Vec<i16>,
    d_lane: Vec<String>,
    d_targets: Vec<String>,
}

impl Rows {
    fn push(&mut self, id: i64, a: &Accept) {
        let m = a.webhook.meta();
        self.id.push(id);
        self.kind.push(m.kind.as_str());
        self.source.push(m.source.clone());
        self.topic.push(m.topic.clone());
        self.shop_domain.push(m.shop_domain.clone());
        self.webhook_id.push(m.webhook_id.clone());
        self.event_id.push(m.event_id.clone());
        self.api_version.push(m.api_version.clone());
        self.triggered_at.push(m.triggered_at.clone());
        self.dedup_id.push(m.dedup_id.clone());
        self.received_at_ms.push(to_i64(m.received_at_ms));
        self.body.push(a.webhook.body().to_vec());
        for (slot, d) in a.deliveries.iter().enumerate() {
            self.d_webhook.push(id);
            self.d_slot.push(slot as i16);
            self.d_lane.push(d.lane.clone());
            // Destination names are letters, digits, `_` and `-` (config).
            self.d_targets.push(d.targets.join(","));
        }
    }
}

impl PgStore {
    pub(super) fn accept(
        &self,
        items: &[Accept],
        now_ms: u64,
    ) -> Result<Vec<AcceptOutcome>, StoreError> {
        // The first copy of each key within the batch is the one written.
        let keys: Vec<Key> = items.iter().map(key).collect();
        let mut first: HashMap<Key, usize> = HashMap::new();
        let mut unique = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            first.entry(*k).or_insert_with(|| {
                unique.push(i);
                i
            });
        }
        let owned: Vec<(Key, Accept)> = unique
            .iter()
            .map(|&i| (keys[i], items[i].clone()))
            .collect();
        let instance = self.instance;
        let ids: HashMap<Key, (WebhookId, bool)> = self.call(move |pool| async move {
            let (ids, lanes) = write(&pool, owned, now_ms).await?;
            if !lanes.is_empty() {
                // After COMMIT, outside it: a lost notification only delays
                // another relay until its lanes look again.
                tokio::spawn(notify(pool, instance, lanes));
            }
            Ok(ids)
        })?;
        keys.iter()
            .enumerate()
            .map(|(i, k)| match ids.get(k) {
                Some(&(id, true)) if first[k] == i => Ok(AcceptOutcome::Queued(id)),
                Some(&(id, _)) => Ok(AcceptOutcome::Duplicate(id)),
                None => Err(StoreError::Backend(
                    "a dedup key vanished during its accept; retry".into(),
                )),
            })
            .collect()
    }

    pub(super) fn accepted_ids(
        &self,
        items: &[Accept],
    ) -> Result<Vec<Option<WebhookId>>, StoreError> {
        let keys: Vec<Key> = items.iter().map(key).collect();
        let ask: Vec<Vec<u8>> = keys.iter().map(|k| k.to_vec()).collect();
        let found = self.call(move |pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            let rows = c
                .query(
                    "SELECT key, webhook_id FROM shoprelay_dedup WHERE key = ANY($1)",
                    &[&ask],
                )
                .await
                .map_err(pg_err)?;
            Ok(rows
                .iter()
                .map(|r| (r.get::<_, Vec<u8>>(0), to_u64(r.get(1))))
                .collect::<HashMap<_, _>>())
        })?;
        Ok(keys.iter().map(|k| found.get(&k[..]).copied()).collect())
    }
}

/// Writes the batch; returns each key's webhook id and whether this batch
/// stored it, and the lanes that got work.
async fn write(
    pool: &Pool,
    mut owned: Vec<(Key, Accept)>,
    now_ms: u64,
) -> Result<(HashMap<Key, (WebhookId, bool)>, Vec<String>), StoreError> {
    let mut client = pool.get().await.map_err(pool_err)?;
    let tx = client.transaction().await.map_err(pg_err)?;
    let next = tx
        .prepare_cached("SELECT nextval('shoprelay_webhook_ids') FROM generate_series(1, $1)")
        .await
        .map_err(pg_err)?;
    let mut fresh: Vec<i64> = tx
        .query(&next, &[&(owned.len() as i32)])
        .await
        .map_err(pg_err)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    // Ids grow in the order the webhooks came; rows go in key order, so two
    // batches sharing keys lock them in the same order (no deadlock).
    fresh.sort_unstable();
    let mut with_ids: Vec<(Key, i64, Accept)> = owned
        .drain(..)
        .zip(fresh)
        .map(|((k, a), id)| (k, id, a))
        .collect();
    with_ids.sort_unstable_by_key(|(k, _, _)| *k);
    let keys: Vec<Vec<u8>> = with_ids.iter().map(|(k, _, _)| k.to_vec()).collect();
    let ids: Vec<i64> = with_ids.iter().map(|(_, id, _)| *id).collect();
    let at: Vec<i64> = with_ids
        .iter()
        .map(|(_, _, a)| to_i64(a.webhook.meta().received_at_ms))
        .collect();
    let insert = tx
        .prepare_cached(
            "INSERT INTO shoprelay_dedup (key, webhook_id, accepted_at_ms)
             SELECT * FROM unnest($1::bytea[], $2::int8[], $3::int8[])
             ON CONFLICT DO NOTHING RETURNING key",
        )
        .await
        .map_err(pg_err)?;
    let inserted: HashSet<Vec<u8>> = tx
        .query(&insert, &[&keys, &ids, &at])
        .await
        .map_err(pg_err)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut out = HashMap::with_capacity(with_ids.len());
    let mut rows = Rows::default();
    let mut lanes = Vec::new();
    let mut taken = Vec::new();
    for (k, id, a) in &with_ids {
        if inserted.contains(&k[..]) {
            out.insert(*k, (to_u64(*id), true));
            if !a.deliveries.is_empty() {
                rows.push(*id, a);
                lanes.extend(a.deliveries.iter().map(|d| d.lane.clone()));
            }
        } else {
            taken.push(k.to_vec());
        }
    }
    if !taken.is_empty() {
        for r in tx
            .query(
                "SELECT key, webhook_id FROM shoprelay_dedup WHERE key = ANY($1)",
                &[&taken],
            )
            .await
            .map_err(pg_err)?
        {
            let k: Vec<u8> = r.get(0);
            if let Ok(k) = Key::try_from(&k[..]) {
                out.insert(k, (to_u64(r.get(1)), false));
            }
        }
    }
    if !rows.id.is_empty() {
        let webhooks = tx
            .prepare_cached(
                "INSERT INTO shoprelay_webhooks (id, kind, source, topic, shop_domain, webhook_id,
                     event_id, api_version, triggered_at, dedup_id, received_at_ms, body)
                 SELECT * FROM unnest($1::int8[], $2::text[], $3::text[], $4::text[], $5::text[],
                     $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::int8[],
                     $12::bytea[])",
            )
            .await
            .map_err(pg_err)?;
        let deliveries = tx
            .prepare_cached(
                "WITH d AS (
                     INSERT INTO shoprelay_deliveries (webhook_id, slot, lane, targets, due_ms, ready_ms)
                     SELECT w, s, l, string_to_array(t, ','), $5, $5
                       FROM unnest($1::int8[], $2::int2[], $3::text[], $4::text[]) AS u(w, s, l, t)
                     RETURNING lane)
                 INSERT INTO shoprelay_lane_deltas (lane, pending, dead)
                 SELECT lane, count(*), 0 FROM d GROUP BY lane",
            )
            .await
            .map_err(pg_err)?;
        let now = to_i64(now_ms);
        let wp: [&(dyn tokio_postgres::types::ToSql + Sync); 12] = [
            &rows.id,
            &rows.kind,
            &rows.source,
            &rows.topic,
            &rows.shop_domain,
            &rows.webhook_id,
            &rows.event_id,
            &rows.api_version,
            &rows.triggered_at,
            &rows.dedup_id,
            &rows.received_at_ms,
            &rows.body,
        ];
        let dp: [&(dyn tokio_postgres::types::ToSql + Sync); 5] = [
            &rows.d_webhook,
            &rows.d_slot,
            &rows.d_lane,
            &rows.d_targets,
            &now,
        ];
        // Sent together: the connection pipelines them.
        let (w, d) = tokio::join!(tx.execute(&webhooks, &wp), tx.execute(&deliveries, &dp));
        w.map_err(pg_err)?;
        d.map_err(pg_err)?;
    }
    tx.commit().await.map_err(pg_err)?;
    lanes.sort_unstable();
    lanes.dedup();
    Ok((out, lanes))
}

/// Tells every relay's lanes that `lanes` have new work.
pub(super) async fn notify(pool: Pool, instance: u64, lanes: Vec<String>) {
    let payloads: Vec<String> = lanes
        .iter()
        .map(|l| format!("{instance:016x} {l}"))
        .collect();
    let sent = async {
        let c = pool.get().await.map_err(pool_err)?;
        c.execute(
            "SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p",
            &[&CHANNEL, &payloads],
        )
        .await
        .map_err(pg_err)
    };
    if let Err(e) = sent.await {
        tracing::debug!(error = %e, "could not notify other relays; they find the work when they next look");
    }
}
