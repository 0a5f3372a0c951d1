//! Redacts and the identity map: what `customers/redact` erases, and how a
//! later webhook about an erased customer or order is kept from carrying
//! the person again (MAPPING.md → Identity).

use serde_json::{Map, Value};

use super::context::Draft;
use super::fields::id;
use super::known::{Erase, IdKind, Known};

/// The customer and the order a webhook is about, as far as its payload says.
fn subjects(topic: &str, body: &Map<String, Value>) -> (Option<String>, Option<String>) {
    let nested = |key: &str, field: &str| match body.get(key) {
        Some(Value::Object(inner)) => id(inner, field),
        _ => None,
    };
    let customer = if topic.starts_with("customers/") && topic != "customers/data_request" {
        id(body, "id")
    } else {
        nested("customer", "id").or_else(|| id(body, "customer_id"))
    };
    let order = if topic == "orders/edited" {
        nested("order_edit", "order_id")
    } else if topic.starts_with("orders/") {
        id(body, "id")
    } else {
        id(body, "order_id")
    };
    (customer, order)
}

/// Whether the webhook names a customer or an order that a redact erased.
pub(super) fn names_erased(topic: &str, body: &Map<String, Value>, known: &dyn Known) -> bool {
    let (customer, order) = subjects(topic, body);
    customer.is_some_and(|c| {
        known
            .get(IdKind::Erased, &format!("customer:{c}"))
            .is_some()
    }) || order.is_some_and(|o| known.get(IdKind::Erased, &format!("order:{o}")).is_some())
}

/// Keys that carry a person's contact details, at any depth.
fn personal(key: &str) -> bool {
    key.contains("email") || key.contains("phone")
}

/// Drops what would carry the erased person: identifies (they would recreate
/// the profile) and every email or phone field of the other calls. Their
/// identity is already anonymous (`identity::resolve`).
pub(super) fn scrub(drafts: &mut Vec<Draft>) {
    drafts.retain(|d| !matches!(d, Draft::Identify(..)));
    for draft in drafts {
        match draft {
            Draft::Track(_, body) | Draft::Delete(_, body) | Draft::Identify(_, body) => {
                scrub_map(body)
            }
        }
    }
}

fn scrub_map(map: &mut Map<String, Value>) {
    map.retain(|key, _| !personal(key));
    for value in map.values_mut() {
        scrub_value(value);
    }
}

fn scrub_value(value: &mut Value) {
    match value {
        Value::Object(map) => scrub_map(map),
        Value::Array(items) => items.iter_mut().for_each(scrub_value),
        _ => {}
    }
}

/// What a customers/redact erases: the customer under `customer` and its
/// `orders_to_redact`.
pub(super) fn erase(body: &Map<String, Value>) -> Option<Erase> {
    let customer = match body.get("customer") {
        Some(Value::Object(c)) => id(c, "id"),
        _ => None,
    }?;
    let orders = match body.get("orders_to_redact") {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|item| match item {
                Value::Number(n) => Some(n.to_string()),
                Value::String(s) if !s.is_empty() => Some(s.clone()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    Some(Erase { customer, orders })
}
