//! kill -9 under load: every webhook that got a 200 is on disk.

use std::sync::{Arc, Mutex};

use crate::common::relay::{Opts, SECRET, spawn_binary, toml};
use crate::common::sign::ShopifyWebhook;
use crate::common::{client, within};

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
    let mut senders = Vec::new();
    for s in 0..32u64 {
        let (url, acked) = (url.clone(), acked.clone());
        senders.push(tokio::spawn(async move {
            let c = client();
            for i in 0.. {
                let n = s * 1_000_000 + i;
                let body = format!(r#"{{"id":{n},"email":"c{n}@example.com"}}"#).into_bytes();
                let h = ShopifyWebhook {
                    topic: "orders/create",
                    event_id: Some(format!("ev-{n}")),
                    body,
                    secret: SECRET,
                };
                match h.request(&c, &url).send().await {
                    Ok(r) if r.status() == 200 => acked.lock().unwrap().push(n),
                    _ => return,
                }
            }
        }));
    }
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
        let body = format!(r#"{{"id":{n},"email":"c{n}@example.com"}}"#).into_bytes();
        let h = ShopifyWebhook {
            topic: "orders/create",
            event_id: Some(format!("ev-{n}")),
            body,
            secret: SECRET,
        };
        let r: serde_json::Value = within("re-send", async {
            h.request(&c, &url)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap()
        })
        .await;
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
