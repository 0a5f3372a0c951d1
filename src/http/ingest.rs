//! `POST /webhooks/shopify/{source}` and
//! `POST /webhooks/convertedin/{source}/{resource}/{action}`.
//!
//! Checks run in the contract's order and the first failure answers:
//! source (404) → size (413) → signature (401) → topic and JSON (400) →
//! store (503). The 200 is sent only after the group commit that holds the
//! webhook has been flushed. Reading the body may also answer 408 (too slow)
//! or 503 with `Retry-After` (the unverified body budget is spent).
//!
//! Metric labels and log fields take no value from an unverified request:
//! an unknown source counts as `source="unknown"`, a topic the relay does not
//! name counts as `topic="other"` (the topic header is not signed), and the
//! refusal log shows at most a short escaped prefix of the path.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Buf;
use futures_util::Stream;
use warp::http::{HeaderMap, HeaderValue, Method, StatusCode};
use warp::reply::Response;

use super::body::{self, BodyLimits};
use super::conn::ConnWatch;
use super::refusals::{PATH_PREFIX_CHARS, RefusalLog, excerpt};
use super::{closing, error, json_bytes};
use crate::config::{Config, Routing};
use crate::metrics::{Metrics, names};
use crate::queue::commit::Committer;
use crate::queue::{Accept, AcceptOutcome, NewDelivery, StoreError, WebhookId, webhook_id_string};
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
    /// Size cap, read timeout and memory budget of unverified bodies.
    pub bodies: BodyLimits,
    /// `[mapping.events]` topics: with the mapping table's, the topics that
    /// are metric labels as they are (any other counts as `topic="other"`).
    pub named_topics: HashSet<String>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Which refusals are logged (one line a second per reason).
    pub refusals: RefusalLog,
    /// Wall clock in ms; a function so tests can pin it.
    pub clock: fn() -> u64,
}

/// The `source` label and log field of a request for no configured source.
pub const UNKNOWN_SOURCE: &str = "unknown";
/// The `topic` label of a topic neither the mapping nor relay.toml names.
pub const OTHER_TOPIC: &str = "other";

impl Ingest {
    /// Builds routes from config: each source's deliveries are its lanes in `routing`.
    pub fn routes(cfg: &Config, routing: &Routing) -> HashMap<String, Route> {
        cfg.sources
            .iter()
            .map(|(name, s)| {
                let deliveries = routing
                    .sources
                    .get(name)
                    .into_iter()
                    .flatten()
                    .map(|l| NewDelivery {
                        lane: l.lane.clone(),
                        targets: l.targets.clone(),
                    })
                    .collect();
                let route = Route {
                    kind: s.kind,
                    verifier: Verifier::new(&s.secrets),
                    deliveries,
                };
                (name.clone(), route)
            })
            .collect()
    }

    /// The topic as a metric label: itself if the relay names it, else `other`.
    fn topic_label<'a>(&self, topic: &'a str) -> &'a str {
        if crate::mapping::is_mapped_topic(topic) || self.named_topics.contains(topic) {
            topic
        } else {
            OTHER_TOPIC
        }
    }

    /// Counts a refusal and logs it (rate-limited); `source` is a configured
    /// name or [`UNKNOWN_SOURCE`], `path` the request's, shown as a prefix.
    fn refuse(
        &self,
        source: &str,
        path: &str,
        reason: &'static str,
        status: StatusCode,
        msg: &str,
    ) -> Response {
        self.metrics.inc(
            names::WEBHOOKS_REJECTED,
            &[("source", source), ("reason", reason)],
            1,
        );
        if let Some(suppressed) = self.refusals.admit(reason, tokio::time::Instant::now()) {
            tracing::info!(
                source,
                reason,
                status = status.as_u16(),
                path = %excerpt(path, PATH_PREFIX_CHARS),
                suppressed,
                "webhook refused: {}",
                excerpt(msg, 2 * PATH_PREFIX_CHARS)
            );
        }
        error(status, msg)
    }
}

