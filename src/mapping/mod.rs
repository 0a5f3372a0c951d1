//! Layer 3: verified webhook → Segment events (see MAPPING.md). Pure: no I/O, no
//! clock, no randomness, no panics; the same webhook always yields the same bytes.
//!
//! [`map`] parses the body, looks the topic up in `ROUTES` (the one table of
//! what each topic becomes), lets the resource family's mapper draft the calls,
//! then stamps every call with its name, timestamp, messageId and context.
//!
//! | file | topics |
//! |---|---|
//! | `orders.rs` | orders/*, refunds/create, fulfillments/* |
//! | `checkouts.rs` | checkouts/*, carts/* |
//! | `customers.rs` | customers/* (but data_request) |
//! | `catalog.rs` | products/*, collections/* |
//! | `shop.rs` | app/uninstalled, shop/redact, customers/data_request, any other topic |
//! | `commerce.rs` | the order property set and `products[]` |
//! | `body.rs`, `identity.rs`, `context.rs`, `fields.rs`, `number.rs`, `time.rs` | shared helpers |

mod body;
mod catalog;
mod checkouts;
mod commerce;
mod context;
mod customers;
mod erasure;
mod fields;
mod identity;
mod known;
pub(crate) mod number;
mod orders;
mod shop;
mod time;

use serde_json::{Map, Value};

use crate::config::{MappingConfig, Naming};
use crate::event::{Call, Event, Parts};
use crate::sources::Webhook;
use context::{Draft, Input};
pub use known::{Erase, IdKind, Known, Learned, Nothing};

/// Why an authentic webhook cannot be mapped; the caller dead-letters it with this
/// text. Messages name the topic and field, never payload values or secrets.
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    /// The body is not JSON at all (or nests deeper than 128 levels).
    #[error("{topic}: body is not valid JSON ({reason})")]
    NotJson {
        /// Topic as received.
        topic: String,
        /// serde_json's description: a position, never the content.
        reason: String,
    },
    /// The body is JSON but not an object.
    #[error("{topic}: body is {found}, not an object")]
    NotObject {
        /// Topic as received.
        topic: String,
        /// What it is instead (`an array`, `a string`, …).
        found: &'static str,
    },
    /// A structural field the mapping walks has the wrong JSON type.
    #[error("{topic}: {field} is not {expected}")]
    WrongType {
        /// Topic as received.
        topic: String,
        /// Path of the field, e.g. `line_items[2]` or `customer.default_address`.
        field: String,
        /// `an object` or `an array`.
        expected: &'static str,
    },
}

