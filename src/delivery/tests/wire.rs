//! `prepare` → a real reqwest POST → a local warp receiver → `classify`: what the
//! lane will do, minus the queue.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use tokio::sync::mpsc;
use warp::Filter;

use super::NOW;
use crate::config::{Format, Secret};
use crate::delivery::classify::{self, Outcome};
use crate::delivery::format::{Encoder, Prepared, sign, tests::dest};

/// One attempt the way a lane makes it: no redirects, a timeout, at most 1 KiB of
/// the answer read.
async fn attempt(url: &str, req: &Prepared, timeout: Duration) -> Outcome {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .build()
        .expect("client");
    let mut builder = client.post(url).body(req.body.clone());
    for (name, value) in &req.headers {
        builder = builder.header(name, value);
    }
    let mut resp = match builder.send().await {
        Ok(r) => r,
        Err(e) => return classify::from_reqwest_error(&e, timeout),
    };
    let mut start = Vec::new();
    while start.len() < 1024 {
        match resp.chunk().await {
            Ok(Some(chunk)) => start.extend_from_slice(&chunk),
            _ => break,
        }
    }
    classify::classify_response(resp.status().as_u16(), resp.headers(), &start, NOW)
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
    let reqs = Encoder::new(&d)
        .expect("encoder")
        .prepare(&events, NOW)
        .expect("prepare");
    let url = format!("http://{addr}/ok");
    for req in &reqs {
        let outcome = tokio::time::timeout(Duration::from_secs(10), attempt(&url, req, d.timeout))
            .await
            .expect("in time");
        assert_eq!(outcome, Outcome::Delivered);
    }
    for (req, first) in reqs.iter().zip([events[0], events[2]]) {
        let (headers, body) = rx.recv().await.expect("received");
        assert_eq!(body, req.body);
        let want = sign(b"s3cr3t", first.as_bytes()).expect("sign");
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
    let req = &Encoder::new(&dest(Format::Webhook))
        .expect("encoder")
        .prepare(&["{}"], NOW)
        .expect("prepare")[0];
    let t = Duration::from_secs(5);
    let at = |code: u16| format!("http://{addr}/status/{code}");
    let cases = [
        (302, Outcome::Fail { status: 302, error: "HTTP 302 Found (redirects are not followed; Location: http://127.0.0.1:1/elsewhere): nope not here".into() }),
        (400, Outcome::Fail { status: 400, error: "HTTP 400 Bad Request: nope not here".into() }),
        (429, Outcome::Retry { status: Some(429), retry_after: Some(Duration::from_secs(3)), error: "HTTP 429 Too Many Requests (Retry-After 3s): nope not here".into() }),
        (500, Outcome::Retry { status: Some(500), retry_after: None, error: "HTTP 500 Internal Server Error: nope not here".into() }),
    ];
    for (code, want) in cases {
        let got = tokio::time::timeout(Duration::from_secs(10), attempt(&at(code), req, t))
            .await
            .expect("in time");
        assert_eq!(got, want, "{code}");
    }
}

#[tokio::test]
async fn transport_errors_retry_without_leaking_the_url() {
    let req = &Encoder::new(&dest(Format::Webhook))
        .expect("encoder")
        .prepare(&["{}"], NOW)
        .expect("prepare")[0];
    // Refused: a port that was just free.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let url = format!("http://127.0.0.1:{port}/hook?token=SECRET");
    let got = attempt(&url, req, Duration::from_secs(5)).await;
    assert_eq!(got.error(), Some("connection refused"), "{got:?}");

    // Timeout: the kernel accepts the connection, nobody answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!(
        "http://{}/hook?token=SECRET",
        silent.local_addr().expect("addr")
    );
    let got = tokio::time::timeout(
        Duration::from_secs(10),
        attempt(&url, req, Duration::from_millis(200)),
    )
    .await
    .expect("in time");
    assert_eq!(
        got,
        Outcome::Retry {
            status: None,
            retry_after: None,
            error: "timed out after 200ms".into()
        }
    );
    assert!(!format!("{got:?}").contains("SECRET"));
}
