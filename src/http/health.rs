//! `/healthz`, answered the same on both listeners (the public one, for a load
//! balancer in front of ingest; the private one, beside `/metrics`).

use warp::Filter;
use warp::http::StatusCode;
use warp::reply::Response;

use super::{error, json};
use crate::queue::commit::Committer;

/// `GET /healthz`, for either listener.
pub fn route(
    committer: Committer,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone + Send + Sync + 'static {
    warp::path!("healthz")
        .and(warp::get())
        .map(move || health(&committer))
}

/// 200 `{"status":"ok"}` while the relay can accept webhooks; 503 once a write
/// to storage has failed, until one succeeds again.
pub fn health(committer: &Committer) -> Response {
    if committer.is_healthy() {
        json(StatusCode::OK, &serde_json::json!({"status": "ok"}))
    } else {
        error(StatusCode::SERVICE_UNAVAILABLE, "storage is failing")
    }
}
