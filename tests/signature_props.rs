//! Property tests of signature verification (Shopify and convertedin): with
//! arbitrary headers and bodies it never panics; a body signed with a
//! configured secret verifies; changing any byte of it, or signing with
//! another secret, fails with `BadSignature`.

use base64::Engine;
use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use proptest::prelude::*;
use sha2::Sha256;
use shoprelay::config::Secret;
use shoprelay::sources::{Rejection, Verifier, convertedin, shopify};

const SECRETS: [&str; 2] = ["current-secret", "previous-secret"];

fn verifier() -> Verifier {
    Verifier::new(&SECRETS.map(Secret::new))
}

fn mac(secret: &str, body: &[u8]) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    m.update(body);
    m.finalize().into_bytes().to_vec()
}

fn b64(tag: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(tag)
}

/// A JSON object body with arbitrary string content (any unicode).
fn object_body() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<i64>(),
        ".{0,200}",
        proptest::collection::vec(any::<u32>(), 0..20),
    )
        .prop_map(|(id, s, xs)| {
            serde_json::to_vec(&serde_json::json!({"id": id, "note": s, "xs": xs})).unwrap()
        })
}

fn header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("x-shopify-hmac-sha256".to_string()),
        Just("x-hmac-sha256".to_string()),
        Just("x-shopify-topic".to_string()),
        Just("x-shopify-event-id".to_string()),
        Just("x-shopify-webhook-id".to_string()),
        Just("x-shopify-shop-domain".to_string()),
        "[a-zA-Z-]{1,30}",
    ]
}

fn headers() -> impl Strategy<Value = Vec<(String, String)>> {
    proptest::collection::vec((header_name(), ".{0,300}"), 0..8)
}

/// A header map as the HTTP layer builds it; pairs HTTP cannot carry are skipped.
fn map(h: &[(&str, &str)]) -> http::HeaderMap {
    let mut m = http::HeaderMap::new();
    for (k, v) in h {
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::from_bytes(k.as_bytes()),
            http::HeaderValue::from_bytes(v.as_bytes()),
        ) {
            m.append(k, v);
        }
    }
    m
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_requests_never_panic(h in headers(), body in proptest::collection::vec(any::<u8>(), 0..2048), topic in ".{0,40}") {
        let v = verifier();
        let refs: Vec<(&str, &str)> = h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let m = map(&refs);
        let _ = shopify::verify("s", &v, &m, Bytes::from(body.clone()), 1);
        let _ = convertedin::verify("s", &v, &topic, &m, Bytes::from(body), 1);
    }

    #[test]
    fn arbitrary_signatures_over_a_valid_body_fail(body in object_body(), sig in ".{0,120}") {
        // Unless it happens to be the right one, which a random string is not.
        let v = verifier();
        let h = [("x-shopify-hmac-sha256", sig.as_str()), ("x-shopify-topic", "orders/create")];
        let r = shopify::verify("s", &v, &map(&h), Bytes::from(body.clone()), 1);
        prop_assert!(matches!(r, Err(Rejection::BadSignature | Rejection::MissingSignature(_))), "{r:?}");
        let h = [("x-hmac-sha256", sig.as_str())];
        let r = convertedin::verify("s", &v, "orders/create", &map(&h), Bytes::from(body), 1);
        prop_assert!(matches!(r, Err(Rejection::BadSignature | Rejection::MissingSignature(_))), "{r:?}");
    }

    #[test]
    fn shopify_signed_verifies_and_any_tampered_byte_fails(
        body in object_body(),
        which in 0..2usize,
        at in any::<prop::sample::Index>(),
        flip in 1..=255u8,
    ) {
        let v = verifier();
        let sig = b64(&mac(SECRETS[which], &body));
        let h = [
            ("x-shopify-hmac-sha256", sig.as_str()),
            ("x-shopify-topic", "orders/create"),
            ("x-shopify-event-id", "ev-1"),
        ];
        let ok = shopify::verify("s", &v, &map(&h), Bytes::from(body.clone()), 1);
        prop_assert!(ok.is_ok(), "{ok:?}");
        let ok = ok.unwrap();
        prop_assert_eq!(ok.body().as_ref(), body.as_slice());
        prop_assert_eq!(ok.meta().dedup_id.as_str(), "ev-1");

        let mut tampered = body.clone();
        let i = at.index(tampered.len());
        tampered[i] ^= flip;
        let r = shopify::verify("s", &v, &map(&h), Bytes::from(tampered), 1);
        prop_assert_eq!(r, Err(Rejection::BadSignature));

        let wrong = b64(&mac("another-secret", &body));
        let h = [("x-shopify-hmac-sha256", wrong.as_str()), ("x-shopify-topic", "orders/create")];
        let r = shopify::verify("s", &v, &map(&h), Bytes::from(body), 1);
        prop_assert_eq!(r, Err(Rejection::BadSignature));
    }

    #[test]
    fn convertedin_signed_verifies_in_hex_and_base64_and_any_tampered_byte_fails(
        body in object_body(),
        which in 0..2usize,
        hex_form in any::<bool>(),
        at in any::<prop::sample::Index>(),
        flip in 1..=255u8,
    ) {
        let v = verifier();
        let tag = mac(SECRETS[which], &body);
        let sig = if hex_form { hex::encode(&tag) } else { b64(&tag) };
        let h = [("x-hmac-sha256", sig.as_str())];
        let ok = convertedin::verify("s", &v, "orders/create", &map(&h), Bytes::from(body.clone()), 1);
        prop_assert!(ok.is_ok(), "{ok:?}");

        let mut tampered = body.clone();
        let i = at.index(tampered.len());
        tampered[i] ^= flip;
        let r = convertedin::verify("s", &v, "orders/create", &map(&h), Bytes::from(tampered), 1);
        prop_assert_eq!(r, Err(Rejection::BadSignature));

        // A tampered tag fails too.
        let mut bad_tag = tag.clone();
        let j = at.index(bad_tag.len());
        bad_tag[j] ^= flip;
        let sig = if hex_form { hex::encode(&bad_tag) } else { b64(&bad_tag) };
        let h = [("x-hmac-sha256", sig.as_str())];
        let r = convertedin::verify("s", &v, "orders/create", &map(&h), Bytes::from(body), 1);
        prop_assert_eq!(r, Err(Rejection::BadSignature));
    }
}
