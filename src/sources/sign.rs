//! Signing as Shopify and convertedin sign, for whatever plays the sender: the
//! CLI's `send-test`, `examples/loadgen/`, the fuzz targets and the tests.
//! The relay itself only verifies (`verify.rs`); this is the one place the
//! other side is written.

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The header Shopify puts its signature in (base64).
pub const SHOPIFY_HEADER: &str = "x-shopify-hmac-sha256";
/// The header convertedin puts its signature in (hex; base64 is accepted too).
pub const CONVERTEDIN_HEADER: &str = "x-hmac-sha256";

/// HMAC-SHA256 of `body` under `secret` (any key length is a valid key).
pub fn hmac_sha256(secret: &[u8], body: &[u8]) -> [u8; 32] {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
    m.update(body);
    m.finalize().into_bytes().into()
}

/// Shopify's `X-Shopify-Hmac-Sha256`: base64 of the HMAC.
pub fn shopify(secret: &str, body: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(hmac_sha256(secret.as_bytes(), body))
}

/// convertedin's `X-Hmac-Sha256` as it sends it: hex of the HMAC.
pub fn convertedin(secret: &str, body: &[u8]) -> String {
    hex::encode(hmac_sha256(secret.as_bytes(), body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use crate::sources::Verifier;

    #[test]
    fn what_is_signed_here_verifies() {
        let v = Verifier::new(&[Secret::new("k")]);
        let tag = hmac_sha256(b"k", b"{}");
        assert!(v.matches(b"{}", &tag));
        assert_eq!(shopify("k", b"{}").len(), 44);
        assert_eq!(convertedin("k", b"{}"), hex::encode(tag));
    }
}
