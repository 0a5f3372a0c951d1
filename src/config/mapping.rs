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
        }
    }
}
