//! Accepts: one statement per group-commit batch, in its own transaction.
//!
//! The statement ([`ACCEPT`]) takes the batch as column arrays (`unnest`)
//! and, in data-modifying CTEs, draws the ids from the sequence, inserts the
//! dedup keys with `ON CONFLICT DO NOTHING RETURNING`, and the webhooks and
//! deliveries of only the keys it inserted, with the lanes' pending counts
//! (`retention.rs`, counts). It is sent alone, so the server runs it as an
//! implicit transaction that commits before it answers: one round trip per
//! batch, on a statement prepared once per connection. The answer
//! (ReadyForQuery, which the client waits for) comes after COMMIT, and
//! connections run with `synchronous_commit = on`, so what it says is on the
//! database's disk.
//!
//! Dedup also holds across relays and across batches committed at once: a
//! batch inserting a key another uncommitted transaction holds waits for it
//! and, once it commits, inserts nothing and answers `duplicate` with its id.
//! The statement reads the ids of keys it did not insert from its own
//! snapshot; a key committed by another transaction after the statement began
//! is not in it, and only for those a second, read-only query follows.

use std::collections::HashMap;

use bytes::Bytes;
use deadpool_postgres::Pool;
use tokio_postgres::types::ToSql;

use super::{PgStore, pg_err, pool_err, to_i64, to_u64};
use crate::queue::embedded::dedup_key;
use crate::queue::{Accept, AcceptOutcome, StoreError, WebhookId};

/// The NOTIFY channel that wakes lanes; the payload is `INSTANCE LANE`.
pub(super) const CHANNEL: &str = "shoprelay_lanes";

type Key = [u8; 16];

pub(super) fn key(a: &Accept) -> Key {
    dedup_key(a.webhook.meta()).to_le_bytes()
}

