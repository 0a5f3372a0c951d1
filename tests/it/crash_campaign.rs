//! Crash campaign: kill -9 the real relay binary at random moments under load,
//! round after round, while its destination fails at random; then restart,
//! drain, and check the ledger: every acknowledged webhook delivered at least
//! once, and a webhook delivered twice only ever with the same messageId.
//!
//! Short form (CI, ~20 s): the defaults. Long form:
//! `SHOPRELAY_CRASH_ROUNDS=30 cargo test --release --test it crash_campaign -- --nocapture`.
//! `SHOPRELAY_CRASH_FAIL_PCT` sets the destination's share of 500s (default 20).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use warp::Filter;

use crate::common::client;
use crate::common::relay::{Dest, Opts, SECRET, spawn_binary, toml};
use crate::common::sign::ShopifyWebhook;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What the destination saw: per event id, the messageIds it answered 200 to,
/// and how many 200s in all.
#[derive(Default)]
struct Seen {
    message_ids: HashMap<String, HashSet<String>>,
    accepted: u64,
    failed: u64,
}

/// A destination that answers 500 to `fail_pct`% of requests.
async fn flaky_destination(fail_pct: u64) -> (String, Arc<Mutex<Seen>>) {
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let s = seen.clone();
    let route = warp::post()
        .and(warp::body::bytes())
        .map(move |body: Bytes| {
            if rand::random_range(0..100) < fail_pct {
                s.lock().unwrap().failed += 1;
                return warp::http::StatusCode::INTERNAL_SERVER_ERROR;
            }
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let event = v["context"]["source"]["event_id"]
                .as_str()
                .unwrap()
                .to_string();
            let message = v["messageId"].as_str().unwrap().to_string();
            let mut seen = s.lock().unwrap();
            seen.accepted += 1;
            seen.message_ids.entry(event).or_default().insert(message);
            warp::http::StatusCode::OK
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(warp::serve(route).incoming(listener).run());
    (format!("http://{addr}/events"), seen)
}

fn webhook(n: u64) -> ShopifyWebhook<'static> {
    ShopifyWebhook {
        topic: "orders/create",
        event_id: Some(format!("cc-{n}")),
        body: format!(r#"{{"id":{n},"email":"c{n}@example.com","total_price":"10.00"}}"#)
            .into_bytes(),
        secret: SECRET,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_campaign_loses_no_acknowledged_webhook() {
    let rounds = env_u64("SHOPRELAY_CRASH_ROUNDS", 3);
    let fail_pct = env_u64("SHOPRELAY_CRASH_FAIL_PCT", 20);
    let (url, seen) = flaky_destination(fail_pct).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("relay.toml");
    let opts = Opts {
        dests: vec![Dest {
            name: "flaky".into(),
            url,
            extra: "concurrency = 16\ntimeout = \"2s\"".into(),
        }],
        // Fast retries, so the drain does not wait on a long backoff; one
        // event per webhook, so messageIds and webhooks correspond 1:1.
        extra: "\n[retry]\ninitial_interval = \"50ms\"\nmax_interval = \"500ms\"\n\
                \n[mapping]\nidentify_on_orders = false\n"
            .into(),
        ..Opts::default()
    };
    std::fs::write(&cfg, toml(&opts, &data)).unwrap();

    let acked: Arc<Mutex<Vec<u64>>> = Arc::default();
    let next = Arc::new(AtomicU64::new(0));
    let mut sent_total = 0;
    for round in 0..rounds {
        let mut relay = spawn_binary(&cfg);
        let url = format!("{}/webhooks/shopify/acme", relay.ingest);
        let stop = Arc::new(AtomicBool::new(false));
        let mut senders = Vec::new();
        for _ in 0..16 {
            let (url, acked, next, stop) = (url.clone(), acked.clone(), next.clone(), stop.clone());
            senders.push(tokio::spawn(async move {
                let c = client();
                while !stop.load(Ordering::Relaxed) {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    match webhook(n).request(&c, &url).send().await {
                        Ok(r) if r.status() == 200 => {
                            let v: serde_json::Value = match r.json().await {
                                Ok(v) => v,
                                Err(_) => return, // killed mid-answer: not acknowledged
                            };
                            if v["status"] == "queued" {
                                acked.lock().unwrap().push(n);
                            }
                        }
                        _ => return,
                    }
                }
            }));
        }
        // Under load first (a slow machine may take a while to answer the
        // first webhook), then a random moment.
        let before = acked.lock().unwrap().len();
        crate::common::until("the round's first acknowledgement", || {
            acked.lock().unwrap().len() > before
        })
        .await;
        let kill_after = Duration::from_millis(rand::random_range(0..2200));
        tokio::time::sleep(kill_after).await;
        relay.child.kill().unwrap(); // SIGKILL, mid-load, mid-delivery
        relay.child.wait().unwrap();
        stop.store(true, Ordering::Relaxed);
        for s in senders {
            crate::common::within("senders to stop", s).await.unwrap();
        }
        sent_total = next.load(Ordering::Relaxed);
        eprintln!(
            "crash campaign round {}: killed {kill_after:?} after its first ack; acked so far {}, delivered so far {}",
            round + 1,
            acked.lock().unwrap().len(),
            seen.lock().unwrap().message_ids.len()
        );
    }

    // Restart and drain.
    let mut relay = spawn_binary(&cfg);
    let acked = acked.lock().unwrap().clone();
    let started = std::time::Instant::now();
    let drain_limit = Duration::from_secs(env_u64("SHOPRELAY_CRASH_DRAIN_SECS", 60));
    let lost = loop {
        let lost: Vec<u64> = {
            let seen = seen.lock().unwrap();
            acked
                .iter()
                .copied()
                .filter(|n| !seen.message_ids.contains_key(&format!("cc-{n}")))
                .collect()
        };
        if lost.is_empty() || started.elapsed() > drain_limit {
            break lost;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    relay.child.kill().unwrap();
    relay.child.wait().unwrap();

    let seen = seen.lock().unwrap();
    let unique = seen.message_ids.len() as u64;
    let duplicates = seen.accepted - unique;
    let two_ids: Vec<&String> = seen
        .message_ids
        .iter()
        .filter(|(_, ids)| ids.len() > 1)
        .map(|(e, _)| e)
        .collect();
    eprintln!(
        "crash campaign: {rounds} rounds, {sent_total} sent, {} acked, {unique} delivered (200), \
         {duplicates} duplicate deliveries, {} 500s answered, {} lost, drain {:.1}s",
        acked.len(),
        seen.failed,
        lost.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        acked.len() as u64 >= rounds,
        "too few webhooks acknowledged to mean anything"
    );
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged webhooks never delivered: {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(10)]
    );
    assert!(
        two_ids.is_empty(),
        "a webhook arrived under two messageIds: {:?}",
        &two_ids[..two_ids.len().min(10)]
    );
}
