//! Golden tests of the mapping: every fixture payload is mapped with the default
//! `[mapping]` and compared, as values and as exact bytes, with the events in the
//! `.expected.json` beside it (or `{"error": "..."}` for a payload that must be
//! dead-lettered). `UPDATE_GOLDEN=1 cargo test --test mapping_golden` rewrites
//! the expected files; review the diff before committing.
//!
//! Below the golden test: the `[mapping]` options, each against one fixture.

#[path = "mapping_support/fixtures.rs"]
mod fixtures;
#[path = "mapping_support/webhook.rs"]
mod webhook;

use std::path::PathBuf;

use fixtures::{Fixture, fixtures_dir};
use serde_json::{Value, json};
use shoprelay::config::{MappingConfig, Naming, UserIdRule};
use shoprelay::event::{Call, Event};
use shoprelay::mapping::map;
use shoprelay::sources::Webhook;

/// A fixture payload with its label (`shopify/orders__create.guest`).
struct Labelled {
    label: String,
    fixture: Fixture,
}

impl Labelled {
    /// The webhook, its ids seeded by the label.
    fn webhook(&self) -> Webhook {
        let f = &self.fixture;
        webhook::webhook(f.kind, &f.topic, &self.label, &f.body)
    }

    /// Where the expected events live: beside the payload.
    fn expected_path(&self) -> PathBuf {
        fixtures_dir().join(format!("{}.expected.json", self.label))
    }
}

fn fixtures() -> Vec<Labelled> {
    fixtures::fixtures()
        .into_iter()
        .map(|(label, fixture)| Labelled { label, fixture })
        .collect()
}

/// The fixture with this label, e.g. `shopify/orders__create`.
fn fixture(label: &str) -> Labelled {
    fixtures()
        .into_iter()
        .find(|f| f.label == label)
        .unwrap_or_else(|| panic!("no fixture {label}"))
}

/// What a fixture maps to, in the shape of its expected file.
fn actual(result: &Result<Vec<Event>, shoprelay::mapping::MapError>) -> Value {
    match result {
        Ok(events) => Value::Array(events.iter().map(|e| e.as_value().clone()).collect()),
        Err(e) => json!({ "error": e.to_string() }),
    }
}

