//! `POST /webhooks/shopify/{source}` and
//! `POST /webhooks/convertedin/{source}/{resource}/{action}`.
//!
//! Checks run in the contract's order and the first failure answers:
//! source (404) → size (413) → signature (401) → topic and JSON (400) →
//! store (503). The 200 is sent only after the group commit that holds the
//! webhook has been flushed.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use warp::Filter;
use warp::http::{HeaderMap, Method, StatusCode};
use warp::reply::Response;

use super::{closing, error, json};
use crate::config::{Config, DeliveryMode};
use crate::metrics::Metrics;
use crate::queue::commit::Committer;
use crate::queue::{Accept, AcceptOutcome, NewDelivery, StoreError, webhook_id_string};
use crate::sources::{Rejection, SourceKind, Verifier, Webhook, convertedin, shopify};

/// One configured source, built once at start-up.
pub struct Route {
    /// Sender kind; a request to the other kind's URL is a 404.
    pub kind: SourceKind,
    /// Keyed HMAC states.
    pub verifier: Verifier,
    /// The deliveries each accepted webhook gets.
    pub deliveries: Vec<NewDelivery>,
}

/// What the ingest handlers share.
pub struct Ingest {
    /// By source name.
    pub routes: HashMap<String, Route>,
    /// Durable accept.
    pub committer: Committer,
    /// Bodies above this are refused (413).
    pub max_body_bytes: u64,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Wall clock in ms; a function so tests can pin it.
    pub clock: fn() -> u64,
}

impl Ingest {
    /// Builds routes from config.
    pub fn routes(cfg: &Config) -> HashMap<String, Route> {
        cfg.sources
            .iter()
            .map(|(name, s)| {
                let deliveries = match s.delivery {
                    DeliveryMode::Fanout => s
                        .destinations
                        .iter()
                        .map(|d| NewDelivery {
                            lane: d.clone(),
                            targets: vec![d.clone()],
                        })
                        .collect(),
                    DeliveryMode::FirstSuccess if s.destinations.is_empty() => vec![],
                    DeliveryMode::FirstSuccess => vec![NewDelivery {
                        lane: crate::queue::first_success_lane(name),
                        targets: s.destinations.clone(),
                    }],
                };
                let route = Route {
                    kind: s.kind,
                    verifier: Verifier::new(&s.secrets),
                    deliveries,
                };
                (name.clone(), route)
            })
            .collect()
    }
}

/// The ingest filter: every method and path under `/webhooks/`.
pub fn routes(
    ingest: Arc<Ingest>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone + Send + Sync + 'static {
    warp::path("webhooks")
        .and(warp::path::tail())
        .and(warp::method())
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .and(warp::any().map(move || ingest.clone()))
        .then(
            |tail: warp::path::Tail, method, headers, body, ingest: Arc<Ingest>| async move {
                handle(&ingest, tail.as_str(), method, headers, body).await
            },
        )
}

/// A parsed webhook URL.
struct Target<'a> {
    kind: SourceKind,
    source: &'a str,
    topic: Option<String>,
}

fn parse_path(tail: &str) -> Option<Target<'_>> {
    let parts: Vec<&str> = tail.strip_suffix('/').unwrap_or(tail).split('/').collect();
    match parts.as_slice() {
        ["shopify", source] if !source.is_empty() => Some(Target {
            kind: SourceKind::Shopify,
            source,
            topic: None,
        }),
        ["convertedin", source, resource, action] if !source.is_empty() => Some(Target {
            kind: SourceKind::Convertedin,
            source,
            topic: Some(format!("{resource}/{action}")),
        }),
        _ => None,
    }
}

