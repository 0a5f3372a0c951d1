//! The order property set MAPPING.md defines for every order, checkout and refund
//! event, and the `products[]` entry built from a line item.

use serde_json::{Map, Value};

use super::MapError;
use super::context::Input;
use super::fields::{id, money, object, objects, pass, put, put_id, text};
use super::identity::{Subject, resolve};
use super::number;
use crate::event::Identity;

/// Whether the body is an order or a checkout: they name their ids differently.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Order,
    Checkout,
}

/// The email of an order or checkout: its own, else its customer's.
pub(super) fn email(
    body: &Map<String, Value>,
    customer: Option<&Map<String, Value>>,
) -> Option<String> {
    text(body, "email")
        .or_else(|| text(body, "contact_email"))
        .or_else(|| customer.and_then(|c| text(c, "email")))
}

/// The identity of an order or checkout; a guest without email is anonymous,
/// seeded by cart token, then checkout token, then the order's own id.
pub(super) fn identity(
    input: &Input<'_>,
    body: &Map<String, Value>,
    customer: Option<&Map<String, Value>>,
    kind: Kind,
) -> Identity {
    let (checkout_token, own) = match kind {
        Kind::Order => (text(body, "checkout_token"), ("order", id(body, "id"))),
        Kind::Checkout => (text(body, "token"), ("checkout_id", id(body, "id"))),
    };
    let order = match kind {
        Kind::Order => id(body, "id"),
        Kind::Checkout => None,
    };
    let currency = order
        .as_ref()
        .and_then(|_| text(body, "currency").or_else(|| text(body, "presentment_currency")));
    resolve(
        input,
        Subject {
            email: email(body, customer),
            customer: customer.and_then(|c| id(c, "id")),
            order,
            currency,
            tokens: &[
                ("cart", text(body, "cart_token")),
                ("checkout", checkout_token),
                own,
            ],
            ..Subject::default()
        },
    )
}

/// order_id … fulfillment_status, products — in MAPPING.md's order. Absent and
/// null values are omitted rather than sent as null.
///
/// A checkout's `order_id` is the checkout's own id (Segment spec v2 names the
/// checkout's id so, and other Shopify sources send it that way): it stays the
/// same across Checkout Started, Updated and Abandoned. The order a completed
/// checkout became, if its payload names one, is `completed_order_id`.
pub(super) fn order_properties(
    input: &Input<'_>,
    body: &Map<String, Value>,
    kind: Kind,
    with_value: bool,
) -> Result<Map<String, Value>, MapError> {
    let mut out = Map::new();
    match kind {
        Kind::Order => {
            put_id(&mut out, "order_id", id(body, "id"));
            put(&mut out, "order_number", pass(body, "order_number"));
            put_id(&mut out, "checkout_id", id(body, "checkout_id"));
        }
        Kind::Checkout => {
            put_id(&mut out, "order_id", id(body, "id"));
            put_id(&mut out, "checkout_id", id(body, "id"));
            put_id(&mut out, "checkout_token", text(body, "token"));
            put_id(&mut out, "completed_order_id", id(body, "order_id"));
        }
    }
    let customer = customer(input, body)?;
    put_id(&mut out, "customer_id", customer.and_then(|c| id(c, "id")));
    let total = money(body, "total_price");
    put(&mut out, "total", total.clone());
    if with_value {
        put(&mut out, "value", total);
    }
    let subtotal = money(body, "subtotal_price");
    put(&mut out, "subtotal", subtotal.clone());
    put(&mut out, "revenue", subtotal);
    put(&mut out, "shipping", shipping(body));
    put(&mut out, "tax", money(body, "total_tax"));
    put(&mut out, "discount", money(body, "total_discounts"));
    put(&mut out, "coupon", coupon(input, body)?.map(Value::from));
    put(&mut out, "currency", currency(body));
    let items = objects(input, body, "line_items", "line_items")?;
    put(
        &mut out,
        "item_count",
        items.as_ref().map(|i| number::count(i.len())),
    );
    put(&mut out, "financial_status", pass(body, "financial_status"));
    put(
        &mut out,
        "fulfillment_status",
        pass(body, "fulfillment_status"),
    );
    put(&mut out, "products", items.map(|items| products(&items)));
    Ok(out)
}

