//! The contract every `Store` backend keeps. Each check takes a function
//! that opens the backend on a directory; [`store_contract!`] makes one
//! `#[test]` per check for a backend (the embedded one in
//! `embedded/tests/mod.rs`; a PostgreSQL one runs the same list).

use std::path::Path;

use bytes::Bytes;

use super::*;
use crate::sources::{SourceKind, WebhookMeta};

/// Opens a backend on a directory (a fresh one per check).
pub type Open = dyn Fn(&Path) -> Box<dyn Store>;

/// One `#[test]` per check for the backend that `$open` opens; with
/// `when: READY`, each test first asks `READY()` and passes without running
/// when it says no (a backend that needs a server: READY reports the skip).
macro_rules! store_contract {
    ($open:expr) => {
        $crate::queue::contract::store_contract!($open, when: || true);
    };
    ($open:expr, when: $ready:expr) => {
        $crate::queue::contract::store_contract!(@each $open, $ready;
            accept_dedups_within_and_across_batches,
            a_webhook_without_lanes_is_only_remembered,
            claim_leases_and_complete_forgets,
            a_failed_attempt_is_due_again_at_its_retry_time,
            bury_list_replay_purge,
            dedup_expires_after_the_window,
            survives_reopen,
            an_outcome_after_the_lease_ended_changes_nothing,
            complete_many_is_complete_for_each,
            completing_in_memory_first_is_the_same_as_complete_many,
            counts_follow_every_operation,
            lanes_with_work_are_listed,
            identity_entries_are_kept_per_scope_and_kind,
            identity_erase_and_expire,
            identity_apply_erases_a_customer_and_its_orders,
            identity_survives_reopen
        );
    };
    (@each $open:expr, $ready:expr; $($name:ident),*) => {
        $(
            #[test]
            fn $name() {
                if ($ready)() {
                    $crate::queue::contract::$name(&$open)
                }
            }
        )*
    };
}
pub(crate) use store_contract;

pub fn webhook(dedup: &str, body: &str) -> Webhook {
    Webhook::from_store(
        WebhookMeta {
            kind: SourceKind::Shopify,
            source: "acme".into(),
            topic: "orders/create".into(),
            shop_domain: Some("acme.myshopify.com".into()),
            webhook_id: Some(dedup.into()),
            event_id: None,
            api_version: None,
            triggered_at: None,
            dedup_id: dedup.into(),
            received_at_ms: 100,
        },
        Bytes::from(body.to_string()),
    )
}

/// Webhook `dedup` to `lanes` (each lane one destination of its name).
/// Webhooks `a`, `b` and `c` accepted at 100 for lane `x`, all three claimed
/// (leases until 1000), in that order.
pub fn abc_claimed(s: &dyn Store) -> Vec<Claimed> {
    s.accept_batch(
        &[
            accept("a", &["x"]),
            accept("b", &["x"]),
            accept("c", &["x"]),
        ],
        100,
    )
    .unwrap();
    let c = s.claim_due("x", 100, 1000, 10).unwrap();
    assert_eq!(c.len(), 3);
    c
}

pub fn accept(dedup: &str, lanes: &[&str]) -> Accept {
    Accept {
        webhook: webhook(dedup, r#"{"id":1}"#),
        deliveries: lanes
            .iter()
            .map(|l| NewDelivery {
                lane: l.to_string(),
                targets: vec![l.to_string()],
            })
            .collect(),
    }
}

/// `rec` as a dead letter, buried at `at_ms` for `reason`.
pub fn dead(rec: &DeliveryRecord, at_ms: u64, reason: &str) -> DeliveryRecord {
    let mut d = rec.clone();
    d.state = DeliveryState::Dead {
        dead_at_ms: at_ms,
        reason: reason.into(),
    };
    d
}

/// `c`'s record failed at `now`, due again at `due`.
pub fn failed(c: &Claimed, due: u64) -> DeliveryRecord {
    let mut r = c.record.clone();
    r.attempts += 1;
    r.due_ms = due;
    r.first_attempt_at_ms.get_or_insert(100);
    r.last_error = Some("HTTP 503".into());
    r
}

fn fresh(open: &Open) -> (tempfile::TempDir, Box<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir.path().join("data"));
    (dir, s)
}

