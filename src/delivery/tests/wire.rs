//! `prepare` → the lane's own `Destination::post` (a real reqwest POST) → a local
//! warp receiver → `classify`, then a whole `attempt`: what the lane will do,
//! minus the queue.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use tokio::sync::mpsc;
use warp::Filter;

use super::NOW;
use crate::config::{DestinationConfig, Format, RetryConfig, Secret};
use crate::delivery::attempt::{Context, Decision, attempt};
use crate::delivery::classify::{Failure, Outcome};
use crate::delivery::destination::Destination;
use crate::delivery::format::Prepared;
use crate::delivery::format::tests::{dest, sign};
use crate::queue::{DeliveryId, DeliveryRecord, DeliveryState};

/// `d` sending to `url`, built the way the lanes build theirs.
fn destination(mut d: DestinationConfig, url: &str) -> Destination {
    d.url = url.parse().expect("test url");
    Destination::new("wire", &d).expect("destination")
}

/// The request that carries one empty event.
fn one_request(hook: &Destination) -> Prepared {
    let mut reqs = hook.encoder.prepare(&["{}"], NOW).expect("prepare");
    reqs.remove(0)
}

/// One send through the lane's own `Destination::post`.
async fn post(hook: &Destination, req: &Prepared) -> Outcome {
    tokio::time::timeout(Duration::from_secs(10), hook.post(req, || NOW))
        .await
        .expect("in time")
}

/// A receiver that records what it got and answers by path: `/ok`, `/status/{code}`.
async fn receiver() -> (SocketAddr, mpsc::UnboundedReceiver<(HeaderMap, Bytes)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let ok = warp::path("ok")
        .and(warp::header::headers_cloned())
        .and(warp::body::bytes())
        .map(move |h: HeaderMap, b: Bytes| {
            let _ = tx.send((h, b));
            "ok"
        });
    let status = warp::path!("status" / u16).map(|code: u16| {
        let status = warp::http::StatusCode::from_u16(code).expect("test status");
        let reply = warp::reply::with_status("nope\nnot here", status);
        let reply = warp::reply::with_header(reply, "retry-after", "3");
        warp::reply::with_header(reply, "location", "http://127.0.0.1:1/elsewhere")
    });
    let routes = warp::post().and(ok.or(status));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(warp::serve(routes).incoming(listener).run());
    (addr, rx)
}

#[tokio::test]
async fn batches_arrive_signed_and_count_as_delivered() {
    let (addr, mut rx) = receiver().await;
    let mut d = dest(Format::WebhookBatch);
    d.shared_secret = Some(Secret::new("s3cr3t"));
    d.headers = vec![("X-Team".into(), Secret::new("data"))];
    d.batch_size = 2;
    let events = [r#"{"n":1,"s":"é😀"}"#, r#"{"n":2}"#, r#"{"n":3}"#];
    let hook = destination(d, &format!("http://{addr}/ok"));
    let reqs = hook.encoder.prepare(&events, NOW).expect("prepare");
    for req in &reqs {
        assert_eq!(post(&hook, req).await, Outcome::Delivered);
    }
    for (req, first) in reqs.iter().zip([events[0], events[2]]) {
        let (headers, body) = rx.recv().await.expect("received");
        assert_eq!(body, req.body);
        let want = sign(b"s3cr3t", first.as_bytes());
        assert_eq!(headers["x-signature"], want.as_str());
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(headers["x-team"], "data");
        assert!(
            headers["user-agent"]
                .to_str()
                .expect("ua")
                .starts_with("shoprelay/")
        );
    }
}

#[tokio::test]
async fn answers_classify_without_following_redirects() {
    let (addr, _rx) = receiver().await;
    // Status, retried, Retry-After, what the log shows, what the dead letter stores.
    let cases = [
        (
            302,
            false,
            None,
            "HTTP 302 Found (redirects are not followed)",
            "HTTP 302 Found (redirects are not followed; Location: http://127.0.0.1:1/elsewhere): nope not here",
        ),
        (
            400,
            false,
            None,
            "HTTP 400 Bad Request",
            "HTTP 400 Bad Request: nope not here",
        ),
        (
            429,
            true,
            Some(Duration::from_secs(3)),
            "HTTP 429 Too Many Requests (Retry-After 3s)",
            "HTTP 429 Too Many Requests (Retry-After 3s): nope not here",
        ),
        (
            500,
            true,
            None,
            "HTTP 500 Internal Server Error",
            "HTTP 500 Internal Server Error: nope not here",
        ),
    ];
    for (code, retried, retry_after, logged, stored) in cases {
        let hook = destination(
            dest(Format::Webhook),
            &format!("http://{addr}/status/{code}"),
        );
        let got = post(&hook, &one_request(&hook)).await;
        let f = got.failure().expect("a failure");
        assert_eq!(f.status, Some(code));
        assert_eq!(
            (f.summary.as_str(), f.reason()),
            (logged, stored.to_string()),
            "{code}"
        );
        match got {
            Outcome::Retry {
                retry_after: ra, ..
            } => assert!(retried && ra == retry_after, "{code}"),
            _ => assert!(!retried, "{code}"),
        }
    }
}

#[tokio::test]
async fn transport_errors_retry_without_leaking_the_url() {
    // Refused: a port that was just free.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let url = format!("http://127.0.0.1:{port}/hook?token=SECRET");
    let hook = destination(dest(Format::Webhook), &url);
    let got = post(&hook, &one_request(&hook)).await;
    assert_eq!(
        got,
        Outcome::Retry {
            retry_after: None,
            failure: Failure::no_answer("connection refused".into())
        }
    );

    // Timeout: the kernel accepts the connection, nobody answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!(
        "http://{}/hook?token=SECRET",
        silent.local_addr().expect("addr")
    );
    let mut d = dest(Format::Webhook);
    d.timeout = Duration::from_millis(200);
    let hook = destination(d, &url);
    let got = post(&hook, &one_request(&hook)).await;
    assert_eq!(
        got,
        Outcome::Retry {
            retry_after: None,
            failure: Failure::no_answer("timed out after 200ms".into())
        }
    );
    assert!(!format!("{got:?}").contains("SECRET"));
}