/// `currency`, else `presentment_currency` (the currency the buyer saw).
pub(super) fn currency(body: &Map<String, Value>) -> Option<Value> {
    pass(body, "currency").or_else(|| pass(body, "presentment_currency"))
}

/// `set.shop_money.amount` of a money set such as `total_shipping_price_set`.
fn shop_amount(map: &Map<String, Value>, set: &str) -> Option<Value> {
    map.get(set)
        .and_then(|set| set.get("shop_money"))
        .and_then(Value::as_object)
        .and_then(|shop_money| money(shop_money, "amount"))
}

/// `total_shipping_price_set.shop_money.amount`: the shop-currency shipping; when
/// absent, the exact sum of `shipping_lines[]` (each line's
/// `price_set.shop_money.amount`, else its `price`: before discounts, as the total
/// is). No shipping when a line has no readable price or the lines are not an
/// array of objects: a partial sum would be a wrong amount.
fn shipping(body: &Map<String, Value>) -> Option<Value> {
    shop_amount(body, "total_shipping_price_set").or_else(|| {
        let lines = body.get("shipping_lines")?.as_array()?;
        let prices = lines
            .iter()
            .map(|line| {
                let line = line.as_object()?;
                line.get("price_set")
                    .and_then(|set| set.get("shop_money"))
                    .and_then(|m| m.get("amount"))
                    .filter(|v| !v.is_null())
                    .or_else(|| line.get("price"))
            })
            .collect::<Option<Vec<_>>>()?;
        number::sum_money(prices.into_iter().map(Some))
    })
}

/// Discount codes joined with ","; `None` when there are none.
fn coupon(input: &Input<'_>, body: &Map<String, Value>) -> Result<Option<String>, MapError> {
    let codes = objects(input, body, "discount_codes", "discount_codes")?.unwrap_or_default();
    let codes: Vec<String> = codes.iter().filter_map(|c| text(c, "code")).collect();
    Ok((!codes.is_empty()).then(|| codes.join(",")))
}

/// `products[]` from line items.
/// `item_count` then `products[]`, for events whose line items are all they carry
/// of the order property set (carts, fulfillments).
pub(super) fn put_line_items(
    props: &mut Map<String, Value>,
    items: Option<Vec<&Map<String, Value>>>,
) {
    put(
        props,
        "item_count",
        items.as_ref().map(|i| number::count(i.len())),
    );
    put(props, "products", items.map(|items| products(&items)));
}

pub(super) fn products(items: &[&Map<String, Value>]) -> Value {
    Value::Array(
        items
            .iter()
            .map(|item| Value::Object(product(item, None)))
            .collect(),
    )
}

/// One Segment product from a line item; `quantity` overrides the item's own
/// (a refund refunds part of a line).
pub(super) fn product(item: &Map<String, Value>, quantity: Option<Value>) -> Map<String, Value> {
    let mut out = Map::new();
    put_id(&mut out, "product_id", id(item, "product_id"));
    put_id(&mut out, "variant_id", id(item, "variant_id"));
    put(&mut out, "sku", pass(item, "sku"));
    put(&mut out, "name", pass(item, "title"));
    put(&mut out, "variant", pass(item, "variant_title"));
    put(&mut out, "brand", pass(item, "vendor"));
    put(&mut out, "price", money(item, "price"));
    put(
        &mut out,
        "quantity",
        quantity.or_else(|| pass(item, "quantity")),
    );
    out
}

/// The order's customer, if any (`customer: null` on guest orders).
pub(super) fn customer<'a>(
    input: &Input<'_>,
    body: &'a Map<String, Value>,
) -> Result<Option<&'a Map<String, Value>>, MapError> {
    object(input, body, "customer", "customer")
}
