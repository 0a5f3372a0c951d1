//! checkouts/* and carts/*: the shopper before the order exists.

use serde_json::{Map, Value};

use super::MapError;
use super::commerce::{self, Kind};
use super::context::{Draft, Input};
use super::fields::{id, objects, put_id, text};
use super::identity::{Subject, resolve};

/// checkouts/create → Checkout Started, which also carries `value` (= total).
pub(super) fn started(
    input: &Input<'_>,
    body: &Map<String, Value>,
) -> Result<Vec<Draft>, MapError> {
    track(input, body, true)
}

/// checkouts/update and checkouts/delete (abandoned).
pub(super) fn checkout(
    input: &Input<'_>,
    body: &Map<String, Value>,
) -> Result<Vec<Draft>, MapError> {
    track(input, body, false)
}

fn track(
    input: &Input<'_>,
    body: &Map<String, Value>,
    with_value: bool,
) -> Result<Vec<Draft>, MapError> {
    let customer = commerce::customer(input, body)?;
    let who = commerce::identity(input, body, customer, Kind::Checkout);
    let props = commerce::order_properties(input, body, Kind::Checkout, with_value)?;
    Ok(vec![Draft::Track(who, props)])
}

/// carts/create and carts/update: carts have no customer and no money totals,
/// only a token and lines; the token links the cart to its checkout and order.
pub(super) fn cart(input: &Input<'_>, body: &Map<String, Value>) -> Result<Vec<Draft>, MapError> {
    let token = text(body, "token").or_else(|| id(body, "id"));
    let who = resolve(
        input,
        Subject {
            tokens: &[("cart", token.clone())],
            ..Subject::default()
        },
    );
    let items = objects(input, body, "line_items", "line_items")?;
    let mut props = Map::new();
    put_id(&mut props, "cart_id", token);
    commerce::put_line_items(&mut props, items);
    Ok(vec![Draft::Track(who, props)])
}
