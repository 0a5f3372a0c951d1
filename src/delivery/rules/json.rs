//! Events in and out of jaq.
//!
//! In: `read`. Out: the bytes a destination gets and `X-Signature` covers, which must be
//! what JavaScript's `JSON.stringify(JSON.parse(s))` yields (CONTRACT.md), as
//! the mapping's are. So numbers are written as JavaScript prints them (one it
//! cannot hold exactly becomes a string of its text, as in the mapping; NaN
//! and infinities become `null`, as `JSON.stringify` writes them), and keys
//! that JavaScript treats as array indices come first in ascending order, as
//! `JSON.parse` puts them. Strings are escaped as serde_json and
//! `JSON.stringify` both do.

use jaq_json::{Num, Val};

use crate::mapping::number::js_text;

/// Deeper output is refused (serde_json reads at most 128 levels too), so a
/// runaway program cannot overflow the stack here.
const MAX_DEPTH: usize = 128;

/// Integers up to 2^53 are exact in JavaScript and print as Rust prints them.
const JS_SAFE: u64 = 1 << 53;

/// Where each array and object of a parsed event lies in its JSON text, by
/// address. jaq copies only what a program changes (its values share their
/// parts), so a transform's output holds most of its input's arrays and
/// objects as they were: those are copied as bytes instead of written again
/// (`rules_cost`: a third of a transform's cost was writing its output). The
/// addresses stay valid while the parsed event is alive, which the caller
/// ensures for as long as it writes.
#[derive(Debug, Default)]
pub struct Spans(Vec<(usize, u32, u32)>);

impl Spans {
    /// From (address, start, end) entries in any order.
    pub(super) fn new(mut spans: Vec<(usize, u32, u32)>) -> Spans {
        spans.sort_unstable_by_key(|(at, _, _)| *at);
        Spans(spans)
    }

    /// How many arrays and objects it knows.
    #[cfg(test)]
    pub(super) fn count(&self) -> usize {
        self.0.len()
    }

    fn get(&self, at: usize) -> Option<std::ops::Range<usize>> {
        let i = self.0.binary_search_by_key(&at, |(a, _, _)| *a).ok()?;
        let (_, start, end) = self.0[i];
        Some(start as usize..end as usize)
    }
}

/// Writes `v` as compact JSON in JavaScript's form; what it shares with an
/// input event (`json` and its `spans`) is copied from that event's text.
pub(super) fn write(v: &Val, reuse: Option<(&str, &Spans)>) -> Result<String, String> {
    let mut w = Writer {
        out: Vec::with_capacity(reuse.map_or(512, |(json, _)| json.len() + 64)),
        reuse,
        lossy: false,
    };
    w.value(v, 0)?;
    match String::from_utf8(w.out) {
        Ok(s) => Ok(s),
        // A string holds bytes that are not UTF-8 (jaq allows that): write
        // again, replacing them.
        Err(_) => {
            let mut w = Writer {
                out: Vec::new(),
                reuse,
                lossy: true,
            };
            w.value(v, 0)?;
            String::from_utf8(w.out).map_err(|_| "the output is not valid UTF-8".to_string())
        }
    }
}

struct Writer<'a> {
    out: Vec<u8>,
    /// The input's text and spans, to copy unchanged parts from.
    reuse: Option<(&'a str, &'a Spans)>,
    /// Replace bytes that are not UTF-8 in strings (checked once, at the end,
    /// instead of string by string).
    lossy: bool,
}

/// A container's address, the same for every value sharing it.
fn address<T>(rc: &jaq_json::Rc<T>) -> usize {
    jaq_json::Rc::as_ptr(rc) as *const u8 as usize
}

