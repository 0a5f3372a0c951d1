//! The private listener: `/healthz`, `/metrics`, and `/admin/*` (stats and
//! dead letters), with an optional bearer token on `/admin/*`.

use std::sync::Arc;

use serde_json::{Value, json as j};
use warp::Filter;
use warp::http::StatusCode;
use warp::reply::Response;

use super::{error, json};
use crate::config::Secret;
use crate::metrics::{Metrics, names};
use crate::queue::commit::Committer;
use crate::queue::{DeadLetter, DeliveryId, DeliveryState, Store, webhook_id_string};

/// Wakes the lane with the given name (after a replay).
pub type Wake = Arc<dyn Fn(&str) + Send + Sync>;

/// What the admin handlers share.
pub struct Admin {
    /// The queue.
    pub store: Arc<dyn Store>,
    /// Counters for `/metrics` and `/admin/stats`.
    pub metrics: Arc<Metrics>,
    /// Health of the accept path.
    pub committer: Committer,
    /// Required bearer token on `/admin/*`, if any.
    pub token: Option<Secret>,
    /// Wakes a lane after a replay.
    pub wake: Wake,
    /// Wall clock in ms.
    pub clock: fn() -> u64,
    /// Open ingest connections, for the `shoprelay_ingest_connections` gauge.
    pub ingest_connections: Arc<super::listener::Open>,
    /// For the `shoprelay_unverified_body_bytes` gauge.
    pub body_budget: Arc<super::budget::BodyBudget>,
}

/// All admin routes.
pub fn routes(
    admin: Arc<Admin>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone + Send + Sync + 'static {
    let with = {
        let a = admin.clone();
        warp::any().map(move || a.clone())
    };
    let healthz = super::health::route(admin.committer.clone());
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(with.clone())
        .map(|a: Arc<Admin>| metrics(&a));
    let admin_api =
        warp::path("admin")
            .and(warp::path::tail())
            .and(warp::method())
            .and(warp::header::optional::<String>("authorization"))
            .and(warp::query::raw().or(warp::any().map(String::new)).unify())
            .and(with)
            .then(
                |tail: warp::path::Tail,
                 method,
                 auth: Option<String>,
                 query: String,
                 a: Arc<Admin>| async move {
                    if !authorized(a.token.as_ref(), auth.as_deref()) {
                        return error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
                    }
                    let a2 = a.clone();
                    let tail = tail.as_str().trim_end_matches('/').to_string();
                    tokio::task::spawn_blocking(move || dispatch(&a2, &method, &tail, &query))
                        .await
                        .unwrap_or_else(|_| {
                            error(StatusCode::INTERNAL_SERVER_ERROR, "admin handler failed")
                        })
                },
            );
    healthz.or(metrics).unify().or(admin_api).unify()
}