fn pending(s: &dyn Store, lane: &str) -> u64 {
    s.stats().unwrap().0.get(lane).map_or(0, |l| l.pending)
}

pub fn accept_dedups_within_and_across_batches(open: &Open) {
    let (_d, s) = fresh(open);
    let out = s
        .accept_batch(
            &[
                accept("a", &["x"]),
                accept("a", &["x"]),
                accept("b", &["x"]),
            ],
            100,
        )
        .unwrap();
    let AcceptOutcome::Queued(a) = out[0] else {
        panic!("{out:?}")
    };
    assert_eq!(out[1], AcceptOutcome::Duplicate(a));
    assert!(
        matches!(out[2], AcceptOutcome::Queued(b) if b > a),
        "ids grow"
    );
    let again = s.accept_batch(&[accept("a", &["x"])], 101).unwrap();
    assert_eq!(again, vec![AcceptOutcome::Duplicate(a)]);
    assert_eq!(
        s.accepted(&[accept("a", &[]), accept("z", &[])]).unwrap(),
        vec![Some(a), None]
    );
}

pub fn a_webhook_without_lanes_is_only_remembered(open: &Open) {
    let (_d, s) = fresh(open);
    s.accept_batch(&[accept("a", &[])], 100).unwrap();
    assert!(s.lanes().unwrap().is_empty());
    assert!(s.stats().unwrap().0.is_empty());
    assert!(matches!(
        s.accept_batch(&[accept("a", &[])], 101).unwrap()[0],
        AcceptOutcome::Duplicate(_)
    ));
}

pub fn claim_leases_and_complete_forgets(open: &Open) {
    let (_d, s) = fresh(open);
    s.accept_batch(&[accept("a", &["x", "y"])], 100).unwrap();
    assert!(
        s.next_due("x").unwrap().is_some_and(|d| d <= 100),
        "due at once"
    );
    let c = s.claim_due("x", 100, 1000, 10).unwrap();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].record.targets, ["x"]);
    assert_eq!(c[0].record.attempts, 0);
    assert!(
        s.claim_due("x", 500, 2000, 10).unwrap().is_empty(),
        "leased"
    );
    assert_eq!(s.next_due("x").unwrap(), Some(1000), "when the lease ends");
    // The lease ends with no outcome written: due again, under a new lease.
    let again = s.claim_due("x", 1000, 3000, 10).unwrap();
    assert_eq!(again.len(), 1);
    assert_ne!(again[0].lease, c[0].lease);
    s.complete_many("x", &[(again[0].record.id, again[0].lease)])
        .unwrap();
    assert_eq!(s.next_due("x").unwrap(), None);
    assert!(s.claim_due("x", 5000, 6000, 10).unwrap().is_empty());
    // Lane y still has its own delivery of the same webhook.
    let y = s.claim_due("y", 100, 1000, 10).unwrap();
    assert_eq!(y[0].webhook.body().as_ref(), br#"{"id":1}"#);
    assert_eq!(y[0].webhook.meta().dedup_id, "a");
    s.complete_many("y", &[(y[0].record.id, y[0].lease)])
        .unwrap();
    let (lanes, dead) = s.stats().unwrap();
    assert!(lanes.is_empty() && dead == 0, "{lanes:?}");
}

