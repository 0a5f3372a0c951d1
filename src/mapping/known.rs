//! What the relay already knows about a shop's customers: the identity map, as
//! mapping sees it. Mapping stays pure: it reads the map through [`Known`]
//! (the caller looks entries up in the store) and returns what the webhook
//! teaches it as [`Learned`] (the caller writes it), so the same webhook and
//! the same map always give the same bytes.
//!
//! Entries are strings keyed by scope (the shop domain, else the source
//! name), [`IdKind`] and a key; see MAPPING.md → Identity for what each holds.

/// The kinds of entry in the identity map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IdKind {
    /// Shopify customer id → the `userId` its calls use.
    Customer,
    /// Order id → what the order's calls used (JSON: customer, user,
    /// anonymous id, currency).
    Order,
    /// `{customer id}/{order id}` → nothing: a customer's orders, so a redact
    /// erases orders it does not list.
    OrderOf,
    /// `cart:{token}` or `checkout:{token}` → the anonymousId its events used.
    Token,
    /// `customer:{id}` or `order:{id}` → nothing: erased by a redact; later
    /// events about it carry no identity of the person.
    Erased,
}

impl IdKind {
    /// Every kind, in byte order.
    pub const ALL: [IdKind; 5] = [
        IdKind::Customer,
        IdKind::Order,
        IdKind::OrderOf,
        IdKind::Token,
        IdKind::Erased,
    ];

    /// One byte per kind, for backends that key by bytes.
    pub fn as_byte(self) -> u8 {
        match self {
            IdKind::Customer => b'c',
            IdKind::Order => b'o',
            IdKind::OrderOf => b'r',
            IdKind::Token => b't',
            IdKind::Erased => b'x',
        }
    }

    /// The kind of [`IdKind::as_byte`]'s byte.
    pub fn from_byte(b: u8) -> Option<IdKind> {
        IdKind::ALL.into_iter().find(|k| k.as_byte() == b)
    }

    /// The kind's name, for backends that key by text.
    pub fn as_str(self) -> &'static str {
        match self {
            IdKind::Customer => "customer",
            IdKind::Order => "order",
            IdKind::OrderOf => "order_of",
            IdKind::Token => "token",
            IdKind::Erased => "erased",
        }
    }
}

/// Read access to the identity map of one scope.
pub trait Known {
    /// The entry of `kind` at `key`, if the map has one.
    fn get(&self, kind: IdKind, key: &str) -> Option<String>;
}

/// The empty map: what mapping knows offline (`preview`, tests).
pub struct Nothing;

impl Known for Nothing {
    fn get(&self, _: IdKind, _: &str) -> Option<String> {
        None
    }
}

impl Known for std::collections::HashMap<(IdKind, String), String> {
    fn get(&self, kind: IdKind, key: &str) -> Option<String> {
        self.get(&(kind, key.to_owned())).cloned()
    }
}

/// What one webhook teaches the identity map. Applied by the caller, in this
/// order: `erase_scope`, `erase`, then `put`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Learned {
    /// The scope every entry belongs to.
    pub scope: String,
    /// Entries to write (or refresh): (kind, key, value).
    pub put: Vec<(IdKind, String, String)>,
    /// A customer to forget (customers/redact), with the orders it names.
    pub erase: Option<Erase>,
    /// Forget the whole scope (shop/redact).
    pub erase_scope: bool,
}

/// A customer and its orders to erase from the map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Erase {
    /// The Shopify customer id.
    pub customer: String,
    /// The order ids the redact names (`orders_to_redact`).
    pub orders: Vec<String>,
}

impl Learned {
    /// Whether applying it would change nothing.
    pub fn is_empty(&self) -> bool {
        self.put.is_empty() && self.erase.is_none() && !self.erase_scope
    }
}
