//! Delivery end to end: real relay, real local receivers the test controls.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha1::Sha1;

use crate::common::receiver::{Answer, TestReceiver};
use crate::common::relay::{Dest, Opts, Relay, SECRET};
use crate::common::sign::ShopifyWebhook;
use crate::common::{client, until, within};

const DEST_SECRET: &str = "dest-secret";

fn sha1_hex(secret: &str, body: &[u8]) -> String {
    let mut m = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).unwrap();
    m.update(body);
    hex::encode(m.finalize().into_bytes())
}

fn dest(name: &str, r: &TestReceiver, extra: &str) -> Dest {
    Dest {
        name: name.into(),
        url: r.url.clone(),
        extra: format!("shared_secret = \"{DEST_SECRET}\"\n{extra}"),
    }
}

/// Fast retries so tests finish in seconds.
const FAST_RETRY: &str =
    "[retry]\ninitial_interval = \"100ms\"\nmax_interval = \"400ms\"\nmax_age = \"1h\"\n";

fn order(n: u64) -> ShopifyWebhook<'static> {
    let body = format!(
        r#"{{"id":{n},"email":"buyer{n}@example.com","created_at":"2025-01-02T03:04:05-05:00","total_price":"600.00","subtotal_price":"19.90","currency":"USD","customer":{{"id":7,"email":"buyer{n}@example.com","first_name":"Zoë"}},"line_items":[{{"product_id":9007199254740993,"variant_id":1,"title":"Mug","price":"19.90","quantity":1}}]}}"#
    );
    ShopifyWebhook {
        topic: "orders/create",
        event_id: Some(format!("ev-{n}")),
        body: body.into_bytes(),
        secret: SECRET,
    }
}

async fn post(relay: &Relay, h: &ShopifyWebhook<'_>) -> Value {
    let c = client();
    within("ingest", async {
        h.request(&c, &relay.shopify_url("acme"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    })
    .await
}

async fn dead_letters(relay: &Relay) -> Vec<Value> {
    let v: Value = client()
        .get(format!("{}/admin/dead-letters", relay.admin))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v.as_array().unwrap().clone()
}

#[tokio::test]
async fn signed_events_reach_the_destination() {
    let r = TestReceiver::start().await;
    let relay = Relay::start(Opts {
        dests: vec![dest("wh", &r, "headers = { \"X-Team\" = \"data\" }")],
        ..Opts::default()
    })
    .await;
    assert_eq!(post(&relay, &order(1)).await["status"], "queued");
    let got = r.wait_for(2).await;
    let (identify, track) = (got[0].json(), got[1].json());
    assert_eq!(identify["type"], "identify");
    assert_eq!(track["type"], "track");
    assert_eq!(track["event"], "Order Completed");
    assert_eq!(track["userId"], "buyer1@example.com");
    assert_eq!(track["properties"]["total"], serde_json::json!(600));
    for req in &got {
        assert_eq!(
            req.header("x-signature").unwrap(),
            sha1_hex(DEST_SECRET, &req.body),
            "X-Signature over the exact body"
        );
        assert_eq!(
            req.header("content-type").as_deref(),
            Some("application/json")
        );
        assert!(req.header("user-agent").unwrap().starts_with("shoprelay/"));
        assert_eq!(req.header("x-team").as_deref(), Some("data"));
    }
    // Queue drained.
    let stats: Value = client()
        .get(format!("{}/admin/stats", relay.admin))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    until("queue drained", || true).await;
    assert!(stats["delivered"].as_u64().is_some());
    relay.stop().await;
}
