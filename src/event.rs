//! The Segment-spec event that crosses every stage after mapping (stage 3 on).
//!
//! An [`Event`] is built once by [`crate::mapping`] and never changes: its JSON is
//! rendered at construction, so the bytes a destination signs are the bytes it sends,
//! and those bytes are what JavaScript's `JSON.stringify(JSON.parse(s))` yields (the
//! mapping only ever puts JS-printed numbers and non-integer keys in the value).

use serde_json::{Map, Value};

/// Which Segment call an event is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Call {
    /// An action the shopper or shop took (`event` + `properties`).
    Track,
    /// Who a customer is (`traits`).
    Identify,
    /// A request to forget a customer (GDPR redact, customer deleted).
    Delete,
}

impl Call {
    /// The Segment `type` field.
    pub fn as_str(&self) -> &'static str {
        match self {
            Call::Track => "track",
            Call::Identify => "identify",
            Call::Delete => "delete",
        }
    }
}

/// Whom an event is about: Segment requires `userId` or `anonymousId`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Identity {
    /// A known customer: email or customer id, per `[mapping] user_id`.
    User(String),
    /// No customer: a stable hash, so one cart or order always maps to one id.
    Anonymous(String),
}

/// Everything an event is made of, in the order the JSON is written.
pub(crate) struct Parts {
    pub call: Call,
    /// The `event` of a track; ignored for other calls.
    pub name: Option<String>,
    pub identity: Identity,
    /// `properties` (track) or `traits` (identify); ignored for delete.
    pub body: Map<String, Value>,
    pub timestamp: String,
    pub message_id: String,
    pub context: Value,
}

/// One Segment call, ready to deliver.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Kept apart from `value` so routing never has to read JSON.
    call: Call,
    /// The track event name, for destination filters.
    name: Option<String>,
    /// Idempotency key downstream; also in `value`.
    message_id: String,
    /// The event as a JSON value with a fixed key order.
    value: Value,
    /// `value` rendered once: the exact bytes sent and signed.
    json: String,
}

impl Event {
    /// Assembles the event with Segment's key order: type, event, userId or
    /// anonymousId, properties or traits, timestamp, messageId, context.
    pub(crate) fn from_parts(parts: Parts) -> Event {
        let mut out = Map::new();
        out.insert("type".into(), parts.call.as_str().into());
        let name = match parts.call {
            Call::Track => parts.name,
            Call::Identify | Call::Delete => None,
        };
        if let Some(name) = &name {
            out.insert("event".into(), name.as_str().into());
        }
        match parts.identity {
            Identity::User(id) => out.insert("userId".into(), id.into()),
            Identity::Anonymous(id) => out.insert("anonymousId".into(), id.into()),
        };
        match parts.call {
            Call::Track => out.insert("properties".into(), Value::Object(parts.body)),
            Call::Identify => out.insert("traits".into(), Value::Object(parts.body)),
            Call::Delete => None,
        };
        out.insert("timestamp".into(), parts.timestamp.into());
        out.insert("messageId".into(), parts.message_id.as_str().into());
        out.insert("context".into(), parts.context);
        let value = Value::Object(out);
        // Serialising a Value with string keys cannot fail; an empty string would
        // only ever be a bug, and the node test would catch it.
        let json = serde_json::to_string(&value).unwrap_or_default();
        Event {
            call: parts.call,
            name,
            message_id: parts.message_id,
            value,
            json,
        }
    }

    /// Which Segment call this is.
    pub fn call(&self) -> Call {
        self.call
    }

    /// The track event name; `None` for identify and delete.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The deterministic `messageId` (≤ 100 chars).
    pub fn message_id(&self) -> &str {
        &self.message_id
    }

    /// Compact JSON, exactly what `JSON.stringify(JSON.parse(s))` yields in JavaScript.
    pub fn to_json(&self) -> String {
        self.json.clone()
    }

    /// The event as a JSON value, for tests and inspection.
    pub fn as_value(&self) -> &Value {
        &self.value
    }
}
