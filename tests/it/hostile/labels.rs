//! 10,000 unauthenticated requests to unknown sources with long names: one
//! metric line counts them all (`source="unknown"`), and the log gets at
//! most one line a second, each with a short escaped prefix of the path.
//!
//! Measured before: 4,000 such requests with 60 KB names grew `/metrics` to
//! 257 MB (a label per name), the log by 257 MB and the relay by 243 MB.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::child_relay;
use crate::common::proc::{mib, rss};
use crate::common::raw::connect;
use crate::common::{get_text, within};

const REQUESTS: usize = 10_000;
const SENDERS: usize = 16;
/// Long, but a head within the relay's 16 KiB limit (longer ones get 431
/// from hyper before any handler runs).
const NAME_CHARS: usize = 8_000;

/// One request for unknown source `n` on a connection of its own; its status line.
async fn unknown(ingest: &str, n: usize) -> String {
    // Percent-encoded quote and right-to-left override: a raw one is not a URI.
    let name = format!("{n:08}%22%E2%80%AE{}", "a".repeat(NAME_CHARS));
    let mut s = connect(ingest).await;
    let req = format!(
        "POST /webhooks/shopify/{name} HTTP/1.1\r\nHost: relay\r\nContent-Length: 2\r\n\r\n{{}}"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    answer.lines().next().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_sources_by_the_thousand_leave_metrics_and_log_bounded() {
    let (_dir, relay) = child_relay("");
    let pid = relay.child.id();
    let metrics_url = format!("{}/metrics", relay.admin);
    let metrics_before = get_text(&metrics_url).await.len();
    let log_before = relay.log.bytes();
    let rss_before = rss(pid);

    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let senders: Vec<_> = (0..SENDERS)
        .map(|_| {
            let (next, ingest) = (next.clone(), relay.ingest.clone());
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= REQUESTS {
                        return;
                    }
                    let status = unknown(&ingest, n).await;
                    assert!(status.starts_with("HTTP/1.1 404"), "{n}: {status}");
                }
            })
        })
        .collect();
    for s in senders {
        within("10,000 requests", s).await.unwrap();
    }
    let took = started.elapsed();

    let metrics = get_text(&metrics_url).await;
    let counted = format!(
        "shoprelay_webhooks_rejected_total{{source=\"unknown\",reason=\"unknown_source\"}} {REQUESTS}"
    );
    assert!(metrics.contains(&counted), "{metrics}");
    let metrics_growth = metrics.len().saturating_sub(metrics_before);
    let lines = relay.log.refusals();
    let log_growth = relay.log.bytes() - log_before;
    let rss_growth = rss(pid).saturating_sub(rss_before);
    eprintln!(
        "{REQUESTS} requests to unknown {NAME_CHARS}-char sources in {took:?}: /metrics +{metrics_growth} bytes \
         ({} in all), log +{log_growth} bytes in {} lines, RSS +{:.1} MiB; the first line: {}",
        metrics.len(),
        lines.len(),
        mib(rss_growth),
        lines.first().map_or("none", String::as_str),
    );
    let seconds = took.as_secs() as usize + 2;
    assert!(
        metrics_growth < 1024,
        "/metrics grew {metrics_growth} bytes"
    );
    assert!(
        lines.len() <= seconds,
        "{} refusal lines in {took:?}",
        lines.len()
    );
    assert!(
        log_growth <= (seconds * 1024) as u64,
        "log grew {log_growth} bytes"
    );
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["source"], "unknown", "{line}");
        let path = v["path"].as_str().unwrap();
        // 64 characters of the path and the ellipsis.
        assert!(path.chars().count() <= 65, "{path}");
    }
    assert!(rss_growth < 16 << 20, "RSS grew {:.1} MiB", mib(rss_growth));
}

/// The topic header is not signed: a correctly signed body replayed under
/// made-up topics counts under `topic="other"`, not one label per topic.
#[tokio::test]
async fn topics_the_relay_does_not_name_count_as_other() {
    use crate::common::relay::{Opts, Relay, SECRET};
    use crate::common::sign::ShopifyWebhook;
    let relay = Relay::start(Opts::default()).await;
    let c = crate::common::client();
    let url = relay.shopify_url("acme");
    for (i, topic) in ["orders/create", "made_up/one", "made_up/two"]
        .iter()
        .enumerate()
    {
        let h = ShopifyWebhook {
            topic,
            event_id: Some(format!("topic-{i}")),
            body: br#"{"id":1}"#.to_vec(),
            secret: SECRET,
        };
        let r = within("a signed webhook", h.request(&c, &url).send())
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let metrics = relay.metrics().await;
    for line in [
        r#"shoprelay_webhooks_received_total{source="acme",topic="orders/create",outcome="queued"} 1"#,
        r#"shoprelay_webhooks_received_total{source="acme",topic="other",outcome="queued"} 2"#,
    ] {
        assert!(metrics.contains(line), "no `{line}` in:\n{metrics}");
    }
    assert!(!metrics.contains("made_up"), "{metrics}");
    relay.stop().await;
}
