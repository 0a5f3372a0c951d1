//! products/* and collections/*: catalogue changes, with no shopper, so always
//! anonymous (seeded by the product or collection id).

use serde_json::{Map, Value};

use super::MapError;
use super::context::{Draft, Input};
use super::fields::{id, money, objects, pass, put, put_id};
use super::identity::{Subject, resolve};

/// products/create, update, delete (a delete carries only the id).
pub(super) fn product(
    input: &Input<'_>,
    body: &Map<String, Value>,
) -> Result<Vec<Draft>, MapError> {
    let product_id = id(body, "id");
    let who = resolve(
        input,
        Subject {
            tokens: &[("product", product_id.clone())],
            ..Subject::default()
        },
    );
    let variants = objects(input, body, "variants", "variants")?;
    let first = variants.as_ref().and_then(|v| v.first().copied());
    let mut props = Map::new();
    put_id(&mut props, "product_id", product_id);
    put(&mut props, "name", pass(body, "title"));
    put(&mut props, "brand", pass(body, "vendor"));
    put(&mut props, "category", pass(body, "product_type"));
    put(&mut props, "handle", pass(body, "handle"));
    put(&mut props, "status", pass(body, "status"));
    put(&mut props, "tags", pass(body, "tags"));
    put(&mut props, "price", first.and_then(|v| money(v, "price")));
    put(&mut props, "sku", first.and_then(|v| pass(v, "sku")));
    put(&mut props, "image_url", image_url(body));
    put(
        &mut props,
        "variants",
        variants.map(|variants| Value::Array(variants.iter().map(|v| variant(v)).collect())),
    );
    Ok(vec![Draft::Track(who, props)])
}

fn variant(v: &Map<String, Value>) -> Value {
    let mut out = Map::new();
    put_id(&mut out, "variant_id", id(v, "id"));
    put(&mut out, "name", pass(v, "title"));
    put(&mut out, "sku", pass(v, "sku"));
    put(&mut out, "price", money(v, "price"));
    put(
        &mut out,
        "inventory_quantity",
        pass(v, "inventory_quantity"),
    );
    Value::Object(out)
}

/// `image` is an object with `src` in Shopify's payloads and a plain URL in
/// convertedin's product sample.
fn image_url(body: &Map<String, Value>) -> Option<Value> {
    match body.get("image") {
        Some(Value::String(url)) => Some(url.as_str().into()),
        Some(Value::Object(image)) => pass(image, "src"),
        _ => None,
    }
}

/// collections/create, update, delete.
pub(super) fn collection(
    input: &Input<'_>,
    body: &Map<String, Value>,
) -> Result<Vec<Draft>, MapError> {
    let collection_id = id(body, "id");
    let who = resolve(
        input,
        Subject {
            tokens: &[("collection", collection_id.clone())],
            ..Subject::default()
        },
    );
    let mut props = Map::new();
    put_id(&mut props, "collection_id", collection_id);
    put(&mut props, "name", pass(body, "title"));
    put(&mut props, "handle", pass(body, "handle"));
    put(&mut props, "image_url", image_url(body));
    Ok(vec![Draft::Track(who, props)])
}
