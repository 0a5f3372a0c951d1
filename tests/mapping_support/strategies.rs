//! proptest strategies for webhook bodies and topics, shared by the property
//! test and the node test's samples.

use std::str::FromStr;

use proptest::prelude::*;
use serde_json::{Map, Number, Value};
use shoprelay::mapping::topics;

/// A payload value that must never appear in an error message.
pub const SECRET: &str = "SECRET-payload-value";

/// Number texts JavaScript cannot hold, or that it prints differently.
const AWKWARD_NUMBERS: &[&str] = &[
    "1e400",
    "-1e400",
    "1e-400",
    "123456789012345678901234567890",
    "9007199254740993",
    "18446744073709551615",
    "-0",
    "1.0",
    "1E2",
    "0.1",
    "5e-324",
    "1.7976931348623157e308",
    "0.30000000000000004",
    "100000000000000000000000",
];

/// Field names the mappers read, so arbitrary values land where they look.
const KNOWN_KEYS: &[&str] = &[
    "id",
    "email",
    "contact_email",
    "customer",
    "line_items",
    "price",
    "quantity",
    "product_id",
    "variant_id",
    "title",
    "created_at",
    "updated_at",
    "cancelled_at",
    "token",
    "cart_token",
    "checkout_token",
    "order_id",
    "order_edit",
    "refund_line_items",
    "line_item",
    "transactions",
    "amount",
    "kind",
    "status",
    "default_address",
    "billing_address",
    "variants",
    "image",
    "orders_requested",
    "data_request",
    "discount_codes",
    "code",
    "total_price",
    "total_shipping_price_set",
    "shop_money",
    "total_spent",
    "orders_count",
    "customer_id",
    "shop_id",
    "0",
    "10",
    "_10",
    "4294967295",
    "__proto__",
];

pub fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
        prop::sample::select(AWKWARD_NUMBERS)
            .prop_map(|t| Value::Number(Number::from_str(t).expect("valid JSON number"))),
        "-?(0|[1-9][0-9]{0,39})(\\.[0-9]{1,30})?([eE][+-]?[0-9]{1,4})?"
            .prop_map(|t| Value::Number(Number::from_str(&t).expect("valid JSON number"))),
    ]
}

pub fn string() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "\\PC{0,20}",
        "[0-9]{1,4}\\.[0-9]{2}",
        "20[0-9]{2}-[01][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-5][0-9]([+-][0-2][0-9]:[0-5][0-9]|Z)",
        Just("\u{2028}\u{2029}\u{7f}\u{0}\"\\/\u{1F6CD}\u{FE0F}".to_owned()),
        Just(SECRET.to_owned()),
    ]
}

pub fn key() -> impl Strategy<Value = String> {
    prop_oneof![3 => prop::sample::select(KNOWN_KEYS).prop_map(str::to_owned), 1 => string()]
}

pub fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        number(),
        string().prop_map(Value::from),
    ];
    leaf.prop_recursive(8, 256, 10, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..10).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..10)
                .prop_map(|entries| Value::Object(entries.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A body: usually an object (as every real webhook is), sometimes anything.
pub fn body() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => prop::collection::vec((key(), json()), 0..16)
            .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        1 => json(),
    ]
}

pub fn topic() -> impl Strategy<Value = String> {
    let mut all: Vec<String> = topics().map(str::to_owned).collect();
    all.extend(
        [
            "orders/update",
            "inventory_levels/update",
            "",
            "ünïcode/tópic",
            "a/b/c",
        ]
        .map(str::to_owned),
    );
    prop_oneof![4 => prop::sample::select(all), 1 => string()]
}