/// `r` with `Retry-After: 1`: the budget frees up as bodies arrive.
fn retry_soon(mut r: Response) -> Response {
    r.headers_mut()
        .insert("retry-after", HeaderValue::from_static("1"));
    r
}

/// The public listener's service: a request under `/webhooks/` goes straight
/// to the ingest handler; anything else to `rest` (warp's filters: health and
/// the JSON 404). Routing the webhooks past warp saves its filter chain and
/// the copy of every request's headers that `warp::header::headers_cloned`
/// makes (about 6% of the request path's CPU); what is matched is what
/// `warp::path("webhooks").and(warp::path::tail())` matched.
#[derive(Clone)]
pub struct Public<S> {
    pub ingest: Arc<Ingest>,
    pub rest: S,
}

type Answer = Result<Response, std::convert::Infallible>;

impl<S> tower_service::Service<http::Request<hyper::body::Incoming>> for Public<S>
where
    S: tower_service::Service<
            http::Request<hyper::body::Incoming>,
            Response = Response,
            Error = std::convert::Infallible,
        >,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = futures_util::future::Either<
        std::pin::Pin<Box<dyn std::future::Future<Output = Answer> + Send>>,
        S::Future,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.rest.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<hyper::body::Incoming>) -> Self::Future {
        use futures_util::future::Either;
        if tail_of(req.uri().path()).is_none() {
            return Either::Right(self.rest.call(req));
        }
        let ingest = self.ingest.clone();
        Either::Left(Box::pin(async move { Ok(serve(&ingest, req).await) }))
    }
}

/// The path after `/webhooks/` (`""` for `/webhooks` itself), or `None` for a
/// path that is not an ingest URL.
fn tail_of(path: &str) -> Option<&str> {
    if path == "/webhooks" {
        Some("")
    } else {
        path.strip_prefix("/webhooks/")
    }
}

/// Every method and path under `/webhooks/`.
async fn serve(ingest: &Ingest, req: http::Request<hyper::body::Incoming>) -> Response {
    let (parts, body) = req.into_parts();
    let http::request::Parts {
        method,
        uri,
        headers,
        extensions,
        ..
    } = parts;
    let request = Request {
        tail: tail_of(uri.path()).unwrap_or_default(),
        method,
        headers,
        watch: extensions.get::<Arc<ConnWatch>>().cloned(),
    };
    handle(ingest, request, http_body_util::BodyDataStream::new(body)).await
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

/// A request's head, as the handler needs it.
struct Request<'a> {
    /// The path after `/webhooks/`.
    tail: &'a str,
    method: Method,
    headers: HeaderMap,
    /// The connection's clock (absent when served without the listener).
    watch: Option<Arc<ConnWatch>>,
}

