//! Numbers and keys as JavaScript will re-print them.
//!
//! Receivers verify `HMAC(JSON.stringify(JSON.parse(body)))`, so every number we
//! write must already be in JavaScript's own form (`600`, not `600.0`; `1e+21`), and
//! no object key may look like an integer (JavaScript moves those to the front).
//! A number JavaScript cannot hold exactly (`9007199254740993`, `1e400`,
//! `0.1000000000000000000001`) is written as a string of the payload's text instead:
//! a receiver gets the exact value, never a silently different one.

use std::str::FromStr;

use serde_json::{Map, Number, Value};

/// A decimal's value as (negative, significant digits, point position): the number
/// is `0.DIGITS × 10^point`. Zero is `(false, [], 0)` so `-0` equals `0`.
type Decimal = (bool, Vec<u8>, i64);

/// Exponents beyond this are far outside f64 anyway; clamping avoids overflow.
const EXP_LIMIT: i64 = 1_000_000_000;

/// Parses JSON number grammar loosely (leading zeros allowed); `exponent` says
/// whether `e`/`E` is allowed (money strings never have one).
fn decimal(text: &str, exponent: bool) -> Option<Decimal> {
    let mut bytes = text.bytes().peekable();
    let negative = bytes.next_if_eq(&b'-').is_some();
    let mut digits = Vec::new();
    let mut point: i64 = 0;
    while let Some(d) = bytes.next_if(u8::is_ascii_digit) {
        digits.push(d);
        point += 1;
    }
    if digits.is_empty() {
        return None;
    }
    if bytes.next_if_eq(&b'.').is_some() {
        let before = digits.len();
        while let Some(d) = bytes.next_if(u8::is_ascii_digit) {
            digits.push(d);
        }
        if digits.len() == before {
            return None;
        }
    }
    let mut exp: i64 = 0;
    if exponent && bytes.next_if(|b| *b == b'e' || *b == b'E').is_some() {
        let minus = bytes.next_if_eq(&b'-').is_some();
        if !minus {
            bytes.next_if_eq(&b'+');
        }
        let mut any = false;
        while let Some(d) = bytes.next_if(u8::is_ascii_digit) {
            exp = (exp * 10 + i64::from(d - b'0')).min(EXP_LIMIT);
            any = true;
        }
        if !any {
            return None;
        }
        if minus {
            exp = -exp;
        }
    }
    if bytes.next().is_some() {
        return None;
    }
    let leading = digits.iter().take_while(|d| **d == b'0').count();
    digits.drain(..leading);
    point -= leading as i64;
    while digits.last() == Some(&b'0') {
        digits.pop();
    }
    if digits.is_empty() {
        return Some((false, Vec::new(), 0));
    }
    Some((negative, digits, point + exp))
}

/// How JavaScript prints the number `text`, if it holds that exact value; `None`
/// when JavaScript would round it, overflow it to `Infinity`, or `text` is no number.
pub(crate) fn js_text(text: &str) -> Option<String> {
    js_text_of(text, true)
}

fn js_text_of(text: &str, exponent: bool) -> Option<String> {
    let exact = decimal(text, exponent)?;
    let parsed: f64 = text.parse().ok()?;
    if !parsed.is_finite() {
        return None;
    }
    // JSON.stringify(-0) is "0".
    let parsed = if parsed == 0.0 { 0.0 } else { parsed };
    let mut buffer = ryu_js::Buffer::new();
    let printed = buffer.format_finite(parsed);
    (decimal(printed, true)? == exact).then(|| printed.to_owned())
}

/// A JSON number JavaScript prints identically, else the payload's text as a string.
pub(crate) fn number(text: &str) -> Value {
    js_text(text)
        .and_then(|js| Number::from_str(&js).ok())
        .map_or_else(|| Value::String(text.to_owned()), Value::Number)
}

/// A count we computed ourselves (item_count): always exact below 2^53.
pub(crate) fn count(n: usize) -> Value {
    number(&n.to_string())
}

/// Shopify money (`"600.00"`, a number, or null) as a JS-printed number when exact;
/// any other string stays as it is.
pub(crate) fn money(value: &Value) -> Value {
    match value {
        Value::String(s) => js_text_of(s, false)
            .and_then(|js| Number::from_str(&js).ok())
            .map_or_else(|| value.clone(), Value::Number),
        other => sanitize(other),
    }
}

/// The exact sum of money amounts (strings like `"10.50"` or numbers), as
/// [`money`] writes it; `None` when there are none or one is not a plain decimal.
pub(crate) fn sum_money<'a>(amounts: impl Iterator<Item = Option<&'a Value>>) -> Option<Value> {
    // Fixed point: units of 10^-SCALE; Shopify amounts have at most a few places.
    const SCALE: usize = 9;
    let mut total: i128 = 0;
    let mut any = false;
    for amount in amounts {
        let text = match amount? {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return None,
        };
        let (negative, whole, fraction) = match text.strip_prefix('-') {
            Some(rest) => (true, rest, ""),
            None => (false, text.as_str(), ""),
        };
        let (whole, fraction) = whole.split_once('.').unwrap_or((whole, fraction));
        let plain = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty()
            || whole.len() > 20
            || fraction.len() > SCALE
            || !plain(whole)
            || !plain(fraction)
        {
            return None;
        }
        let units: i128 = format!("{whole}{fraction:0<SCALE$}").parse().ok()?;
        total = total.checked_add(if negative { -units } else { units })?;
        any = true;
    }
    if !any {
        return None;
    }
    let sign = if total < 0 { "-" } else { "" };
    let digits = format!("{:0>width$}", total.unsigned_abs(), width = SCALE + 1);
    let (whole, fraction) = digits.split_at(digits.len() - SCALE);
    let fraction = fraction.trim_end_matches('0');
    let point = if fraction.is_empty() { "" } else { "." };
    Some(money(&Value::String(format!(
        "{sign}{whole}{point}{fraction}"
    ))))
}