impl Writer<'_> {
    fn value(&mut self, v: &Val, depth: usize) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err(format!("the output nests deeper than {MAX_DEPTH} levels"));
        }
        let at = match v {
            Val::Arr(a) => address(a),
            Val::Obj(o) => address(o),
            scalar => {
                self.scalar(scalar);
                return Ok(());
            }
        };
        if let Some((json, spans)) = self.reuse {
            if let Some(bytes) = spans.get(at).and_then(|r| json.as_bytes().get(r)) {
                self.out.extend_from_slice(bytes);
                return Ok(());
            }
        }
        match v {
            Val::Arr(items) => {
                self.out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        self.out.push(b',');
                    }
                    self.value(item, depth + 1)?;
                }
                self.out.push(b']');
            }
            Val::Obj(map) => self.object(map, depth)?,
            _ => {}
        }
        Ok(())
    }

    fn scalar(&mut self, v: &Val) {
        match v {
            Val::Null => self.out.extend_from_slice(b"null"),
            Val::Bool(true) => self.out.extend_from_slice(b"true"),
            Val::Bool(false) => self.out.extend_from_slice(b"false"),
            Val::Num(n) => number(&mut self.out, n),
            Val::TStr(b) | Val::BStr(b) => string(&mut self.out, b, self.lossy),
            Val::Arr(_) | Val::Obj(_) => {}
        }
    }

    fn object(&mut self, map: &jaq_json::Map, depth: usize) -> Result<(), String> {
        let mut index_keys = false;
        for k in map.keys() {
            match k {
                Val::TStr(b) | Val::BStr(b) => index_keys |= array_index(b).is_some(),
                other => {
                    return Err(format!(
                        "an object key is {other}, not a string (JSON keys are strings)"
                    ));
                }
            }
        }
        self.out.push(b'{');
        if index_keys {
            // JSON.parse lists array-index keys first, ascending; the rest
            // keep their order (a stable sort on this key does both).
            let mut entries: Vec<(&Val, &Val)> = map.iter().collect();
            entries.sort_by_key(|(k, _)| {
                key_bytes(k)
                    .and_then(array_index)
                    .map_or((1, 0), |i| (0, i))
            });
            for (i, (k, v)) in entries.into_iter().enumerate() {
                self.member(i, k, v, depth)?;
            }
        } else {
            for (i, (k, v)) in map.iter().enumerate() {
                self.member(i, k, v, depth)?;
            }
        }
        self.out.push(b'}');
        Ok(())
    }

    fn member(&mut self, i: usize, k: &Val, v: &Val, depth: usize) -> Result<(), String> {
        if i > 0 {
            self.out.push(b',');
        }
        string(&mut self.out, key_bytes(k).unwrap_or_default(), self.lossy);
        self.out.push(b':');
        self.value(v, depth + 1)
    }
}

fn key_bytes(k: &Val) -> Option<&[u8]> {
    match k {
        Val::TStr(b) | Val::BStr(b) => Some(b),
        _ => None,
    }
}

fn number(out: &mut Vec<u8>, n: &Num) {
    use std::io::Write;
    match n {
        Num::Int(i) if i.unsigned_abs() as u64 <= JS_SAFE => {
            let _ = write!(out, "{i}");
        }
        Num::Float(f) if !f.is_finite() => out.extend_from_slice(b"null"),
        Num::Float(f) => {
            // JSON.stringify(-0) is "0".
            let f = if *f == 0.0 { 0.0 } else { *f };
            out.extend_from_slice(ryu_js::Buffer::new().format_finite(f).as_bytes());
        }
        Num::Dec(text) if already_js(text) => out.extend_from_slice(text.as_bytes()),
        other => {
            let text = other.to_string();
            match js_text(&text) {
                Some(js) => out.extend_from_slice(js.as_bytes()),
                None => string(out, text.as_bytes(), false),
            }
        }
    }
}

/// Whether a number's text is already what JavaScript prints for it (as
/// every number of an unchanged event is): then it is written as it is.
fn already_js(text: &str) -> bool {
    text.parse::<f64>().is_ok_and(|f| {
        f.is_finite() && (f != 0.0 || text == "0") && ryu_js::Buffer::new().format_finite(f) == text
    })
}

/// A JSON string; with `lossy`, bytes that are not UTF-8 become U+FFFD.
fn string(out: &mut Vec<u8>, b: &[u8], lossy: bool) {
    if lossy {
        return escaped(out, &String::from_utf8_lossy(b));
    }
    // Most strings need no escape: copied as they are.
    if b.iter().any(|c| *c < 0x20 || *c == b'"' || *c == b'\\') {
        return escaped(out, &String::from_utf8_lossy(b));
    }
    out.reserve(b.len() + 2);
    out.push(b'"');
    out.extend_from_slice(b);
    out.push(b'"');
}

/// A string escaped as serde_json (and `JSON.stringify`) escape it.
fn escaped(out: &mut Vec<u8>, text: &str) {
    let mut ser = serde_json::Serializer::new(out);
    // Writing into a Vec cannot fail.
    let _ = serde::Serializer::serialize_str(&mut ser, text);
}

