//! Shopify: `X-Shopify-Hmac-Sha256` is base64 HMAC-SHA256 of the raw body;
//! redeliveries of one event share `X-Shopify-Event-Id`.

use bytes::Bytes;

use super::verify::{
    Rejection, Verifier, check_json_object, check_signature, check_topic, content_id,
};
use super::{Headers, SourceKind, Webhook, WebhookMeta};

pub const SIGNATURE: &str = "x-shopify-hmac-sha256";

/// Verifies a Shopify request; nothing is parsed before the MAC matches.
pub fn verify(
    source: &str,
    verifier: &Verifier,
    headers: &dyn Headers,
    body: Bytes,
    received_at_ms: u64,
) -> Result<Webhook, Rejection> {
    check_signature(
        verifier,
        headers,
        SIGNATURE,
        "X-Shopify-Hmac-Sha256",
        false,
        &body,
    )?;
    let topic = headers
        .get("x-shopify-topic")
        .ok_or(Rejection::MissingTopic("X-Shopify-Topic"))?
        .trim()
        .to_ascii_lowercase();
    check_topic(&topic)?;
    check_json_object(&body)?;
    let event_id = headers.get_owned("x-shopify-event-id");
    let webhook_id = headers.get_owned("x-shopify-webhook-id");
    let dedup_id = event_id
        .clone()
        .or_else(|| webhook_id.clone())
        .unwrap_or_else(|| content_id(&topic, &body));
    let meta = WebhookMeta {
        kind: SourceKind::Shopify,
        source: source.to_string(),
        topic,
        shop_domain: headers.get_owned("x-shopify-shop-domain"),
        webhook_id,
        event_id,
        api_version: headers.get_owned("x-shopify-api-version"),
        triggered_at: headers.get_owned("x-shopify-triggered-at"),
        dedup_id,
        received_at_ms,
    };
    Ok(Webhook::verified(meta, body))
}
