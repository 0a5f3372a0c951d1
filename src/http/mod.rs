//! Layer 6: the two listeners. `ingest` is public (webhooks in); `admin` is
//! private (metrics, health, dead letters). Every answer is a small JSON body.

pub mod admin;
pub mod body;
pub mod budget;
pub mod conn;
pub mod health;
pub mod ingest;
pub mod listener;
pub mod refusals;

use warp::http::StatusCode;
use warp::reply::Response;

/// `{"error": msg}` with `status`.
pub fn error(status: StatusCode, msg: &str) -> Response {
    json(status, &serde_json::json!({ "error": msg }))
}

/// `r` with `Connection: close`: for answers given before the request body
/// was read. The server closes such a connection rather than read on (hyper
/// does on its own), and saying so keeps a client from reusing it: without the
/// header a keep-alive client pools the connection and its next request meets
/// a closed socket (a broken pipe, seen in CI after a 413).
pub fn closing(mut r: Response) -> Response {
    r.headers_mut().insert(
        warp::http::header::CONNECTION,
        warp::http::HeaderValue::from_static("close"),
    );
    r
}

/// Any serialisable value as JSON with `status`.
pub fn json<T: serde::Serialize>(status: StatusCode, body: &T) -> Response {
    let mut r = warp::reply::Reply::into_response(warp::reply::json(body));
    *r.status_mut() = status;
    r
}

/// A body that is JSON already, with `status` and the header [`json`] sets.
pub fn json_bytes(status: StatusCode, body: Vec<u8>) -> Response {
    let mut r = Response::new(body.into());
    *r.status_mut() = status;
    r.headers_mut().insert(
        warp::http::header::CONTENT_TYPE,
        warp::http::HeaderValue::from_static("application/json"),
    );
    r
}

/// Any request no route took: JSON 404 (or 405 for a known path and wrong method).
pub async fn not_found(r: warp::Rejection) -> Result<Response, std::convert::Infallible> {
    if r.find::<warp::reject::MethodNotAllowed>().is_some() {
        return Ok(error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"));
    }
    Ok(error(StatusCode::NOT_FOUND, "not found"))
}