/// The index JavaScript reads `key` as: a canonical integer below 2^32 - 1.
fn array_index(key: &[u8]) -> Option<u32> {
    let canonical = !key.is_empty()
        && key.len() <= 10
        && key.iter().all(u8::is_ascii_digit)
        && (key == b"0" || key[0] != b'0');
    canonical
        .then(|| std::str::from_utf8(key).ok()?.parse::<u64>().ok())
        .flatten()
        .filter(|i| *i < u64::from(u32::MAX))
        .map(|i| i as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(program: &str, input: &str) -> String {
        let p = crate::config::JqProgram::compile(program).expect("compiles");
        let mut out = None;
        p.run(super::super::read::parse(input).expect("parses").0, |o| {
            out = Some(o.expect("runs"));
            false
        });
        write(&out.expect("an output"), None).expect("writes")
    }

    #[test]
    fn unchanged_events_keep_their_bytes() {
        let event = r#"{"type":"track","event":"Order Completed","userId":"a@b.c","properties":{"total":600,"tax":19.9,"discount":0.1,"big":"9007199254740993","products":[{"price":1e+21,"q":-2}],"note":"é \u0001 \" \\ 💣 "},"timestamp":"2026-01-01T00:00:00.000Z","messageId":"srl_x","context":{"library":{"name":"shoprelay"}}}"#;
        assert_eq!(roundtrip(".", event), event);
    }

    #[test]
    fn numbers_are_written_as_javascript_prints_them() {
        let table = [
            (".a * 2", "1200"),
            (".a / 3", "200"),
            (".b + 0.2", "0.30000000000000004"),
            (".a * 1e20", "6e+22"),
            ("-0.0", "0"),
            ("0 - .a", "-600"),
            ("1.50", "1.5"),
            ("1e2", "100"),
            ("9007199254740993", "\"9007199254740993\""),
            (
                "123456789012345678901234567890",
                "\"123456789012345678901234567890\"",
            ),
            ("nan", "null"),
            ("infinite", "null"),
            ("[.a, .b]", "[600,0.1]"),
        ];
        for (program, want) in table {
            assert_eq!(
                roundtrip(program, r#"{"a":600,"b":0.1}"#),
                want,
                "{program}"
            );
        }
    }

    #[test]
    fn bytes_that_are_not_utf8_become_replacement_characters() {
        assert_eq!(
            roundtrip(r#"{a: ("/w==" | @base64d), b: "ok"}"#, "null"),
            "{\"a\":\"\u{fffd}\",\"b\":\"ok\"}"
        );
    }

    #[test]
    fn keys_are_ordered_as_json_parse_orders_them() {
        assert_eq!(
            roundtrip(
                r#"{b: 1, "10": 2, "2": 3, "01": 4, "4294967295": 5, "4294967294": 6, a: 7}"#,
                "null"
            ),
            r#"{"2":3,"10":2,"4294967294":6,"b":1,"01":4,"4294967295":5,"a":7}"#
        );
    }

    #[test]
    fn what_json_cannot_hold_is_refused() {
        let p = crate::config::JqProgram::compile("{(1): 2}").unwrap();
        let mut out = None;
        p.run(Val::Null, |o| {
            out = Some(o);
            false
        });
        match out {
            Some(Ok(v)) => assert!(write(&v, None).unwrap_err().contains("not a string")),
            // jaq may refuse the key itself.
            Some(Err(_)) => {}
            None => panic!("no output"),
        }
        let p = crate::config::JqProgram::compile("reduce range(200) as $i (0; [.])").unwrap();
        let mut out = None;
        p.run(Val::Null, |o| {
            out = o.ok();
            false
        });
        let deep = write(&out.expect("an output"), None).unwrap_err();
        assert!(deep.contains("deeper than 128"), "{deep}");
    }

    #[test]
    fn parts_copied_from_the_input_are_the_bytes_writing_gives() {
        let event = r#"{"type":"track","properties":{"10":"x","total":600,"products":[{"sku":"A","price":1.5},{"sku":"B"}]},"context":{"library":{"name":"shoprelay"}},"messageId":"m"}"#;
        let (original, spans) = super::super::read::parse(event).unwrap();
        assert!(spans.0.len() >= 6, "{spans:?}");
        for program in [
            ".",
            r#".properties.channel = "web""#,
            ".properties.products[1].price = 2",
            "del(.context)",
            "{type, products: .properties.products, library: .context.library}",
            ".properties.products |= reverse",
            r#".extra = {"2": .properties, "1": .context}"#,
        ] {
            let p = crate::config::JqProgram::compile(program).unwrap();
            let mut out = None;
            p.run(original.clone(), |o| {
                out = Some(o.expect("runs"));
                false
            });
            let out = out.expect("an output");
            let fresh = write(&out, None).unwrap();
            let reused = write(&out, Some((event, &spans))).unwrap();
            assert_eq!(reused, fresh, "{program}");
        }
        // The input is what it was.
        assert_eq!(write(&original, Some((event, &spans))).unwrap(), event);
    }
}
