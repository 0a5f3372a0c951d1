//! The identity map through mapping, over the real embedded store: the
//! sequence of `mapping_support/sequence.rs` (every call's userId or
//! anonymousId), the map's own fallbacks, and its rules under
//! `user_id = "customer_id"`. `tests/it/identity.rs` runs the same sequence
//! through the real relay.

#[path = "mapping_support/sequence.rs"]
mod sequence;
#[path = "mapping_support/webhook.rs"]
mod webhook;

use sequence::{ANN_ID, ANN_ORDER, Step};
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
    let webhook = webhook::webhook(SourceKind::Shopify, topic, seed, &bytes);
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
    let webhook = webhook::webhook(SourceKind::Shopify, steps[5].topic, "x", &bytes);
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
    let step = |i: usize| {
        map_learn(
            &store,
            &cfg,
            &format!("s{i}"),
            steps[i].topic,
            &steps[i].body,
        )
    };
    step(4);
    for i in [5, 6, 7] {
        let calls = step(i);
        assert_eq!(calls[0]["userId"], json!(ANN_ID.to_string()), "step {i}");
    }
    // A guest with only an email stays anonymous under this rule, and so do
    // the refunds of the guest's order.
    for i in [1, 2, 3, 8] {
        let calls = step(i);
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

/// Random histories over a small shop: three customers with two orders each,
/// guests, and the topics that name customers and orders in every way the
/// payloads do. Every call has an identity, and after a customer's redact
/// (which lists all their orders, as Shopify's does) no call but a redact's
/// own delete carries their email again.
mod histories {
    use super::*;
    use proptest::prelude::*;

    const CUSTOMERS: u64 = 3;

    fn email(c: u64) -> String {
        format!("c{c}@example.com")
    }

    /// Customer c's orders: 100c and 100c + 1.
    fn orders_of(c: u64) -> [u64; 2] {
        [100 * c, 100 * c + 1]
    }

    #[derive(Clone, Debug)]
    enum Hook {
        Order {
            c: u64,
            n: usize,
            topic: &'static str,
        },
        GuestOrder {
            order: u64,
        },
        Refund {
            c: u64,
            n: usize,
        },
        Fulfillment {
            c: u64,
            n: usize,
            with_email: bool,
        },
        Edit {
            c: u64,
            n: usize,
        },
        OrderDelete {
            c: u64,
            n: usize,
        },
        CustomerUpdate {
            c: u64,
        },
        CustomerDelete {
            c: u64,
        },
        Redact {
            c: u64,
        },
        Consent {
            c: u64,
        },
        Transaction {
            c: u64,
            n: usize,
        },
    }

    fn hook() -> impl Strategy<Value = Hook> {
        let c = 1..=CUSTOMERS;
        let n = 0..2usize;
        prop_oneof![
            (
                c.clone(),
                n.clone(),
                prop::sample::select(vec!["orders/create", "orders/updated", "orders/paid"])
            )
                .prop_map(|(c, n, topic)| Hook::Order { c, n, topic }),
            (900..903u64).prop_map(|order| Hook::GuestOrder { order }),
            (c.clone(), n.clone()).prop_map(|(c, n)| Hook::Refund { c, n }),
            (c.clone(), n.clone(), any::<bool>())
                .prop_map(|(c, n, with_email)| Hook::Fulfillment { c, n, with_email }),
            (c.clone(), n.clone()).prop_map(|(c, n)| Hook::Edit { c, n }),
            (c.clone(), n.clone()).prop_map(|(c, n)| Hook::OrderDelete { c, n }),
            c.clone().prop_map(|c| Hook::CustomerUpdate { c }),
            c.clone().prop_map(|c| Hook::CustomerDelete { c }),
            c.clone().prop_map(|c| Hook::Redact { c }),
            c.clone().prop_map(|c| Hook::Consent { c }),
            (c, n).prop_map(|(c, n)| Hook::Transaction { c, n }),
        ]
    }

    fn payload(h: &Hook) -> (&'static str, Value) {
        let customer = |c: u64| json!({"id": c, "email": email(c), "first_name": "F", "phone": "+15550000000"});
        match *h {
            Hook::Order { c, n, topic } => (
                topic,
                json!({"id": orders_of(c)[n], "email": email(c), "customer": customer(c), "currency": "USD", "total_price": "5.00", "line_items": [], "created_at": "2026-11-01T00:00:00Z"}),
            ),
            Hook::GuestOrder { order } => (
                "orders/create",
                json!({"id": order, "email": format!("guest{order}@example.com"), "customer": null, "cart_token": format!("cart{order}"), "line_items": []}),
            ),
            Hook::Refund { c, n } => (
                "refunds/create",
                json!({"id": 5, "order_id": orders_of(c)[n], "transactions": [], "refund_line_items": []}),
            ),
            Hook::Fulfillment { c, n, with_email } => {
                let mut body = json!({"id": 6, "order_id": orders_of(c)[n], "status": "success", "destination": {"email": email(c), "phone": "+1555"}});
                if with_email {
                    body["email"] = json!(email(c));
                }
                ("fulfillments/create", body)
            }
            Hook::Edit { c, n } => (
                "orders/edited",
                json!({"order_edit": {"id": 7, "order_id": orders_of(c)[n]}}),
            ),
            Hook::OrderDelete { c, n } => ("orders/delete", json!({"id": orders_of(c)[n]})),
            Hook::CustomerUpdate { c } => ("customers/update", customer(c)),
            Hook::CustomerDelete { c } => ("customers/delete", json!({"id": c})),
            Hook::Redact { c } => (
                "customers/redact",
                json!({"shop_id": 1, "customer": {"id": c, "email": email(c)}, "orders_to_redact": orders_of(c)}),
            ),
            Hook::Consent { c } => (
                "customers_email_marketing_consent/update",
                json!({"customer_id": c, "email_address": email(c), "email_marketing_consent": {"state": "subscribed"}}),
            ),
            Hook::Transaction { c, n } => (
                "order_transactions/create",
                json!({"id": 8, "order_id": orders_of(c)[n], "kind": "sale", "amount": "5.00"}),
            ),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn every_call_has_an_identity_and_a_redacted_email_never_returns(
            hooks in prop::collection::vec(hook(), 1..40),
            by_id in any::<bool>(),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let store = EmbeddedStore::open(dir.path()).unwrap();
            let cfg = MappingConfig {
                user_id: if by_id { UserIdRule::CustomerId } else { UserIdRule::Email },
                ..MappingConfig::default()
            };
            let mut redacted = std::collections::BTreeSet::new();
            for (i, h) in hooks.iter().enumerate() {
                let (topic, body) = payload(h);
                let calls = map_learn(&store, &cfg, &format!("h{i}"), topic, &body);
                for call in &calls {
                    let user = call.get("userId").and_then(Value::as_str);
                    let anon = call.get("anonymousId").and_then(Value::as_str);
                    prop_assert!(user.is_some_and(|u| !u.is_empty()) || anon.is_some_and(|a| !a.is_empty()), "{call}");
                    if topic == "customers/redact" {
                        continue;
                    }
                    for c in &redacted {
                        prop_assert!(!call.to_string().contains(&email(*c)), "after c{c}'s redact, {h:?} sent {call}");
                    }
                }
                if let Hook::Redact { c } = h {
                    redacted.insert(*c);
                }
            }
        }
    }
}

#[test]
fn a_refunds_currency_is_the_orders_before_the_presentment_currency() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let cfg = MappingConfig::default();
    let steps = sequence::steps();
    map_learn(&store, &cfg, "a", steps[4].topic, &steps[4].body);
    let mut refund = steps[5].body.clone();
    refund["presentment_currency"] = json!("EUR");
    let calls = map_learn(&store, &cfg, "b", "refunds/create", &refund);
    assert_eq!(
        calls[0]["properties"]["currency"], "USD",
        "the order's, through the map"
    );
    // An order the relay never saw: the presentment currency.
    refund["order_id"] = json!(1);
    let calls = map_learn(&store, &cfg, "c", "refunds/create", &refund);
    assert_eq!(calls[0]["properties"]["currency"], "EUR");
}
