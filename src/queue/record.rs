//! Stored record formats. The first byte is the version; readers refuse what
//! they do not know instead of guessing.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::bodies::BodyRef;
use super::{DeliveryId, StoreError};
use crate::sources::{Webhook, WebhookMeta};

const V1: u8 = 1;
/// Webhook records whose body is in a segment file.
const V2: u8 = 2;
/// Webhook records whose body is a record of its own in the tree (moved there
/// when a delivery of it became a dead letter, so it does not keep a whole
/// segment file).
const V3: u8 = 3;

/// Where a delivery stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum DeliveryState {
    /// Waiting for `due_ms`, or in flight (leased in memory).
    Pending,
    /// Given up; kept for inspection and replay.
    Dead {
        /// When it was buried.
        dead_at_ms: u64,
        /// Why, in words an operator can act on.
        reason: String,
    },
}

/// One delivery of one webhook to one lane.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    /// Webhook and slot.
    #[serde(with = "id_serde")]
    pub id: DeliveryId,
    /// The lane that works it.
    pub lane: String,
    /// Destinations, in order.
    pub targets: Vec<String>,
    /// When it is (next) due, ms since the epoch; a claim does not change it.
    pub due_ms: u64,
    /// Attempts made so far in this retry window.
    pub attempts: u32,
    /// When the first attempt of this window was made; `max_age` counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_attempt_at_ms: Option<u64>,
    /// How many of the mapped events already reached the destination (so a
    /// retry resumes after them instead of sending them twice).
    #[serde(default)]
    pub events_done: u32,
    /// The last failure, for operators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// HTTP status of the last failure, if there was a response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_status: Option<u16>,
    /// Pending or dead.
    #[serde(flatten)]
    pub state: DeliveryState,
}

impl DeliveryRecord {
    /// A delivery not tried yet, due at `due_ms`.
    pub fn new(id: DeliveryId, lane: String, targets: Vec<String>, due_ms: u64) -> Self {
        DeliveryRecord {
            id,
            lane,
            targets,
            due_ms,
            attempts: 0,
            first_attempt_at_ms: None,
            events_done: 0,
            last_error: None,
            last_status: None,
            state: DeliveryState::Pending,
        }
    }
}

mod id_serde {
    use super::DeliveryId;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(id: &DeliveryId, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(id)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DeliveryId, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

pub fn encode_delivery(r: &DeliveryRecord) -> Vec<u8> {
    let mut out = vec![V1];
    // Serializing plain structs to JSON cannot fail.
    out.extend(serde_json::to_vec(r).unwrap_or_default());
    out
}

pub fn decode_delivery(bytes: &[u8]) -> Result<DeliveryRecord, StoreError> {
    match bytes.split_first() {
        Some((&V1, rest)) => serde_json::from_slice(rest).map_err(|e| corrupt("delivery", e)),
        Some((v, _)) => Err(corrupt("delivery", format!("unknown version {v}"))),
        None => Err(corrupt("delivery", "empty")),
    }
}

/// A stored webhook: its meta, and its body or where the body is.
pub enum StoredWebhook {
    /// `V1`: the body inside the record (queues written before bodies moved
    /// to segment files; read, no longer written).
    Inline(Webhook),
    /// `V2`: the body in a segment file.
    Pointer(WebhookMeta, BodyRef),
    /// `V3`: the body in its own record in the tree.
    InTree(WebhookMeta),
}

/// `V2 ++ meta_len (u32 BE) ++ meta JSON ++ body pointer`: the body itself,
/// byte for byte as signed, is in a segment file ([`super::bodies`]).
pub fn encode_webhook(meta: &WebhookMeta, body: BodyRef) -> Vec<u8> {
    let meta = serde_json::to_vec(meta).unwrap_or_default();
    let mut out = Vec::with_capacity(5 + meta.len() + BodyRef::ENCODED);
    out.push(V2);
    out.extend((meta.len() as u32).to_be_bytes());
    out.extend(meta);
    body.encode(&mut out);
    out
}

/// `V3 ++ meta_len (u32 BE) ++ meta JSON`: the body is stored beside it.
pub fn encode_webhook_in_tree(meta: &WebhookMeta) -> Vec<u8> {
    let meta = serde_json::to_vec(meta).unwrap_or_default();
    let mut out = Vec::with_capacity(5 + meta.len());
    out.push(V3);
    out.extend((meta.len() as u32).to_be_bytes());
    out.extend(meta);
    out
}

/// Whether a stored webhook record points into a body segment.
pub fn points_to_segment(bytes: &[u8]) -> bool {
    bytes.first() == Some(&V2)
}

pub fn decode_webhook(bytes: &[u8]) -> Result<StoredWebhook, StoreError> {
    let (&v, rest) = bytes
        .split_first()
        .ok_or_else(|| corrupt("webhook", "empty"))?;
    if !matches!(v, V1 | V2 | V3) {
        return Err(corrupt("webhook", format!("unknown version {v}")));
    }
    if rest.len() < 4 {
        return Err(corrupt("webhook", "truncated"));
    }
    let (len, rest) = rest.split_at(4);
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    if rest.len() < len {
        return Err(corrupt("webhook", "truncated"));
    }
    let (meta, tail) = rest.split_at(len);
    let meta: WebhookMeta = serde_json::from_slice(meta).map_err(|e| corrupt("webhook", e))?;
    if v == V1 {
        return Ok(StoredWebhook::Inline(Webhook::from_store(
            meta,
            Bytes::copy_from_slice(tail),
        )));
    }
    if v == V3 {
        return if tail.is_empty() {
            Ok(StoredWebhook::InTree(meta))
        } else {
            Err(corrupt("webhook", "bytes after the meta"))
        };
    }
    let body = BodyRef::decode(tail).ok_or_else(|| corrupt("webhook", "bad body pointer"))?;
    Ok(StoredWebhook::Pointer(meta, body))
}

/// `V1 ++ meta_len (u32 BE) ++ meta JSON ++ raw body`, as relays wrote it
/// before bodies moved to segments (tests of the upgrade path).
#[cfg(test)]
pub fn encode_webhook_inline(w: &Webhook) -> Vec<u8> {
    let meta = serde_json::to_vec(w.meta()).unwrap_or_default();
    let mut out = vec![V1];
    out.extend((meta.len() as u32).to_be_bytes());
    out.extend(meta);
    out.extend_from_slice(w.body());
    out
}
