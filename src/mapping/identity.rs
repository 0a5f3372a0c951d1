//! Who an event is about: `userId` (email or customer id, per `[mapping] user_id`)
//! or, with no customer and no email, a deterministic `anonymousId`; through the
//! identity map ([`super::Known`], MAPPING.md → Identity), the `userId` of a
//! customer an event names only by id or by order, and the `anonymousId` a
//! guest's cart or checkout already used.

use std::cell::RefCell;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::context::Input;
use super::known::IdKind;
use crate::config::UserIdRule;
use crate::event::Identity;

/// What one event's payload says about whom it concerns.
#[derive(Default)]
pub(super) struct Subject<'t> {
    /// The email the payload gives the person.
    pub email: Option<String>,
    /// The Shopify customer id the payload gives.
    pub customer: Option<String>,
    /// The order the event is (orders/*): its facts are learned.
    pub order: Option<String>,
    /// The order the event is about (a refund's, a fulfillment's): looked up
    /// when the payload names no customer.
    pub of_order: Option<String>,
    /// The order's currency, learned with it.
    pub currency: Option<String>,
    /// (label, value) pairs, best first; the first present one seeds the
    /// anonymous id. The labels keep an order id from colliding with a product
    /// id, and the shared `cart` / `checkout` labels give a guest's cart,
    /// checkout and order the same anonymous id.
    pub tokens: &'t [(&'t str, Option<String>)],
}

/// What the map keeps of an order: what its calls used.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct OrderFacts {
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "c")]
    pub customer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "u")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "a")]
    pub anonymous: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "$")]
    pub currency: Option<String>,
}

/// Token labels whose anonymous id the map keeps.
const LINKED_TOKENS: &[&str] = &["cart", "checkout"];

/// Entries learned while mapping one webhook.
pub(super) type Puts = RefCell<Vec<(IdKind, String, String)>>;

/// An order's facts as the map has them.
pub(super) fn known_order(input: &Input<'_>, order: &str) -> Option<OrderFacts> {
    let text = input.known.get(IdKind::Order, order)?;
    serde_json::from_str(&text).ok()
}

/// Resolves the identity of one event and notes what it teaches the map.
pub(super) fn resolve(input: &Input<'_>, s: Subject<'_>) -> Identity {
    if input.erased {
        // About a person a redact erased: no identity of theirs, no learning.
        return Identity::Anonymous(anonymous_id(input, s.tokens));
    }
    let email_rule = input.cfg.user_id == UserIdRule::Email;
    let from_payload = match input.cfg.user_id {
        UserIdRule::Email => s.email.clone(),
        UserIdRule::CustomerId => s.customer.clone(),
    };
    let mut user = from_payload.clone();
    if user.is_none() && email_rule {
        // With user_id = "customer_id", a guest with only an email stays
        // anonymous: mixing emails into an id-keyed user space would split or
        // merge profiles. By the same rule, a customer known only by id is
        // looked up only under the email rule.
        user = s
            .customer
            .as_deref()
            .and_then(|c| input.known.get(IdKind::Customer, c))
            .or_else(|| s.customer.clone());
    }
    let mut anonymous = None;
    if user.is_none()
        && let Some(facts) = s
            .of_order
            .as_deref()
            .or(s.order.as_deref())
            .and_then(|o| known_order(input, o))
    {
        user = match (&facts.customer, input.cfg.user_id) {
            (Some(c), UserIdRule::Email) => input
                .known
                .get(IdKind::Customer, c)
                .or_else(|| facts.user.clone())
                .or_else(|| Some(c.clone())),
            (Some(c), UserIdRule::CustomerId) => Some(c.clone()),
            (None, UserIdRule::Email) => facts.user.clone(),
            (None, UserIdRule::CustomerId) => None,
        };
        anonymous = facts.anonymous;
    }
    let linked = || {
        s.tokens.iter().find_map(|(label, value)| {
            let value = value.as_deref()?;
            LINKED_TOKENS
                .contains(label)
                .then(|| input.known.get(IdKind::Token, &format!("{label}:{value}")))
                .flatten()
        })
    };
    let identity = match user {
        Some(user) => match linked() {
            Some(anonymous) => Identity::Linked(user, anonymous),
            None => Identity::User(user),
        },
        None => Identity::Anonymous(
            anonymous
                .or_else(linked)
                .unwrap_or_else(|| anonymous_id(input, s.tokens)),
        ),
    };
    learn(
        input,
        &s,
        email_rule.then_some(from_payload).flatten(),
        &identity,
    );
    identity
}

/// Notes what the event teaches: the customer's userId (only an email from
/// the payload: a customer id is its own userId), the order's facts, and the
/// anonymous id of a guest's tokens.
fn learn(input: &Input<'_>, s: &Subject<'_>, email_user: Option<String>, who: &Identity) {
    if !input.learns {
        return;
    }
    let mut puts = input.learned.borrow_mut();
    if let (Some(c), Some(email)) = (&s.customer, &email_user) {
        puts.push((IdKind::Customer, c.clone(), email.clone()));
    }
    if let Some(order) = &s.order {
        let (user, anonymous) = match who {
            Identity::User(u) | Identity::Linked(u, _) => (Some(u.clone()), None),
            Identity::Anonymous(a) => (None, Some(a.clone())),
        };
        let facts = OrderFacts {
            customer: s.customer.clone(),
            // Through the customer when there is one, so a changed email follows.
            user: if s.customer.is_some() { None } else { user },
            anonymous,
            currency: s.currency.clone(),
        };
        if let Ok(json) = serde_json::to_string(&facts) {
            puts.push((IdKind::Order, order.clone(), json));
        }
        if let Some(c) = &s.customer {
            puts.push((IdKind::OrderOf, format!("{c}/{order}"), String::new()));
        }
    }
    if let Identity::Anonymous(a) = who {
        for (label, value) in s.tokens {
            if let (true, Some(value)) = (LINKED_TOKENS.contains(label), value) {
                puts.push((IdKind::Token, format!("{label}:{value}"), a.clone()));
            }
        }
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
