//! Property tests of the mapping: arbitrary JSON (deep, wide, huge numbers, odd
//! unicode, integer-like keys, known field names holding the wrong types) under
//! every topic of the table never panics, and every event produced is a valid
//! Segment call whose JSON JavaScript would re-print unchanged.

#[path = "mapping_support/fixtures.rs"]
mod fixtures;
#[path = "mapping_support/strategies.rs"]
mod strategies;
#[path = "mapping_support/webhook.rs"]
mod webhook;

use proptest::prelude::*;
use serde_json::Value;
use shoprelay::config::{MappingConfig, Naming, UserIdRule};
use shoprelay::event::{Call, Event};
use shoprelay::mapping::{map, topics};
use shoprelay::sources::SourceKind;
use strategies::{SECRET, body, json, key, topic};

fn configs() -> [MappingConfig; 2] {
    let mut odd = MappingConfig {
        naming: Naming::Snake,
        user_id: UserIdRule::CustomerId,
        identify_on_orders: false,
        ..MappingConfig::default()
    };
    odd.events
        .insert("orders/create".into(), "Ordered \u{1F6CD}".into());
    [MappingConfig::default(), odd]
}

/// Every number is already in the form JavaScript prints.
fn assert_js_numbers_and_keys(value: &Value) {
    match value {
        Value::Number(n) => {
            let text = n.to_string();
            let f: f64 = text.parse().expect("number parses");
            assert!(f.is_finite(), "{text}");
            assert_eq!(ryu_js::Buffer::new().format_finite(f), text);
        }
        Value::Array(items) => items.iter().for_each(assert_js_numbers_and_keys),
        Value::Object(map) => {
            for (k, v) in map {
                let integer = !k.is_empty()
                    && k.bytes().all(|b| b.is_ascii_digit())
                    && (k.len() == 1 || !k.starts_with('0'));
                assert!(!integer, "integer-like key {k:?}");
                assert_js_numbers_and_keys(v);
            }
        }
        _ => {}
    }
}

/// The Segment invariants every event must hold.
pub fn check_event(event: &Event) {
    let v = event.as_value();
    let ty = v["type"].as_str().expect("type");
    assert_eq!(ty, event.call().as_str());
    let id = v["messageId"].as_str().expect("messageId");
    assert!(!id.is_empty() && id.len() <= 100 && id == event.message_id());
    let ts = v["timestamp"].as_str().expect("timestamp");
    assert_eq!(ts.len(), 24, "{ts}");
    assert!(ts.ends_with('Z') && ts.as_bytes()[10] == b'T', "{ts}");
    let user = v.get("userId").and_then(Value::as_str);
    let anon = v.get("anonymousId").and_then(Value::as_str);
    assert!(user.is_some_and(|u| !u.is_empty()) || anon.is_some_and(|a| !a.is_empty()));
    match event.call() {
        Call::Track => {
            assert!(v["event"].is_string() && v["properties"].is_object());
            assert_eq!(v["event"].as_str(), event.name());
        }
        Call::Identify => assert!(v["traits"].is_object() && event.name().is_none()),
        // A delete's properties (a redact's orders_to_redact) are never empty.
        Call::Delete => assert!(
            v.get("traits").is_none()
                && v.get("properties")
                    .is_none_or(|p| p.as_object().is_some_and(|p| !p.is_empty()))
        ),
    }
    assert!(v["context"]["library"]["name"] == "shoprelay");
    assert_js_numbers_and_keys(v);
    let json = event.to_json();
    let back: Value = serde_json::from_str(&json).expect("to_json is JSON");
    assert_eq!(&back, v);
    assert_eq!(serde_json::to_string(&back).expect("serialise"), json);
}

fn check_all(kind: SourceKind, topic: &str, body: &[u8]) {
    let webhook = webhook::webhook(kind, topic, "prop", body);
    for cfg in configs() {
        let events = match map(&webhook, &cfg) {
            Ok(events) => events,
            Err(e) => {
                // Dead-letter reasons name fields, never payload values.
                let reason = e.to_string();
                assert!(
                    topic.contains(SECRET) || !reason.contains(SECRET),
                    "{reason}"
                );
                continue;
            }
        };
        for event in &events {
            check_event(event);
        }
        // Identify first, then track.
        let calls: Vec<Call> = events.iter().map(Event::call).collect();
        let mut sorted = calls.clone();
        sorted.sort_by_key(|c| *c != Call::Identify);
        assert_eq!(calls, sorted);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_json_never_panics(topic in topic(), shopify in any::<bool>(), body in body()) {
        let kind = if shopify { SourceKind::Shopify } else { SourceKind::Convertedin };
        let bytes = serde_json::to_vec(&body).expect("serialise");
        check_all(kind, &topic, &bytes);
    }

    #[test]
    fn arbitrary_bytes_never_panic(topic in topic(), bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        check_all(SourceKind::Shopify, &topic, &bytes);
    }

    /// A real fixture with one field replaced by arbitrary JSON.
    #[test]
    fn fixtures_with_one_field_replaced(index in any::<prop::sample::Index>(), key in key(), value in json()) {
        let all = fixtures::fixtures();
        let (_, f) = index.get(&all);
        let Ok(Value::Object(mut body)) = serde_json::from_slice::<Value>(&f.body) else { return Ok(()) };
        body.insert(key, value);
        let bytes = serde_json::to_vec(&body).expect("serialise");
        check_all(f.kind, &f.topic, &bytes);
    }
}

#[test]
fn deep_nesting_is_an_error_or_events_never_a_panic() {
    for depth in [10, 100, 127, 128, 129, 1_000, 100_000] {
        for topic in topics().chain(["inventory_levels/update"]) {
            let arrays = format!(
                "{{\"id\":1,\"x\":{}1{}}}",
                "[".repeat(depth),
                "]".repeat(depth)
            );
            let objects = format!(
                "{{\"id\":1,\"line_items\":[{}{}]}}",
                "{\"a\":".repeat(depth),
                "}".repeat(depth) + "1"
            );
            for body in [arrays, objects] {
                check_all(SourceKind::Shopify, topic, body.as_bytes());
            }
        }
    }
}

#[test]
fn big_arrays_map() {
    let item = r#"{"product_id":9007199254740993,"variant_id":1,"price":"19.90","quantity":1,"title":"x"}"#;
    let body = format!(
        r#"{{"id":1,"email":"a@b.c","line_items":[{}]}}"#,
        vec![item; 50_000].join(",")
    );
    let webhook = webhook::webhook(SourceKind::Shopify, "orders/create", "big", body.as_bytes());
    let events = map(&webhook, &MappingConfig::default()).expect("maps");
    let track = events.last().expect("track");
    check_event(track);
    assert_eq!(track.as_value()["properties"]["item_count"], 50_000);
    assert_eq!(
        track.as_value()["properties"]["products"][49_999]["price"].to_string(),
        "19.9"
    );
}
