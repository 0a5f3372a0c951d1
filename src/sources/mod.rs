//! Layer 2 (see the crate's table): (headers, raw body) → a verified [`Webhook`].
//!
//! Nothing downstream ever sees an unverified body: outside this crate, a
//! [`Webhook`] is made only by the per-kind `verify` functions in [`shopify`] and
//! [`convertedin`]. Inside it, the queue rebuilds one it stored after verifying
//! it, and `shoprelay preview` maps a payload nobody signed through
//! [`crate::mapping::map_unverified_for_preview`], which never hands out the
//! webhook. Tests, examples and fuzz targets make one with `Webhook::for_test`
//! (feature `test-support`: see Cargo.toml).

pub mod convertedin;
pub mod shopify;
pub mod sign;
mod verify;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

pub use verify::{Rejection, Verifier, content_id};

/// Read access to request headers by lowercase name, so verification does not
/// depend on the HTTP library.
pub trait Headers {
    /// The header's value if present and valid UTF-8.
    fn get(&self, name: &str) -> Option<&str>;
    /// Same, owned, with empty values treated as absent; at most 256 bytes kept.
    fn get_owned(&self, name: &str) -> Option<String> {
        self.get(name)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(|v| match v.char_indices().nth(256) {
                Some((end, _)) => v[..end].to_owned(),
                None => v.to_owned(),
            })
    }
}

impl Headers for http::HeaderMap {
    fn get(&self, name: &str) -> Option<&str> {
        http::HeaderMap::get(self, name).and_then(|v| v.to_str().ok())
    }
}

impl Headers for [(&str, &str)] {
    fn get(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }
}

// The kind is configuration (`[sources.NAME] kind`); re-exported here, where
// each kind's verification lives.
pub use crate::config::SourceKind;

/// Everything about a webhook except its body; stored beside the body in the queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookMeta {
    /// Sender kind of the source that received it.
    pub kind: SourceKind,
    /// The `[sources.NAME]` that received it.
    pub source: String,
    /// Topic as received (`orders/create`, or `orders/update` from convertedin).
    pub topic: String,
    /// `X-Shopify-Shop-Domain` / `X-Shop-Domain`, if sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shop_domain: Option<String>,
    /// `X-Shopify-Webhook-Id`, if sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_id: Option<String>,
    /// `X-Shopify-Event-Id`, if sent: shared by every redelivery of one event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// `X-Shopify-API-Version`, if sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// `X-Shopify-Triggered-At`, if sent: a timestamp fallback for mapping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggered_at: Option<String>,
    /// The id duplicates share: event id, else webhook id (Shopify), else a
    /// SHA-256 of topic + body (convertedin, and Shopify without either header).
    pub dedup_id: String,
    /// When the relay accepted it, milliseconds since the Unix epoch (UTC).
    pub received_at_ms: u64,
}

/// A webhook whose HMAC signature has been verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Webhook {
    /// Shared: the lanes of a fan-out each hold the same webhook.
    meta: std::sync::Arc<WebhookMeta>,
    body: Bytes,
}

impl Webhook {
    /// Crate-internal: only the verifiers call this, after the MAC matched.
    pub(crate) fn verified(meta: WebhookMeta, body: Bytes) -> Self {
        Webhook {
            meta: std::sync::Arc::new(meta),
            body,
        }
    }

    /// Rebuilds a webhook read back from the queue: it was verified before it
    /// was stored.
    pub(crate) fn from_store(meta: WebhookMeta, body: Bytes) -> Self {
        Webhook {
            meta: std::sync::Arc::new(meta),
            body,
        }
    }

    /// A webhook no sender signed, for tests, examples and fuzz targets. Only with
    /// feature `test-support`, which this crate's own tests and examples turn on
    /// (Cargo.toml) and the relay's binary never has.
    #[cfg(any(test, feature = "test-support"))]
    pub fn for_test(meta: WebhookMeta, body: Bytes) -> Self {
        Webhook::from_store(meta, body)
    }

    /// The same, sharing a meta already read back (no copy per lane).
    pub(crate) fn from_shared(meta: std::sync::Arc<WebhookMeta>, body: Bytes) -> Self {
        Webhook { meta, body }
    }

    /// The meta, shared.
    pub(crate) fn shared_meta(&self) -> std::sync::Arc<WebhookMeta> {
        self.meta.clone()
    }

    /// Headers and ids.
    pub fn meta(&self) -> &WebhookMeta {
        &self.meta
    }

    /// The raw body exactly as signed by the sender.
    pub fn body(&self) -> &Bytes {
        &self.body
    }
}
