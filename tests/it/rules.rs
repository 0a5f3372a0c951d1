//! A destination's rules end to end: jq filter and transform, run-time errors
//! as dead letters that replay once relay.toml is fixed, and rate limits
//! measured at a real receiver.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::receiver::TestReceiver;
use crate::common::relay::{Opts, Relay, SECRET, signed_dest as dest};
use crate::common::sign::{DEST_SECRET, ShopifyWebhook, x_signature as sha1_hex};
use crate::common::{client, eventually, send_json, within};

/// An order of `total` with a customer: identify + track.
fn order(n: u64, total: &str) -> ShopifyWebhook<'static> {
    let body = format!(
        r#"{{"id":{n},"email":"buyer{n}@example.com","created_at":"2025-01-02T03:04:05-05:00","total_price":"{total}","currency":"USD","customer":{{"id":{n},"email":"buyer{n}@example.com"}},"line_items":[{{"product_id":{n},"variant_id":1,"title":"Mug","price":"{total}","quantity":1}}]}}"#
    );
    ShopifyWebhook {
        topic: "orders/create",
        event_id: Some(format!("ev-{n}")),
        body: body.into_bytes(),
        secret: SECRET,
    }
}

async fn post(relay: &Relay, h: &ShopifyWebhook<'_>) {
    let v = send_json("ingest", h.request(&client(), &relay.shopify_url("acme"))).await;
    assert_eq!(v["status"], "queued", "{v}");
}

fn tracks(got: &[crate::common::receiver::Received]) -> Vec<Value> {
    got.iter()
        .map(|r| r.json())
        .filter(|e| e["type"] == "track")
        .collect()
}

#[tokio::test]
async fn each_destination_gets_what_its_rules_allow_signed_as_sent() {
    let (all, crm) = (TestReceiver::start().await, TestReceiver::start().await);
    let relay = Relay::start(Opts {
        dests: vec![
            dest("all", &all, ""),
            dest(
                "crm",
                &crm,
                "filter = '.type == \"track\" and .properties.total >= 100'\n\
                 transform = '.properties.channel = \"web\" | .properties.total *= 100 | del(.context)'",
            ),
        ],
        ..Opts::default()
    })
    .await;
    post(&relay, &order(1, "600.00")).await;
    post(&relay, &order(2, "19.90")).await;
    post(&relay, &order(3, "100.00")).await;
    let got_all = all.wait_for(6).await;
    relay.wait_drained().await;
    let got_crm = crm.received();

    // No rules: identify and track of every order.
    assert_eq!(got_all.len(), 6);
    assert_eq!(tracks(&got_all).len(), 3);
    // Rules: the tracks of 100 and over, transformed.
    assert_eq!(got_crm.len(), 2, "{:?}", got_crm);
    let mut totals = Vec::new();
    for r in &got_crm {
        let e = r.json();
        assert_eq!(e["type"], "track");
        assert_eq!(e["properties"]["channel"], "web");
        assert!(e.get("context").is_none(), "{e}");
        totals.push(e["properties"]["total"].clone());
        // The transformed bytes are the signed bytes.
        assert_eq!(
            r.header("x-signature").unwrap(),
            sha1_hex(DEST_SECRET, &r.body)
        );
        // The messageId is the event's own: the same as the unfiltered copy.
        let original = tracks(&got_all)
            .into_iter()
            .find(|t| t["userId"] == e["userId"])
            .expect("the same order reached `all`");
        assert_eq!(e["messageId"], original["messageId"]);
    }
    totals.sort_by_key(|t| t.as_i64());
    assert_eq!(totals, [serde_json::json!(10000), serde_json::json!(60000)]);

    // Skips counted per destination: 3 identifies and 1 small track.
    relay
        .wait_metric("shoprelay_events_skipped_total{destination=\"crm\",rule=\"filter\"} 4")
        .await;
    let stats = relay.stats().await;
    assert_eq!(stats["skipped"], 4, "{stats}");
    assert_eq!(stats["skipped_by_destination"]["crm"]["filter"], 4);
    assert!(stats["skipped_by_destination"].get("all").is_none());
    assert_eq!(stats["dead"], 0);
    relay.stop().await;
}

