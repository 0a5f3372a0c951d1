//! Every row of the ingest answer table, secret rotation, dedup across a restart.

use serde_json::Value;

use crate::common::relay::{OLD_SECRET, Opts, Relay, SECRET};
use crate::common::sign::{self, ShopifyWebhook};
use crate::common::{client, within};

async fn send(req: reqwest::RequestBuilder) -> (u16, Value) {
    let r = within("ingest answer", req.send()).await.unwrap();
    let status = r.status().as_u16();
    let body: Value = within("ingest body", r.json()).await.unwrap_or(Value::Null);
    (status, body)
}

/// Sends a request the relay refuses before reading its body: it must say
/// `Connection: close` (it closes the connection). Returns the status.
async fn send_refused_unread(req: reqwest::RequestBuilder) -> u16 {
    let r = within("refusal", req.send()).await.unwrap();
    assert_eq!(
        r.headers().get("connection").map(|v| v.as_bytes()),
        Some(&b"close"[..]),
        "{} without Connection: close",
        r.status()
    );
    r.status().as_u16()
}

fn order(id: u64) -> Vec<u8> {
    format!(r#"{{"id":{id},"email":"buyer@example.com","total_price":"10.00","line_items":[]}}"#)
        .into_bytes()
}

fn hook(event_id: &str, body: Vec<u8>) -> ShopifyWebhook<'static> {
    ShopifyWebhook {
        topic: "orders/create",
        event_id: Some(event_id.into()),
        body,
        secret: SECRET,
    }
}

#[tokio::test]
async fn answer_table() {
    let relay = Relay::start(Opts {
        max_body_bytes: 2048,
        ..Opts::default()
    })
    .await;
    let c = client();
    let url = relay.shopify_url("acme");

    // 200 queued, then 200 duplicate for the same event id.
    let (s, b) = send(hook("e1", order(1)).request(&c, &url)).await;
    assert_eq!((s, b["status"].as_str()), (200, Some("queued")), "{b}");
    assert!(b["id"].is_string());
    let (s, b2) = send(hook("e1", order(1)).request(&c, &url)).await;
    assert_eq!((s, b2["status"].as_str()), (200, Some("duplicate")), "{b2}");
    assert_eq!(b2["id"], b["id"]);

    // Trailing slash accepted.
    let (s, b) = send(hook("e2", order(2)).request(&c, &format!("{url}/"))).await;
    assert_eq!((s, b["status"].as_str()), (200, Some("queued")), "{b}");

    // Shopify's unprefixed header spelling is accepted like the X- form,
    // duplicates included.
    let unprefixed = || {
        c.post(&url)
            .header("content-type", "application/json")
            .header("shopify-topic", "orders/create")
            .header("shopify-hmac-sha256", sign::shopify(SECRET, &order(9)))
            .header("shopify-shop-domain", "acme.myshopify.com")
            .header("shopify-event-id", "e-unprefixed")
            .header("shopify-webhook-id", "wh-e-unprefixed")
            .header("shopify-triggered-at", "2025-01-01T00:00:00Z")
            .header("shopify-api-version", "2025-01")
            .body(order(9))
    };
    let (s, b) = send(unprefixed()).await;
    assert_eq!((s, b["status"].as_str()), (200, Some("queued")), "{b}");
    let (s, b) = send(unprefixed()).await;
    assert_eq!((s, b["status"].as_str()), (200, Some("duplicate")), "{b}");

    // 401: missing, wrong, tampered body.
    let (s, b) = send(
        c.post(&url)
            .header("x-shopify-topic", "orders/create")
            .body(order(3)),
    )
    .await;
    assert_eq!(s, 401, "{b}");
    assert!(
        b["error"]
            .as_str()
            .unwrap()
            .contains("X-Shopify-Hmac-Sha256")
    );
    let wrong = ShopifyWebhook {
        secret: "wrong",
        ..hook("e3", order(3))
    };
    assert_eq!(send(wrong.request(&c, &url)).await.0, 401);
    let tampered = hook("e3", order(3)).request(&c, &url).body(order(4));
    assert_eq!(send(tampered).await.0, 401);
    let garbage = c
        .post(&url)
        .header("x-shopify-hmac-sha256", "%%%")
        .header("x-shopify-topic", "orders/create")
        .body(order(3));
    assert_eq!(send(garbage).await.0, 401);

    // 404: unknown source; a convertedin source on the Shopify URL and back.
    assert_eq!(
        send_refused_unread(hook("e4", order(4)).request(&c, &relay.shopify_url("nope"))).await,
        404
    );
    assert_eq!(
        send(hook("e4", order(4)).request(&c, &relay.shopify_url("ci")))
            .await
            .0,
        404
    );
    let ci_url = format!("{}/webhooks/convertedin/acme/orders/create", relay.ingest);
    assert_eq!(send(hook("e4", order(4)).request(&c, &ci_url)).await.0, 404);

    // 405: not POST.
    assert_eq!(send_refused_unread(c.get(&url)).await, 405);

    // 400: no topic, not an object, not JSON, nested too deep — all correctly signed.
    let no_topic = c
        .post(&url)
        .header("x-shopify-hmac-sha256", sign::shopify(SECRET, b"{}"))
        .body("{}");
    let (s, b) = send(no_topic).await;
    assert_eq!(s, 400, "{b}");
    assert!(b["error"].as_str().unwrap().contains("X-Shopify-Topic"));
    for body in [&b"[1,2]"[..], b"not json", b"{\"a\":", b""] {
        let (s, b) = send(hook("e5", body.to_vec()).request(&c, &url)).await;
        assert_eq!(s, 400, "{} -> {b}", String::from_utf8_lossy(body));
    }
    let deep = format!("{{\"a\":{}1{}}}", "[".repeat(150), "]".repeat(150));
    assert_eq!(
        send(hook("e6", deep.into_bytes()).request(&c, &url))
            .await
            .0,
        400
    );

    // 413: declared too large, and too large while streaming (chunked, no Content-Length).
    let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(4096)).into_bytes();
    // The answer comes before the body is read, so the relay closes the
    // connection and says so: a keep-alive client must not reuse it (its next
    // request would meet a closed socket).
    assert_eq!(
        send_refused_unread(hook("e7", big.clone()).request(&c, &url)).await,
        413
    );
    // An answer given after reading the body keeps the connection.
    let wrong = ShopifyWebhook {
        secret: "wrong",
        ..hook("e7", order(7))
    };
    let r = within("401", wrong.request(&c, &url).send()).await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(r.headers().get("connection"), None);
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        big.chunks(512).map(|c| Ok(c.to_vec())).collect();
    let streamed = hook("e7", big.clone())
        .request(&c, &url)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )));
    assert_eq!(send_refused_unread(streamed).await, 413);
    // A small chunked body is fine (no 411).
    let small = order(8);
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        small.chunks(7).map(|c| Ok(c.to_vec())).collect();
    let streamed = hook("e8", small.clone())
        .request(&c, &url)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )));
    assert_eq!(send(streamed).await.1["status"], "queued");

    // Order of checks: unknown source beats size beats signature.
    assert_eq!(
        send(hook("e9", big.clone()).request(&c, &relay.shopify_url("nope")))
            .await
            .0,
        404
    );
    let unsigned_big = c
        .post(&url)
        .header("x-shopify-topic", "orders/create")
        .body(big);
    assert_eq!(send(unsigned_big).await.0, 413);

    // healthz on both listeners.
    assert_eq!(
        c.get(format!("{}/healthz", relay.ingest))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.get(format!("{}/healthz", relay.admin))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // Rejections are counted by reason.
    let metrics = c
        .get(format!("{}/metrics", relay.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            r#"shoprelay_webhooks_rejected_total{source="acme",reason="bad_signature"} 4"#
        ),
        "{metrics}"
    );
    relay.stop().await;
}

