//! The mapping alone, on any bytes under every topic of both sender kinds and
//! both naming presets (ingest only lets JSON objects through; the mapping
//! must not rely on it). Byte 0 picks kind, naming and topic; the rest is the
//! body. Must never panic; every event produced must serialize and carry a
//! type, a messageId and a timestamp.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use shoprelay::config::{MappingConfig, Naming};
use shoprelay::mapping::{map, topics};
use shoprelay::sources::{SourceKind, Webhook, WebhookMeta};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let topics: Vec<&str> = topics().collect();
    let topic = topics[(pick >> 2) as usize % topics.len()];
    let kind = if pick & 1 == 1 {
        SourceKind::Convertedin
    } else {
        SourceKind::Shopify
    };
    let cfg = MappingConfig {
        naming: if pick & 2 == 2 {
            Naming::Snake
        } else {
            Naming::Segment
        },
        ..MappingConfig::default()
    };
    let meta = WebhookMeta {
        kind,
        source: "fuzz".into(),
        topic: topic.into(),
        shop_domain: Some("fuzz.myshopify.com".into()),
        webhook_id: None,
        event_id: Some("ev-1".into()),
        api_version: None,
        triggered_at: None,
        dedup_id: "ev-1".into(),
        received_at_ms: 1_700_000_000_000,
    };
    let webhook = Webhook::for_test(meta, Bytes::copy_from_slice(body));
    if let Ok(events) = map(&webhook, &cfg) {
        for e in events {
            let v = e.as_value();
            assert!(
                v["type"].is_string() && v["messageId"].is_string() && v["timestamp"].is_string()
            );
            serde_json::to_vec(v).expect("an event serializes");
        }
    }
});
