//! Who an event is about: `userId` (email or customer id, per `[mapping] user_id`)
//! or, with no customer and no email, a deterministic `anonymousId`.

use sha2::{Digest, Sha256};

use super::context::Input;
use crate::config::UserIdRule;
use crate::event::Identity;

/// Resolves the identity of one webhook. `tokens` are (label, value) pairs, best
/// first; the first present one seeds the anonymous id. The labels keep an order
/// id from colliding with a product id, and the shared `cart` / `checkout` labels
/// give a guest's cart, checkout and order the same anonymous id.
///
/// With `user_id = "customer_id"`, a guest with only an email stays anonymous:
/// mixing emails into an id-keyed user space would split or merge profiles.
pub(super) fn resolve(
    input: &Input<'_>,
    email: Option<String>,
    customer_id: Option<String>,
    tokens: &[(&str, Option<String>)],
) -> Identity {
    let user = match input.cfg.user_id {
        UserIdRule::Email => email.or(customer_id),
        UserIdRule::CustomerId => customer_id,
    };
    match user {
        Some(user) => Identity::User(user),
        None => Identity::Anonymous(anonymous_id(input, tokens)),
    }
}

/// Hex SHA-256 of shop domain + best token, else of the webhook's dedup id: never
/// random, so redeliveries and replays keep the id.
fn anonymous_id(input: &Input<'_>, tokens: &[(&str, Option<String>)]) -> String {
    let (label, value) = tokens
        .iter()
        .find_map(|(label, value)| value.as_deref().map(|v| (*label, v)))
        .unwrap_or(("webhook", input.meta.dedup_id.as_str()));
    let mut hash = Sha256::new();
    hash.update(input.meta.shop_domain.as_deref().unwrap_or("").as_bytes());
    hash.update(b"\n");
    hash.update(label.as_bytes());
    hash.update(b":");
    hash.update(value.as_bytes());
    hex::encode(hash.finalize())
}