/// JavaScript keeps keys in insertion order except canonical non-negative
/// integers, which it moves first; we treat any such key, however long, as one.
fn integer_like(key: &str) -> bool {
    !key.is_empty()
        && key.bytes().all(|b| b.is_ascii_digit())
        && (key.len() == 1 || !key.starts_with('0'))
}

/// A payload value made safe to send: numbers in JS form (or strings when JS
/// cannot hold them), integer-like keys prefixed with `_` (more `_` on a clash).
pub(crate) fn sanitize(value: &Value) -> Value {
    match value {
        Value::Number(n) => number(&n.to_string()),
        Value::Array(items) => Value::Array(items.iter().map(sanitize).collect()),
        Value::Object(map) => Value::Object(sanitize_map(map)),
        other => other.clone(),
    }
}

/// [`sanitize`] for an object, keeping its key order.
pub(crate) fn sanitize_map(map: &Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    for (key, value) in map {
        let mut key = key.clone();
        if integer_like(&key) {
            key.insert(0, '_');
            while map.contains_key(&key) || out.contains_key(&key) {
                key.insert(0, '_');
            }
        }
        out.insert(key, sanitize(value));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn js_text_matches_javascript() {
        let table: &[(&str, Option<&str>)] = &[
            ("0", Some("0")),
            ("-0", Some("0")),
            ("0.0", Some("0")),
            ("1.0", Some("1")),
            ("1e2", Some("100")),
            ("1E+2", Some("100")),
            ("600.00", Some("600")),
            ("19.90", Some("19.9")),
            ("0.1", Some("0.1")),
            ("-75.6868", Some("-75.6868")),
            ("1.25", Some("1.25")),
            ("123456789", Some("123456789")),
            ("9007199254740992", Some("9007199254740992")),
            ("9007199254740993", None),
            ("18446744073709551615", None),
            ("1e21", Some("1e+21")),
            ("1e20", Some("100000000000000000000")),
            ("1e-7", Some("1e-7")),
            ("0.000001", Some("0.000001")),
            ("5e-324", Some("5e-324")),
            ("1e400", None),
            ("-1e400", None),
            ("0e400", Some("0")),
            ("1e-400", None),
            ("123456789012345678901234567890", None),
            ("0.1000000000000000000001", None),
            ("007.50", Some("7.5")),
            ("1e99999999999999999999999", None),
            ("", None),
            ("-", None),
            ("1.", None),
            (".5", None),
            ("1e", None),
            ("abc", None),
            ("NaN", None),
            ("inf", None),
            ("1_000", None),
        ];
        for (input, want) in table {
            assert_eq!(js_text(input).as_deref(), *want, "input {input:?}");
        }
    }

    #[test]
    fn money_strings() {
        let table: &[(Value, Value)] = &[
            ("600.00".into(), serde_json::json!(600)),
            (
                "19.90".into(),
                Value::Number(Number::from_str("19.9").unwrap()),
            ),
            ("0.00".into(), serde_json::json!(0)),
            ("1e2".into(), "1e2".into()),
            ("1,000.00".into(), "1,000.00".into()),
            ("".into(), "".into()),
            ("90071992547409931.00".into(), "90071992547409931.00".into()),
            (Value::Null, Value::Null),
        ];
        for (input, want) in table {
            let got = money(input);
            assert_eq!(got, *want, "input {input:?}");
            assert_eq!(got.to_string(), want.to_string());
        }
    }

    #[test]
    fn sums_money_exactly() {
        let sum = |items: &[Value]| sum_money(items.iter().map(Some)).map(|v| v.to_string());
        assert_eq!(sum(&["0.10".into(), "0.20".into()]).as_deref(), Some("0.3"));
        assert_eq!(
            sum(&["10.00".into(), serde_json::json!(5)]).as_deref(),
            Some("15")
        );
        assert_eq!(
            sum(&["-1.50".into(), "1.25".into()]).as_deref(),
            Some("-0.25")
        );
        assert_eq!(sum(&["199.00".into()]).as_deref(), Some("199"));
        assert_eq!(sum(&[]), None);
        assert_eq!(sum(&["1e3".into()]), None);
        assert_eq!(sum(&["abc".into()]), None);
        assert_eq!(sum(&[Value::Null]), None);
        assert_eq!(
            sum(&["99999999999999999999.5".into()]).as_deref(),
            Some("\"99999999999999999999.5\"")
        );
    }

    #[test]
    fn numbers_are_written_in_js_form() {
        let v: Value =
            serde_json::from_str(r#"[1.0, 1e2, 1E21, -0, 9007199254740993, 1e400]"#).unwrap();
        assert_eq!(
            sanitize(&v).to_string(),
            r#"[1,100,1e+21,0,"9007199254740993","1e+400"]"#
        );
    }

    #[test]
    fn integer_keys_are_renamed_without_clobbering() {
        let v: Value =
            serde_json::from_str(r#"{"b":1,"10":2,"_10":3,"0":4,"01":5,"-1":6,"x":{"7":8}}"#)
                .unwrap();
        assert_eq!(
            sanitize(&v).to_string(),
            r#"{"b":1,"__10":2,"_10":3,"_0":4,"01":5,"-1":6,"x":{"_7":8}}"#
        );
    }
}
