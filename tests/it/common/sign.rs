//! Signing as Shopify and convertedin do.

pub use shoprelay::sources::sign::{convertedin as hex, shopify};

use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;

/// The `shared_secret` of the destinations [`super::relay::signed_dest`] makes.
pub const DEST_SECRET: &str = "dest-secret";

/// `X-Signature` as a receiver checks it: hex HMAC-SHA1 of the exact body
/// (computed here, not by the relay's code, so a test checks the relay).
pub fn x_signature(secret: &str, body: &[u8]) -> String {
    let mut m = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("any key length");
    m.update(body);
    hex::encode(m.finalize().into_bytes())
}

/// A signed Shopify webhook request.
pub struct ShopifyWebhook<'a> {
    pub topic: &'a str,
    pub event_id: Option<String>,
    pub body: Vec<u8>,
    pub secret: &'a str,
}

impl ShopifyWebhook<'_> {
    pub fn request(&self, client: &reqwest::Client, url: &str) -> reqwest::RequestBuilder {
        let mut r = client
            .post(url)
            .header("content-type", "application/json")
            .header("x-shopify-topic", self.topic)
            .header("x-shopify-hmac-sha256", shopify(self.secret, &self.body))
            .header("x-shopify-shop-domain", "acme.myshopify.com")
            .header("x-shopify-api-version", "2025-01")
            .body(self.body.clone());
        if let Some(id) = &self.event_id {
            r = r
                .header("x-shopify-event-id", id)
                .header("x-shopify-webhook-id", format!("wh-{id}"));
        }
        r
    }
}