async fn handle<S, B>(
    ingest: &Ingest,
    tail: &str,
    method: Method,
    headers: HeaderMap,
    body: S,
) -> Response
where
    S: Stream<Item = Result<B, warp::Error>> + Send + Unpin,
    B: Buf,
{
    let Some(target) = parse_path(tail) else {
        return closing(error(StatusCode::NOT_FOUND, "no such webhook URL"));
    };
    let source = target.source;
    let reject = |reason: &str, status: StatusCode, msg: &str| {
        ingest.metrics.inc(
            "shoprelay_webhooks_rejected_total",
            &[("source", source), ("reason", reason)],
            1,
        );
        tracing::info!(
            source,
            reason,
            status = status.as_u16(),
            "webhook refused: {msg}"
        );
        error(status, msg)
    };
    let route = match ingest.routes.get(source) {
        Some(r) if r.kind == target.kind => r,
        _ => {
            return closing(reject(
                "unknown_source",
                StatusCode::NOT_FOUND,
                "no such source",
            ));
        }
    };
    if method != Method::POST {
        let mut r = reject("method", StatusCode::METHOD_NOT_ALLOWED, "use POST");
        r.headers_mut()
            .insert("allow", warp::http::HeaderValue::from_static("POST"));
        return closing(r);
    }
    let declared = headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > ingest.max_body_bytes) {
        return closing(reject(
            "too_large",
            StatusCode::PAYLOAD_TOO_LARGE,
            "body is larger than max_body_bytes",
        ));
    }
    let body = match read_limited(body, ingest.max_body_bytes).await {
        Ok(b) => b,
        Err(ReadError::TooLarge) => {
            return closing(reject(
                "too_large",
                StatusCode::PAYLOAD_TOO_LARGE,
                "body is larger than max_body_bytes",
            ));
        }
        Err(ReadError::Io) => {
            return closing(reject(
                "body_read",
                StatusCode::BAD_REQUEST,
                "could not read the request body",
            ));
        }
    };
    let now = (ingest.clock)();
    let verified = match target.topic {
        None => shopify::verify(source, &route.verifier, &headers, body, now),
        Some(topic) => convertedin::verify(source, &route.verifier, &topic, &headers, body, now),
    };
    let webhook = match verified {
        Ok(w) => w,
        Err(e) => {
            let (reason, status) = match &e {
                Rejection::MissingSignature(_) => ("missing_signature", StatusCode::UNAUTHORIZED),
                Rejection::BadSignature => ("bad_signature", StatusCode::UNAUTHORIZED),
                Rejection::MissingTopic(_) | Rejection::BadTopic(_) => {
                    ("bad_topic", StatusCode::BAD_REQUEST)
                }
                Rejection::NotJsonObject(_) => ("bad_json", StatusCode::BAD_REQUEST),
            };
            return reject(reason, status, &e.to_string());
        }
    };
    accept(ingest, route, webhook).await
}

async fn accept(ingest: &Ingest, route: &Route, webhook: Webhook) -> Response {
    let (source, topic) = (webhook.meta().source.clone(), webhook.meta().topic.clone());
    let accept = Accept {
        webhook,
        deliveries: route.deliveries.clone(),
    };
    let count = |outcome: &str| {
        ingest.metrics.inc(
            "shoprelay_webhooks_received_total",
            &[("source", &source), ("topic", &topic), ("outcome", outcome)],
            1,
        )
    };
    match ingest.committer.accept(accept).await {
        Ok(AcceptOutcome::Queued(id)) => {
            count("queued");
            json(
                StatusCode::OK,
                &serde_json::json!({ "status": "queued", "id": webhook_id_string(id) }),
            )
        }
        Ok(AcceptOutcome::Duplicate(id)) => {
            count("duplicate");
            json(
                StatusCode::OK,
                &serde_json::json!({ "status": "duplicate", "id": webhook_id_string(id) }),
            )
        }
        Err(e) => {
            let reason = match e {
                StoreError::Overloaded => "overloaded",
                StoreError::Closed => "shutting_down",
                StoreError::DiskFull { .. } => "disk_full",
                StoreError::Stalled(_) => "storage_stalled",
                _ => "storage",
            };
            ingest.metrics.inc(
                "shoprelay_webhooks_rejected_total",
                &[("source", &source), ("reason", reason)],
                1,
            );
            tracing::warn!(source, topic, error = %e, "webhook not stored; answered 503");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "cannot store the webhook now; retry later",
            )
        }
    }
}

enum ReadError {
    TooLarge,
    Io,
}

/// Reads the body, stopping as soon as it exceeds `limit` (chunked bodies have
/// no Content-Length, so the declared size alone is not enough).
async fn read_limited<S, B>(mut body: S, limit: u64) -> Result<Bytes, ReadError>
where
    S: Stream<Item = Result<B, warp::Error>> + Send + Unpin,
    B: Buf,
{
    let mut buf = BytesMut::new();
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.map_err(|_| ReadError::Io)?;
        if buf.len() as u64 + chunk.remaining() as u64 > limit {
            return Err(ReadError::TooLarge);
        }
        while chunk.has_remaining() {
            let c = chunk.chunk();
            buf.extend_from_slice(c);
            let n = c.len();
            chunk.advance(n);
        }
    }
    Ok(buf.freeze())
}
