//! Reading payload fields without trusting their types.
//!
//! Structural fields the mapping walks (`customer`, `line_items`, …) must be the
//! type Shopify documents, or the webhook is dead-lettered with the field's path:
//! guessing would send wrong data. Leaf fields are lenient: a missing or null
//! value is omitted, an odd one passes through sanitised.

use serde_json::{Map, Value};

use super::context::Input;
use super::{MapError, number, time};

/// `a string`, `an array`, … for error messages.
pub(super) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// An optional object field; `path` names it in the error.
pub(super) fn object<'a>(
    input: &Input<'_>,
    map: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<&'a Map<String, Value>>, MapError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(inner)) => Ok(Some(inner)),
        Some(_) => Err(input.wrong_type(path, "an object")),
    }
}

/// An optional array of objects (`line_items`); `None` when absent or null.
pub(super) fn objects<'a>(
    input: &Input<'_>,
    map: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<Vec<&'a Map<String, Value>>>, MapError> {
    let items = match map.get(key) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(input.wrong_type(path, "an array")),
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            item.as_object()
                .ok_or_else(|| input.wrong_type(format!("{path}[{i}]"), "an object"))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// A non-blank string field.
pub(super) fn text(map: &Map<String, Value>, key: &str) -> Option<String> {
    match map.get(key) {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
        _ => None,
    }
}

/// An id as a string: Shopify ids exceed 2^53, so a numeric id keeps the
/// payload's exact digits (the body is parsed with arbitrary precision).
pub(super) fn id(map: &Map<String, Value>, key: &str) -> Option<String> {
    match map.get(key) {
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
        _ => None,
    }
}

/// A field passed through sanitised; `None` when absent or null.
pub(super) fn pass(map: &Map<String, Value>, key: &str) -> Option<Value> {
    map.get(key).filter(|v| !v.is_null()).map(number::sanitize)
}

/// A money field as a JS number when exact; `None` when absent or null.
pub(super) fn money(map: &Map<String, Value>, key: &str) -> Option<Value> {
    map.get(key).filter(|v| !v.is_null()).map(number::money)
}

/// A time field in Segment's form; one that does not parse passes through.
pub(super) fn time(map: &Map<String, Value>, key: &str) -> Option<Value> {
    match map.get(key) {
        Some(Value::String(s)) => {
            Some(time::normalize(s).map_or_else(|| s.clone().into(), Value::from))
        }
        _ => pass(map, key),
    }
}

/// Inserts `value` under `key` when there is one, keeping the caller's key order.
pub(super) fn put(out: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    if let Some(value) = value {
        out.insert(key.to_owned(), value);
    }
}

/// An id field written as a string property.
pub(super) fn put_id(out: &mut Map<String, Value>, key: &str, value: Option<String>) {
    put(out, key, value.map(Value::from));
}