#[tokio::test]
async fn secret_rotation_accepts_old_and_new() {
    let relay = Relay::start(Opts::default()).await;
    let c = client();
    let url = relay.shopify_url("acme");
    for (i, secret) in [SECRET, OLD_SECRET].into_iter().enumerate() {
        let h = ShopifyWebhook {
            secret,
            ..hook(&format!("rot{i}"), order(i as u64))
        };
        assert_eq!(
            send(h.request(&c, &url)).await.1["status"],
            "queued",
            "secret #{i}"
        );
    }
    relay.stop().await;
}

#[tokio::test]
async fn convertedin_hex_and_base64_and_content_dedup() {
    let relay = Relay::start(Opts::default()).await;
    let c = client();
    let url = format!("{}/webhooks/convertedin/ci/orders/update", relay.ingest);
    let body = order(77);
    let req = |sig: String| {
        c.post(&url)
            .header("x-hmac-sha256", sig)
            .header("x-shop-domain", "store-name.com")
            .body(body.clone())
    };
    let (s, b) = send(req(sign::hex(SECRET, &body))).await;
    assert_eq!((s, b["status"].as_str()), (200, Some("queued")), "{b}");
    // The same body again (base64 this time) is the same webhook.
    let (s, b) = send(req(sign::shopify(SECRET, &body))).await;
    assert_eq!((s, b["status"].as_str()), (200, Some("duplicate")), "{b}");
    // The same body on another topic is another webhook.
    let other = format!("{}/webhooks/convertedin/ci/orders/create", relay.ingest);
    let (s, b) = send(
        c.post(&other)
            .header("x-hmac-sha256", sign::hex(SECRET, &body))
            .body(body.clone()),
    )
    .await;
    assert_eq!((s, b["status"].as_str()), (200, Some("queued")), "{b}");
    assert_eq!(send(req("00".repeat(32))).await.0, 401);
    relay.stop().await;
}

#[tokio::test]
async fn dedup_survives_a_restart() {
    let relay = Relay::start(Opts::default()).await;
    let c = client();
    let (_, first) = send(hook("persist", order(1)).request(&c, &relay.shopify_url("acme"))).await;
    assert_eq!(first["status"], "queued");
    let dir = relay.stop().await;
    let relay = Relay::start_in(Opts::default(), dir).await;
    let (s, again) = send(hook("persist", order(1)).request(&c, &relay.shopify_url("acme"))).await;
    assert_eq!(
        (s, again["status"].as_str()),
        (200, Some("duplicate")),
        "{again}"
    );
    assert_eq!(again["id"], first["id"]);
    relay.stop().await;
}