fn authorized(token: Option<&Secret>, header: Option<&str>) -> bool {
    let Some(token) = token else { return true };
    let Some(given) = header.and_then(|h| h.strip_prefix("Bearer ")) else {
        return false;
    };
    // Constant time in the token's length: compare every byte.
    let (a, b) = (token.expose().as_bytes(), given.trim().as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn metrics(a: &Admin) -> Response {
    let now = (a.clock)();
    let mut gauges = Vec::new();
    if let Ok((lanes, dead)) = a.store.stats() {
        for (lane, s) in &lanes {
            gauges.push((
                names::QUEUE_DEPTH,
                vec![("lane", lane.clone())],
                s.pending as f64,
            ));
        }
        for (lane, s) in &lanes {
            let age = s
                .oldest_due_ms
                .map_or(0.0, |d| now.saturating_sub(d) as f64 / 1000.0);
            gauges.push((
                names::QUEUE_OLDEST_DUE_AGE,
                vec![("lane", lane.clone())],
                age,
            ));
        }
        gauges.push((names::DEAD_LETTERS, vec![], dead as f64));
    }
    gauges.push((
        names::LOG_DAMAGED_RANGES,
        vec![],
        a.store.damaged_ranges() as f64,
    ));
    gauges.push((
        names::INGEST_CONNECTIONS,
        vec![],
        a.ingest_connections.count() as f64,
    ));
    gauges.push((
        names::UNVERIFIED_BODY_BYTES,
        vec![],
        a.body_budget.held() as f64,
    ));
    let body = a.metrics.render(&gauges);
    let mut r = warp::reply::Reply::into_response(body);
    r.headers_mut().insert(
        "content-type",
        warp::http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

fn store_error(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "admin request failed on storage");
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "storage error; see the relay's log",
    )
}

fn dispatch(a: &Admin, method: &warp::http::Method, tail: &str, query: &str) -> Response {
    use warp::http::Method as M;
    let parts: Vec<&str> = tail.split('/').collect();
    match (method, parts.as_slice()) {
        (&M::GET, ["stats"]) => stats(a),
        (&M::GET, ["dead-letters"]) => list(a, query),
        (&M::POST, ["dead-letters", "replay"]) => replay_all(a),
        (&M::DELETE, ["dead-letters"]) => purge_all(a),
        (m, ["dead-letters", id, rest @ ..]) => {
            let id: DeliveryId = match id.parse() {
                Ok(id) => id,
                Err(e) => return error(StatusCode::NOT_FOUND, &e),
            };
            match (m, rest) {
                (&M::GET, []) => show(a, id),
                (&M::POST, ["replay"]) => replay(a, id),
                (&M::DELETE, []) => purge(a, id),
                _ => error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here"),
            }
        }
        _ => error(StatusCode::NOT_FOUND, "no such admin route"),
    }
}

/// The list form of a dead letter (CONTRACT.md names these fields).
pub fn summary(d: &DeadLetter) -> Value {
    let r = &d.record;
    let (dead_at, reason) = match &r.state {
        DeliveryState::Dead { dead_at_ms, reason } => (Some(*dead_at_ms), Some(reason.clone())),
        DeliveryState::Pending => (None, None),
    };
    let meta = d.webhook.as_ref().map(|w| w.meta());
    j!({
        "id": r.id.to_string(),
        // A record rebuilt after it could not be read has no targets of its
        // own: its lane says where a replay goes.
        "destination": if r.targets.is_empty() { r.lane.clone() } else { r.targets.join(",") },
        "event": meta.map(|m| m.topic.clone()),
        "source": meta.map(|m| m.source.clone()),
        "webhook_id": webhook_id_string(r.id.webhook),
        "attempts": r.attempts,
        "last_error": reason.or_else(|| r.last_error.clone()),
        "last_status": r.last_status,
        "first_attempt_at": r.first_attempt_at_ms.map(iso),
        "dead_at": dead_at.map(iso),
    })
}

/// Milliseconds since the epoch as ISO-8601 UTC.
pub fn iso(ms: u64) -> String {
    crate::timefmt::iso8601_ms(ms)
}

fn stats(a: &Admin) -> Response {
    let (lanes, dead) = match a.store.stats() {
        Ok(s) => s,
        Err(e) => return store_error(e),
    };
    let now = (a.clock)();
    let m = &a.metrics;
    let lanes: serde_json::Map<String, Value> = lanes
        .into_iter()
        .map(|(k, s)| {
            let age = s.oldest_due_ms.map(|d| now.saturating_sub(d) / 1000);
            (k, j!({"pending": s.pending, "oldest_due_age_seconds": age}))
        })
        .collect();
    json(
        StatusCode::OK,
        &j!({
            "received": m.counter_sum(names::WEBHOOKS_RECEIVED, &[("outcome", "queued")]),
            "duplicates": m.counter_sum(names::WEBHOOKS_RECEIVED, &[("outcome", "duplicate")]),
            "rejected": m.counter_sum(names::WEBHOOKS_REJECTED, &[]),
            "delivered": m.counter_sum(names::DELIVERIES, &[("outcome", "delivered")]),
            "retrying": m.counter_sum(names::DELIVERIES, &[("outcome", "retry")]),
            "dead": dead,
            "skipped": m.counter_sum(names::EVENTS_SKIPPED, &[]),
            "skipped_by_destination": m.counter_table(names::EVENTS_SKIPPED, "destination", "rule"),
            "lanes": lanes,
        }),
    )
}

fn list(a: &Admin, query: &str) -> Response {
    let mut after = None;
    let mut limit = 1000usize;
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("after", v)) => match v.parse::<DeliveryId>() {
                Ok(id) => after = Some(id),
                Err(e) => return error(StatusCode::BAD_REQUEST, &e),
            },
            Some(("limit", v)) => match v.parse::<usize>() {
                Ok(n) if n > 0 => limit = n.min(10_000),
                _ => return error(StatusCode::BAD_REQUEST, "limit must be a positive integer"),
            },
            _ => {}
        }
    }
    match a.store.dead_letters(after, limit) {
        Ok(list) => json(
            StatusCode::OK,
            &list.iter().map(summary).collect::<Vec<_>>(),
        ),
        Err(e) => store_error(e),
    }
}