pub fn a_failed_attempt_is_due_again_at_its_retry_time(open: &Open) {
    let (_d, s) = fresh(open);
    s.accept_batch(&[accept("a", &["x"]), accept("b", &["x"])], 100)
        .unwrap();
    let c = s.claim_due("x", 100, 1000, 1).unwrap();
    assert_eq!(c.len(), 1);
    s.update(&failed(&c[0], 5000), c[0].lease).unwrap();
    assert_eq!(pending(&*s, "x"), 2);
    // The other one is claimable now; the failed one not before 5000.
    let b = s.claim_due("x", 200, 1000, 10).unwrap();
    assert_eq!(b.len(), 1);
    assert_ne!(b[0].record.id, c[0].record.id);
    s.complete_many("x", &[(b[0].record.id, b[0].lease)])
        .unwrap();
    assert_eq!(s.next_due("x").unwrap(), Some(5000));
    assert!(s.claim_due("x", 4999, 9000, 10).unwrap().is_empty());
    let r = s.claim_due("x", 5000, 9000, 10).unwrap();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].record.attempts, 1, "progress kept");
    assert_eq!(r[0].record.last_error.as_deref(), Some("HTTP 503"));
    assert_eq!(r[0].webhook.body().as_ref(), br#"{"id":1}"#);
    // A second failure reschedules again.
    s.update(&failed(&r[0], 7000), r[0].lease).unwrap();
    assert_eq!(s.next_due("x").unwrap(), Some(7000));
    let r = s.claim_due("x", 7000, 9000, 10).unwrap();
    assert_eq!(r[0].record.attempts, 2);
    s.complete_many("x", &[(r[0].record.id, r[0].lease)])
        .unwrap();
    assert_eq!(pending(&*s, "x"), 0);
    assert_eq!(s.next_due("x").unwrap(), None);
}

pub fn bury_list_replay_purge(open: &Open) {
    let (_d, s) = fresh(open);
    s.accept_batch(&[accept("a", &["x"]), accept("b", &["x"])], 100)
        .unwrap();
    let claimed = s.claim_due("x", 100, 1000, 10).unwrap();
    assert_eq!(claimed.len(), 2);
    // One dies at once (a 4xx), the other after a retry.
    s.bury(&dead(&claimed[0].record, 200, "HTTP 400"), claimed[0].lease)
        .unwrap();
    s.update(&failed(&claimed[1], 300), claimed[1].lease)
        .unwrap();
    let r = s.claim_due("x", 300, 1000, 10).unwrap();
    s.bury(&dead(&r[0].record, 300, "gave up"), r[0].lease)
        .unwrap();
    assert_eq!(s.next_due("x").unwrap(), None);
    let dl = s.dead_letters(None, 10).unwrap();
    assert_eq!(dl.len(), 2);
    assert!(dl.iter().all(|d| {
        d.webhook
            .as_ref()
            .is_some_and(|w| w.body().as_ref() == br#"{"id":1}"#)
    }));
    let page2 = s.dead_letters(Some(dl[0].record.id), 10).unwrap();
    assert_eq!(page2.len(), 1);
    assert_eq!(page2[0].record.id, dl[1].record.id);
    assert_eq!(s.stats().unwrap().1, 2);

    assert_eq!(
        s.replay(dl[0].record.id, 400).unwrap().as_deref(),
        Some("x")
    );
    assert_eq!(
        s.replay(dl[0].record.id, 400).unwrap(),
        None,
        "no longer dead"
    );
    let again = s.claim_due("x", 400, 1000, 10).unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].record.attempts, 0);
    assert_eq!(again[0].record.first_attempt_at_ms, None);
    assert_eq!(again[0].webhook.meta().dedup_id, "a");
    s.complete_many("x", &[(again[0].record.id, again[0].lease)])
        .unwrap();

    assert!(s.purge(dl[1].record.id).unwrap());
    assert!(!s.purge(dl[1].record.id).unwrap());
    assert!(s.dead_letter(dl[1].record.id).unwrap().is_none());
    assert_eq!(s.stats().unwrap().1, 0);
    assert!(s.stats().unwrap().0.is_empty());
}

pub fn dedup_expires_after_the_window(open: &Open) {
    let (_d, s) = fresh(open);
    s.accept_batch(&[accept("a", &[])], 100).unwrap();
    assert_eq!(s.expire_dedup(100).unwrap(), 0);
    assert_eq!(s.expire_dedup(101).unwrap(), 1);
    assert!(matches!(
        s.accept_batch(&[accept("a", &[])], 200).unwrap()[0],
        AcceptOutcome::Queued(_)
    ));
}