/// One batch in one statement. `$1`–`$3`: every distinct key of the batch in
/// key order (two batches sharing keys lock them in the same order, so they
/// never deadlock), its rank in arrival order (ids grow in the order the
/// webhooks came) and its received time. `$4`–`$15`: the webhooks with
/// deliveries, by key. `$16`–`$19`: their deliveries, by key. `$20`: now.
/// Rows: each key inserted (true) or not (false) with its webhook id; NULL
/// for a key not inserted that the statement's snapshot does not have (only
/// those of the batch not inserted are looked up, each by primary key).
const ACCEPT: &str = "
WITH seq AS MATERIALIZED (
         SELECT nextval('shoprelay_webhook_ids') AS id
           FROM generate_series(1, cardinality($1::bytea[]))),
     ids AS (
         SELECT id, row_number() OVER (ORDER BY id) AS n FROM seq),
     input AS (
         SELECT u.i, u.key, ids.id, u.at
           FROM unnest($1::bytea[], $2::int8[], $3::int8[]) WITH ORDINALITY AS u(key, n, at, i)
           JOIN ids ON ids.n = u.n),
     won AS (
         INSERT INTO shoprelay_dedup (key, webhook_id, accepted_at_ms)
         SELECT key, id, at FROM input ORDER BY i
         ON CONFLICT DO NOTHING
         RETURNING key, webhook_id),
     webhooks AS (
         INSERT INTO shoprelay_webhooks (id, kind, source, topic, shop_domain, webhook_id,
             event_id, api_version, triggered_at, dedup_id, received_at_ms, body)
         SELECT won.webhook_id, w.kind, w.source, w.topic, w.shop_domain, w.hook,
                w.event_id, w.api_version, w.triggered_at, w.dedup_id, w.at, w.body
           FROM unnest($4::bytea[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[],
                       $10::text[], $11::text[], $12::text[], $13::text[], $14::int8[], $15::bytea[])
                AS w(key, kind, source, topic, shop_domain, hook, event_id, api_version,
                     triggered_at, dedup_id, at, body)
           JOIN won ON won.key = w.key),
     deliveries AS (
         INSERT INTO shoprelay_deliveries (webhook_id, slot, lane, targets, due_ms, ready_ms)
         SELECT won.webhook_id, d.slot, d.lane, string_to_array(d.targets, ','), $20, $20
           FROM unnest($16::bytea[], $17::int2[], $18::text[], $19::text[])
                AS d(key, slot, lane, targets)
           JOIN won ON won.key = d.key
         RETURNING lane),
     counted AS (
         INSERT INTO shoprelay_lane_deltas (lane, pending, dead)
         SELECT lane, count(*), 0 FROM deliveries GROUP BY lane)
SELECT key, webhook_id, true FROM won
UNION ALL
SELECT k.key, (SELECT t.webhook_id FROM shoprelay_dedup t WHERE t.key = k.key), false
  FROM unnest($1::bytea[]) AS k(key)
 WHERE NOT EXISTS (SELECT 1 FROM won WHERE won.key = k.key)";

/// The batch's distinct keys and their webhooks and deliveries, as the
/// column arrays of [`ACCEPT`].
#[derive(Default)]
struct Batch {
    key: Vec<Vec<u8>>,
    rank: Vec<i64>,
    at: Vec<i64>,
    w_key: Vec<Vec<u8>>,
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
    body: Vec<Bytes>,
    d_key: Vec<Vec<u8>>,
    d_slot: Vec<i16>,
    d_lane: Vec<String>,
    d_targets: Vec<String>,
    /// The lanes of each key's deliveries, to notify for the keys inserted.
    lanes: HashMap<Key, Vec<String>>,
}

impl Batch {
    /// `unique`: (key, arrival rank, accept), in key order.
    fn new(unique: &[(Key, i64, &Accept)]) -> Batch {
        let mut b = Batch::default();
        for &(k, rank, a) in unique {
            let m = a.webhook.meta();
            b.key.push(k.to_vec());
            b.rank.push(rank);
            b.at.push(to_i64(m.received_at_ms));
            if a.deliveries.is_empty() {
                continue;
            }
            b.w_key.push(k.to_vec());
            b.kind.push(m.kind.as_str());
            b.source.push(m.source.clone());
            b.topic.push(m.topic.clone());
            b.shop_domain.push(m.shop_domain.clone());
            b.webhook_id.push(m.webhook_id.clone());
            b.event_id.push(m.event_id.clone());
            b.api_version.push(m.api_version.clone());
            b.triggered_at.push(m.triggered_at.clone());
            b.dedup_id.push(m.dedup_id.clone());
            b.received_at_ms.push(to_i64(m.received_at_ms));
            b.body.push(a.webhook.body().clone());
            for (slot, d) in a.deliveries.iter().enumerate() {
                b.d_key.push(k.to_vec());
                b.d_slot.push(slot as i16);
                b.d_lane.push(d.lane.clone());
                // Destination names are letters, digits, `_` and `-` (config).
                b.d_targets.push(d.targets.join(","));
            }
            b.lanes
                .insert(k, a.deliveries.iter().map(|d| d.lane.clone()).collect());
        }
        b
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
        let mut first: HashMap<Key, usize> = HashMap::with_capacity(keys.len());
        let mut unique: Vec<(Key, i64, &Accept)> = Vec::with_capacity(keys.len());
        for (i, k) in keys.iter().enumerate() {
            first.entry(*k).or_insert_with(|| {
                unique.push((*k, unique.len() as i64 + 1, &items[i]));
                i
            });
        }
        unique.sort_unstable_by_key(|&(k, _, _)| k);
        let batch = Batch::new(&unique);
        let (instance, notices) = (self.instance, self.notices.clone());
        let ids: HashMap<Key, (WebhookId, bool)> = self.call(move |pool| async move {
            let (ids, lanes) = write(&pool, batch, now_ms).await?;
            if !lanes.is_empty() {
                // After COMMIT, outside it: a lost notification only delays
                // another relay until its lanes look again.
                notices.send(pool, instance, lanes);
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
            lookup(&c, &ask).await
        })?;
        Ok(keys.iter().map(|k| found.get(k).copied()).collect())
    }
}

/// The webhook ids of those of `keys` that are stored.
async fn lookup(
    c: &deadpool_postgres::Object,
    keys: &[Vec<u8>],
) -> Result<HashMap<Key, WebhookId>, StoreError> {
    let stmt = c
        .prepare_cached("SELECT key, webhook_id FROM shoprelay_dedup WHERE key = ANY($1)")
        .await
        .map_err(pg_err)?;
    let rows = c.query(&stmt, &[&keys]).await.map_err(pg_err)?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let k = Key::try_from(r.get::<_, &[u8]>(0)).ok()?;
            Some((k, to_u64(r.get(1))))
        })
        .collect())
}