#[test]
fn fixtures_map_to_their_expected_events() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1");
    let cfg = MappingConfig::default();
    let mut failures = Vec::new();
    let all = fixtures();
    assert!(all.len() >= 45, "fixtures missing: found {}", all.len());
    for f in &all {
        let result = map(&f.webhook(), &cfg);
        let got = actual(&result);
        let path = f.expected_path();
        if update {
            let text = serde_json::to_string_pretty(&got).expect("serialise") + "\n";
            std::fs::write(&path, text).expect("write expected");
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else {
            failures.push(format!(
                "{}: no {} (run with UPDATE_GOLDEN=1)",
                f.label,
                path.display()
            ));
            continue;
        };
        let want: Value = serde_json::from_str(&text).expect("expected file is JSON");
        if want != got {
            failures.push(format!(
                "{}: events differ\n--- expected\n{}\n--- actual\n{}",
                f.label,
                serde_json::to_string_pretty(&want).unwrap_or_default(),
                serde_json::to_string_pretty(&got).unwrap_or_default()
            ));
            continue;
        }
        // Value equality ignores key order; the bytes must not.
        if let (Ok(events), Value::Array(want)) = (&result, &want) {
            for (event, want) in events.iter().zip(want) {
                let compact = serde_json::to_string(want).expect("serialise");
                if event.to_json() != compact {
                    failures.push(format!(
                        "{}: bytes differ\n{}\n{}",
                        f.label,
                        compact,
                        event.to_json()
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Every row of the topic table has a Shopify fixture.
#[test]
fn every_table_topic_has_a_shopify_fixture() {
    let all = fixtures();
    for topic in shoprelay::mapping::topics() {
        let label = format!("shopify/{}", topic.replace('/', "__"));
        assert!(all.iter().any(|f| f.label == label), "no fixture {label}");
    }
}

fn names(events: &[Event]) -> Vec<(Call, Option<&str>)> {
    events.iter().map(|e| (e.call(), e.name())).collect()
}

#[test]
fn snake_preset_names_every_tracked_topic() {
    let cfg = MappingConfig {
        naming: Naming::Snake,
        ..MappingConfig::default()
    };
    let table = [
        ("shopify/orders__create", "order_placed"),
        ("shopify/orders__paid", "order_paid"),
        (
            "shopify/orders__partially_fulfilled",
            "order_partially_fulfilled",
        ),
        ("shopify/orders__delete", "order_deleted"),
        ("shopify/refunds__create", "order_refunded"),
        ("shopify/checkouts__create", "checkout_started"),
        ("shopify/checkouts__delete", "checkout_abandoned"),
        ("shopify/carts__update", "cart_updated"),
        ("shopify/fulfillments__create", "fulfillment_created"),
        ("shopify/customers__create", "customer_created"),
        ("shopify/customers__data_request", "customer_data_requested"),
        ("shopify/shop__redact", "shop_redacted"),
        ("shopify/products__create", "product_created"),
        ("shopify/collections__delete", "collection_deleted"),
        ("shopify/app__uninstalled", "app_uninstalled"),
        (
            "shopify/inventory_levels__update",
            "inventory_levels_update",
        ),
        ("convertedin/orders__update", "order_updated"),
    ];
    for (label, want) in table {
        let events = map(&fixture(label).webhook(), &cfg).expect(label);
        let track = events
            .iter()
            .find(|e| e.call() == Call::Track)
            .expect(label);
        assert_eq!(track.name(), Some(want), "{label}");
    }
}

#[test]
fn overrides_rename_by_topic_as_received_or_as_mapped() {
    let mut cfg = MappingConfig::default();
    cfg.events
        .insert("orders/create".into(), "Order Placed".into());
    cfg.events
        .insert("orders/updated".into(), "Order Changed".into());
    cfg.events
        .insert("inventory_levels/update".into(), "Stock Changed".into());
    let cases = [
        ("shopify/orders__create", "Order Placed"),
        ("shopify/orders__updated", "Order Changed"),
        ("convertedin/orders__update", "Order Changed"),
        ("shopify/inventory_levels__update", "Stock Changed"),
        ("shopify/orders__paid", "Order Paid"),
    ];
    for (label, want) in cases {
        let events = map(&fixture(label).webhook(), &cfg).expect(label);
        assert_eq!(events.last().and_then(Event::name), Some(want), "{label}");
    }
    cfg.events.insert("convertedin-only".into(), "x".into());
    cfg.events
        .insert("orders/update".into(), "Order Edited By Convertedin".into());
    let events = map(&fixture("convertedin/orders__update").webhook(), &cfg).expect("maps");
    assert_eq!(
        events.last().and_then(Event::name),
        Some("Order Edited By Convertedin")
    );
}

#[test]
fn user_id_rule_customer_id_uses_the_id_and_leaves_guests_anonymous() {
    let cfg = MappingConfig {
        user_id: UserIdRule::CustomerId,
        ..MappingConfig::default()
    };
    let events = map(&fixture("shopify/orders__create").webhook(), &cfg).expect("maps");
    for e in &events {
        assert_eq!(e.as_value()["userId"], "115310627314723954");
    }
    assert_eq!(events[0].as_value()["traits"]["email"], "jon@example.com");
    let guest = map(&fixture("shopify/orders__create.guest").webhook(), &cfg).expect("maps");
    assert_eq!(names(&guest), [(Call::Track, Some("Order Completed"))]);
    assert!(guest[0].as_value().get("userId").is_none());
    assert!(
        guest[0].as_value()["anonymousId"]
            .as_str()
            .is_some_and(|a| a.len() == 64)
    );
}

#[test]
fn identify_on_orders_false_drops_only_the_identify() {
    let on = map(
        &fixture("shopify/orders__create").webhook(),
        &MappingConfig::default(),
    )
    .expect("maps");
    let cfg = MappingConfig {
        identify_on_orders: false,
        ..MappingConfig::default()
    };
    let off = map(&fixture("shopify/orders__create").webhook(), &cfg).expect("maps");
    assert_eq!(
        names(&on),
        [
            (Call::Identify, None),
            (Call::Track, Some("Order Completed"))
        ]
    );
    assert_eq!(names(&off), [(Call::Track, Some("Order Completed"))]);
    // The track is byte-identical either way, messageId included.
    assert_eq!(off[0].to_json(), on[1].to_json());
    let customers = map(&fixture("shopify/customers__create").webhook(), &cfg).expect("maps");
    assert_eq!(
        customers[0].call(),
        Call::Identify,
        "customer topics still identify"
    );
}

#[test]
fn convertedin_orders_update_maps_as_orders_updated() {
    let f = fixture("convertedin/orders__update");
    let events = map(&f.webhook(), &MappingConfig::default()).expect("maps");
    assert_eq!(names(&events), [(Call::Track, Some("Order Updated"))]);
    let v = events[0].as_value();
    assert_eq!(v["userId"], "bob.norman@mail.example.com");
    assert_eq!(v["properties"]["order_id"], "450789469");
    assert_eq!(v["timestamp"], "2008-01-10T16:00:00.000Z");
    let source = &v["context"]["source"];
    assert_eq!(source["kind"], "convertedin");
    assert_eq!(source["topic"], "orders/update", "topic as received");
    assert_eq!(source["webhook_id"], f.webhook().meta().dedup_id.as_str());
}

#[test]
fn mapping_is_deterministic_ids_unique_and_events_read_back() {
    let cfg = MappingConfig::default();
    let mut ids = std::collections::BTreeSet::new();
    for f in fixtures() {
        let (Ok(a), Ok(b)) = (map(&f.webhook(), &cfg), map(&f.webhook(), &cfg)) else {
            continue;
        };
        let a: Vec<String> = a.iter().map(Event::to_json).collect();
        let b: Vec<String> = b.iter().map(Event::to_json).collect();
        assert_eq!(a, b, "{}", f.label);
        for e in map(&f.webhook(), &cfg).expect("maps") {
            assert!(e.message_id().len() <= 100);
            // The bytes signed are the bytes a receiver re-serialises (CONTRACT.md).
            let json = e.to_json();
            let back: serde_json::Value = serde_json::from_str(&json).expect("event is JSON");
            assert_eq!(back.to_string(), json, "{}", f.label);
            assert_eq!(back["messageId"], e.message_id(), "{}", f.label);
            assert_eq!(back["event"].as_str(), e.name(), "{}", f.label);
            assert!(
                ids.insert(e.message_id().to_owned()),
                "{}: duplicate messageId",
                f.label
            );
        }
    }
}
