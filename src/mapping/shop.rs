//! Shop-level and compliance topics (app/uninstalled, shop/redact,
//! customers/data_request) and the generic mapping of any topic not in the table.

use serde_json::{Map, Value};

use super::MapError;
use super::context::{Draft, Input};
use super::fields::{id, object, pass, put, put_id, text};
use super::identity::{Subject, resolve};
use super::number;

/// app/uninstalled: the payload is the shop; its email is the merchant's, not a
/// customer's, so the event stays anonymous.
pub(super) fn uninstalled(
    input: &Input<'_>,
    body: &Map<String, Value>,
) -> Result<Vec<Draft>, MapError> {
    let shop_id = id(body, "id");
    let who = resolve(
        input,
        Subject {
            tokens: &[("shop", shop_id.clone())],
            ..Subject::default()
        },
    );
    let mut props = Map::new();
    put_id(&mut props, "shop_id", shop_id);
    put(&mut props, "name", pass(body, "name"));
    put(&mut props, "domain", pass(body, "domain"));
    put(
        &mut props,
        "myshopify_domain",
        pass(body, "myshopify_domain"),
    );
    put(&mut props, "plan_name", pass(body, "plan_name"));
    Ok(vec![Draft::Track(who, props)])
}

/// shop/redact: 48 hours after uninstall, Shopify asks to erase the shop's data.
pub(super) fn redact(input: &Input<'_>, body: &Map<String, Value>) -> Result<Vec<Draft>, MapError> {
    let shop_id = id(body, "shop_id");
    let who = resolve(
        input,
        Subject {
            tokens: &[("shop", shop_id.clone())],
            ..Subject::default()
        },
    );
    let mut props = Map::new();
    put_id(&mut props, "shop_id", shop_id);
    put(&mut props, "shop_domain", pass(body, "shop_domain"));
    Ok(vec![Draft::Track(who, props)])
}

/// customers/data_request: a customer asked for their data; the track lets a
/// downstream tool start the export.
pub(super) fn data_request(
    input: &Input<'_>,
    body: &Map<String, Value>,
) -> Result<Vec<Draft>, MapError> {
    let customer = object(input, body, "customer", "customer")?;
    let request = object(input, body, "data_request", "data_request")?;
    let customer_id = customer.and_then(|c| id(c, "id"));
    let who = resolve(
        input,
        Subject {
            email: customer.and_then(|c| text(c, "email")),
            customer: customer_id.clone(),
            tokens: &[("shop", id(body, "shop_id"))],
            ..Subject::default()
        },
    );
    let mut props = Map::new();
    put_id(&mut props, "customer_id", customer_id);
    put(
        &mut props,
        "orders_requested",
        ids(body, "orders_requested"),
    );
    put_id(
        &mut props,
        "data_request_id",
        request.and_then(|r| id(r, "id")),
    );
    put_id(&mut props, "shop_id", id(body, "shop_id"));
    put(&mut props, "shop_domain", pass(body, "shop_domain"));
    Ok(vec![Draft::Track(who, props)])
}

/// A list of ids as strings; anything that is not an id passes through sanitised.
pub(super) fn ids(body: &Map<String, Value>, key: &str) -> Option<Value> {
    match body.get(key)? {
        Value::Array(items) => Some(Value::Array(
            items
                .iter()
                .map(|item| match item {
                    Value::Number(n) => Value::String(n.to_string()),
                    other => number::sanitize(other),
                })
                .collect(),
        )),
        _ => pass(body, key),
    }
}

/// Any other topic: a track named from the topic with the payload as its
/// properties, following the table's rules (see [`tidy`]), so nothing a shop
/// subscribes to is dropped. The user comes from a `customer` object (its
/// `email`, else `email_address`) or a top-level `customer_id`, whose email is a
/// top-level `email_address` (the consent-update topics' shape). A top-level
/// `email` alone is not used: it may be the merchant's (shop/update).
pub(super) fn generic(
    input: &Input<'_>,
    body: &Map<String, Value>,
) -> Result<Vec<Draft>, MapError> {
    let customer = match body.get("customer") {
        Some(Value::Object(c)) => Some(c),
        _ => None,
    };
    let resource = input.topic.split('/').next().unwrap_or_default();
    let customer_email =
        |c: &Map<String, Value>| text(c, "email").or_else(|| text(c, "email_address"));
    let email = match customer {
        Some(c) => customer_email(c),
        None => id(body, "customer_id").and_then(|_| text(body, "email_address")),
    };
    let who = resolve(
        input,
        Subject {
            email,
            customer: customer
                .and_then(|c| id(c, "id"))
                .or_else(|| id(body, "customer_id")),
            of_order: id(body, "order_id"),
            tokens: &[
                ("cart", text(body, "cart_token")),
                ("checkout", text(body, "checkout_token")),
                (resource, id(body, "id")),
            ],
            ..Subject::default()
        },
    );
    Ok(vec![Draft::Track(who, number::sanitize_map(&tidy(body)))])
}

/// The table's rules for a payload passed through whole: object members that are
/// null are dropped, and a numeric `id`, `*_id` or element of an `*_ids` array
/// becomes a string of its exact digits (so a warehouse column keeps one type
/// whatever the id's size), at any depth.
fn tidy(map: &Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    for (key, value) in map {
        let value = match value {
            Value::Null => continue,
            Value::Number(n) if key == "id" || key.ends_with("_id") => Value::String(n.to_string()),
            Value::Array(items) if key.ends_with("_ids") => Value::Array(
                items
                    .iter()
                    .map(|item| match item {
                        Value::Number(n) => Value::String(n.to_string()),
                        other => tidy_value(other),
                    })
                    .collect(),
            ),
            other => tidy_value(other),
        };
        out.insert(key.clone(), value);
    }
    out
}

fn tidy_value(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(tidy(map)),
        Value::Array(items) => Value::Array(items.iter().map(tidy_value).collect()),
        other => other.clone(),
    }
}
