use std::time::Duration;

use super::*;
use crate::config::Secret;

const NOW: u64 = 1_795_434_157_123; // 2026-11-23T11:42:37.123Z

pub(crate) fn dest(format: Format) -> DestinationConfig {
    DestinationConfig {
        url: url::Url::parse("http://127.0.0.1:9/events").expect("test url"),
        format,
        shared_secret: None,
        write_key: None,
        timeout: Duration::from_secs(5),
        headers: Vec::new(),
        events: None,
        concurrency: 1,
        batch_size: 100,
        linger: Duration::from_millis(50),
        filter: None,
        transform: None,
        rate_limit: None,
    }
}

/// The lane's path: an [`Encoder`] built from the config, then its requests.
fn prepare<S: AsRef<str>>(
    dest: &DestinationConfig,
    events: &[S],
    now_ms: u64,
) -> Result<Vec<Prepared>, FormatError> {
    Encoder::new(dest)?.prepare(events, now_ms)
}

/// Lowercase hex HMAC-SHA1, computed here independently of the encoder's signer:
/// what a receiver following Segment's docs computes.
pub(crate) fn sign(secret: &[u8], data: &[u8]) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(data);
    hex::encode(mac.finalize().into_bytes())
}

fn header<'a>(p: &'a Prepared, name: &str) -> Option<&'a str> {
    let mut found = p.headers.iter().filter(|(n, _)| n == name);
    let first = found.next().map(|(_, v)| v.to_str().expect("ascii header"));
    assert!(found.next().is_none(), "{name} appears twice");
    first
}

fn body(p: &Prepared) -> &str {
    std::str::from_utf8(&p.body).expect("utf-8 body")
}

#[test]
fn sign_known_vectors() {
    for (key, data, want) in [
        (
            "secret",
            r#"{"a":1}"#,
            "f8446672f033e4b2beafc5ca3a71eafcd2cafb6e",
        ),
        (
            "key",
            "The quick brown fox jumps over the lazy dog",
            "de7c9b85b8b78aa6bc8a7a36f70a90701c9db4d9",
        ),
        ("", "", "fbdb1d1b18aa6c08324b7d64b71fb76370690e1d"),
    ] {
        // The oracle the other tests compare with, and the encoder itself.
        assert_eq!(sign(key.as_bytes(), data.as_bytes()), want, "{key:?}");
        let mut d = dest(Format::Webhook);
        d.shared_secret = Some(Secret::new(key));
        let req = &prepare(&d, &[data], NOW).expect("prepare")[0];
        assert_eq!(header(req, "x-signature"), Some(want), "{key:?}");
    }
}

#[test]
fn webhook_one_request_per_event() {
    let mut d = dest(Format::Webhook);
    d.shared_secret = Some(Secret::new("secret"));
    let events = [
        r#"{"a":1}"#,
        r#"{"type":"track","event":"Order Completed"}"#,
    ];
    let reqs = prepare(&d, &events, NOW).expect("prepare");
    assert_eq!(reqs.len(), 2);
    for (req, event) in reqs.iter().zip(events) {
        assert_eq!(body(req), event);
        assert_eq!(req.events, 1);
        let want = sign(b"secret", event.as_bytes());
        assert_eq!(header(req, "x-signature"), Some(want.as_str()));
    }
    assert_eq!(
        header(&reqs[0], "x-signature"),
        Some("f8446672f033e4b2beafc5ca3a71eafcd2cafb6e")
    );
}

