//! Shared by the mapping test binaries: the fixture files under
//! `tests/fixtures/<kind>/<topic with / as __>[.case].json` and the webhook
//! metadata each is delivered with.

#![allow(dead_code)] // each test binary uses a different subset

pub mod sequence;
pub mod strategies;

use std::path::{Path, PathBuf};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use shoprelay::sources::{SourceKind, Webhook, WebhookMeta};

/// One fixture payload.
pub struct Fixture {
    /// `shopify/orders__create.guest`, for messages.
    pub label: String,
    pub path: PathBuf,
    pub kind: SourceKind,
    pub topic: String,
    pub body: Vec<u8>,
}

impl Fixture {
    /// Where the expected events live: beside the payload.
    pub fn expected_path(&self) -> PathBuf {
        self.path.with_extension("expected.json")
    }

    pub fn webhook(&self) -> Webhook {
        webhook(self.kind, &self.topic, &self.label, &self.body)
    }
}

pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Every fixture payload, sorted, for both source kinds.
pub fn fixtures() -> Vec<Fixture> {
    let mut out = Vec::new();
    for kind in [SourceKind::Shopify, SourceKind::Convertedin] {
        let dir = fixtures_dir().join(kind.as_str());
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.expect("dir entry").path())
            .filter(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                name.ends_with(".json") && !name.ends_with(".expected.json")
            })
            .collect();
        paths.sort();
        for path in paths {
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .expect("utf-8 name");
            let topic = stem.split('.').next().unwrap_or(stem).replace("__", "/");
            let body = std::fs::read(&path).expect("read fixture");
            out.push(Fixture {
                label: format!("{}/{stem}", kind.as_str()),
                path,
                kind,
                topic,
                body,
            });
        }
    }
    out
}

/// The fixture with this label, e.g. `shopify/orders__create`.
pub fn fixture(label: &str) -> Fixture {
    fixtures()
        .into_iter()
        .find(|f| f.label == label)
        .unwrap_or_else(|| panic!("no fixture {label}"))
}

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
pub fn meta(kind: SourceKind, topic: &str, seed: &str, body: &[u8]) -> WebhookMeta {
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
    Webhook::from_store(meta(kind, topic, seed, body), Bytes::copy_from_slice(body))
}