/// A family mapper: drafts the calls of one webhook from its body.
type Mapper = fn(&Input<'_>, &Map<String, Value>) -> Result<Vec<Draft>, MapError>;

/// One row of MAPPING.md's table: the topic, its track names (segment, snake)
/// if it has a track call, and the mapper.
struct Route {
    topic: &'static str,
    names: Option<(&'static str, &'static str)>,
    mapper: Mapper,
}

const fn route(
    topic: &'static str,
    segment: &'static str,
    snake: &'static str,
    mapper: Mapper,
) -> Route {
    Route {
        topic,
        names: Some((segment, snake)),
        mapper,
    }
}

const fn untracked(topic: &'static str, mapper: Mapper) -> Route {
    Route {
        topic,
        names: None,
        mapper,
    }
}

/// What each topic becomes. Topics not listed map through [`shop::generic`].
// One row per line, like MAPPING.md's table.
#[rustfmt::skip]
const ROUTES: &[Route] = &[
    route("orders/create", "Order Completed", "order_placed", orders::placed),
    route("orders/paid", "Order Paid", "order_paid", orders::placed),
    route("orders/updated", "Order Updated", "order_updated", orders::order),
    route("orders/cancelled", "Order Cancelled", "order_cancelled", orders::order),
    route("orders/fulfilled", "Order Fulfilled", "order_fulfilled", orders::order),
    route("orders/partially_fulfilled", "Order Partially Fulfilled", "order_partially_fulfilled", orders::order),
    route("orders/edited", "Order Edited", "order_edited", orders::edited),
    route("orders/delete", "Order Deleted", "order_deleted", orders::order),
    route("refunds/create", "Order Refunded", "order_refunded", orders::refund),
    route("fulfillments/create", "Fulfillment Created", "fulfillment_created", orders::fulfillment),
    route("fulfillments/update", "Fulfillment Updated", "fulfillment_updated", orders::fulfillment),
    route("checkouts/create", "Checkout Started", "checkout_started", checkouts::started),
    route("checkouts/update", "Checkout Updated", "checkout_updated", checkouts::checkout),
    route("checkouts/delete", "Checkout Abandoned", "checkout_abandoned", checkouts::checkout),
    route("carts/create", "Cart Created", "cart_created", checkouts::cart),
    route("carts/update", "Cart Updated", "cart_updated", checkouts::cart),
    route("customers/create", "Customer Created", "customer_created", customers::created),
    untracked("customers/update", customers::identify),
    untracked("customers/enable", customers::identify),
    untracked("customers/disable", customers::identify),
    untracked("customers/delete", customers::delete),
    untracked("customers/redact", customers::delete),
    route("customers/data_request", "Customer Data Requested", "customer_data_requested", shop::data_request),
    route("shop/redact", "Shop Redacted", "shop_redacted", shop::redact),
    route("products/create", "Product Created", "product_created", catalog::product),
    route("products/update", "Product Updated", "product_updated", catalog::product),
    route("products/delete", "Product Deleted", "product_deleted", catalog::product),
    route("collections/create", "Collection Created", "collection_created", catalog::collection),
    route("collections/update", "Collection Updated", "collection_updated", catalog::collection),
    route("collections/delete", "Collection Deleted", "collection_deleted", catalog::collection),
    route("app/uninstalled", "App Uninstalled", "app_uninstalled", shop::uninstalled),
];

/// convertedin endpoints whose name differs from the Shopify topic they mirror;
/// every other convertedin endpoint already has the Shopify name.
const ALIASES: &[(&str, &str)] = &[("orders/update", "orders/updated")];

/// The Shopify topic a received topic maps as.
fn canonical(topic: &str) -> &str {
    ALIASES
        .iter()
        .find(|(alias, _)| *alias == topic)
        .map_or(topic, |(_, shopify)| shopify)
}

/// Whether the table names `topic` (as received: a convertedin alias counts).
pub fn is_mapped_topic(topic: &str) -> bool {
    let topic = canonical(topic);
    ROUTES.iter().any(|r| r.topic == topic)
}

/// The table's topics, for tests that must cover every row.
pub fn topics() -> impl Iterator<Item = &'static str> {
    ROUTES.iter().map(|r| r.topic)
}

/// For `shoprelay preview` only: maps a payload that was never received or
/// verified exactly as [`map`] maps a verified webhook. The webhook it builds
/// stays inside, so nothing can queue or send an unsigned payload.
pub fn map_unverified_for_preview(
    meta: crate::sources::WebhookMeta,
    body: bytes::Bytes,
    cfg: &MappingConfig,
) -> Result<Vec<Event>, MapError> {
    map(&Webhook::from_store(meta, body), cfg)
}

/// Maps one verified webhook to its Segment calls: identify first, then track,
/// knowing nothing of earlier webhooks (offline: `preview`, tests).
pub fn map(webhook: &Webhook, cfg: &MappingConfig) -> Result<Vec<Event>, MapError> {
    map_known(webhook, cfg, &Nothing).map(|(events, _)| events)
}

/// The identity map's scope of a webhook: its shop domain, else its source.
pub fn scope(meta: &crate::sources::WebhookMeta) -> &str {
    meta.shop_domain.as_deref().unwrap_or(meta.source.as_str())
}

