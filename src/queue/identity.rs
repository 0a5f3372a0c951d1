//! The identity map's policy over any [`Store`]: reading it for mapping
//! ([`StoreKnown`]) and writing what a webhook taught it ([`apply`]). The
//! backends only store strings (MAPPING.md → Identity says what they mean).

use std::sync::Mutex;

use super::{Store, StoreError};
use crate::mapping::{IdKind, Known, Learned};

/// An unchanged entry is rewritten (to refresh the time retention counts
/// from) at most this often: every backend skips the write otherwise, so a
/// returning customer's webhooks cost reads, not writes.
pub const REFRESH_MS: u64 = 86_400_000;

/// At most this many of a customer's orders are found by a redact beyond
/// those it lists (a bound on one erase, not on the map).
const MAX_ORDERS_PER_ERASE: usize = 100_000;

/// The identity map of one scope, read from a store. A store error makes
/// every later read answer "unknown" and is kept: the caller must check
/// [`StoreKnown::into_error`] and not use a mapping made with it.
pub struct StoreKnown<'a> {
    store: &'a dyn Store,
    scope: &'a str,
    error: Mutex<Option<StoreError>>,
}

impl<'a> StoreKnown<'a> {
    /// Reads `scope`'s entries from `store`.
    pub fn new(store: &'a dyn Store, scope: &'a str) -> Self {
        StoreKnown {
            store,
            scope,
            error: Mutex::new(None),
        }
    }

    /// The first read that failed, if any.
    pub fn into_error(self) -> Option<StoreError> {
        self.error.into_inner().unwrap_or_else(|p| p.into_inner())
    }
}

impl Known for StoreKnown<'_> {
    fn get(&self, kind: IdKind, key: &str) -> Option<String> {
        let mut error = self.error.lock().unwrap_or_else(|p| p.into_inner());
        if error.is_some() {
            return None;
        }
        match self.store.identity_get(self.scope, kind, key) {
            Ok(v) => v,
            Err(e) => {
                *error = Some(e);
                None
            }
        }
    }
}

/// Writes what one webhook taught the map: a scope erase, then a customer
/// erase (its entry, its orders, listed or found through `OrderOf`, and
/// tombstones for both), then the new entries. Idempotent: applying the same
/// `Learned` twice leaves the map as once.
pub fn apply(store: &dyn Store, learned: &Learned, now_ms: u64) -> Result<(), StoreError> {
    let scope = learned.scope.as_str();
    if learned.erase_scope {
        store.identity_erase_scope(scope)?;
    }
    if let Some(erase) = &learned.erase {
        let customer = erase.customer.as_str();
        let mut orders = erase.orders.clone();
        let prefix = format!("{customer}/");
        for (key, _) in
            store.identity_scan(scope, IdKind::OrderOf, &prefix, MAX_ORDERS_PER_ERASE)?
        {
            if let Some(order) = key.strip_prefix(&prefix) {
                orders.push(order.to_owned());
            }
        }
        orders.sort();
        orders.dedup();
        let mut gone = vec![(IdKind::Customer, customer.to_owned())];
        let mut tombstones = vec![(
            IdKind::Erased,
            format!("customer:{customer}"),
            String::new(),
        )];
        for order in &orders {
            gone.push((IdKind::Order, order.clone()));
            gone.push((IdKind::OrderOf, format!("{customer}/{order}")));
            tombstones.push((IdKind::Erased, format!("order:{order}"), String::new()));
        }
        store.identity_delete(scope, &gone)?;
        store.identity_put(scope, &tombstones, now_ms)?;
    }
    if !learned.put.is_empty() {
        store.identity_put(scope, &learned.put, now_ms)?;
    }
    Ok(())
}
