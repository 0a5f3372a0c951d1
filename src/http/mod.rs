//! Stage 6: the two listeners. `ingest` is public (webhooks in); `admin` is
//! private (metrics, health, dead letters). Every answer is a small JSON body.

pub mod admin;
pub mod ingest;

use warp::http::StatusCode;
use warp::reply::Response;

/// `{"error": msg}` with `status`.
pub fn error(status: StatusCode, msg: &str) -> Response {
    json(status, &serde_json::json!({ "error": msg }))
}

/// Any serialisable value as JSON with `status`.
pub fn json<T: serde::Serialize>(status: StatusCode, body: &T) -> Response {
    let mut r = warp::reply::Reply::into_response(warp::reply::json(body));
    *r.status_mut() = status;
    r
}

/// Any request no route took: JSON 404 (or 405 for a known path and wrong method).
pub async fn not_found(r: warp::Rejection) -> Result<Response, std::convert::Infallible> {
    if r.find::<warp::reject::MethodNotAllowed>().is_some() {
        return Ok(error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"));
    }
    Ok(error(StatusCode::NOT_FOUND, "not found"))
}
