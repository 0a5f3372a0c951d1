//! The Segment-spec event that crosses every layer from mapping (layer 3) down.
//!
//! An [`Event`] is built once by [`crate::mapping`] and never changes: its JSON is
//! rendered at construction, so the bytes a destination signs are the bytes it sends,
//! and those bytes are what JavaScript's `JSON.stringify(JSON.parse(s))` yields (the
//! mapping only ever puts JS-printed numbers and non-integer keys in the value).

use serde_json::{Map, Value};

/// Why JSON is not an [`Event`] (see `Event::from_json`, a test helper).
#[cfg(test)]
#[derive(Debug, thiserror::Error)]
pub(crate) enum InvalidEvent {
    /// Not JSON at all.
    #[error("event is not JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// JSON, but missing what every event has.
    #[error("event has no valid {0}")]
    Missing(&'static str),
}

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
    /// A known customer whose cart or checkout was anonymous before (userId,
    /// anonymousId): the call joins the two profiles.
    Linked(String, String),
}

/// Everything an event is made of, in the order the JSON is written.
pub(crate) struct Parts {
    pub call: Call,
    /// The `event` of a track; ignored for other calls.
    pub name: Option<String>,
    pub identity: Identity,
    /// `properties` (track, and delete when not empty) or `traits` (identify).
    pub body: Map<String, Value>,
    pub timestamp: String,
    pub message_id: String,
    pub context: Value,
}

/// One Segment call, ready to deliver.
#[derive(Clone, Debug, PartialEq, Eq)]
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
            Identity::Linked(user, anonymous) => {
                out.insert("userId".into(), user.into());
                out.insert("anonymousId".into(), anonymous.into())
            }
        };
        match parts.call {
            Call::Track => out.insert("properties".into(), Value::Object(parts.body)),
            Call::Identify => out.insert("traits".into(), Value::Object(parts.body)),
            Call::Delete if parts.body.is_empty() => None,
            Call::Delete => out.insert("properties".into(), Value::Object(parts.body)),
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

    /// Rebuilds an event from its [`Event::to_json`] text, for tests only: nothing
    /// stores events (the queue holds webhooks and maps them again on delivery). The
    /// bytes are kept exactly (key order and number text survive the round trip).
    #[cfg(test)]
    pub(crate) fn from_json(json: &str) -> Result<Event, InvalidEvent> {
        let value: Value = serde_json::from_str(json)?;
        let call = match value.get("type").and_then(Value::as_str) {
            Some("track") => Call::Track,
            Some("identify") => Call::Identify,
            Some("delete") => Call::Delete,
            _ => return Err(InvalidEvent::Missing("type")),
        };
        let name = match call {
            Call::Track => Some(
                value
                    .get("event")
                    .and_then(Value::as_str)
                    .ok_or(InvalidEvent::Missing("event"))?
                    .to_owned(),
            ),
            Call::Identify | Call::Delete => None,
        };
        let message_id = value
            .get("messageId")
            .and_then(Value::as_str)
            .ok_or(InvalidEvent::Missing("messageId"))?
            .to_owned();
        let json = serde_json::to_string(&value)?;
        Ok(Event {
            call,
            name,
            message_id,
            value,
            json,
        })
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

/// Serialises as the event's JSON, so a batch of events writes the same bytes
/// each event's [`Event::to_json`] does.
impl serde::Serialize for Event {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> Event {
        let mut body = Map::new();
        body.insert("total".into(), serde_json::Number::from(600).into());
        Event::from_parts(Parts {
            call: Call::Track,
            name: Some("Order Completed".into()),
            identity: Identity::Anonymous("abc".into()),
            body,
            timestamp: "2008-01-10T16:00:00.000Z".into(),
            message_id: "srl_1".into(),
            context: serde_json::json!({"library": {"name": "shoprelay"}}),
        })
    }

    #[test]
    fn writes_segment_key_order() {
        assert_eq!(
            event().to_json(),
            r#"{"type":"track","event":"Order Completed","anonymousId":"abc","properties":{"total":600},"timestamp":"2008-01-10T16:00:00.000Z","messageId":"srl_1","context":{"library":{"name":"shoprelay"}}}"#
        );
    }

    #[test]
    fn round_trips_through_json() {
        let e = event();
        let back = Event::from_json(&e.to_json()).expect("parses");
        assert_eq!(back, e);
        assert_eq!(
            serde_json::to_string(&[&e, &back]).expect("serialise"),
            format!("[{},{}]", e.to_json(), e.to_json())
        );
        for bad in [
            "",
            "[]",
            r#"{"type":"page","messageId":"x"}"#,
            r#"{"type":"track","messageId":"x"}"#,
            r#"{"type":"delete"}"#,
        ] {
            assert!(Event::from_json(bad).is_err(), "{bad}");
        }
    }
}
