//! What every event of a webhook shares: the mapper's input, the drafts mappers
//! return, and the stamps [`super::map`] puts on each call (timestamp, messageId,
//! context).

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::{MapError, time};
use crate::config::MappingConfig;
use crate::event::{Call, Identity};
use crate::sources::WebhookMeta;

/// What a family mapper may read besides the body.
pub(super) struct Input<'a> {
    pub meta: &'a WebhookMeta,
    pub cfg: &'a MappingConfig,
    /// The Shopify topic the webhook maps as (convertedin aliases resolved).
    pub topic: &'a str,
    /// The identity map of the webhook's scope.
    pub known: &'a dyn super::Known,
    /// The webhook is about a customer or order a redact erased.
    pub erased: bool,
    /// Whether what this webhook says about identities is learned.
    pub learns: bool,
    /// What it teaches the identity map, as mappers resolve identities.
    pub learned: super::identity::Puts,
}

impl Input<'_> {
    /// The error for a structural field of the wrong type.
    pub fn wrong_type(&self, field: impl Into<String>, expected: &'static str) -> MapError {
        MapError::WrongType {
            topic: self.meta.topic.clone(),
            field: field.into(),
            expected,
        }
    }
}

/// One call as a mapper drafts it; [`super::map`] adds the rest.
pub(super) enum Draft {
    Identify(Identity, Map<String, Value>),
    Track(Identity, Map<String, Value>),
    /// The map is the delete's `properties`, written only when not empty.
    Delete(Identity, Map<String, Value>),
}

impl Draft {
    pub fn into_parts(self) -> (Call, Identity, Map<String, Value>) {
        match self {
            Draft::Identify(who, traits) => (Call::Identify, who, traits),
            Draft::Track(who, properties) => (Call::Track, who, properties),
            Draft::Delete(who, props) => (Call::Delete, who, props),
        }
    }
}

/// Topics whose payload carries no time of the event itself: app/uninstalled's
/// payload is the shop record (its `updated_at` may be months old), and the
/// compliance topics carry none. Their time is Shopify's triggered-at header,
/// else when we received it. Only topics where a payload time is clearly not the
/// event's are listed; everywhere else the payload's own time still wins.
const NO_EVENT_TIME_IN_PAYLOAD: &[&str] = &[
    "app/uninstalled",
    "shop/redact",
    "customers/redact",
    "customers/data_request",
];

/// When the event happened: the payload's own time for it (created_at for a
/// create, cancelled_at for a cancellation, else updated_at), else Shopify's
/// triggered-at header, else when we received it. Topics in
/// [`NO_EVENT_TIME_IN_PAYLOAD`] skip the payload.
pub(super) fn timestamp(topic: &str, body: &Map<String, Value>, meta: &WebhookMeta) -> String {
    let header = || meta.triggered_at.as_deref().and_then(time::normalize);
    let received = || time::from_unix_ms(meta.received_at_ms);
    if NO_EVENT_TIME_IN_PAYLOAD.contains(&topic) {
        return header().unwrap_or_else(received);
    }
    let field = if topic == "orders/cancelled" {
        "cancelled_at"
    } else if topic.ends_with("/create") {
        "created_at"
    } else {
        "updated_at"
    };
    body.get(field)
        .and_then(Value::as_str)
        .and_then(time::normalize)
        .or_else(header)
        .unwrap_or_else(received)
}

/// `srl_` + SHA-256 of (source, topic, dedup id, call, index): a redelivered
/// webhook yields the same ids, so destinations drop the duplicate.
pub(super) fn message_id(meta: &WebhookMeta, call: Call, index: u32) -> String {
    let mut hash = Sha256::new();
    for part in [
        meta.kind.as_str(),
        meta.source.as_str(),
        meta.topic.as_str(),
        meta.dedup_id.as_str(),
        call.as_str(),
        &index.to_string(),
    ] {
        // Length-prefixed so ("ab","c") and ("a","bc") differ.
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part.as_bytes());
    }
    format!("srl_{}", hex::encode(hash.finalize()))
}

/// `context.library` and `context.source`; absent headers are omitted.
pub(super) fn context(meta: &WebhookMeta) -> Value {
    let mut source = Map::new();
    source.insert("kind".into(), meta.kind.as_str().into());
    source.insert("name".into(), meta.source.as_str().into());
    source.insert("topic".into(), meta.topic.as_str().into());
    // convertedin sends no webhook id; its dedup hash is the closest thing.
    let webhook_id = meta.webhook_id.as_deref().or(match meta.kind {
        crate::sources::SourceKind::Convertedin => Some(meta.dedup_id.as_str()),
        crate::sources::SourceKind::Shopify => None,
    });
    for (key, value) in [
        ("shop_domain", meta.shop_domain.as_deref()),
        ("webhook_id", webhook_id),
        ("event_id", meta.event_id.as_deref()),
        ("api_version", meta.api_version.as_deref()),
    ] {
        if let Some(value) = value {
            source.insert(key.into(), value.into());
        }
    }
    json!({
        "library": {"name": "shoprelay", "version": env!("CARGO_PKG_VERSION")},
        "source": source,
    })
}
