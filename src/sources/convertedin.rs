//! convertedin: one URL per topic (`…/{resource}/{action}`), `X-Hmac-Sha256`
//! in base64 or hex, no delivery id, so duplicates are found by content hash.

use bytes::Bytes;

use super::verify::{
    Rejection, Verifier, check_json_object, check_signature, check_topic, content_id,
};
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
    // convertedin documents no encoding for the digest: accept base64 and hex.
    check_signature(
        verifier,
        headers,
        "x-hmac-sha256",
        "X-Hmac-Sha256",
        true,
        &body,
    )?;
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