#[tokio::test]
async fn a_transform_with_no_output_drops_and_counts() {
    let rx = TestReceiver::start().await;
    let relay = Relay::start(Opts {
        dests: vec![dest(
            "crm",
            &rx,
            "events = [\"Order Completed\"]\ntransform = 'select(.properties.total > 50) | {type, event, userId, messageId, total: .properties.total}'",
        )],
        ..Opts::default()
    })
    .await;
    post(&relay, &order(1, "600.00")).await;
    post(&relay, &order(2, "20.00")).await;
    relay
        .wait_metric("shoprelay_events_skipped_total{destination=\"crm\",rule=\"transform\"} 1")
        .await;
    relay.wait_drained().await;
    let got = rx.received();
    assert_eq!(got.len(), 1);
    let body = std::str::from_utf8(&got[0].body).unwrap();
    assert!(
        body.starts_with(r#"{"type":"track","event":"Order Completed","userId":"buyer1@example.com","messageId":"srl_"#)
            && body.ends_with(r#"","total":600}"#),
        "{body}"
    );
    assert_eq!(
        got[0].header("x-signature").unwrap(),
        sha1_hex(DEST_SECRET, &got[0].body)
    );
    assert_eq!(
        relay.stats().await["skipped_by_destination"]["crm"]["transform"],
        1
    );
    relay.stop().await;
}

async fn wait_dead(relay: &Relay, n: usize) -> Vec<Value> {
    eventually(&format!("{n} dead letter(s)"), || async {
        let dl = relay.dead_letters().await;
        (dl.len() >= n).then_some(dl)
    })
    .await
}

#[tokio::test]
async fn a_run_time_error_is_a_dead_letter_that_replays_after_relay_toml_is_fixed() {
    let (all, crm) = (TestReceiver::start().await, TestReceiver::start().await);
    // Orders without a SKU: `ascii_downcase` on null is a run-time error.
    let broken = "filter = '(.properties.products[0].sku | ascii_downcase) != \"gift\"'";
    let fixed = "filter = '(.properties.products[0].sku // \"\" | ascii_downcase) != \"gift\"'";
    let opts = |crm_rules: &str| Opts {
        dests: vec![dest("all", &all, ""), dest("crm", &crm, crm_rules)],
        ..Opts::default()
    };
    let relay = Relay::start(opts(broken)).await;
    post(&relay, &order(1, "600.00")).await;
    let dl = wait_dead(&relay, 1).await;
    // The other destination is not held up.
    all.wait_for(2).await;
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0]["destination"], "crm");
    assert_eq!(dl[0]["attempts"], 1, "not retried: {}", dl[0]);
    let reason = dl[0]["last_error"].as_str().unwrap();
    assert!(
        reason.starts_with("destinations.crm.filter: run-time error: ") && reason.contains("null"),
        "{reason}"
    );
    assert_eq!(crm.count(), 0);
    relay
        .wait_metric("shoprelay_dead_letters_total{lane=\"crm\"} 1")
        .await;

    // Fix relay.toml, restart, replay: the rules as they are now apply.
    let dir = relay.stop().await;
    let relay = Relay::start_in(opts(fixed), dir).await;
    let id = dl[0]["id"].as_str().unwrap();
    assert_eq!(relay.replay(id).await, 200);
    let got = crm.wait_for(2).await;
    relay.wait_drained().await;
    assert_eq!(got.len(), 2, "identify and track");
    assert!(relay.dead_letters().await.is_empty());
    assert_eq!(all.count(), 2, "the healthy destination got it once");
    relay.stop().await;
}

#[tokio::test]
async fn a_rate_limit_holds_a_burst_to_the_rate_without_failures() {
    const RATE: f64 = 20.0;
    let rx = TestReceiver::start().await;
    let relay = Relay::start(Opts {
        dests: vec![dest("slow", &rx, "rate_limit = \"20/s\"\nconcurrency = 8")],
        ..Opts::default()
    })
    .await;
    // 25 orders at once: 50 requests (identify + track each).
    let c = client();
    let posts = (1..=25).map(|n| {
        let h = order(n, "10.00");
        let req = h.request(&c, &relay.shopify_url("acme"));
        async move { req.send().await.unwrap().status().as_u16() }
    });
    let statuses = within("ingest", futures_util::future::join_all(posts)).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let got = within("50 requests at 20/s", async {
        loop {
            if rx.count() >= 50 {
                return rx.received();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    relay.wait_drained().await;
    assert_eq!(got.len(), 50, "every event once");

    // Requests per second over the whole window, from the receiver's clock.
    let times: Vec<Instant> = got.iter().map(|r| r.at).collect();
    let span = times[times.len() - 1] - times[0];
    let rate = (times.len() - 1) as f64 / span.as_secs_f64();
    assert!(
        (rate - RATE).abs() <= RATE * 0.10,
        "{rate:.2} requests/s over {span:?}, limit {RATE}"
    );
    // Held back is not failed: no retry, no dead letter, no attempt counted.
    let metrics = relay.metrics().await;
    assert!(
        metrics.contains("shoprelay_deliveries_total{lane=\"slow\",outcome=\"delivered\"} 25"),
        "{metrics}"
    );
    assert!(!metrics.contains("outcome=\"retry\""), "{metrics}");
    assert!(!metrics.contains("outcome=\"dead\""), "{metrics}");
    relay.stop().await;
}

#[tokio::test]
async fn a_delivery_held_back_at_shutdown_is_handed_back_and_sent_after_restart() {
    let rx = TestReceiver::start().await;
    // One request a minute: the order's track waits behind its identify.
    let opts = || Opts {
        dests: vec![dest("slow", &rx, "rate_limit = \"1/m\"")],
        ..Opts::default()
    };
    let relay = Relay::start(opts()).await;
    post(&relay, &order(1, "10.00")).await;
    let first = rx.wait_for(1).await;
    assert_eq!(first[0].json()["type"], "identify");
    let stopping = Instant::now();
    let dir = relay.stop().await;
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "shutdown waited for the rate limit: {:?}",
        stopping.elapsed()
    );
    assert_eq!(rx.count(), 1);

    // After a restart the delivery is due again; nothing was lost or buried.
    let relay = Relay::start_in(opts(), dir).await;
    let got = rx.wait_for(2).await;
    assert_eq!(got[1].json()["type"], "identify", "resent from the start");
    assert_eq!(got[1].json()["messageId"], first[0].json()["messageId"]);
    assert!(relay.dead_letters().await.is_empty());
    let stats = relay.stats().await;
    assert_eq!(stats["lanes"]["slow"]["pending"], 1, "{stats}");
    assert_eq!(stats["retrying"], 0, "{stats}");
    relay.stop().await;
}
