//! orders/*, refunds/create and fulfillments/*: order tracks, plus an identify of
//! the ordering customer on orders/create and orders/paid.

use serde_json::{Map, Value};

use super::MapError;
use super::commerce::{self, Kind};
use super::context::{Draft, Input};
use super::fields::{id, object, objects, pass, put, put_id, text, time};
use super::identity::{Subject, resolve};
use super::{customers, number};
use crate::event::Identity;

/// orders/create and orders/paid: identify the customer (unless
/// `identify_on_orders = false` or a guest order), then the order track.
pub(super) fn placed(input: &Input<'_>, body: &Map<String, Value>) -> Result<Vec<Draft>, MapError> {
    let customer = commerce::customer(input, body)?;
    let who = commerce::identity(input, body, customer, Kind::Order);
    let mut drafts = Vec::with_capacity(2);
    if let (Some(customer), true) = (customer, input.cfg.identify_on_orders) {
        let billing = object(input, body, "billing_address", "billing_address")?;
        let email = commerce::email(body, Some(customer));
        let mut traits = customers::traits(input, customer, email, billing)?;
        // The customer snapshot in an order webhook predates the order, so its
        // orders_count and total_spent are stale (0 on a first order): leave them
        // to the customers/* identifies, whose record is current.
        traits.shift_remove("ordersCount");
        traits.shift_remove("totalSpent");
        // The order being placed or paid is the customer's latest; the customer
        // object in the webhook may still name the previous one.
        put_id(&mut traits, "lastOrderId", id(body, "id"));
        put(&mut traits, "lastOrderAt", time(body, "created_at"));
        drafts.push(Draft::Identify(who.clone(), traits));
    }
    drafts.push(Draft::Track(who, order_properties(input, body)?));
    Ok(drafts)
}

/// Every other order topic: the order property set, plus cancel_reason when set.
pub(super) fn order(input: &Input<'_>, body: &Map<String, Value>) -> Result<Vec<Draft>, MapError> {
    let customer = commerce::customer(input, body)?;
    let who = commerce::identity(input, body, customer, Kind::Order);
    Ok(vec![Draft::Track(who, order_properties(input, body)?)])
}

fn order_properties(
    input: &Input<'_>,
    body: &Map<String, Value>,
) -> Result<Map<String, Value>, MapError> {
    let mut props = commerce::order_properties(input, body, Kind::Order, false)?;
    put(&mut props, "cancel_reason", pass(body, "cancel_reason"));
    Ok(props)
}

/// Whom an event about an order (not the order itself: a refund, a
/// fulfillment, an edit) concerns: its own email if it has one, else the
/// order's customer through the identity map, else the order's anonymous id.
fn about_order(input: &Input<'_>, order_id: &Option<String>, email: Option<String>) -> Identity {
    resolve(
        input,
        Subject {
            email,
            of_order: order_id.clone(),
            tokens: &[("order", order_id.clone())],
            ..Subject::default()
        },
    )
}

/// orders/edited: the payload is `{order_edit: {...}}`, not an order.
pub(super) fn edited(input: &Input<'_>, body: &Map<String, Value>) -> Result<Vec<Draft>, MapError> {
    let edit = object(input, body, "order_edit", "order_edit")?.unwrap_or(body);
    let order_id = id(edit, "order_id");
    let who = about_order(input, &order_id, None);
    let mut props = Map::new();
    put_id(&mut props, "order_id", order_id);
    put_id(&mut props, "order_edit_id", id(edit, "id"));
    put(&mut props, "committed_at", time(edit, "committed_at"));
    put(&mut props, "line_items", pass(edit, "line_items"));
    put(&mut props, "discounts", pass(edit, "discounts"));
    Ok(vec![Draft::Track(who, props)])
}

/// refunds/create → Order Refunded: `total` is what was refunded (successful
/// refund transactions), `products` the refunded lines with refunded quantities.
pub(super) fn refund(input: &Input<'_>, body: &Map<String, Value>) -> Result<Vec<Draft>, MapError> {
    let order_id = id(body, "order_id");
    let who = about_order(input, &order_id, None);
    let transactions = objects(input, body, "transactions", "transactions")?.unwrap_or_default();
    let refunds: Vec<_> = transactions
        .iter()
        .filter(|t| matches!(text(t, "kind").as_deref(), None | Some("refund")))
        .filter(|t| matches!(text(t, "status").as_deref(), None | Some("success")))
        .collect();
    let lines = objects(input, body, "refund_line_items", "refund_line_items")?;
    let mut products = Vec::new();
    for (i, line) in lines.iter().flatten().enumerate() {
        let path = format!("refund_line_items[{i}].line_item");
        if let Some(item) = object(input, line, "line_item", &path)? {
            let product = commerce::product(item, pass(line, "quantity"));
            products.push(Value::Object(product));
        }
    }
    // The refund's own money sets, else the order's currency through the
    // identity map, else the presentment currency.
    let currency = refund_currency(&refunds, lines.as_deref())
        .or_else(|| {
            order_id
                .as_deref()
                .and_then(|o| super::identity::known_order(input, o))
                .and_then(|facts| facts.currency)
                .map(Value::from)
        })
        .or_else(|| pass(body, "presentment_currency"));
    let mut props = Map::new();
    put_id(&mut props, "order_id", order_id);
    put_id(&mut props, "refund_id", id(body, "id"));
    put(
        &mut props,
        "total",
        number::sum_money(refunds.iter().map(|t| t.get("amount"))),
    );
    put(&mut props, "currency", currency);
    put(
        &mut props,
        "item_count",
        lines.as_ref().map(|l| number::count(l.len())),
    );
    put(
        &mut props,
        "products",
        lines.map(|_| Value::Array(products)),
    );
    Ok(vec![Draft::Track(who, props)])
}

/// A refund's currency from its money: its refund transactions' `currency`
/// (null on some payloads), else the refund line items'
/// `subtotal_set.shop_money.currency_code`.
fn refund_currency(
    refunds: &[&&Map<String, Value>],
    lines: Option<&[&Map<String, Value>]>,
) -> Option<Value> {
    refunds
        .iter()
        .find_map(|t| pass(t, "currency"))
        .or_else(|| {
            lines.unwrap_or_default().iter().find_map(|line| {
                line.get("subtotal_set")
                    .and_then(|set| set.get("shop_money"))
                    .and_then(Value::as_object)
                    .and_then(|m| pass(m, "currency_code"))
            })
        })
}

/// fulfillments/create and update: shipment details and the shipped lines.
pub(super) fn fulfillment(
    input: &Input<'_>,
    body: &Map<String, Value>,
) -> Result<Vec<Draft>, MapError> {
    let order_id = id(body, "order_id");
    let who = about_order(input, &order_id, text(body, "email"));
    let items = objects(input, body, "line_items", "line_items")?;
    let mut props = Map::new();
    put_id(&mut props, "fulfillment_id", id(body, "id"));
    put_id(&mut props, "order_id", order_id);
    put(&mut props, "status", pass(body, "status"));
    put(&mut props, "shipment_status", pass(body, "shipment_status"));
    put(
        &mut props,
        "tracking_company",
        pass(body, "tracking_company"),
    );
    put(&mut props, "tracking_number", pass(body, "tracking_number"));
    put(&mut props, "tracking_url", pass(body, "tracking_url"));
    commerce::put_line_items(&mut props, items);
    Ok(vec![Draft::Track(who, props)])
}
