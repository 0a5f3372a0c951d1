//! Stored record formats. The first byte is the version; readers refuse what
//! they do not know instead of guessing.

use serde::{Deserialize, Serialize};

use super::{DeliveryId, StoreError};

const V1: u8 = 1;

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