pub fn survives_reopen(open: &Open) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    let (dead_id, a) = {
        let s = open(&path);
        let c = abc_claimed(s.as_ref());
        // a: in flight at the stop; b: retrying; c: dead.
        s.update(&failed(&c[1], 2000), c[1].lease).unwrap();
        s.bury(&dead(&c[2].record, 200, "HTTP 400"), c[2].lease)
            .unwrap();
        s.flush().unwrap();
        (c[2].record.id, c[0].record.id)
    };
    let s = open(&path);
    // What was in flight when the process went away is due at once.
    let c = s.claim_due("x", 200, 1000, 10).unwrap();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].record.id, a);
    assert_eq!(s.next_due("x").unwrap(), Some(1000));
    s.complete_many("x", &[(c[0].record.id, c[0].lease)])
        .unwrap();
    assert_eq!(s.next_due("x").unwrap(), Some(2000));
    let r = s.claim_due("x", 2000, 3000, 10).unwrap();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].record.attempts, 1);
    assert!(s.dead_letter(dead_id).unwrap().is_some());
    assert_eq!(pending(&*s, "x"), 1);
    assert!(matches!(
        s.accept_batch(&[accept("a", &["x"])], 200).unwrap()[0],
        AcceptOutcome::Duplicate(_)
    ));
    let d = s.accept_batch(&[accept("d", &["x"])], 200).unwrap();
    assert!(
        matches!(d[0], AcceptOutcome::Queued(id) if id > dead_id.webhook),
        "ids keep growing"
    );
}

pub fn an_outcome_after_the_lease_ended_changes_nothing(open: &Open) {
    let (_d, s) = fresh(open);
    s.accept_batch(&[accept("a", &["x"]), accept("b", &["x"])], 100)
        .unwrap();
    // Both attempts outlive their leases (ending at 150) and are claimed again.
    let old = s.claim_due("x", 100, 150, 10).unwrap();
    let new = s.claim_due("x", 150, 10_000, 10).unwrap();
    assert_eq!(new.len(), 2);
    // The stale outcomes arrive: a failure, a dead letter. Neither applies.
    s.update(&failed(&old[0], 9000), old[0].lease).unwrap();
    s.bury(&dead(&old[1].record, 160, "stale"), old[1].lease)
        .unwrap();
    assert_eq!(s.stats().unwrap().1, 0, "no phantom dead letter");
    assert!(s.dead_letters(None, 10).unwrap().is_empty());
    assert_eq!(pending(&*s, "x"), 2);
    // The current claims' outcomes do.
    s.complete_many("x", &[(new[0].record.id, new[0].lease)])
        .unwrap();
    s.update(&failed(&new[1], 500), new[1].lease).unwrap();
    assert_eq!(s.next_due("x").unwrap(), Some(500));
    // A stale success on the retry does not forget it either.
    s.complete_many("x", &[(old[1].record.id, old[1].lease)])
        .unwrap();
    assert_eq!(pending(&*s, "x"), 1);
    // Same for a retry from the index whose lease ends.
    let r1 = s.claim_due("x", 500, 600, 10).unwrap();
    let r2 = s.claim_due("x", 600, 10_000, 10).unwrap();
    assert_eq!((r1.len(), r2.len()), (1, 1));
    s.bury(&dead(&r1[0].record, 610, "stale"), r1[0].lease)
        .unwrap();
    s.complete_many("x", &[(r1[0].record.id, r1[0].lease)])
        .unwrap();
    assert_eq!(s.stats().unwrap().1, 0);
    assert_eq!(pending(&*s, "x"), 1);
    s.complete_many("x", &[(r2[0].record.id, r2[0].lease)])
        .unwrap();
    assert_eq!(pending(&*s, "x"), 0);
}