fn show(a: &Admin, id: DeliveryId) -> Response {
    match a.store.dead_letter(id) {
        Ok(Some(d)) => {
            let mut v = summary(&d);
            if let (Some(w), Some(obj)) = (&d.webhook, v.as_object_mut()) {
                obj.insert(
                    "webhook".into(),
                    serde_json::to_value(w.meta()).unwrap_or(Value::Null),
                );
                obj.insert(
                    "body".into(),
                    Value::String(String::from_utf8_lossy(w.body()).into_owned()),
                );
            }
            json(StatusCode::OK, &v)
        }
        Ok(None) => error(StatusCode::NOT_FOUND, "no such dead letter"),
        Err(e) => store_error(e),
    }
}

fn replay(a: &Admin, id: DeliveryId) -> Response {
    match a.store.replay(id, (a.clock)()) {
        Ok(Some(lane)) => {
            (a.wake)(&lane);
            tracing::info!(id = %id, lane, "dead letter replayed");
            json(
                StatusCode::OK,
                &j!({"status": "replayed", "id": id.to_string()}),
            )
        }
        Ok(None) => error(StatusCode::NOT_FOUND, "no such dead letter"),
        Err(e) => store_error(e),
    }
}

fn purge(a: &Admin, id: DeliveryId) -> Response {
    match a.store.purge(id) {
        Ok(true) => json(
            StatusCode::OK,
            &j!({"status": "purged", "id": id.to_string()}),
        ),
        Ok(false) => error(StatusCode::NOT_FOUND, "no such dead letter"),
        Err(e) => store_error(e),
    }
}

/// Applies `op` to every dead letter, page by page.
fn each_dead(
    a: &Admin,
    mut op: impl FnMut(DeliveryId) -> Result<bool, crate::queue::StoreError>,
) -> Result<u64, crate::queue::StoreError> {
    let mut n = 0;
    let mut after = None;
    loop {
        let page = a.store.dead_letters(after, 500)?;
        let Some(last) = page.last() else {
            return Ok(n);
        };
        after = Some(last.record.id);
        for d in &page {
            if op(d.record.id)? {
                n += 1;
            }
        }
    }
}

fn replay_all(a: &Admin) -> Response {
    let now = (a.clock)();
    let mut lanes = std::collections::BTreeSet::new();
    let r = each_dead(a, |id| {
        let lane = a.store.replay(id, now)?;
        let hit = lane.is_some();
        lanes.extend(lane);
        Ok(hit)
    });
    for lane in &lanes {
        (a.wake)(lane);
    }
    match r {
        Ok(n) => {
            tracing::info!(count = n, "all dead letters replayed");
            json(StatusCode::OK, &j!({"replayed": n}))
        }
        Err(e) => store_error(e),
    }
}

fn purge_all(a: &Admin) -> Response {
    match each_dead(a, |id| a.store.purge(id)) {
        Ok(n) => json(StatusCode::OK, &j!({"purged": n})),
        Err(e) => store_error(e),
    }
}
