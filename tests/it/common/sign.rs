//! Signing as Shopify and convertedin do.

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

pub fn hmac_sha256(secret: &str, body: &[u8]) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    m.update(body);
    m.finalize().into_bytes().to_vec()
}

pub fn shopify(secret: &str, body: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(hmac_sha256(secret, body))
}

pub fn hex(secret: &str, body: &[u8]) -> String {
    hex::encode(hmac_sha256(secret, body))
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