pub fn complete_many_is_complete_for_each(open: &Open) {
    let (_d, s) = fresh(open);
    s.accept_batch(
        &[
            accept("a", &["x", "y"]),
            accept("b", &["x", "y"]),
            accept("c", &["x"]),
        ],
        100,
    )
    .unwrap();
    let x = s.claim_due("x", 100, 1000, 10).unwrap();
    let y = s.claim_due("y", 100, 1000, 10).unwrap();
    assert_eq!((x.len(), y.len()), (3, 2));
    let ghost = DeliveryId {
        webhook: 999_999,
        slot: 0,
    };
    let done: Vec<(DeliveryId, u64)> = x.iter().map(|c| (c.record.id, c.lease)).collect();
    let mut with_noise = done.clone();
    with_noise.push(done[2]);
    with_noise.push((ghost, 1));
    s.complete_many("x", &with_noise).unwrap();
    assert_eq!(pending(&*s, "x"), 0);
    assert_eq!(pending(&*s, "y"), 2);
    s.complete_many("y", &[(y[1].record.id, y[1].lease)])
        .unwrap();
    assert_eq!(pending(&*s, "y"), 1);
    s.complete_many("y", &[(y[0].record.id, y[0].lease)])
        .unwrap();
    assert!(s.stats().unwrap().0.is_empty());
}

/// `complete_in_memory` (on the async worker), then `complete_many` of what
/// it left, ends exactly the deliveries `complete_many` alone would: first
/// attempts and retries alike, and none whose lease has moved on.
pub fn completing_in_memory_first_is_the_same_as_complete_many(open: &Open) {
    let (_d, s) = fresh(open);
    let c = abc_claimed(s.as_ref());
    // b becomes a retry (its record in the index), claimed again.
    s.update(&failed(&c[1], 200), c[1].lease).unwrap();
    let b = s.claim_due("x", 200, 1000, 10).unwrap();
    assert_eq!(b.len(), 1);
    let stale = (c[2].record.id, c[2].lease + 1_000_000);
    let mut done = vec![
        (c[0].record.id, c[0].lease),
        (b[0].record.id, b[0].lease),
        stale,
    ];
    s.complete_in_memory("x", &mut done);
    s.complete_many("x", &done).unwrap();
    assert_eq!(
        pending(&*s, "x"),
        1,
        "c, whose token was wrong, is still pending"
    );
    s.complete_many("x", &[(c[2].record.id, c[2].lease)])
        .unwrap();
    assert!(s.stats().unwrap().0.is_empty());
}

pub fn counts_follow_every_operation(open: &Open) {
    let (_d, s) = fresh(open);
    let check = |s: &dyn Store, step: &str, x: u64, y: u64, dead: u64| {
        let (lanes, d) = s.stats().unwrap();
        let got = (
            lanes.get("x").map_or(0, |l| l.pending),
            lanes.get("y").map_or(0, |l| l.pending),
            d,
        );
        assert_eq!(got, (x, y, dead), "after {step}");
    };
    s.accept_batch(
        &[
            accept("a", &["x", "y"]),
            accept("b", &["x"]),
            accept("a", &["x"]),
        ],
        100,
    )
    .unwrap();
    check(&*s, "accept", 2, 1, 0);
    let c = s.claim_due("x", 100, 1000, 10).unwrap();
    check(&*s, "claim", 2, 1, 0);
    s.update(&failed(&c[0], 150), c[0].lease).unwrap();
    check(&*s, "update", 2, 1, 0);
    s.complete_many("x", &[(c[1].record.id, c[1].lease)])
        .unwrap();
    check(&*s, "complete", 1, 1, 0);
    let r = s.claim_due("x", 150, 1000, 10).unwrap();
    let buried = dead(&r[0].record, 200, "x");
    s.bury(&buried, r[0].lease).unwrap();
    s.bury(&buried, r[0].lease).unwrap();
    check(&*s, "bury twice", 0, 1, 1);
    s.replay(buried.id, 300).unwrap();
    check(&*s, "replay", 1, 1, 0);
    let y = s.claim_due("y", 100, 1000, 10).unwrap();
    s.complete_many("y", &[(y[0].record.id, y[0].lease)])
        .unwrap();
    check(&*s, "complete y", 1, 0, 0);
    let again = s.claim_due("x", 300, 1000, 10).unwrap();
    let d2 = dead(&again[0].record, 400, "y");
    s.bury(&d2, again[0].lease).unwrap();
    check(&*s, "bury", 0, 0, 1);
    s.purge(d2.id).unwrap();
    check(&*s, "purge", 0, 0, 0);
}

