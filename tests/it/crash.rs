//! kill -9 under load: every webhook that got a 200 is on disk.

use std::sync::{Arc, Mutex};

use crate::common::relay::{Opts, SECRET, spawn_binary, toml};
use crate::common::sign::ShopifyWebhook;
use crate::common::{client, send_json, within};

/// The webhook the crash tests send as number `n`.
fn numbered(n: u64) -> ShopifyWebhook<'static> {
    let body = format!(r#"{{"id":{n},"email":"c{n}@example.com"}}"#).into_bytes();
    ShopifyWebhook {
        topic: "orders/create",
        event_id: Some(format!("ev-{n}")),
        body,
        secret: SECRET,
    }
}

/// `count` senders, each sending distinct webhooks as fast as answers come,
/// recording every 200 in `acked`, stopping at the first failure (the kill).
fn spawn_senders(
    count: u64,
    url: &str,
    acked: &Arc<Mutex<Vec<u64>>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..count)
        .map(|s| {
            let (url, acked) = (url.to_string(), acked.clone());
            tokio::spawn(async move {
                let c = client();
                for i in 0.. {
                    let n = s * 1_000_000 + i;
                    match numbered(n).request(&c, &url).send().await {
                        Ok(r) if r.status() == 200 => acked.lock().unwrap().push(n),
                        _ => return,
                    }
                }
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_load_loses_no_acknowledged_webhook() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("relay.toml");
    std::fs::write(&cfg, toml(&Opts::default(), &data)).unwrap();
    let mut relay = spawn_binary(&cfg);
    let url = format!("{}/webhooks/shopify/acme", relay.ingest);
    let acked: Arc<Mutex<Vec<u64>>> = Arc::default();

    // 32 senders, each sending distinct webhooks as fast as answers come.
    let senders = spawn_senders(32, &url, &acked);
    crate::common::until("500 acknowledged webhooks", || {
        acked.lock().unwrap().len() >= 500
    })
    .await;
    relay.child.kill().unwrap(); // SIGKILL
    relay.child.wait().unwrap();
    for s in senders {
        let _ = within("senders to stop", s).await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 500);

    // Reopen and re-send every acknowledged webhook: each must be a duplicate,
    // which proves its dedup key (written in the same batch as the webhook) survived.
    let mut relay = spawn_binary(&cfg);
    let url = format!("{}/webhooks/shopify/acme", relay.ingest);
    let c = client();
    let mut lost = Vec::new();
    for n in &acked {
        let h = numbered(*n);
        let r = send_json("re-send", h.request(&c, &url)).await;
        if r["status"] != "duplicate" {
            lost.push(*n);
        }
    }
    relay.child.kill().unwrap();
    relay.child.wait().unwrap();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged webhooks lost after kill -9: {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(10)]
    );
}

/// kill -9 under load with a real destination: after restart every
/// acknowledged webhook reaches the destination; repeats only for sends that
/// were in flight, and always with the same messageId.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_delivery_delivers_every_acknowledged_webhook() {
    use crate::common::receiver::{Answer, TestReceiver};
    use crate::common::relay::Dest;
    use std::collections::{HashMap, HashSet};

    // Every fifth request fails: retries are in play when the relay dies.
    let receiver = TestReceiver::with(Arc::new(|n| {
        Answer::status(if n % 5 == 4 { 500 } else { 200 })
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("relay.toml");
    let opts = Opts {
        dests: vec![Dest {
            name: "wh".into(),
            url: receiver.url.clone(),
            extra: "events = [\"track\"]".into(),
        }],
        extra: "[retry]\ninitial_interval = \"50ms\"\nmax_interval = \"200ms\"\n".into(),
        ..Opts::default()
    };
    std::fs::write(&cfg, toml(&opts, &data)).unwrap();
    let mut relay = spawn_binary(&cfg);
    let url = format!("{}/webhooks/shopify/acme", relay.ingest);
    let acked: Arc<Mutex<Vec<u64>>> = Arc::default();
    let senders = spawn_senders(16, &url, &acked);
    // Kill once deliveries are flowing and more is queued than delivered.
    crate::common::until("deliveries under way", || {
        receiver.count() >= 200 && acked.lock().unwrap().len() >= 400
    })
    .await;
    relay.child.kill().unwrap();
    relay.child.wait().unwrap();
    for s in senders {
        let _ = within("senders to stop", s).await;
    }
    let acked: HashSet<u64> = acked.lock().unwrap().iter().copied().collect();

    let mut relay = spawn_binary(&cfg);
    let delivered = || -> HashMap<String, HashSet<String>> {
        let mut by_order: HashMap<String, HashSet<String>> = HashMap::new();
        for r in receiver.received() {
            let v = r.json();
            let order = v["properties"]["order_id"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            by_order
                .entry(order)
                .or_default()
                .insert(v["messageId"].as_str().unwrap_or_default().to_string());
        }
        by_order
    };
    crate::common::until("every acknowledged webhook delivered", || {
        let d = delivered();
        acked.iter().all(|n| d.contains_key(&n.to_string()))
    })
    .await;
    relay.child.kill().unwrap();
    relay.child.wait().unwrap();
    let d = delivered();
    for (order, ids) in &d {
        assert_eq!(
            ids.len(),
            1,
            "order {order} arrived with different messageIds: {ids:?}"
        );
    }
    let total = receiver.received().len();
    eprintln!(
        "acked {} webhooks; {} requests reached the destination (incl. 500s and in-flight repeats)",
        acked.len(),
        total
    );
}