async fn handle<S, B, E>(ingest: &Ingest, req: Request<'_>, body: S) -> Response
where
    S: Stream<Item = Result<B, E>> + Send + Unpin,
    B: Buf,
{
    let Request {
        tail,
        method,
        headers,
        watch,
    } = req;
    let Some(target) = parse_path(tail) else {
        return closing(error(StatusCode::NOT_FOUND, "no such webhook URL"));
    };
    // The configured name, never the request's bytes.
    let found = ingest
        .routes
        .get_key_value(target.source)
        .filter(|(_, r)| r.kind == target.kind);
    let source = found.map_or(UNKNOWN_SOURCE, |(name, _)| name.as_str());
    let reject = |reason: &'static str, status: StatusCode, msg: &str| {
        ingest.refuse(source, tail, reason, status, msg)
    };
    let Some((_, route)) = found else {
        return closing(reject(
            "unknown_source",
            StatusCode::NOT_FOUND,
            "no such source",
        ));
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
    if declared.is_some_and(|n| n > ingest.bodies.max_bytes) {
        return closing(reject(
            "too_large",
            StatusCode::PAYLOAD_TOO_LARGE,
            "body is larger than max_body_bytes",
        ));
    }
    let waiting = watch.as_ref().map(|w| w.awaiting_body());
    let read = body::read(body, declared, &ingest.bodies).await;
    drop(waiting);
    let (body, held) = match read {
        Ok(b) => b,
        Err(e) => {
            let (reason, status, msg) = e.answer();
            let r = closing(reject(reason, status, msg));
            return if status == StatusCode::SERVICE_UNAVAILABLE {
                retry_soon(r)
            } else {
                r
            };
        }
    };
    let now = (ingest.clock)();
    let verified = match target.topic {
        None => shopify::verify(source, &route.verifier, &headers, body, now),
        Some(topic) => convertedin::verify(source, &route.verifier, &topic, &headers, body, now),
    };
    // Verified or refused: either way the body no longer counts as unverified.
    drop(held);
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
    accept(ingest, source, route, webhook).await
}

/// `{"status":STATUS,"id":ID}`, written directly: the bytes `json` gives
/// for the same object, without building a JSON tree per webhook.
fn accepted(status: &'static str, id: WebhookId) -> Response {
    json_bytes(StatusCode::OK, accepted_body(status, id))
}

fn accepted_body(status: &'static str, id: WebhookId) -> Vec<u8> {
    format!(
        r#"{{"status":"{status}","id":"{}"}}"#,
        webhook_id_string(id)
    )
    .into_bytes()
}

async fn accept(ingest: &Ingest, source: &str, route: &Route, webhook: Webhook) -> Response {
    let topic = webhook.meta().topic.clone();
    let topic_label = ingest.topic_label(&topic);
    let accept = Accept {
        webhook,
        deliveries: route.deliveries.clone(),
    };
    let count = |outcome: &str| {
        ingest.metrics.inc(
            names::WEBHOOKS_RECEIVED,
            &[
                ("source", source),
                ("topic", topic_label),
                ("outcome", outcome),
            ],
            1,
        )
    };
    match ingest.committer.accept(accept).await {
        Ok(AcceptOutcome::Queued(id)) => {
            count("queued");
            accepted("queued", id)
        }
        Ok(AcceptOutcome::Duplicate(id)) => {
            count("duplicate");
            accepted("duplicate", id)
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
                names::WEBHOOKS_REJECTED,
                &[("source", source), ("reason", reason)],
                1,
            );
            if let Some(suppressed) = ingest.refusals.admit(reason, tokio::time::Instant::now()) {
                tracing::warn!(
                    source,
                    topic = topic_label,
                    error = %e,
                    suppressed,
                    "webhook not stored; answered 503"
                );
            }
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "cannot store the webhook now; retry later",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ingest_urls_are_what_warp_path_webhooks_tail_matched() {
        assert_eq!(tail_of("/webhooks"), Some(""));
        assert_eq!(tail_of("/webhooks/"), Some(""));
        assert_eq!(tail_of("/webhooks/shopify/shop"), Some("shopify/shop"));
        assert_eq!(tail_of("/webhooks//shopify"), Some("/shopify"));
        for other in [
            "/",
            "/healthz",
            "/webhooksx",
            "/webhook/shopify/x",
            "//webhooks/x",
        ] {
            assert_eq!(tail_of(other), None, "{other}");
        }
    }

    #[test]
    fn the_accepted_answer_is_the_json_of_its_object() {
        for (status, id) in [("queued", 1u64), ("duplicate", u64::MAX)] {
            let want = serde_json::to_vec(
                &serde_json::json!({ "status": status, "id": webhook_id_string(id) }),
            )
            .unwrap();
            assert_eq!(accepted_body(status, id), want);
            let r = accepted(status, id);
            assert_eq!(r.status(), StatusCode::OK);
            assert_eq!(r.headers()["content-type"], "application/json");
        }
    }
}
