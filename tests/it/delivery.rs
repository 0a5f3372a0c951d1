//! Delivery end to end: real relay, real local receivers the test controls.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha1::Sha1;

use crate::common::receiver::{Answer, TestReceiver};
use crate::common::relay::{Dest, Opts, Relay, SECRET};
use crate::common::sign::ShopifyWebhook;
use crate::common::{client, get_json, send_json, until};

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

fn fail_then_ok(failures: usize, status: u16) -> crate::common::receiver::Script {
    Arc::new(move |n| {
        if n < failures {
            Answer::status(status)
        } else {
            Answer::status(200)
        }
    })
}

#[tokio::test]
async fn server_errors_are_retried_with_backoff_and_delivered_once() {
    // Three 500s, then 200: each event arrives once after its retries.
    let r = TestReceiver::with(fail_then_ok(3, 500)).await;
    let relay = Relay::start(Opts {
        dests: vec![dest("wh", &r, "")],
        extra: FAST_RETRY.into(),
        ..Opts::default()
    })
    .await;
    post(&relay, &order(2)).await;
    let got = r.wait_for(5).await; // 3 failures + identify + track
    relay.wait_drained().await;
    let all = r.received();
    assert_eq!(all.len(), 5, "nothing sent twice after success");
    // Equal jitter: each gap is at least half its base of 100, 200, 400 ms.
    let gaps: Vec<u128> = got
        .windows(2)
        .take(3)
        .map(|w| (w[1].at - w[0].at).as_millis())
        .collect();
    assert!(
        gaps[0] >= 50 && gaps[1] >= 100 && gaps[2] >= 200,
        "backoff gaps {gaps:?}"
    );
    let ids: Vec<String> = all
        .iter()
        .map(|g| g.json()["messageId"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids[0], ids[3], "a retry carries the same messageId");
    assert_ne!(ids[3], ids[4]);
    assert_eq!(relay.stats().await["retrying"], 3);
    relay.stop().await;
}

#[tokio::test]
async fn client_errors_and_redirects_go_to_the_dead_letters_at_once() {
    let bad = TestReceiver::with(Arc::new(|_| Answer {
        body: "missing field userId".into(),
        ..Answer::status(400)
    }))
    .await;
    let redirect = TestReceiver::with(Arc::new(|_| Answer {
        headers: vec![("location".into(), "http://127.0.0.1:1/elsewhere".into())],
        ..Answer::status(302)
    }))
    .await;
    let relay = Relay::start(Opts {
        dests: vec![
            dest("bad", &bad, "events = [\"track\"]"),
            dest("moved", &redirect, "events = [\"track\"]"),
        ],
        extra: FAST_RETRY.into(),
        ..Opts::default()
    })
    .await;
    post(&relay, &order(3)).await;
    let dl = wait_dead(&relay, 2).await;
    let by_dest = |d: &str| dl.iter().find(|x| x["destination"] == d).unwrap().clone();
    let b = by_dest("bad");
    assert_eq!(b["attempts"], 1);
    assert_eq!(b["last_status"], 400);
    assert!(
        b["last_error"]
            .as_str()
            .unwrap()
            .contains("missing field userId"),
        "{b}"
    );
    assert_eq!(b["event"], "orders/create");
    assert!(
        b["first_attempt_at"].is_string() && b["dead_at"].is_string(),
        "{b}"
    );
    assert_eq!(by_dest("moved")["last_status"], 302);
    // Not retried, not followed: one request each.
    assert_eq!(bad.count(), 1);
    assert_eq!(redirect.count(), 1);

    // Replay after the destination is fixed: delivered again with the same messageId.
    bad.set(Arc::new(|_| Answer::status(200)));
    let id = b["id"].as_str().unwrap();
    assert_eq!(relay.replay(id).await, 200);
    let got = bad.wait_for(2).await;
    assert_eq!(got[1].json()["messageId"], got[0].json()["messageId"]);
    assert_eq!(relay.dead_letters().await.len(), 1);
    let m = by_dest("moved");
    let shown = get_json(format!(
        "{}/admin/dead-letters/{}",
        relay.admin,
        m["id"].as_str().unwrap()
    ))
    .await;
    assert!(
        shown["body"]
            .as_str()
            .unwrap()
            .contains("buyer3@example.com"),
        "show includes the raw webhook"
    );
    let r = client()
        .delete(format!("{}/admin/dead-letters", relay.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["purged"], 1);
    assert!(relay.dead_letters().await.is_empty());
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
async fn retry_after_is_honoured() {
    let r = TestReceiver::with(Arc::new(|n| {
        if n == 0 {
            Answer {
                headers: vec![("retry-after".into(), "1".into())],
                ..Answer::status(429)
            }
        } else {
            Answer::status(200)
        }
    }))
    .await;
    let relay = Relay::start(Opts {
        dests: vec![dest("wh", &r, "events = [\"track\"]")],
        extra: FAST_RETRY.into(),
        ..Opts::default()
    })
    .await;
    post(&relay, &order(4)).await;
    let got = r.wait_for(2).await;
    let gap = got[1].at - got[0].at;
    assert!(
        gap >= Duration::from_millis(990),
        "Retry-After: 1 ignored, retried after {gap:?}"
    );
    relay.stop().await;
}

#[tokio::test]
async fn max_age_turns_a_failing_delivery_into_a_dead_letter() {
    let r = TestReceiver::with(Arc::new(|_| Answer::status(503))).await;
    let relay = Relay::start(Opts {
        dests: vec![dest("wh", &r, "events = [\"track\"]")],
        extra:
            "[retry]\ninitial_interval = \"50ms\"\nmax_interval = \"100ms\"\nmax_age = \"500ms\"\n"
                .into(),
        ..Opts::default()
    })
    .await;
    post(&relay, &order(5)).await;
    let dl = wait_dead(&relay, 1).await;
    let attempts = dl[0]["attempts"].as_u64().unwrap();
    assert!(attempts >= 3, "{}", dl[0]);
    assert!(
        dl[0]["last_error"]
            .as_str()
            .unwrap()
            .starts_with("gave up after"),
        "{}",
        dl[0]
    );
    assert_eq!(
        attempts as usize,
        r.count(),
        "every attempt reached the receiver"
    );
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

#[tokio::test]
async fn first_success_stops_at_the_first_2xx_in_order() {
    let down = TestReceiver::with(Arc::new(|_| Answer::status(500))).await;
    let up = TestReceiver::start().await;
    let spare = TestReceiver::start().await;
    let relay = Relay::start(Opts {
        dests: vec![
            dest("a_down", &down, ""),
            dest("b_up", &up, ""),
            dest("c_spare", &spare, ""),
        ],
        acme_extra: "delivery = \"first-success\"".into(),
        extra: FAST_RETRY.into(),
        ..Opts::default()
    })
    .await;
    post(&relay, &order(6)).await;
    up.wait_for(2).await;
    relay.wait_drained().await;
    assert_eq!(down.count(), 1, "tried first");
    assert_eq!(spare.count(), 0, "never needed");
    relay.stop().await;
}

#[tokio::test]
async fn batch_and_segment_api_bodies_and_signatures() {
    let batch = TestReceiver::start().await;
    let seg = TestReceiver::start().await;
    let relay = Relay::start(Opts {
        dests: vec![
            dest(
                "batch",
                &batch,
                "format = \"webhook-batch\"\nbatch_size = 50\nlinger = \"100ms\"",
            ),
            Dest {
                name: "seg".into(),
                url: seg.url.clone(),
                extra: "format = \"segment-api\"\nwrite_key = \"wk_123\"\nlinger = \"100ms\""
                    .into(),
            },
        ],
        ..Opts::default()
    })
    .await;
    for n in 0..3 {
        post(&relay, &order(300 + n)).await;
    }
    let events = |r: &TestReceiver, f: fn(&Value) -> usize| {
        r.received().iter().map(|x| f(&x.json())).sum::<usize>()
    };
    until("all six events in batches", || {
        events(&batch, |v| v.as_array().map_or(0, Vec::len)) >= 6
            && events(&seg, |v| v["batch"].as_array().map_or(0, Vec::len)) >= 6
    })
    .await;
    for req in batch.received() {
        let first = serde_json::to_string(&req.json()[0]).unwrap();
        assert_eq!(
            req.header("x-signature").unwrap(),
            sha1_hex(DEST_SECRET, first.as_bytes()),
            "signed over the first event"
        );
    }
    use base64::Engine;
    let want = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("wk_123:")
    );
    for req in seg.received() {
        assert_eq!(req.header("authorization").unwrap(), want);
        assert!(req.json()["sentAt"].as_str().unwrap().ends_with('Z'));
        assert!(req.header("x-signature").is_none());
    }
    relay.stop().await;
}

#[tokio::test]
async fn an_unmappable_webhook_is_a_dead_letter_with_its_body_and_reason() {
    let r = TestReceiver::start().await;
    let relay = Relay::start(Opts {
        dests: vec![dest("wh", &r, "")],
        ..Opts::default()
    })
    .await;
    let body = br#"{"id":42,"email":"x@example.com","line_items":"not a list"}"#.to_vec();
    let h = ShopifyWebhook {
        topic: "orders/create",
        event_id: Some("unmappable".into()),
        body,
        secret: SECRET,
    };
    assert_eq!(
        post(&relay, &h).await["status"],
        "queued",
        "authentic: accepted, never dropped"
    );
    let dl = wait_dead(&relay, 1).await;
    let reason = dl[0]["last_error"].as_str().unwrap();
    assert!(reason.contains("line_items is not an array"), "{reason}");
    let id = dl[0]["id"].as_str().unwrap();
    let shown = get_json(format!("{}/admin/dead-letters/{id}", relay.admin)).await;
    assert!(
        shown["body"].as_str().unwrap().contains("not a list"),
        "raw body kept: {shown}"
    );
    assert_eq!(r.count(), 0);
    // Replay maps it again (still unmappable here, so it comes back with the reason).
    assert_eq!(relay.replay(id).await, 200);
    relay
        .wait_metric(r#"shoprelay_dead_letters_total{lane="wh"} 2"#)
        .await;
    assert_eq!(relay.dead_letters().await.len(), 1);
    relay.stop().await;
}

#[tokio::test]
async fn work_for_a_removed_destination_becomes_dead_letters_not_a_silent_queue() {
    let r = TestReceiver::with(Arc::new(|_| Answer::status(503))).await;
    let slow_retry = "[retry]\ninitial_interval = \"1h\"\nmax_interval = \"1h\"\n";
    let relay = Relay::start(Opts {
        dests: vec![dest("old", &r, "")],
        extra: slow_retry.into(),
        ..Opts::default()
    })
    .await;
    post(&relay, &order(7)).await;
    r.wait_for(1).await;
    let dir = relay.stop().await;
    // Restart with `old` gone from relay.toml: its pending deliveries say why.
    let relay = Relay::start_in(Opts::default(), dir).await;
    let dl = wait_dead(&relay, 1).await;
    let reason = dl[0]["last_error"].as_str().unwrap();
    assert!(
        reason.contains("destination `old` is no longer in relay.toml"),
        "{reason}"
    );
    relay.stop().await;
}

async fn wait_dead(relay: &Relay, n: usize) -> Vec<Value> {
    crate::common::eventually("dead letters", || async {
        let dl = relay.dead_letters().await;
        (dl.len() >= n).then_some(dl)
    })
    .await
}

#[tokio::test]
async fn a_damaged_delivery_record_becomes_a_dead_letter_and_replays_to_the_lane() {
    damaged_record_then_replay(false).await;
}

#[tokio::test]
async fn a_damaged_first_success_record_replays_to_the_first_destination() {
    damaged_record_then_replay(true).await;
}

/// Two webhooks pending on disk, one delivery record damaged between two
/// runs: the other is delivered, the damaged one is a dead letter saying
/// why, and its replay reaches the (first) destination relay.toml has for
/// its lane, signed, with the messageId it had before.
async fn damaged_record_then_replay(first_success: bool) {
    // Nothing answers 2xx yet: both deliveries stay pending on disk.
    let r = TestReceiver::with(Arc::new(|_| Answer::status(503))).await;
    let second = TestReceiver::with(Arc::new(|_| Answer::status(503))).await;
    let opts = || Opts {
        dests: if first_success {
            vec![dest("first", &r, ""), dest("second", &second, "")]
        } else {
            vec![dest("wh", &r, "")]
        },
        acme_extra: if first_success {
            "delivery = \"first-success\"".into()
        } else {
            String::new()
        },
        extra: format!("{FAST_RETRY}[mapping]\nidentify_on_orders = false\n"),
        ..Opts::default()
    };
    let relay = Relay::start(opts()).await;
    post(&relay, &order(1)).await;
    post(&relay, &order(2)).await;
    let tried = |n: &str| {
        r.received()
            .iter()
            .any(|x| x.json()["properties"]["order_id"] == n)
    };
    until("both webhooks tried once", || tried("1") && tried("2")).await;
    let dir = relay.stop().await;
    let sent_before = r.count();

    // Damage one delivery record the way a bad disk or a bad upgrade would.
    let damaged_webhook = {
        let db = sled::open(dir.path().join("index")).unwrap();
        let tree = db.open_tree("relay").unwrap();
        let (k, _) = tree.scan_prefix(b"d").next().unwrap().unwrap();
        tree.insert(&k, &b"\xffnot a delivery record"[..]).unwrap();
        db.flush().unwrap();
        hex::encode(&k[1..9])
    };

    r.set(Arc::new(|_| Answer::status(200)));
    let relay = Relay::start_in(opts(), dir).await;
    let dl = wait_dead(&relay, 1).await;
    let d = &dl[0];
    assert_eq!(d["webhook_id"], damaged_webhook.as_str(), "{d}");
    let lane = if first_success {
        "first-success:acme"
    } else {
        "wh"
    };
    assert_eq!(d["destination"], lane, "{d}");
    assert!(
        d["last_error"]
            .as_str()
            .unwrap()
            .starts_with("the delivery record cannot be read ("),
        "{d}"
    );
    relay.wait_drained().await;
    assert_eq!(r.count(), sent_before + 1, "the undamaged webhook, once");

    let id = d["id"].as_str().unwrap();
    assert_eq!(relay.replay(id).await, 200);
    let got = r.wait_for(sent_before + 2).await;
    let last = got.last().unwrap();
    assert_eq!(
        last.header("x-signature").unwrap(),
        sha1_hex(DEST_SECRET, &last.body)
    );
    assert!(
        got[..sent_before]
            .iter()
            .any(|x| x.json()["messageId"] == last.json()["messageId"]),
        "replayed with a new messageId"
    );
    assert!(relay.dead_letters().await.is_empty());
    relay.wait_drained().await;
    relay.stop().await;
}