/// Maps one verified webhook with what the identity map knows of its scope,
/// and returns what the webhook teaches the map (MAPPING.md → Identity).
pub fn map_known(
    webhook: &Webhook,
    cfg: &MappingConfig,
    known: &dyn Known,
) -> Result<(Vec<Event>, Learned), MapError> {
    let meta = webhook.meta();
    let received = meta.topic.as_str();
    let body = body::parse(webhook.body()).map_err(|e| MapError::NotJson {
        topic: received.to_owned(),
        reason: e.to_string(),
    })?;
    let Value::Object(body) = body else {
        return Err(MapError::NotObject {
            topic: received.to_owned(),
            found: fields::kind(&body),
        });
    };
    let topic = canonical(received);
    let route = ROUTES.iter().find(|r| r.topic == topic);
    let redact = topic == "customers/redact";
    let erased = !redact && erasure::names_erased(topic, &body, known);
    let input = Input {
        meta,
        cfg,
        topic,
        known,
        erased,
        learns: !redact && topic != "shop/redact",
        learned: Default::default(),
    };
    let mut drafts = match route {
        Some(route) => (route.mapper)(&input, &body)?,
        None => shop::generic(&input, &body)?,
    };
    if erased {
        erasure::scrub(&mut drafts);
    }
    let learned = Learned {
        scope: scope(meta).to_owned(),
        put: input.learned.into_inner(),
        erase: redact.then(|| erasure::erase(&body)).flatten(),
        erase_scope: topic == "shop/redact",
    };
    let name = event_name(cfg, received, topic, route);
    let timestamp = context::timestamp(topic, &body, meta);
    let ctx = context::context(meta);
    let mut seen = [0u32; 3];
    let events = drafts
        .into_iter()
        .map(|draft| {
            let (call, identity, body) = draft.into_parts();
            // Index within the call type, so turning identify_on_orders off
            // does not change the track's messageId.
            let slot = match call {
                Call::Track => 0,
                Call::Identify => 1,
                Call::Delete => 2,
            };
            let index = seen.get(slot).copied().unwrap_or(0);
            if let Some(n) = seen.get_mut(slot) {
                *n += 1;
            }
            Event::from_parts(Parts {
                call,
                name: name.clone(),
                identity,
                body,
                timestamp: timestamp.clone(),
                message_id: context::message_id(meta, call, index),
                context: ctx.clone(),
            })
        })
        .collect();
    Ok((events, learned))
}

/// The track name: an override for the topic as received or as mapped, else the
/// preset's name from the table, else one derived from the topic.
fn event_name(
    cfg: &MappingConfig,
    received: &str,
    topic: &str,
    route: Option<&Route>,
) -> Option<String> {
    if let Some(name) = cfg.events.get(received).or_else(|| cfg.events.get(topic)) {
        return Some(name.clone());
    }
    match route {
        Some(route) => route.names.map(|(segment, snake)| match cfg.naming {
            Naming::Segment => segment.to_owned(),
            Naming::Snake => snake.to_owned(),
        }),
        None => Some(derived_name(topic, cfg.naming)),
    }
}

/// `inventory_levels/update` → `Inventory Levels Update` / `inventory_levels_update`.
fn derived_name(topic: &str, naming: Naming) -> String {
    let words = topic
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty());
    let name = match naming {
        Naming::Segment => words
            .map(|w| {
                let mut chars = w.chars();
                chars
                    .next()
                    .map(|first| first.to_uppercase().chain(chars).collect::<String>())
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join(" "),
        Naming::Snake => words.map(str::to_lowercase).collect::<Vec<_>>().join("_"),
    };
    match (name.is_empty(), naming) {
        (false, _) => name,
        (true, Naming::Segment) => "Webhook".to_owned(),
        (true, Naming::Snake) => "webhook".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derives_names_from_unknown_topics() {
        let table = [
            (
                "inventory_levels/update",
                "Inventory Levels Update",
                "inventory_levels_update",
            ),
            (
                "bulk_operations/finish",
                "Bulk Operations Finish",
                "bulk_operations_finish",
            ),
            ("Themes/Publish", "Themes Publish", "themes_publish"),
            ("ça/va", "Ça Va", "ça_va"),
            ("", "Webhook", "webhook"),
            ("///", "Webhook", "webhook"),
        ];
        for (topic, segment, snake) in table {
            assert_eq!(derived_name(topic, Naming::Segment), segment);
            assert_eq!(derived_name(topic, Naming::Snake), snake);
        }
    }

    #[test]
    fn every_tracked_row_has_both_names_and_no_duplicates() {
        for (i, r) in ROUTES.iter().enumerate() {
            assert!(
                ROUTES.iter().skip(i + 1).all(|o| o.topic != r.topic),
                "{}",
                r.topic
            );
            if let Some((segment, snake)) = r.names {
                assert!(!segment.is_empty() && !snake.is_empty(), "{}", r.topic);
                assert_eq!(snake, snake.to_lowercase().replace(' ', "_"), "{}", r.topic);
            }
        }
        assert_eq!(canonical("orders/update"), "orders/updated");
        assert_eq!(canonical("orders/create"), "orders/create");
    }
}
