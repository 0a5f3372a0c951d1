//! `[mapping]`: how webhooks are named and identified downstream (see MAPPING.md).

use std::collections::BTreeMap;

use serde::Deserialize;

/// Which event-name preset the mapping uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Naming {
    /// Segment e-commerce spec v2 names: `Order Completed`, `Checkout Started`.
    #[default]
    Segment,
    /// SegOps style: `order_placed`, `checkout_started`.
    Snake,
}

/// What becomes the Segment `userId` of a customer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserIdRule {
    /// The customer's email, else the customer id (lets a CRM match by email).
    #[default]
    Email,
    /// The Shopify customer id as a string (Segment's own advice).
    CustomerId,
}

/// The `[mapping]` table.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingConfig {
    /// Event-name preset.
    #[serde(default)]
    pub naming: Naming,
    /// Per-topic overrides of the event name, e.g. `"orders/paid" = "Order Paid"`.
    #[serde(default)]
    pub events: BTreeMap<String, String>,
    /// Which customer field becomes `userId`.
    #[serde(default)]
    pub user_id: UserIdRule,
    /// Whether order topics also emit an `identify` for the ordering customer.
    #[serde(default = "yes")]
    pub identify_on_orders: bool,
    /// How long the identity map keeps an entry after it was last seen.
    #[serde(skip, default = "default_identity_retention")]
    pub identity_retention: std::time::Duration,
}

/// A year: an order's refunds, fulfillments and disputes come within months
/// of it, and a customer who orders once a year keeps one profile.
pub const DEFAULT_IDENTITY_RETENTION: std::time::Duration =
    std::time::Duration::from_secs(365 * 86_400);

/// The shortest retention `check` accepts: Shopify's whole retry window.
pub const MIN_IDENTITY_RETENTION: std::time::Duration = std::time::Duration::from_secs(2 * 86_400);

fn default_identity_retention() -> std::time::Duration {
    DEFAULT_IDENTITY_RETENTION
}

fn yes() -> bool {
    true
}

impl Default for MappingConfig {
    fn default() -> Self {
        MappingConfig {
            naming: Naming::default(),
            events: BTreeMap::new(),
            user_id: UserIdRule::default(),
            identify_on_orders: true,
            identity_retention: DEFAULT_IDENTITY_RETENTION,
        }
    }
}
