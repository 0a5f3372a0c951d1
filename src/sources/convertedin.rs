//! convertedin: one URL per topic (`…/{resource}/{action}`), `X-Hmac-Sha256`
//! in base64 or hex, no delivery id, so duplicates are found by content hash.

use bytes::Bytes;

use super::verify::{Rejection, Verifier, check_json_object, check_topic, content_id, decode_tag};
use super::{Headers, SourceKind, Webhook, WebhookMeta};

/// Verifies a convertedin request for `resource/action`.
pub fn verify(
    source: &str,
    verifier: &Verifier,
    topic: &str,
    headers: &dyn Headers,
    body: Bytes,
    received_at_ms: u64,
) -> Result<Webhook, Rejection> {
    let tag = headers
        .get("x-hmac-sha256")
        .ok_or(Rejection::MissingSignature("X-Hmac-Sha256"))?;
    let tag = decode_tag(tag, true).ok_or(Rejection::BadSignature)?;
    if !verifier.matches(&body, &tag) {
        return Err(Rejection::BadSignature);
    }
    let topic = topic.to_ascii_lowercase();
    check_topic(&topic)?;
    check_json_object(&body)?;
    let dedup_id = content_id(&topic, &body);
    let meta = WebhookMeta {
        kind: SourceKind::Convertedin,
        source: source.to_string(),
        topic,
        shop_domain: headers.get_owned("x-shop-domain"),
        webhook_id: None,
        event_id: None,
        api_version: None,
        triggered_at: None,
        dedup_id,
        received_at_ms,
    };
    Ok(Webhook::verified(meta, body))
}
