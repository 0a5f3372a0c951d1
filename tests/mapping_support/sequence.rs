//! One customer, one profile (MAPPING.md → Identity): a realistic sequence of
//! webhooks and whom each call must be about. Shared by the mapping test over
//! the real embedded store (`tests/mapping_identity.rs`) and the test through
//! the real relay (`tests/it/identity.rs`). Each step is sent only after the
//! previous one was delivered, as Shopify spaces them in real life.

use serde_json::{Value, json};

pub const ANN: &str = "ann@example.com";
pub const GUEST: &str = "guest@example.com";
pub const ANN_ID: u64 = 7_001;
pub const GUEST_ORDER: u64 = 820_001;
pub const ANN_ORDER: u64 = 820_002;

/// Whom a call is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Who {
    /// `userId`, and no `anonymousId`.
    User(&'static str),
    /// `userId` plus the `anonymousId` that step N's calls used.
    Linked(&'static str, usize),
    /// `anonymousId` only, the same as step N's.
    AnonymousOf(usize),
    /// `anonymousId` only, any.
    Anonymous,
}

pub struct Step {
    pub topic: &'static str,
    pub body: Value,
    /// (call type, whom), in the order the calls are made.
    pub calls: Vec<(&'static str, Who)>,
    /// Text that must appear nowhere in this step's calls.
    pub absent: Option<&'static str>,
    /// A property to check: (call index, JSON pointer, value).
    pub property: Option<(usize, &'static str, Value)>,
}

fn step(topic: &'static str, body: Value, calls: Vec<(&'static str, Who)>) -> Step {
    Step {
        topic,
        body,
        calls,
        absent: None,
        property: None,
    }
}

fn line_item(id: u64) -> Value {
    json!({"id": id, "product_id": 9_100, "variant_id": 9_200, "title": "Mug", "quantity": 1, "price": "12.00", "sku": "MUG-1"})
}

/// The sequence of issue #10: customer created; a guest's cart, checkout and
/// order; the customer's order; its refund, fulfillment, edit; the guest
/// order's refund and delete; `customers/delete`; `customers/redact`; a later
/// fulfillment of the redacted order.
pub fn steps() -> Vec<Step> {
    let ann_customer = json!({"id": ANN_ID, "email": ANN, "first_name": "Ann", "last_name": "Lee", "orders_count": 0, "total_spent": "0.00"});
    let mut s = vec![
        // 0
        step(
            "customers/create",
            json!({"id": ANN_ID, "email": ANN, "first_name": "Ann", "last_name": "Lee", "created_at": "2026-11-01T10:00:00Z", "updated_at": "2026-11-01T10:00:00Z", "state": "enabled", "orders_count": 0, "total_spent": "0.00"}),
            vec![("identify", Who::User(ANN)), ("track", Who::User(ANN))],
        ),
        // 1: a guest's cart
        step(
            "carts/create",
            json!({"id": "cart-g", "token": "cart-g", "line_items": [line_item(1)], "created_at": "2026-11-02T09:00:00Z", "updated_at": "2026-11-02T09:00:00Z"}),
            vec![("track", Who::Anonymous)],
        ),
        // 2: its checkout, no email yet
        step(
            "checkouts/create",
            json!({"id": 600_001, "token": "chk-g", "cart_token": "cart-g", "email": null, "customer": null, "currency": "EUR", "total_price": "12.00", "line_items": [line_item(1)], "created_at": "2026-11-02T09:01:00Z", "updated_at": "2026-11-02T09:01:00Z"}),
            vec![("track", Who::AnonymousOf(1))],
        ),
        // 3: the guest's order, with an email: the guest becomes a user, and
        // the call carries the cart's anonymousId to join the two profiles.
        step(
            "orders/create",
            json!({"id": GUEST_ORDER, "order_number": 1001, "email": GUEST, "customer": null, "cart_token": "cart-g", "checkout_token": "chk-g", "currency": "EUR", "total_price": "12.00", "line_items": [line_item(1)], "created_at": "2026-11-02T09:02:00Z", "updated_at": "2026-11-02T09:02:00Z"}),
            vec![("track", Who::Linked(GUEST, 1))],
        ),
        // 4: Ann's order
        step(
            "orders/create",
            json!({"id": ANN_ORDER, "order_number": 1002, "email": ANN, "customer": ann_customer, "currency": "USD", "total_price": "24.00", "line_items": [line_item(2), line_item(3)], "created_at": "2026-11-03T12:00:00Z", "updated_at": "2026-11-03T12:00:00Z"}),
            vec![("identify", Who::User(ANN)), ("track", Who::User(ANN))],
        ),
        // 5: its refund names only the order, and has no currency of its own
        step(
            "refunds/create",
            json!({"id": 700_001, "order_id": ANN_ORDER, "created_at": "2026-11-04T08:00:00Z", "transactions": [{"id": 1, "kind": "refund", "status": "success", "amount": "12.00", "currency": null}], "refund_line_items": [{"id": 1, "quantity": 1, "line_item": line_item(2)}]}),
            vec![("track", Who::User(ANN))],
        ),
        // 6: its fulfillment, without email
        step(
            "fulfillments/create",
            json!({"id": 710_001, "order_id": ANN_ORDER, "status": "success", "created_at": "2026-11-04T09:00:00Z", "updated_at": "2026-11-04T09:00:00Z", "line_items": [line_item(3)]}),
            vec![("track", Who::User(ANN))],
        ),
        // 7: an edit of it
        step(
            "orders/edited",
            json!({"order_edit": {"id": 720_001, "order_id": ANN_ORDER, "committed_at": "2026-11-04T10:00:00Z", "line_items": {"additions": [], "removals": []}}}),
            vec![("track", Who::User(ANN))],
        ),
        // 8: the guest order's refund
        step(
            "refunds/create",
            json!({"id": 700_002, "order_id": GUEST_ORDER, "created_at": "2026-11-04T11:00:00Z", "transactions": [{"id": 2, "kind": "refund", "status": "success", "amount": "12.00", "currency": "EUR"}], "refund_line_items": []}),
            vec![("track", Who::User(GUEST))],
        ),
        // 9: the guest order deleted: the payload is its id only
        step(
            "orders/delete",
            json!({"id": GUEST_ORDER}),
            vec![("track", Who::User(GUEST))],
        ),
        // 10: Ann deleted: the payload is her id only; the delete goes to the
        // profile her calls used
        step(
            "customers/delete",
            json!({"id": ANN_ID}),
            vec![("delete", Who::User(ANN))],
        ),
        // 11: Ann's redact
        step(
            "customers/redact",
            json!({"shop_id": 1, "shop_domain": "acme.myshopify.com", "customer": {"id": ANN_ID, "email": ANN, "phone": "+15550001111"}, "orders_to_redact": [ANN_ORDER]}),
            vec![("delete", Who::User(ANN))],
        ),
        // 12: a later fulfillment of the redacted order, with her email in
        // the payload: it must not carry it
        step(
            "fulfillments/update",
            json!({"id": 710_001, "order_id": ANN_ORDER, "email": ANN, "status": "success", "shipment_status": "delivered", "created_at": "2026-11-04T09:00:00Z", "updated_at": "2026-11-20T09:00:00Z", "destination": {"email": ANN, "phone": "+15550001111", "city": "Oslo"}, "line_items": [line_item(3)]}),
            vec![("track", Who::Anonymous)],
        ),
        // 13: an update of the redacted customer: no identify recreates her
        step(
            "customers/update",
            json!({"id": ANN_ID, "email": ANN, "first_name": "Ann", "updated_at": "2026-11-21T09:00:00Z"}),
            vec![],
        ),
    ];
    s[5].property = Some((0, "/properties/currency", json!("USD")));
    s[10].property = Some((0, "/userId", json!(ANN)));
    s[12].absent = Some(ANN);
    s[11].property = Some((
        0,
        "/properties/orders_to_redact",
        json!([ANN_ORDER.to_string()]),
    ));
    s
}

/// Checks one step's calls; `anonymous[i]` is the anonymousId step i's first
/// call used (filled in as steps pass). Returns a description of what is wrong.
pub fn check(
    i: usize,
    step: &Step,
    calls: &[Value],
    anonymous: &mut Vec<Option<String>>,
) -> Result<(), String> {
    let got: Vec<(String, Option<String>, Option<String>)> = calls
        .iter()
        .map(|c| {
            (
                c["type"].as_str().unwrap_or_default().to_string(),
                c["userId"].as_str().map(str::to_string),
                c["anonymousId"].as_str().map(str::to_string),
            )
        })
        .collect();
    let fail = |what: String| {
        Err(format!(
            "step {i} ({}): {what}; calls: {calls:#?}",
            step.topic
        ))
    };
    if got.len() != step.calls.len() {
        return fail(format!(
            "{} calls, expected {}",
            got.len(),
            step.calls.len()
        ));
    }
    for ((ty, user, anon), (want_ty, who)) in got.iter().zip(&step.calls) {
        if ty != want_ty {
            return fail(format!("a {ty}, expected a {want_ty}"));
        }
        let ok = match *who {
            Who::User(u) => user.as_deref() == Some(u) && anon.is_none(),
            Who::Linked(u, n) => {
                user.as_deref() == Some(u) && anon.is_some() && *anon == anonymous[n]
            }
            Who::AnonymousOf(n) => user.is_none() && anon.is_some() && *anon == anonymous[n],
            Who::Anonymous => user.is_none() && anon.is_some(),
        };
        if !ok {
            return fail(format!(
                "userId {user:?}, anonymousId {anon:?}, expected {who:?}"
            ));
        }
    }
    if let Some(text) = step.absent {
        for c in calls {
            if c.to_string().contains(text) {
                return fail(format!("`{text}` appears"));
            }
        }
    }
    if let Some((n, pointer, want)) = &step.property {
        let got = calls.get(*n).and_then(|c| c.pointer(pointer));
        if got != Some(want) {
            return fail(format!("{pointer} is {got:?}, expected {want}"));
        }
    }
    anonymous.push(got.first().and_then(|(_, _, a)| a.clone()));
    Ok(())
}