/// A real order, through mapping and one attempt at `url`, with a retry window of
/// `max_age` (the clock stands still at `NOW`, so a zero window gives up at once).
async fn one_attempt(url: &str, max_age: Duration) -> Decision {
    let hook = std::sync::Arc::new(destination(dest(Format::Webhook), url));
    let (ctx, _trigger) = Context::for_tests(
        [("wire".to_string(), hook)].into(),
        None,
        RetryConfig {
            max_age,
            ..RetryConfig::default()
        },
        || NOW,
    );
    let order = include_str!("../../../samples/shopify/orders__create.json");
    let webhook = crate::queue::contract::webhook("e1", order);
    let id = DeliveryId {
        webhook: 1,
        slot: 0,
    };
    let rec = DeliveryRecord::new(id, "wire".into(), vec!["wire".into()], NOW);
    tokio::time::timeout(Duration::from_secs(10), attempt(&ctx, rec, &webhook))
        .await
        .expect("in time")
}

#[tokio::test]
async fn a_decision_logs_our_words_and_stores_the_answer() {
    let (addr, _rx) = receiver().await;
    let at = |code: u16| format!("http://{addr}/status/{code}");
    let hour = Duration::from_secs(3600);

    let Decision::Retry { record, summary } = one_attempt(&at(503), hour).await else {
        panic!("a 503 inside the window is retried");
    };
    assert_eq!(summary, "HTTP 503 Service Unavailable (Retry-After 3s)");
    assert_eq!(
        record.last_error.as_deref(),
        Some("HTTP 503 Service Unavailable (Retry-After 3s): nope not here")
    );
    assert_eq!((record.last_status, record.attempts), (Some(503), 1));

    for (code, window, logged, stored) in [
        (
            503,
            Duration::ZERO,
            "gave up after 1 attempt over 0s: HTTP 503 Service Unavailable (Retry-After 3s)",
            "gave up after 1 attempt over 0s: HTTP 503 Service Unavailable (Retry-After 3s): nope not here",
        ),
        (
            400,
            hour,
            "HTTP 400 Bad Request",
            "HTTP 400 Bad Request: nope not here",
        ),
    ] {
        let Decision::Bury { record, summary } = one_attempt(&at(code), window).await else {
            panic!("{code} is buried");
        };
        assert_eq!(summary, logged);
        let DeliveryState::Dead { reason, .. } = &record.state else {
            panic!("{code}: a buried record is dead");
        };
        assert_eq!(reason, stored);
        assert_eq!(record.last_status, Some(code));
    }
}
