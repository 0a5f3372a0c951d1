//! Shopify: `X-Shopify-Hmac-Sha256` is base64 HMAC-SHA256 of the raw body;
//! redeliveries of one event share `X-Shopify-Event-Id`.
//!
//! Shopify's newer delivery mechanism sends the same headers without the `X-`
//! prefix (`Shopify-Topic`, `Shopify-Hmac-Sha256`, …); both spellings are accepted
//! alike (see `header` below).

use bytes::Bytes;

use super::verify::{
    Rejection, Verifier, check_json_object, check_signature, check_topic, content_id,
};
use super::{Headers, SourceKind, Webhook, WebhookMeta};

pub const SIGNATURE: &str = "x-shopify-hmac-sha256";

/// The unprefixed spelling of [`SIGNATURE`].
const SIGNATURE_UNPREFIXED: &str = "shopify-hmac-sha256";

/// `x-shopify-<name>`, else `shopify-<name>`; `x_name` is the lowercase
/// `x-shopify-<name>` (the other spelling is it without the `x-`).
///
/// When a request carries both spellings the `X-` form wins, for every header
/// including the signature: it is the form Shopify has always documented and sent,
/// so a sender (or a proxy) that adds the new spelling beside it cannot change what
/// an existing integration verified and mapped. Shopify itself sends one value
/// under both names, so the choice only matters for a request built by hand.
fn header<'a>(headers: &'a dyn Headers, x_name: &str) -> Option<&'a str> {
    headers
        .get(x_name)
        .or_else(|| headers.get(unprefixed(x_name)))
}

/// `x-shopify-<name>` → `shopify-<name>`.
fn unprefixed(x_name: &str) -> &str {
    x_name.strip_prefix("x-").unwrap_or(x_name)
}

/// [`header`], owned, with empty values treated as absent; each spelling is
/// looked at on its own, so an empty `X-` header does not hide a filled new one.
fn header_owned(headers: &dyn Headers, x_name: &str) -> Option<String> {
    headers
        .get_owned(x_name)
        .or_else(|| headers.get_owned(unprefixed(x_name)))
}

