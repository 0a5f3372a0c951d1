//! The identity map through mapping, over the real embedded store: the
//! sequence of `mapping_support/sequence.rs` (every call's userId or
//! anonymousId), the map's own fallbacks, and its rules under
//! `user_id = "customer_id"`. `tests/it/identity.rs` runs the same sequence
//! through the real relay.

mod mapping_support;

use mapping_support::sequence::{self, ANN_ID, ANN_ORDER, Step};
use serde_json::{Value, json};
use shoprelay::config::{MappingConfig, UserIdRule};
use shoprelay::mapping::map_known;
use shoprelay::queue::Store;
use shoprelay::queue::embedded::EmbeddedStore;
use shoprelay::queue::identity::{StoreKnown, apply};
use shoprelay::sources::SourceKind;

/// Maps `topic`/`body` as the relay does: reads the map, then writes what
/// the webhook taught it.
fn map_learn(
    store: &dyn Store,
    cfg: &MappingConfig,
    seed: &str,
    topic: &str,
    body: &Value,
) -> Vec<Value> {
    let bytes = serde_json::to_vec(body).unwrap();
    let webhook = mapping_support::webhook(SourceKind::Shopify, topic, seed, &bytes);
    let scope = shoprelay::mapping::scope(webhook.meta()).to_owned();
    let known = StoreKnown::new(store, &scope);
    let (events, learned) = map_known(&webhook, cfg, &known).unwrap();
    assert!(known.into_error().is_none());
    apply(store, &learned, 1_000).unwrap();
    events.iter().map(|e| e.as_value().clone()).collect()
}

fn run(store: &dyn Store, cfg: &MappingConfig, steps: &[Step]) {
    let mut anonymous = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let calls = map_learn(store, cfg, &format!("step {i}"), step.topic, &step.body);
        if let Err(e) = sequence::check(i, step, &calls, &mut anonymous) {
            panic!("{e}");
        }
    }
}

#[test]
fn one_customer_one_profile_through_the_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    run(&store, &MappingConfig::default(), &sequence::steps());
}

#[test]
fn the_same_sequence_knowing_nothing_splits_the_profile() {
    // What the map fixes: without it, the refund of Ann's order is anonymous.
    let steps = sequence::steps();
    let cfg = MappingConfig::default();
    let bytes = serde_json::to_vec(&steps[5].body).unwrap();
    let webhook = mapping_support::webhook(SourceKind::Shopify, steps[5].topic, "x", &bytes);
    let events = shoprelay::mapping::map(&webhook, &cfg).unwrap();
    assert!(events[0].as_value().get("userId").is_none());
    assert!(events[0].as_value()["properties"].get("currency").is_none());
}

#[test]
fn the_map_survives_reopening_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let steps = sequence::steps();
    let cfg = MappingConfig::default();
    {
        let store = EmbeddedStore::open(dir.path()).unwrap();
        map_learn(&store, &cfg, "a", steps[4].topic, &steps[4].body);
        store.flush().unwrap();
    }
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let calls = map_learn(&store, &cfg, "b", steps[5].topic, &steps[5].body);
    assert_eq!(calls[0]["userId"], json!(sequence::ANN));
}

#[test]
fn a_customer_never_seen_is_deleted_under_its_id() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let calls = map_learn(
        &store,
        &MappingConfig::default(),
        "a",
        "customers/delete",
        &json!({"id": 99}),
    );
    assert_eq!(calls[0]["type"], "delete");
    assert_eq!(calls[0]["userId"], "99");
}

#[test]
fn under_customer_id_rule_orders_resolve_to_the_customer_id() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let cfg = MappingConfig {
        user_id: UserIdRule::CustomerId,
        ..MappingConfig::default()
    };
    let steps = sequence::steps();
    map_learn(&store, &cfg, "a", steps[4].topic, &steps[4].body);
    for i in [5, 6, 7] {
        let calls = map_learn(
            &store,
            &cfg,
            &format!("s{i}"),
            steps[i].topic,
            &steps[i].body,
        );
        assert_eq!(calls[0]["userId"], json!(ANN_ID.to_string()), "step {i}");
    }
    // A guest with only an email stays anonymous under this rule, and so do
    // the refunds of the guest's order.
    for i in [1, 2, 3, 8] {
        let calls = map_learn(
            &store,
            &cfg,
            &format!("s{i}"),
            steps[i].topic,
            &steps[i].body,
        );
        assert!(calls[0].get("userId").is_none(), "step {i}: {}", calls[0]);
    }
}

#[test]
fn shop_redact_forgets_the_whole_shop() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let cfg = MappingConfig::default();
    let steps = sequence::steps();
    map_learn(&store, &cfg, "a", steps[4].topic, &steps[4].body);
    map_learn(
        &store,
        &cfg,
        "b",
        "shop/redact",
        &json!({"shop_id": 1, "shop_domain": "example.myshopify.com"}),
    );
    let calls = map_learn(&store, &cfg, "c", steps[5].topic, &steps[5].body);
    assert!(calls[0].get("userId").is_none(), "{}", calls[0]);
    assert!(!calls[0].to_string().contains(sequence::ANN));
}

#[test]
fn a_refund_before_its_order_was_seen_stays_anonymous() {
    // MAPPING.md → Identity, ordering: nothing waits for an order that may
    // never come; the refund keeps its deterministic anonymousId.
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let steps = sequence::steps();
    let calls = map_learn(
        &store,
        &MappingConfig::default(),
        "a",
        steps[5].topic,
        &steps[5].body,
    );
    assert!(calls[0].get("userId").is_none());
    assert!(calls[0]["anonymousId"].is_string());
    let order = ANN_ORDER;
    assert_eq!(calls[0]["properties"]["order_id"], json!(order.to_string()));
}