pub fn lanes_with_work_are_listed(open: &Open) {
    let (_d, s) = fresh(open);
    s.accept_batch(
        &[
            accept("a", &["x", "y"]),
            accept("b", &["x"]),
            accept("c", &["x-y"]),
        ],
        100,
    )
    .unwrap();
    assert_eq!(s.lanes().unwrap(), ["x", "x-y", "y"]);
    let y = s.claim_due("y", 100, 1000, 10).unwrap();
    s.complete_many("y", &[(y[0].record.id, y[0].lease)])
        .unwrap();
    assert_eq!(s.lanes().unwrap(), ["x", "x-y"]);
}

use crate::mapping::{Erase, IdKind, Learned};

fn put(s: &dyn Store, scope: &str, kind: IdKind, key: &str, value: &str, now: u64) {
    s.identity_put(scope, &[(kind, key.into(), value.into())], now)
        .unwrap();
}

pub fn identity_entries_are_kept_per_scope_and_kind(open: &Open) {
    let (_d, s) = fresh(open);
    let s = s.as_ref();
    assert_eq!(
        s.identity_get("a.shop", IdKind::Customer, "1").unwrap(),
        None
    );
    put(s, "a.shop", IdKind::Customer, "1", "ann@example.com", 100);
    put(s, "a.shop", IdKind::Order, "1", "{}", 100);
    put(s, "b.shop", IdKind::Customer, "1", "bob@example.com", 100);
    let get = |scope, kind, key| s.identity_get(scope, kind, key).unwrap();
    assert_eq!(
        get("a.shop", IdKind::Customer, "1").as_deref(),
        Some("ann@example.com")
    );
    assert_eq!(
        get("b.shop", IdKind::Customer, "1").as_deref(),
        Some("bob@example.com")
    );
    assert_eq!(get("a.shop", IdKind::Order, "1").as_deref(), Some("{}"));
    assert_eq!(get("a.shop", IdKind::Token, "1"), None);
    // A scope that is a prefix of another is its own scope.
    assert_eq!(get("a.sho", IdKind::Customer, "1"), None);
    // Overwrite.
    put(s, "a.shop", IdKind::Customer, "1", "ann@new.example", 200);
    assert_eq!(
        get("a.shop", IdKind::Customer, "1").as_deref(),
        Some("ann@new.example")
    );

    for o in ["7/3", "7/1", "70/9", "7/2"] {
        put(s, "a.shop", IdKind::OrderOf, o, "", 100);
    }
    let scan = s
        .identity_scan("a.shop", IdKind::OrderOf, "7/", 10)
        .unwrap();
    let keys: Vec<_> = scan.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["7/1", "7/2", "7/3"], "in key order, prefix only");
    assert_eq!(
        s.identity_scan("a.shop", IdKind::OrderOf, "7/", 2)
            .unwrap()
            .len(),
        2
    );
    assert!(
        s.identity_scan("b.shop", IdKind::OrderOf, "", 10)
            .unwrap()
            .is_empty()
    );
}

