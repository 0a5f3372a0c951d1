//! Webhooks for the mapping test binaries, with the headers each sender would
//! send: `seed` varies the ids, so two fixtures never share a dedup id.

use bytes::Bytes;
use sha2::{Digest, Sha256};
use shoprelay::sources::{SourceKind, Webhook, WebhookMeta};

fn sha256_hex(parts: &[&[u8]]) -> String {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update(part);
    }
    hex::encode(hash.finalize())
}

/// A UUID-shaped id derived from `seed`, like Shopify's webhook and event ids.
fn uuid(seed: &str) -> String {
    let h = sha256_hex(&[seed.as_bytes()]);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Headers as each sender would send them; `seed` varies the ids per fixture.
fn meta(kind: SourceKind, topic: &str, seed: &str, body: &[u8]) -> WebhookMeta {
    match kind {
        SourceKind::Shopify => {
            let event_id = uuid(&format!("event {seed}"));
            WebhookMeta {
                kind,
                source: "shop-main".into(),
                topic: topic.into(),
                shop_domain: Some("example.myshopify.com".into()),
                webhook_id: Some(uuid(&format!("webhook {seed}"))),
                event_id: Some(event_id.clone()),
                api_version: Some("2024-07".into()),
                triggered_at: Some("2024-07-04T12:00:00.123456789Z".into()),
                dedup_id: event_id,
                received_at_ms: 1_720_094_400_456,
            }
        }
        SourceKind::Convertedin => WebhookMeta {
            kind,
            source: "cin-main".into(),
            topic: topic.into(),
            shop_domain: Some("store-name.com".into()),
            webhook_id: None,
            event_id: None,
            api_version: None,
            triggered_at: None,
            dedup_id: sha256_hex(&[topic.as_bytes(), b"\n", body]),
            received_at_ms: 1_720_094_400_456,
        },
    }
}

pub fn webhook(kind: SourceKind, topic: &str, seed: &str, body: &[u8]) -> Webhook {
    Webhook::for_test(meta(kind, topic, seed, body), Bytes::copy_from_slice(body))
}