/// Verifies a Shopify request; nothing is parsed before the MAC matches.
pub fn verify(
    source: &str,
    verifier: &Verifier,
    headers: &dyn Headers,
    body: Bytes,
    received_at_ms: u64,
) -> Result<Webhook, Rejection> {
    let signature =
        if headers.get(SIGNATURE).is_none() && headers.get(SIGNATURE_UNPREFIXED).is_some() {
            SIGNATURE_UNPREFIXED
        } else {
            SIGNATURE
        };
    check_signature(
        verifier,
        headers,
        signature,
        "X-Shopify-Hmac-Sha256",
        false,
        &body,
    )?;
    let topic = header(headers, "x-shopify-topic")
        .ok_or(Rejection::MissingTopic("X-Shopify-Topic"))?
        .trim()
        .to_ascii_lowercase();
    check_topic(&topic)?;
    check_json_object(&body)?;
    let event_id = header_owned(headers, "x-shopify-event-id");
    let webhook_id = header_owned(headers, "x-shopify-webhook-id");
    let dedup_id = event_id
        .clone()
        .or_else(|| webhook_id.clone())
        .unwrap_or_else(|| content_id(&topic, &body));
    let meta = WebhookMeta {
        kind: SourceKind::Shopify,
        source: source.to_string(),
        topic,
        shop_domain: header_owned(headers, "x-shopify-shop-domain"),
        webhook_id,
        event_id,
        api_version: header_owned(headers, "x-shopify-api-version"),
        triggered_at: header_owned(headers, "x-shopify-triggered-at"),
        dedup_id,
        received_at_ms,
    };
    Ok(Webhook::verified(meta, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use base64::Engine;
    use hmac::{Hmac, KeyInit, Mac};
    use sha2::Sha256;

    const BODY: &[u8] = br#"{"id":1}"#;

    fn verifier() -> Verifier {
        Verifier::new(&[Secret::new("s3cret")])
    }

    fn sign(body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").expect("key");
        mac.update(body);
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    }

    fn all(prefix: &str, sig: &str) -> Vec<(String, String)> {
        [
            ("Topic", "orders/create"),
            ("Hmac-Sha256", sig),
            ("Webhook-Id", "wh-1"),
            ("Event-Id", "ev-1"),
            ("Shop-Domain", "acme.myshopify.com"),
            ("Triggered-At", "2024-07-04T12:00:00Z"),
            ("API-Version", "2025-01"),
        ]
        .into_iter()
        .map(|(k, v)| (format!("{prefix}Shopify-{k}"), v.to_owned()))
        .collect()
    }

    fn run(headers: &[(String, String)]) -> Result<WebhookMeta, Rejection> {
        let mut map = http::HeaderMap::new();
        for (k, v) in headers {
            let name = http::HeaderName::from_bytes(k.as_bytes()).expect("header name");
            map.append(name, v.parse().expect("header value"));
        }
        verify("acme", &verifier(), &map, Bytes::from_static(BODY), 7).map(|w| w.meta().clone())
    }

    #[test]
    fn new_spelling_reads_like_the_x_form() {
        let sig = sign(BODY);
        let old = run(&all("X-", &sig)).expect("X- form verifies");
        let new = run(&all("", &sig)).expect("unprefixed form verifies");
        assert_eq!(old, new);
        assert_eq!(new.topic, "orders/create");
        assert_eq!(new.event_id.as_deref(), Some("ev-1"));
        assert_eq!(new.webhook_id.as_deref(), Some("wh-1"));
        assert_eq!(new.dedup_id, "ev-1");
        assert_eq!(new.shop_domain.as_deref(), Some("acme.myshopify.com"));
        assert_eq!(new.api_version.as_deref(), Some("2025-01"));
        assert_eq!(new.triggered_at.as_deref(), Some("2024-07-04T12:00:00Z"));
    }

    #[test]
    fn new_spelling_is_checked_like_the_x_form() {
        let bad = run(&all("", &sign(b"other")));
        assert_eq!(bad, Err(Rejection::BadSignature));
        let mut no_topic = all("", &sign(BODY));
        no_topic.retain(|(k, _)| k != "Shopify-Topic");
        assert_eq!(
            run(&no_topic),
            Err(Rejection::MissingTopic("X-Shopify-Topic"))
        );
        let mut no_sig = all("", &sign(BODY));
        no_sig.retain(|(k, _)| k != "Shopify-Hmac-Sha256");
        assert_eq!(
            run(&no_sig),
            Err(Rejection::MissingSignature("X-Shopify-Hmac-Sha256"))
        );
    }

    #[test]
    fn x_form_wins_when_both_are_sent() {
        let mut both = all("X-", &sign(BODY));
        let mut new = all("", "not-a-signature");
        for (k, v) in &mut new {
            if !k.ends_with("Hmac-Sha256") {
                *v = format!("{v}-new");
            }
        }
        both.extend(new);
        let meta = run(&both).expect("the X- signature is the one checked");
        assert_eq!(meta.topic, "orders/create");
        assert_eq!(meta.event_id.as_deref(), Some("ev-1"));
        // A good new-form signature does not rescue a bad X- one.
        let mut bad_x = all("X-", "not-a-signature");
        bad_x.extend(all("", &sign(BODY)));
        assert_eq!(run(&bad_x), Err(Rejection::BadSignature));
        // An empty X- header does not hide a filled new one.
        let mut empty_x = all("", &sign(BODY));
        empty_x.push(("X-Shopify-Event-Id".into(), " ".into()));
        assert_eq!(
            run(&empty_x).expect("verifies").event_id.as_deref(),
            Some("ev-1")
        );
    }
}
