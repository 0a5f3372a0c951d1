//! Ingest as the relay runs it on untrusted bytes: headers and a body from the
//! fuzzer go through signature verification (Shopify or convertedin), and
//! whatever is accepted is mapped to Segment calls and serialized.
//!
//! Input layout: byte 0 picks the sender kind (bit 0) and whether the body is
//! signed with the configured secret (bit 1, so the fuzzer reaches the JSON
//! checks and the mapping behind the signature), byte 1 picks the topic; then
//! header lines `name:value` up to an empty line; the rest is the body.
//! Must never panic; libFuzzer's `-rss_limit_mb` / `-malloc_limit_mb` catch
//! unbounded allocation.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use shoprelay::config::{MappingConfig, Secret};
use shoprelay::mapping::{map, topics};
use shoprelay::sources::{Verifier, convertedin, shopify, sign};

const SECRET: &str = "fuzz-secret";

fuzz_target!(|data: &[u8]| {
    let (Some(&flags), Some(&pick)) = (data.first(), data.get(1)) else {
        return;
    };
    let rest = &data[2..];
    let split = rest.windows(2).position(|w| w == b"\n\n");
    let (head, body) = match split {
        Some(i) => (&rest[..i], &rest[i + 2..]),
        None => (&[][..], rest),
    };
    let topics: Vec<&str> = topics().collect();
    let topic = topics[pick as usize % topics.len()];
    let convertedin = flags & 1 == 1;

    let mut headers = http::HeaderMap::new();
    for line in head.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(&line[..colon]),
            http::HeaderValue::from_bytes(&line[colon + 1..]),
        ) {
            headers.append(name, value);
        }
    }
    if flags & 2 == 2 {
        // base64 for both kinds (convertedin accepts it beside hex).
        let tag = sign::shopify(SECRET, body);
        let name = if convertedin {
            sign::CONVERTEDIN_HEADER
        } else {
            sign::SHOPIFY_HEADER
        };
        headers.insert(
            name,
            http::HeaderValue::from_str(&tag).expect("base64 is a header value"),
        );
        if !convertedin && !headers.contains_key("x-shopify-topic") {
            headers.insert(
                "x-shopify-topic",
                http::HeaderValue::from_static("orders/create"),
            );
        }
    }
    let verifier = Verifier::new(&[Secret::new(SECRET)]);
    let body = Bytes::copy_from_slice(body);
    let verified = if convertedin {
        convertedin::verify("fuzz", &verifier, topic, &headers, body, 1_700_000_000_000)
    } else {
        shopify::verify("fuzz", &verifier, &headers, body, 1_700_000_000_000)
    };
    let Ok(webhook) = verified else {
        return;
    };
    if let Ok(events) = map(&webhook, &MappingConfig::default()) {
        for e in events {
            let bytes = serde_json::to_vec(e.as_value()).expect("an event serializes");
            assert!(!bytes.is_empty());
        }
    }
});