/// Writes the batch in one statement; returns each key's webhook id and
/// whether this batch stored it, and the lanes that got work.
async fn write(
    pool: &Pool,
    b: Batch,
    now_ms: u64,
) -> Result<(HashMap<Key, (WebhookId, bool)>, Vec<String>), StoreError> {
    let c = pool.get().await.map_err(pool_err)?;
    let stmt = c.prepare_cached(ACCEPT).await.map_err(pg_err)?;
    let body: Vec<&[u8]> = b.body.iter().map(|x| &x[..]).collect();
    let now = to_i64(now_ms);
    let params: [&(dyn ToSql + Sync); 20] = [
        &b.key,
        &b.rank,
        &b.at,
        &b.w_key,
        &b.kind,
        &b.source,
        &b.topic,
        &b.shop_domain,
        &b.webhook_id,
        &b.event_id,
        &b.api_version,
        &b.triggered_at,
        &b.dedup_id,
        &b.received_at_ms,
        &body,
        &b.d_key,
        &b.d_slot,
        &b.d_lane,
        &b.d_targets,
        &now,
    ];
    // Alone, so an implicit transaction: the rows arrive only with
    // ReadyForQuery, after its COMMIT.
    let rows = c.query(&stmt, &params).await.map_err(pg_err)?;
    let mut out = HashMap::with_capacity(b.key.len());
    let mut lanes = Vec::new();
    for r in &rows {
        let (Ok(k), Some(id)) = (
            Key::try_from(r.get::<_, &[u8]>(0)),
            r.get::<_, Option<i64>>(1),
        ) else {
            continue;
        };
        let inserted: bool = r.get(2);
        out.insert(k, (to_u64(id), inserted));
        if inserted {
            if let Some(l) = b.lanes.get(&k) {
                lanes.extend(l.iter().cloned());
            }
        }
    }
    if out.len() < b.key.len() {
        // Inserted by a transaction that committed after the statement
        // began (it waited for it): committed now, so a fresh read finds it.
        let missing: Vec<Vec<u8>> = b
            .key
            .iter()
            .filter(|k| Key::try_from(&k[..]).is_ok_and(|k| !out.contains_key(&k)))
            .cloned()
            .collect();
        for (k, id) in lookup(&c, &missing).await? {
            out.insert(k, (id, false));
        }
    }
    lanes.sort_unstable();
    lanes.dedup();
    Ok((out, lanes))
}

/// The least time between two notifications of accepts from one relay.
const NOTIFY_EVERY: std::time::Duration = std::time::Duration::from_millis(10);

/// Notifications of accepts, gathered: each is a transaction of its own that
/// every listening relay reads, and one per batch was 15% of the database's
/// CPU per webhook. The first goes at once; lanes that get work while one is
/// sent, or within [`NOTIFY_EVERY`] after, go together in the next. Only
/// other relays wait for it (this relay's lanes are woken at the commit),
/// and at most that much longer.
#[derive(Default)]
pub(super) struct Notices {
    /// Whether a sender runs, and the lanes it sends next.
    state: std::sync::Mutex<(bool, std::collections::BTreeSet<String>)>,
}

impl Notices {
    /// Has `lanes` notified, now or with the next notification. Runs on the
    /// store's runtime.
    fn send(self: &std::sync::Arc<Self>, pool: Pool, instance: u64, lanes: Vec<String>) {
        {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            st.1.extend(lanes);
            if st.0 {
                return;
            }
            st.0 = true;
        }
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                let lanes: Vec<String> = {
                    let mut st = me.state.lock().unwrap_or_else(|e| e.into_inner());
                    if st.1.is_empty() {
                        st.0 = false;
                        return;
                    }
                    std::mem::take(&mut st.1).into_iter().collect()
                };
                notify(pool.clone(), instance, lanes).await;
                tokio::time::sleep(NOTIFY_EVERY).await;
            }
        });
    }
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