pub fn identity_erase_and_expire(open: &Open) {
    let (_d, s) = fresh(open);
    let s = s.as_ref();
    put(s, "a.shop", IdKind::Customer, "1", "ann@example.com", 100);
    put(s, "a.shop", IdKind::Token, "cart:x", "anon", 100);
    put(s, "a.shop", IdKind::Order, "5", "{}", 300);
    put(s, "b.shop", IdKind::Customer, "1", "bob@example.com", 100);
    s.identity_delete(
        "a.shop",
        &[
            (IdKind::Token, "cart:x".into()),
            (IdKind::Token, "none".into()),
        ],
    )
    .unwrap();
    assert_eq!(
        s.identity_get("a.shop", IdKind::Token, "cart:x").unwrap(),
        None
    );

    assert_eq!(
        s.identity_expire(200).unwrap(),
        2,
        "a.shop's customer and b.shop's"
    );
    assert_eq!(
        s.identity_get("a.shop", IdKind::Customer, "1").unwrap(),
        None
    );
    assert_eq!(
        s.identity_get("a.shop", IdKind::Order, "5")
            .unwrap()
            .as_deref(),
        Some("{}")
    );

    put(s, "b.shop", IdKind::Customer, "1", "bob@example.com", 400);
    assert_eq!(s.identity_erase_scope("a.shop").unwrap(), 1);
    assert_eq!(s.identity_get("a.shop", IdKind::Order, "5").unwrap(), None);
    assert!(
        s.identity_get("b.shop", IdKind::Customer, "1")
            .unwrap()
            .is_some()
    );
}

pub fn identity_apply_erases_a_customer_and_its_orders(open: &Open) {
    let (_d, s) = fresh(open);
    let s = s.as_ref();
    let learned = Learned {
        scope: "a.shop".into(),
        put: vec![
            (IdKind::Customer, "7".into(), "ann@example.com".into()),
            (IdKind::Order, "1".into(), "{}".into()),
            (IdKind::OrderOf, "7/1".into(), String::new()),
            (IdKind::Order, "2".into(), "{}".into()),
            (IdKind::OrderOf, "7/2".into(), String::new()),
            (IdKind::Order, "3".into(), "{}".into()),
        ],
        ..Learned::default()
    };
    identity::apply(s, &learned, 100).unwrap();
    let erase = Learned {
        scope: "a.shop".into(),
        erase: Some(Erase {
            customer: "7".into(),
            orders: vec!["2".into(), "9".into()],
        }),
        ..Learned::default()
    };
    identity::apply(s, &erase, 200).unwrap();
    identity::apply(s, &erase, 200).unwrap();
    let get = |kind, key| s.identity_get("a.shop", kind, key).unwrap();
    assert_eq!(get(IdKind::Customer, "7"), None);
    assert_eq!(get(IdKind::Order, "1"), None, "found through OrderOf");
    assert_eq!(get(IdKind::Order, "2"), None, "listed");
    assert_eq!(
        get(IdKind::Order, "3").as_deref(),
        Some("{}"),
        "another customer's"
    );
    assert!(
        s.identity_scan("a.shop", IdKind::OrderOf, "7/", 10)
            .unwrap()
            .is_empty()
    );
    for erased in ["customer:7", "order:1", "order:2", "order:9"] {
        assert!(get(IdKind::Erased, erased).is_some(), "{erased}");
    }
    assert!(get(IdKind::Erased, "order:3").is_none());

    identity::apply(
        s,
        &Learned {
            scope: "a.shop".into(),
            erase_scope: true,
            ..Learned::default()
        },
        300,
    )
    .unwrap();
    for kind in IdKind::ALL {
        assert!(
            s.identity_scan("a.shop", kind, "", 10).unwrap().is_empty(),
            "{kind:?}"
        );
    }
}

pub fn identity_survives_reopen(open: &Open) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    {
        let s = open(&path);
        put(
            s.as_ref(),
            "a.shop",
            IdKind::Customer,
            "1",
            "ann@example.com",
            100,
        );
        s.flush().unwrap();
    }
    let s = open(&path);
    assert_eq!(
        s.identity_get("a.shop", IdKind::Customer, "1")
            .unwrap()
            .as_deref(),
        Some("ann@example.com")
    );
}
