//! `shoprelay send-test`: signs a sample webhook the way Shopify or
//! convertedin would and POSTs it to a relay. Never prints the secret.

use std::process::ExitCode;
use std::time::Duration;

use shoprelay::sources::sign;

use super::{SendTest, samples};

/// The shop domain the samples claim to come from.
const SHOP: &str = "shoprelay-test.myshopify.com";

fn known(table: &[(&str, &str)]) -> String {
    table.iter().map(|(t, _)| *t).collect::<Vec<_>>().join(", ")
}

/// The built-in body for `topic`, or an error listing the known topics.
pub(crate) fn sample(kind: &str, topic: &str) -> anyhow::Result<&'static str> {
    let table = match kind {
        "shopify" => samples::SHOPIFY,
        _ => samples::CONVERTEDIN,
    };
    table
        .iter()
        .find(|(t, _)| *t == topic)
        .map(|(_, body)| *body)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no built-in {kind} sample for topic `{topic}`; pass --payload FILE or use one of: {}",
                known(table)
            )
        })
}

/// A JSON object body with one more field, so convertedin (which
/// deduplicates on a hash of the body) accepts every run as new.
fn with_unique_field(body: &str, id: &str) -> String {
    let trimmed = body.trim_end();
    match trimmed.strip_suffix('}') {
        Some(head) if head.trim_end().ends_with('{') => {
            format!("{head}\"shoprelay_test_id\":\"{id}\"}}")
        }
        Some(head) => format!("{head},\"shoprelay_test_id\":\"{id}\"}}"),
        None => body.to_string(),
    }
}

/// The convertedin URL: `--to` plus `/{resource}/{action}` when `--to`
/// stops at the source (`…/webhooks/convertedin/{source}`).
fn convertedin_url(to: &str, topic: &str) -> String {
    let to = to.trim_end_matches('/');
    let segments: Vec<&str> = to.split('/').collect();
    let at_source = segments
        .windows(2)
        .position(|w| w == ["webhooks", "convertedin"])
        .is_some_and(|i| segments.len() == i + 3);
    if at_source {
        format!("{to}/{topic}")
    } else {
        to.to_string()
    }
}

pub async fn send_test(t: SendTest) -> anyhow::Result<ExitCode> {
    if !matches!(t.kind.as_str(), "shopify" | "convertedin") {
        anyhow::bail!("--kind must be shopify or convertedin, not `{}`", t.kind);
    }
    let unique = format!("{:016x}", rand::random::<u64>());
    let body = match &t.payload {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?,
        None if t.kind == "convertedin" => with_unique_field(sample(&t.kind, &t.topic)?, &unique),
        None => sample(&t.kind, &t.topic)?.to_string(),
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let url = if t.kind == "shopify" {
        t.to.clone()
    } else {
        convertedin_url(&t.to, &t.topic)
    };
    let mut req = client
        .post(&url)
        .header("content-type", "application/json")
        .header(
            "user-agent",
            concat!("shoprelay-send-test/", env!("CARGO_PKG_VERSION")),
        );
    req = if t.kind == "shopify" {
        let now = shoprelay::timefmt::iso8601_ms(shoprelay::timefmt::now_ms());
        req.header("x-shopify-topic", &t.topic)
            .header(
                sign::SHOPIFY_HEADER,
                sign::shopify(&t.secret, body.as_bytes()),
            )
            .header("x-shopify-shop-domain", SHOP)
            .header("x-shopify-webhook-id", format!("send-test-{unique}"))
            .header("x-shopify-event-id", format!("send-test-{unique}"))
            .header("x-shopify-api-version", "2025-01")
            .header("x-shopify-triggered-at", now)
    } else {
        req.header(
            sign::CONVERTEDIN_HEADER,
            sign::convertedin(&t.secret, body.as_bytes()),
        )
        .header("x-shop-domain", SHOP)
    };
    let resp = req
        .body(body)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("cannot POST to {url}: {}", root_cause(&e)))?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    println!("{} {} {}", t.topic, status, text.trim());
    Ok(if status.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The innermost error, which says what actually went wrong (refused, DNS…).
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sample_is_a_json_object() {
        for (topic, body) in samples::SHOPIFY.iter().chain(samples::CONVERTEDIN) {
            let v: serde_json::Value = serde_json::from_str(body).unwrap();
            assert!(v.is_object(), "{topic}");
            let u: serde_json::Value = serde_json::from_str(&with_unique_field(body, "x")).unwrap();
            assert_eq!(u["shoprelay_test_id"], "x", "{topic}");
        }
    }

    #[test]
    fn convertedin_url_appends_the_topic_only_at_the_source() {
        let base = "http://h/webhooks/convertedin/ci";
        assert_eq!(
            convertedin_url(base, "orders/create"),
            format!("{base}/orders/create")
        );
        assert_eq!(
            convertedin_url(&format!("{base}/"), "app/uninstalled"),
            format!("{base}/app/uninstalled")
        );
        let named = "http://h/webhooks/convertedin/convertedin";
        assert_eq!(
            convertedin_url(named, "orders/create"),
            format!("{named}/orders/create")
        );
        let full = format!("{base}/orders/update");
        assert_eq!(convertedin_url(&full, "orders/create"), full);
    }

    #[test]
    fn unknown_topic_lists_the_known_ones() {
        let e = sample("shopify", "nope/nope").unwrap_err().to_string();
        assert!(e.contains("orders/paid") && e.contains("--payload"), "{e}");
    }
}
