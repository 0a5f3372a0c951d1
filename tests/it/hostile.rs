//! Hostile payloads through the whole path (ingest → queue → mapping →
//! delivery), correctly signed so they get past the signature check: deep
//! nesting, huge arrays and objects, odd unicode, numbers beyond f64, bodies
//! past `max_body_bytes` with and without a Content-Length. Every answer is
//! 200, 400 or 413 (never a 5xx or a dropped connection), the relay stays
//! healthy, and everything accepted is delivered or dead-lettered.
//!
//! Then hostile *traffic*, unauthenticated, against the bounds of the public
//! listener (README, Security): slow heads and idle connections (`heads`),
//! stalled bodies (`bodies`), connections past the cap (`connections`), and
//! unknown source names by the thousand (`labels`). Those that measure memory,
//! descriptors or the log run the relay binary as a child process.

mod bodies;
mod connections;
mod heads;
mod labels;

use std::time::{Duration, Instant};

use crate::common::receiver::TestReceiver;
use crate::common::relay::{Child_, Dest, Opts, Relay, SECRET, spawn_binary, toml};
use crate::common::sign::{ShopifyWebhook, shopify};
use crate::common::{client, within};

/// The relay binary on a fresh data dir with these `[server]` lines.
fn child_relay(server_extra: &str) -> (tempfile::TempDir, Child_) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("relay.toml");
    let opts = Opts {
        server_extra: server_extra.into(),
        ..Opts::default()
    };
    std::fs::write(&cfg, toml(&opts, &dir.path().join("data"))).unwrap();
    let relay = spawn_binary(&cfg);
    (dir, relay)
}

/// A gauge's value in `/metrics` text.
fn gauge(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

/// Sends signed webhook number `n` on a connection of its own: the status
/// and how long the answer took.
async fn signed(ingest: &str, n: u64) -> (u16, Duration) {
    let c = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let h = ShopifyWebhook {
        topic: "orders/create",
        event_id: Some(format!("hostile-signed-{n}")),
        body: format!(r#"{{"id":{n},"email":"b{n}@example.com"}}"#).into_bytes(),
        secret: SECRET,
    };
    let started = Instant::now();
    let url = format!("{ingest}/webhooks/shopify/acme");
    let r = within("a signed webhook", h.request(&c, &url).send())
        .await
        .unwrap();
    (r.status().as_u16(), started.elapsed())
}

fn nest(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

fn payloads() -> Vec<(&'static str, Vec<u8>, &'static [u16])> {
    let many_items = format!(
        r#"{{"id":1,"email":"a@example.com","line_items":[{}]}}"#,
        vec![r#"{"price":"1.00","quantity":1,"title":"x"}"#; 15_000].join(",")
    );
    let many_numbers = format!(r#"{{"id":2,"xs":[{}]}}"#, vec!["1"; 400_000].join(","));
    let many_keys = format!(
        "{{{}}}",
        (0..40_000)
            .map(|i| format!("\"k{i}\":{i}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    vec![
        (
            "depth 99",
            format!(r#"{{"id":3,"a":{}}}"#, nest(98)).into_bytes(),
            &[200],
        ),
        (
            "depth 150",
            format!(r#"{{"a":{}}}"#, nest(149)).into_bytes(),
            &[400],
        ),
        (
            "depth 200,000",
            format!(r#"{{"a":{}}}"#, nest(200_000)).into_bytes(),
            &[400],
        ),
        ("15,000 line items", many_items.into_bytes(), &[200]),
        ("400,000 numbers", many_numbers.into_bytes(), &[200]),
        ("40,000 keys", many_keys.into_bytes(), &[200]),
        (
            "numbers beyond f64",
            br#"{"id":1e400,"total_price":123456789012345678901234567890.123456789,"subtotal_price":-0,"total_tax":1E-400,"customer":{"id":99999999999999999999999}}"#.to_vec(),
            &[200],
        ),
        (
            "odd unicode",
            "{\"id\":5,\"email\":\"\u{202e}moc.elpmaxe@a\u{feff}\",\"note\":\"\\u0000\u{1F6CD}\u{200d}\",\"k\\u0000\":\"\u{10ffff}\"}"
                .as_bytes()
                .to_vec(),
            &[200],
        ),
        (
            "lone surrogate escape",
            br#"{"id":6,"email":"\ud800@example.com"}"#.to_vec(),
            &[200, 400],
        ),
        (
            "invalid UTF-8 in a string",
            b"{\"id\":7,\"note\":\"\xff\xfe\"}".to_vec(),
            // JSON is UTF-8 (RFC 8259): refused at the door, not dead-lettered.
            &[400],
        ),
        ("top-level array", b"[1,2,3]".to_vec(), &[400]),
        ("empty body", Vec::new(), &[400]),
        ("2 MiB body", vec![b' '; 2 << 20], &[413]),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_payloads_are_answered_and_never_crash_the_relay() {
    let receiver = TestReceiver::start().await;
    let relay = Relay::start(Opts {
        dests: vec![Dest {
            name: "r".into(),
            url: receiver.url.clone(),
            extra: String::new(),
        }],
        ..Opts::default()
    })
    .await;
    let c = client();
    let url = relay.shopify_url("acme");
    for (i, (what, body, allowed)) in payloads().into_iter().enumerate() {
        let h = ShopifyWebhook {
            topic: "orders/create",
            event_id: Some(format!("hostile-{i}")),
            body,
            secret: SECRET,
        };
        let oversize = h.body.len() > Opts::default().max_body_bytes as usize;
        let r = match within(what, h.request(&c, &url).send()).await {
            Ok(r) => r,
            // The 413 goes out before the body is read, and the connection is
            // closed under a client still writing: a reset is a refusal too.
            Err(_) if oversize => continue,
            Err(e) => panic!("{what}: no answer: {e}"),
        };
        let status = r.status().as_u16();
        assert!(allowed.contains(&status), "{what}: answered {status}");
    }

    // Past max_body_bytes without a Content-Length (chunked): 413, and the
    // relay stops reading rather than buffering it all.
    let chunk = bytes::Bytes::from(vec![b' '; 64 << 10]);
    let stream =
        futures_util::stream::iter((0..64).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
    let r = within(
        "chunked oversize",
        c.post(&url)
            .header("x-shopify-topic", "orders/create")
            .header("x-shopify-hmac-sha256", shopify(SECRET, b"whatever"))
            .body(reqwest::Body::wrap_stream(stream))
            .send(),
    )
    .await;
    if let Ok(r) = r {
        assert_eq!(r.status().as_u16(), 413);
    } // (a reset while the client is still writing is also a refusal)

    let health = within("healthz", c.get(format!("{}/healthz", relay.ingest)).send())
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);

    // Everything accepted leaves the queue: delivered or dead-lettered.
    relay.wait_drained().await;
    relay.stop().await;
}
