//! Parsing a webhook body into JSON, numbers kept exact (arbitrary precision).
//!
//! JavaScript senders can emit a lone UTF-16 surrogate escape (`"\ud83d"`, half an
//! emoji cut by a length limit); JSON.parse accepts it, Rust strings cannot hold
//! it. Rather than dead-letter a whole order over one note field, such escapes
//! become U+FFFD, the replacement character, and the body is parsed again.

use serde_json::Value;

/// The body as JSON; lone surrogate escapes replaced if the body does not parse as it is.
pub(super) fn parse(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    serde_json::from_slice(bytes).or_else(|e| {
        // serde_json reports lone surrogates under several messages; repairing
        // is cheap and only tried on bodies that already failed.
        let repaired = replace_lone_surrogates(bytes);
        if repaired == bytes {
            return Err(e);
        }
        serde_json::from_slice(&repaired).or(Err(e))
    })
}

/// The four hex digits after `\u` at `at`, as a code unit.
fn code_unit(bytes: &[u8], at: usize) -> Option<u16> {
    let hex = bytes.get(at..at + 4)?;
    u16::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
}

/// Rewrites `\uD800`–`\uDFFF` escapes that are not a high+low pair to `\uFFFD`,
/// inside strings only; everything else is copied unchanged.
fn replace_lone_surrogates(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut in_string = false;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if !in_string || b != b'\\' {
            in_string ^= b == b'"';
            out.push(b);
            i += 1;
            continue;
        }
        if bytes.get(i + 1) != Some(&b'u') {
            // Any other escape: copy it whole so an escaped quote stays escaped.
            let escape = bytes.get(i..i + 2).or_else(|| bytes.get(i..));
            out.extend_from_slice(escape.unwrap_or_default());
            i += 2;
            continue;
        }
        let unit = code_unit(bytes, i + 2);
        let paired = || bytes.get(i + 6..i + 8) == Some(b"\\u".as_slice());
        let low = code_unit(bytes, i + 8).filter(|u| (0xDC00..=0xDFFF).contains(u));
        match unit {
            Some(0xD800..=0xDBFF) if paired() && low.is_some() => {
                out.extend_from_slice(bytes.get(i..i + 12).unwrap_or_default());
                i += 12;
            }
            Some(0xD800..=0xDFFF) => {
                out.extend_from_slice(b"\\ufffd");
                i += 6;
            }
            _ => {
                out.extend_from_slice(b"\\u");
                i += 2;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lone_surrogates_become_replacement_characters() {
        let table = [
            (r#"{"a":"\ud83d"}"#, "\u{FFFD}"),
            (r#"{"a":"x\ude4dy"}"#, "x\u{FFFD}y"),
            (r#"{"a":"\ud83d\ude4d"}"#, "\u{1F64D}"),
            (r#"{"a":"\ud83d\ud83d\ude4d"}"#, "\u{FFFD}\u{1F64D}"),
            (r#"{"a":"\\ud83d\ud83d"}"#, "\\ud83d\u{FFFD}"),
            (r#"{"a":"\"\ud83d"}"#, "\"\u{FFFD}"),
            (r#"{"a":"\ud83d\n"}"#, "\u{FFFD}\n"),
            (r#"{"a":"\ud83d\u0041"}"#, "\u{FFFD}A"),
        ];
        for (body, want) in table {
            let value = parse(body.as_bytes()).expect(body);
            assert_eq!(value["a"], want, "{body}");
        }
    }

    #[test]
    fn other_errors_are_kept() {
        for body in [
            r#"{"a":"\ud83d"#,
            r#"{"a":"\ud83d",}"#,
            "",
            "{",
            r#"{"a":"\u12"}"#,
        ] {
            assert!(parse(body.as_bytes()).is_err(), "{body}");
        }
    }
}
