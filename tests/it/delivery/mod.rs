//! Delivery end to end: real relay, real local receivers the test controls.
//! This file: events reaching their destinations, each lane on its own; by
//! behaviour beside it: `retry`, `first_success`, `batching`, `orphans`.

mod batching;
mod first_success;
mod orphans;
mod retry;

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::common::receiver::{Answer, TestReceiver};
use crate::common::relay::{Dest, Opts, Relay, SECRET, signed_dest as dest};
use crate::common::sign::{DEST_SECRET, ShopifyWebhook, x_signature as sha1_hex};
use crate::common::{client, get_json, send_json, until};

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
    send_json("ingest", h.request(&client(), &relay.shopify_url("acme"))).await
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
    relay.wait_drained().await;
    relay.stop().await;
}

#[tokio::test]
async fn a_hanging_destination_never_delays_a_healthy_one() {
    let hang = TestReceiver::with(Arc::new(|_| Answer {
        delay_ms: 3_000,
        ..Answer::status(200)
    }))
    .await;
    let healthy = TestReceiver::start().await;
    let relay = Relay::start(Opts {
        dests: vec![
            dest(
                "hang",
                &hang,
                "timeout = \"200ms\"\nconcurrency = 1\nevents = [\"track\"]",
            ),
            dest("ok", &healthy, "events = [\"track\"]"),
        ],
        extra: FAST_RETRY.into(),
        ..Opts::default()
    })
    .await;
    let start = std::time::Instant::now();
    for n in 0..20 {
        post(&relay, &order(100 + n)).await;
    }
    healthy.wait_for(20).await;
    // With one request at a time and a 200 ms timeout, the hanging lane needs
    // 4 s to try all 20 once; the healthy one must not have waited for that.
    let hang_tries = hang.count();
    assert!(
        hang_tries < 20,
        "healthy lane finished only after {hang_tries} hanging tries"
    );
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "healthy destination waited: {:?}",
        start.elapsed()
    );
    // The hanging one timed out and is being retried.
    hang.wait_for(2).await;
    relay
        .wait_metric(r#"shoprelay_deliveries_total{lane="hang",outcome="retry"}"#)
        .await;
    relay.stop().await;
}

#[tokio::test]
async fn five_destinations_each_get_every_event() {
    let mut receivers = Vec::new();
    for _ in 0..5 {
        receivers.push(TestReceiver::start().await);
    }
    let dests = receivers
        .iter()
        .enumerate()
        .map(|(i, r)| dest(&format!("d{i}"), r, ""))
        .collect();
    let relay = Relay::start(Opts {
        dests,
        ..Opts::default()
    })
    .await;
    for n in 0..3 {
        post(&relay, &order(200 + n)).await;
    }
    for r in &receivers {
        r.wait_for(6).await;
    }
    relay.wait_drained().await;
    for r in &receivers {
        assert_eq!(r.count(), 6);
    }
    relay.stop().await;
}

async fn wait_dead(relay: &Relay, n: usize) -> Vec<Value> {
    crate::common::eventually("dead letters", || async {
        let dl = relay.dead_letters().await;
        (dl.len() >= n).then_some(dl)
    })
    .await
}
