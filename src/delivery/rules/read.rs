//! An event's JSON → a jaq value, with where each array and object lies in
//! the text ([`Spans`]).
//!
//! Events are compact JSON the mapping wrote (no whitespace, numbers as
//! JavaScript prints them), so this reader is short and cheap: a string with
//! no escape is a slice of one shared buffer (jaq's own reader allocates a
//! copy of every string and key, and freeing the tree then costs as much
//! again), and a number that is not an integer is held as the float it
//! prints as. Anything it does not expect is handed to jaq's reader instead
//! (without spans), so it never decides what valid JSON means on its own.

use bytes::Bytes;
use jaq_json::{Num, Val};

use super::json::Spans;

/// Deeper events are left to jaq's reader.
const MAX_DEPTH: usize = 128;

/// Parses an event for a program; the spans are empty when jaq's reader did it.
pub(super) fn parse(json: &str) -> Result<(Val, Spans), String> {
    let mut r = Reader {
        text: json.as_bytes(),
        buf: Bytes::copy_from_slice(json.as_bytes()),
        pos: 0,
        spans: Vec::new(),
    };
    match r.value(0) {
        Some(v) if r.pos == r.text.len() => Ok((v, Spans::new(r.spans))),
        _ => jaq_json::read::parse_single(json.as_bytes())
            .map(|v| (v, Spans::default()))
            .map_err(|e| format!("the event is not JSON jaq reads: {e}")),
    }
}

struct Reader<'a> {
    text: &'a [u8],
    /// The same bytes, shared by every string sliced from them.
    buf: Bytes,
    pos: usize,
    /// (address, start, end) of each array and object.
    spans: Vec<(usize, u32, u32)>,
}

impl Reader<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.pos).copied()
    }

    fn eat(&mut self, b: u8) -> Option<()> {
        (self.peek()? == b).then(|| self.pos += 1)
    }

    fn literal(&mut self, word: &[u8], v: Val) -> Option<Val> {
        let end = self.pos + word.len();
        (self.text.get(self.pos..end)? == word).then(|| {
            self.pos = end;
            v
        })
    }

    fn value(&mut self, depth: usize) -> Option<Val> {
        if depth > MAX_DEPTH {
            return None;
        }
        match self.peek()? {
            b'{' => self.object(depth),
            b'[' => self.array(depth),
            b'"' => self.string().map(Val::utf8_str),
            b't' => self.literal(b"true", Val::Bool(true)),
            b'f' => self.literal(b"false", Val::Bool(false)),
            b'n' => self.literal(b"null", Val::Null),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    fn object(&mut self, depth: usize) -> Option<Val> {
        let start = self.pos;
        self.eat(b'{')?;
        let mut map = jaq_json::Map::default();
        if self.eat(b'}').is_none() {
            loop {
                let key = Val::utf8_str(self.string()?);
                self.eat(b':')?;
                let value = self.value(depth + 1)?;
                map.insert(key, value);
                if self.eat(b',').is_none() {
                    self.eat(b'}')?;
                    break;
                }
            }
        }
        let rc = jaq_json::Rc::new(map);
        self.span(jaq_json::Rc::as_ptr(&rc) as *const u8 as usize, start);
        Some(Val::Obj(rc))
    }

    fn array(&mut self, depth: usize) -> Option<Val> {
        let start = self.pos;
        self.eat(b'[')?;
        let mut items = Vec::new();
        if self.eat(b']').is_none() {
            loop {
                items.push(self.value(depth + 1)?);
                if self.eat(b',').is_none() {
                    self.eat(b']')?;
                    break;
                }
            }
        }
        let rc = jaq_json::Rc::new(items);
        self.span(jaq_json::Rc::as_ptr(&rc) as *const u8 as usize, start);
        Some(Val::Arr(rc))
    }

    fn span(&mut self, at: usize, start: usize) {
        self.spans.push((at, start as u32, self.pos as u32));
    }

    /// A string's bytes: a slice of the buffer, or decoded when it has escapes.
    fn string(&mut self) -> Option<Bytes> {
        let start = self.pos;
        self.eat(b'"')?;
        let mut escaped = false;
        loop {
            match self.peek()? {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    self.pos += 2;
                }
                _ => self.pos += 1,
            }
        }
        self.pos += 1;
        if !escaped {
            return Some(self.buf.slice(start + 1..self.pos - 1));
        }
        let text = self.text.get(start..self.pos)?;
        serde_json::from_slice::<String>(text).ok().map(Bytes::from)
    }

    fn number(&mut self) -> Option<Val> {
        let start = self.pos;
        while let Some(b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        let text = std::str::from_utf8(self.text.get(start..self.pos)?).ok()?;
        if let Ok(i) = text.parse::<isize>() {
            return Some(Val::Num(Num::Int(i)));
        }
        // A float whose text is what it prints as keeps no text of its own.
        let f: f64 = text.parse().ok()?;
        let exact = f.is_finite() && ryu_js::Buffer::new().format_finite(f) == text;
        Some(Val::Num(if exact {
            Num::Float(f)
        } else {
            Num::from_str_radix(text, 10).unwrap_or_else(|| Num::from_dec_str(text))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_jaq_reads() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
        let mut events = 0;
        let entries = ["shopify", "convertedin"]
            .iter()
            .flat_map(|d| std::fs::read_dir(format!("{root}/{d}")).expect("fixtures"));
        for entry in entries {
            let path = entry.expect("entry").path();
            if !path.to_string_lossy().ends_with(".expected.json") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read");
            let Ok(serde_json::Value::Array(list)) = serde_json::from_str(&text) else {
                continue;
            };
            for event in list {
                let json = serde_json::to_string(&event).expect("compact");
                let (ours, spans) = parse(&json).expect("parses");
                assert!(spans.count() > 0, "{}: our reader gave up", path.display());
                let theirs = jaq_json::read::parse_single(json.as_bytes()).expect("jaq parses");
                assert_eq!(ours, theirs, "{}", path.display());
                assert_eq!(ours.to_string(), theirs.to_string());
                events += 1;
            }
        }
        assert!(events > 50, "{events}");
    }

    #[test]
    fn escapes_numbers_and_odd_input() {
        let json = r#"{"a":"x\"y\\z\n\u00e9\ud83d\ude00","n":[0,-1,19.9,1e+21,-0.5,9007199254740992,123456789012345678901234567890,1.50],"e":{},"l":[],"t":true,"f":false,"z":null}"#;
        let (ours, spans) = parse(json).unwrap();
        let theirs = jaq_json::read::parse_single(json.as_bytes()).unwrap();
        assert_eq!(ours, theirs);
        assert_eq!(spans.count(), 4, "two objects and two arrays");
        // Whitespace, a lone value, trailing bytes: jaq's reader decides.
        for odd in [
            " {\"a\": 1}",
            "[1, 2]",
            "{\"a\":1} x",
            "{\"a\":nan}",
            "{\"a\":1,}",
        ] {
            let got = parse(odd);
            let jaq = jaq_json::read::parse_single(odd.as_bytes());
            assert_eq!(got.is_ok(), jaq.is_ok(), "{odd}");
            if let Ok((_, spans)) = got {
                assert!(spans.count() == 0 || !odd.contains(' '), "{odd}");
            }
        }
    }
}