#[test]
fn common_headers_in_order_and_unsigned_without_secret() {
    let mut d = dest(Format::Webhook);
    d.headers = vec![("X-Team".into(), Secret::new("data"))];
    let reqs = prepare(&d, &[r#"{"a":1}"#], NOW).expect("prepare");
    let names: Vec<&str> = reqs[0].headers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["content-type", "user-agent", "x-team"]);
    assert_eq!(header(&reqs[0], "content-type"), Some("application/json"));
    assert_eq!(
        header(&reqs[0], "user-agent"),
        Some(concat!("shoprelay/", env!("CARGO_PKG_VERSION")))
    );
    assert_eq!(header(&reqs[0], "x-team"), Some("data"));
}

#[test]
fn configured_headers_replace_defaults_but_not_signature_or_auth() {
    let mut d = dest(Format::Webhook);
    d.shared_secret = Some(Secret::new("secret"));
    d.headers = vec![
        ("user-agent".into(), Secret::new("custom/1")),
        ("X-Signature".into(), Secret::new("forged")),
    ];
    let req = &prepare(&d, &[r#"{"a":1}"#], NOW).expect("prepare")[0];
    assert_eq!(header(req, "user-agent"), Some("custom/1"));
    assert_eq!(
        header(req, "x-signature"),
        Some("f8446672f033e4b2beafc5ca3a71eafcd2cafb6e")
    );

    let mut d = dest(Format::SegmentApi);
    d.write_key = Some(Secret::new("wk_123"));
    d.headers = vec![("Authorization".into(), Secret::new("Bearer other"))];
    let req = &prepare(&d, &[r#"{"a":1}"#], NOW).expect("prepare")[0];
    assert_eq!(header(req, "authorization"), Some("Basic d2tfMTIzOg=="));
}

#[test]
fn webhook_batch_chunks_and_signs_first_event() {
    let mut d = dest(Format::WebhookBatch);
    d.shared_secret = Some(Secret::new("s3cr3t"));
    d.batch_size = 2;
    let events: Vec<String> = (1..=5).map(|i| format!(r#"{{"n":{i}}}"#)).collect();
    let reqs = prepare(&d, &events, NOW).expect("prepare");
    let bodies: Vec<&str> = reqs.iter().map(body).collect();
    assert_eq!(
        bodies,
        [
            r#"[{"n":1},{"n":2}]"#,
            r#"[{"n":3},{"n":4}]"#,
            r#"[{"n":5}]"#
        ]
    );
    assert_eq!(reqs.iter().map(|r| r.events).collect::<Vec<_>>(), [2, 2, 1]);
    for (req, first) in reqs.iter().zip(["{\"n\":1}", "{\"n\":3}", "{\"n\":5}"]) {
        let want = sign(b"s3cr3t", first.as_bytes());
        assert_eq!(header(req, "x-signature"), Some(want.as_str()));
    }
}

#[test]
fn segment_api_envelope_and_auth() {
    let mut d = dest(Format::SegmentApi);
    d.write_key = Some(Secret::new("wk_123"));
    d.shared_secret = Some(Secret::new("ignored"));
    let reqs = prepare(&d, &[r#"{"a":1}"#, r#"{"b":"é"}"#], NOW).expect("prepare");
    assert_eq!(reqs.len(), 1);
    assert_eq!(
        body(&reqs[0]),
        r#"{"batch":[{"a":1},{"b":"é"}],"sentAt":"2026-11-23T11:42:37.123Z"}"#
    );
    assert_eq!(reqs[0].events, 2);
    assert_eq!(
        header(&reqs[0], "authorization"),
        Some("Basic d2tfMTIzOg==")
    );
    assert_eq!(header(&reqs[0], "x-signature"), None);
}

fn event_of_size(n: usize, size: usize) -> String {
    let head = format!(r#"{{"n":{n},"pad":""#);
    format!("{head}{}\"}}", "x".repeat(size - head.len() - 2))
}

#[test]
fn segment_api_splits_at_500_kb_greedily() {
    let mut d = dest(Format::SegmentApi);
    d.write_key = Some(Secret::new("wk"));
    d.batch_size = 500;
    let events: Vec<String> = (0..40).map(|n| event_of_size(n, 30_000)).collect();
    let reqs = prepare(&d, &events, NOW).expect("prepare");
    // 16 × 30,000 + 15 commas + envelope < 500,000 < 17 × 30,000.
    assert_eq!(
        reqs.iter().map(|r| r.events).collect::<Vec<_>>(),
        [16, 16, 8]
    );
    let mut seen = Vec::new();
    for r in &reqs {
        assert!(r.body.len() <= SEGMENT_MAX_BATCH_BYTES, "{}", r.body.len());
        let v: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
        for e in v["batch"].as_array().expect("batch") {
            seen.push(serde_json::to_string(e).expect("ser"));
        }
    }
    assert_eq!(seen, events);
}

#[test]
fn segment_api_batch_exactly_at_the_limit() {
    let mut d = dest(Format::SegmentApi);
    d.write_key = Some(Secret::new("wk"));
    d.batch_size = 500;
    let envelope = prepare(&d, &["{}"], NOW).expect("prepare")[0].body.len() - 2;
    // 15 full-size events, then one that fills the body to exactly 500,000 bytes.
    let limit = SEGMENT_MAX_EVENT_BYTES;
    let pad = |i, size| event_of_size(i, size);
    let fill: Vec<String> = (0..15).map(|i| pad(i, limit)).collect();
    let used: usize = fill.iter().map(|e| e.len() + 1).sum();
    let rest = SEGMENT_MAX_BATCH_BYTES - envelope - used;
    let mut exact = fill.clone();
    exact.push(pad(15, rest));
    let reqs = prepare(&d, &exact, NOW).expect("prepare");
    assert_eq!(
        (reqs.len(), reqs[0].body.len()),
        (1, SEGMENT_MAX_BATCH_BYTES)
    );
    let mut over = fill;
    over.push(pad(15, rest + 1));
    let reqs = prepare(&d, &over, NOW).expect("prepare");
    assert_eq!(reqs.iter().map(|r| r.events).collect::<Vec<_>>(), [15, 1]);
}

#[test]
fn segment_api_respects_batch_size() {
    let mut d = dest(Format::SegmentApi);
    d.write_key = Some(Secret::new("wk"));
    d.batch_size = 3;
    let events: Vec<String> = (0..7).map(|n| format!(r#"{{"n":{n}}}"#)).collect();
    let reqs = prepare(&d, &events, NOW).expect("prepare");
    assert_eq!(reqs.iter().map(|r| r.events).collect::<Vec<_>>(), [3, 3, 1]);
}

#[test]
fn segment_api_refuses_an_oversized_event() {
    let mut d = dest(Format::SegmentApi);
    d.write_key = Some(Secret::new("wk"));
    let ok = event_of_size(0, SEGMENT_MAX_EVENT_BYTES);
    assert_eq!(prepare(&d, &[&ok], NOW).expect("at the limit").len(), 1);
    let big = event_of_size(1, SEGMENT_MAX_EVENT_BYTES + 1);
    let err = prepare(&d, &[ok.as_str(), "{}", &big, &big], NOW).expect_err("over");
    assert_eq!(
        err,
        FormatError::EventTooLarge {
            index: 2,
            size: 32_769,
            limit: 32_768
        }
    );
    assert_eq!(
        err.to_string(),
        "event 2 is 32769 bytes; Segment accepts at most 32768 bytes per event"
    );
    // The webhook formats have no such limit.
    assert_eq!(
        prepare(&dest(Format::WebhookBatch), &[&big], NOW)
            .expect("batch")
            .len(),
        1
    );
}

#[test]
fn empty_input_gives_no_request() {
    let mut seg = dest(Format::SegmentApi);
    seg.write_key = Some(Secret::new("wk"));
    for d in [dest(Format::Webhook), dest(Format::WebhookBatch), seg] {
        assert!(prepare::<&str>(&d, &[], NOW).expect("prepare").is_empty());
    }
}

#[test]
fn config_errors_never_show_secrets() {
    let mut d = dest(Format::Webhook);
    d.headers = vec![("X-Token".into(), Secret::new("tok\nen-SECRET"))];
    let err = Encoder::new(&d).expect_err("bad value");
    assert_eq!(
        err,
        FormatError::BadHeader {
            name: "X-Token".into()
        }
    );
    assert!(!err.to_string().contains("SECRET"));

    let mut d = dest(Format::Webhook);
    d.headers = vec![("bad name".into(), Secret::new("v"))];
    assert!(matches!(
        Encoder::new(&d),
        Err(FormatError::BadHeader { .. })
    ));

    let d = dest(Format::SegmentApi);
    assert_eq!(
        Encoder::new(&d).expect_err("no key"),
        FormatError::BadWriteKey
    );
}

#[test]
fn debug_output_hides_secrets() {
    let mut d = dest(Format::SegmentApi);
    d.write_key = Some(Secret::new("WRITEKEY"));
    d.shared_secret = Some(Secret::new("SHARED"));
    d.headers = vec![("X-Api-Key".into(), Secret::new("HEADERSECRET"))];
    let enc = Encoder::new(&d).expect("encoder");
    let req = enc.prepare(&["{}"], NOW).expect("prepare");
    let shown = format!("{enc:?} {req:?}");
    // base64("WRITEKEY:") too: Basic auth is only an encoding.
    for secret in ["WRITEKEY", "V1JJVEVLRVk6", "SHARED", "HEADERSECRET"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
}

#[test]
fn filter_table() {
    let f = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let orders = f(&["Order Completed", "identify", "delete"]);
    for (filter, call, name, want) in [
        (None, "track", Some("Anything"), true),
        (None, "identify", None, true),
        (Some(&orders), "track", Some("Order Completed"), true),
        (Some(&orders), "track", Some("Order Refunded"), false),
        (Some(&orders), "track", Some("order completed"), false),
        (Some(&orders), "identify", None, true),
        (Some(&orders), "delete", None, true),
        (Some(&orders), "track", None, false),
        (Some(&f(&["track"])), "track", Some("Order Refunded"), true),
        (Some(&f(&["track"])), "identify", None, false),
        (Some(&f(&["identify"])), "track", Some("identify"), true), // a name equal to an entry
        (Some(&f(&[])), "track", Some("x"), false),
    ] {
        assert_eq!(
            event_passes_filter(filter.map(Vec::as_slice), call, name),
            want,
            "{filter:?} {call} {name:?}"
        );
    }
}
