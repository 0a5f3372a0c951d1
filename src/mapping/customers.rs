//! customers/*: identify on create/update/enable/disable (plus a Customer Created
//! track on create), delete on delete/redact. Also the customer traits that order
//! identifies reuse.

use serde_json::{Map, Value};

use super::MapError;
use super::context::{Draft, Input};
use super::fields::{id, money, object, pass, put, put_id, text, time};
use super::identity::{Subject, resolve};
use crate::event::Identity;

/// Segment traits of a Shopify customer. `email` is passed in because an order's
/// own email outranks its customer's; `fallback_address` is an order's billing
/// address, used when the customer has no default address.
pub(super) fn traits(
    input: &Input<'_>,
    customer: &Map<String, Value>,
    email: Option<String>,
    fallback_address: Option<&Map<String, Value>>,
) -> Result<Map<String, Value>, MapError> {
    let mut out = Map::new();
    put(&mut out, "email", email.map(Value::from));
    // The Shopify customer id under the name order events use, so a destination
    // joins profiles and orders on one field whatever `user_id` rule keys them.
    put_id(&mut out, "customer_id", id(customer, "id"));
    put(&mut out, "firstName", pass(customer, "first_name"));
    put(&mut out, "lastName", pass(customer, "last_name"));
    put(&mut out, "phone", pass(customer, "phone"));
    let default = object(
        input,
        customer,
        "default_address",
        "customer.default_address",
    )?;
    put(
        &mut out,
        "address",
        default.or(fallback_address).and_then(address),
    );
    put(&mut out, "ordersCount", pass(customer, "orders_count"));
    put(&mut out, "totalSpent", money(customer, "total_spent"));
    put_id(&mut out, "lastOrderId", id(customer, "last_order_id"));
    Ok(out)
}

/// Segment's address trait; `None` when the address has none of its fields.
fn address(a: &Map<String, Value>) -> Option<Value> {
    let street = match (text(a, "address1"), text(a, "address2")) {
        (Some(one), Some(two)) => Some(format!("{one}, {two}")),
        (one, two) => one.or(two),
    };
    let mut out = Map::new();
    put(&mut out, "street", street.map(Value::from));
    put(&mut out, "city", pass(a, "city"));
    put(&mut out, "state", pass(a, "province"));
    put(&mut out, "postalCode", pass(a, "zip"));
    put(&mut out, "country", pass(a, "country"));
    (!out.is_empty()).then_some(Value::Object(out))
}

fn who(input: &Input<'_>, customer: &Map<String, Value>) -> Identity {
    resolve(
        input,
        Subject {
            email: text(customer, "email"),
            customer: id(customer, "id"),
            ..Subject::default()
        },
    )
}

/// Identify traits of a customer payload, with `createdAt`.
fn customer_traits(
    input: &Input<'_>,
    body: &Map<String, Value>,
) -> Result<Map<String, Value>, MapError> {
    let mut traits = traits(input, body, text(body, "email"), None)?;
    put(&mut traits, "createdAt", time(body, "created_at"));
    Ok(traits)
}

/// customers/create: identify, then a Customer Created track.
pub(super) fn created(
    input: &Input<'_>,
    body: &Map<String, Value>,
) -> Result<Vec<Draft>, MapError> {
    let traits = customer_traits(input, body)?;
    let mut props = Map::new();
    put_id(&mut props, "customer_id", id(body, "id"));
    put(&mut props, "email", pass(body, "email"));
    put(&mut props, "first_name", pass(body, "first_name"));
    put(&mut props, "last_name", pass(body, "last_name"));
    put(&mut props, "phone", pass(body, "phone"));
    put(&mut props, "state", pass(body, "state"));
    put(&mut props, "verified_email", pass(body, "verified_email"));
    put(&mut props, "tags", pass(body, "tags"));
    Ok(vec![
        Draft::Identify(who(input, body), traits),
        Draft::Track(who(input, body), props),
    ])
}

/// customers/update, enable, disable: the traits as they now are.
pub(super) fn identify(
    input: &Input<'_>,
    body: &Map<String, Value>,
) -> Result<Vec<Draft>, MapError> {
    let traits = customer_traits(input, body)?;
    Ok(vec![Draft::Identify(who(input, body), traits)])
}

/// customers/delete (the customer itself) and customers/redact (the customer
/// under `customer`): a Segment delete for the user. A redact's
/// `orders_to_redact` (ids as strings) rides along as the delete's `properties`,
/// so a receiver can erase those orders too; a delete without one has none.
pub(super) fn delete(input: &Input<'_>, body: &Map<String, Value>) -> Result<Vec<Draft>, MapError> {
    let customer = object(input, body, "customer", "customer")?.unwrap_or(body);
    let mut props = Map::new();
    put(
        &mut props,
        "orders_to_redact",
        super::shop::ids(body, "orders_to_redact"),
    );
    Ok(vec![Draft::Delete(who(input, customer), props)])
}
