//! The contract every `Store` backend must keep, run against sled on a temp dir.

use bytes::Bytes;

use super::sled::SledStore;
use super::*;
use crate::sources::{SourceKind, WebhookMeta};

fn webhook(dedup: &str) -> Webhook {
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
            received_at_ms: 1,
        },
        Bytes::from_static(br#"{"id":1}"#),
    )
}

fn accept(dedup: &str, lanes: &[&str]) -> Accept {
    Accept {
        webhook: webhook(dedup),
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
fn dead(rec: &DeliveryRecord, at_ms: u64, reason: &str) -> DeliveryRecord {
    let mut d = rec.clone();
    d.state = DeliveryState::Dead {
        dead_at_ms: at_ms,
        reason: reason.into(),
    };
    d
}

/// Why a dead letter is one.
fn reason_of(d: &DeadLetter) -> &str {
    match &d.record.state {
        DeliveryState::Dead { reason, .. } => reason,
        other => panic!("not dead: {other:?}"),
    }
}

fn store() -> (tempfile::TempDir, SledStore) {
    let dir = tempfile::tempdir().unwrap();
    let s = SledStore::open(dir.path()).unwrap();
    (dir, s)
}

#[test]
fn accept_dedups_within_and_across_batches() {
    let (_d, s) = store();
    let out = s
        .accept_batch(
            &[
                accept("a", &["x"]),
                accept("a", &["x"]),
                accept("b", &["x"]),
            ],
            10,
        )
        .unwrap();
    let AcceptOutcome::Queued(a) = out[0] else {
        panic!("{out:?}")
    };
    assert_eq!(out[1], AcceptOutcome::Duplicate(a));
    assert!(matches!(out[2], AcceptOutcome::Queued(b) if b != a));
    let again = s.accept_batch(&[accept("a", &["x"])], 11).unwrap();
    assert_eq!(again, vec![AcceptOutcome::Duplicate(a)]);
}

#[test]
fn claim_leases_and_complete_forgets() {
    let (_d, s) = store();
    s.accept_batch(&[accept("a", &["x", "y"])], 100).unwrap();
    assert_eq!(s.next_due("x").unwrap(), Some(100));
    assert!(
        s.claim_due("x", 99, 1000, 10).unwrap().is_empty(),
        "not yet due"
    );
    let c = s.claim_due("x", 100, 1000, 10).unwrap();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].record.due_ms, 100, "a claim writes nothing");
    assert!(
        s.claim_due("x", 500, 2000, 10).unwrap().is_empty(),
        "leased"
    );
    assert_eq!(s.next_due("x").unwrap(), Some(1000), "when the lease ends");
    // The lease ends with no outcome written: due again.
    assert_eq!(s.claim_due("x", 1000, 3000, 10).unwrap().len(), 1);
    s.complete(c[0].record.id).unwrap();
    assert_eq!(s.next_due("x").unwrap(), None);
    // The webhook stays while lane y still needs it.
    let y = s.claim_due("y", 100, 1000, 10).unwrap();
    assert_eq!(y[0].webhook.body().as_ref(), br#"{"id":1}"#);
    s.complete(y[0].record.id).unwrap();
    let (lanes, dead) = s.stats().unwrap();
    assert!(lanes.is_empty() && dead == 0, "{lanes:?}");
    assert!(
        s.get_webhook(y[0].record.id.webhook).unwrap().is_none(),
        "webhook deleted with its last delivery"
    );
}

#[test]
fn update_reschedules() {
    let (_d, s) = store();
    s.accept_batch(&[accept("a", &["x"])], 100).unwrap();
    let mut r = s.claim_due("x", 100, 1000, 10).unwrap().remove(0).record;
    r.due_ms = 5000;
    r.attempts = 1;
    s.update(&r).unwrap();
    assert_eq!(s.next_due("x").unwrap(), Some(5000));
    let (lanes, _) = s.stats().unwrap();
    assert_eq!(lanes["x"].pending, 1);
}

#[test]
fn bury_list_replay_purge() {
    let (_d, s) = store();
    s.accept_batch(&[accept("a", &["x"]), accept("b", &["x"])], 100)
        .unwrap();
    let claimed = s.claim_due("x", 100, 1000, 10).unwrap();
    for c in &claimed {
        s.bury(&dead(&c.record, 200, "HTTP 400")).unwrap();
    }
    assert_eq!(s.next_due("x").unwrap(), None);
    let dl = s.dead_letters(None, 10).unwrap();
    assert_eq!(dl.len(), 2);
    assert!(dl[0].webhook.is_some());
    let page2 = s.dead_letters(Some(dl[0].record.id), 10).unwrap();
    assert_eq!(page2.len(), 1);
    assert_eq!(page2[0].record.id, dl[1].record.id);

    assert_eq!(
        s.replay(dl[0].record.id, 300).unwrap().as_deref(),
        Some("x")
    );
    assert_eq!(
        s.replay(dl[0].record.id, 300).unwrap(),
        None,
        "no longer dead"
    );
    let again = s.claim_due("x", 300, 400, 10).unwrap();
    assert_eq!(again[0].record.attempts, 0);
    assert_eq!(again[0].record.first_attempt_at_ms, None);

    assert!(s.purge(dl[1].record.id).unwrap());
    assert!(!s.purge(dl[1].record.id).unwrap());
    assert!(s.get_webhook(dl[1].record.id.webhook).unwrap().is_none());
    assert_eq!(s.stats().unwrap().1, 0);
}

#[test]
fn dedup_expires_after_the_window() {
    let (_d, s) = store();
    s.accept_batch(&[accept("a", &[])], 100).unwrap();
    assert_eq!(s.expire_dedup(100).unwrap(), 0);
    assert_eq!(s.expire_dedup(101).unwrap(), 1);
    assert!(matches!(
        s.accept_batch(&[accept("a", &[])], 200).unwrap()[0],
        AcceptOutcome::Queued(_)
    ));
}

#[test]
fn survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = SledStore::open(dir.path()).unwrap();
        s.accept_batch(&[accept("a", &["x"])], 100).unwrap();
        s.claim_due("x", 100, 1000, 10).unwrap();
    }
    // What was in flight when the process went away is due at once.
    let s = SledStore::open(dir.path()).unwrap();
    assert_eq!(s.next_due("x").unwrap(), Some(100));
    assert_eq!(s.claim_due("x", 200, 1000, 10).unwrap().len(), 1);
    assert!(matches!(
        s.accept_batch(&[accept("a", &["x"])], 200).unwrap()[0],
        AcceptOutcome::Duplicate(_)
    ));
}

#[test]
fn a_crash_leaves_claimed_deliveries_due_and_old_lease_markers_are_released() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = SledStore::open(dir.path()).unwrap();
        s.accept_batch(
            &[
                accept("a", &["x"]),
                accept("b", &["x"]),
                accept("c", &["x"]),
            ],
            100,
        )
        .unwrap();
        let c = s.claim_due("x", 100, 60_000, 2).unwrap();
        // Two in flight, one waiting; one of the two as a relay before 0.2
        // stored a lease (due entry moved to the lease end, marker); then the
        // process dies.
        assert_eq!(c.len(), 2);
        s.put_old_lease(c[0].record.id, 60_000);
        s.flush().unwrap();
    }
    let s = SledStore::open(dir.path()).unwrap();
    assert_eq!(s.release_leases(200).unwrap(), 1, "the old marker");
    assert_eq!(s.release_leases(200).unwrap(), 0, "and only once");
    assert_eq!(
        s.claim_due("x", 200, 300, 10).unwrap().len(),
        3,
        "all three due again"
    );
}

#[test]
fn lanes_are_listed_without_a_scan() {
    let (_d, s) = store();
    s.accept_batch(
        &[
            accept("a", &["x", "y"]),
            accept("b", &["x"]),
            accept("c", &["x-y"]),
        ],
        1,
    )
    .unwrap();
    assert_eq!(s.lanes().unwrap(), ["x", "x-y", "y"]);
}

#[test]
fn delivery_ids_round_trip() {
    let id = DeliveryId {
        webhook: 0x4d2,
        slot: 3,
    };
    assert_eq!(id.to_string(), "00000000000004d2-3");
    assert_eq!("00000000000004d2-3".parse::<DeliveryId>(), Ok(id));
    for bad in [
        "",
        "4d2-3",
        "00000000000004d2",
        "zzzzzzzzzzzzzzzz-1",
        "00000000000004d2-x",
    ] {
        assert!(bad.parse::<DeliveryId>().is_err(), "{bad}");
    }
}

#[test]
fn complete_many_is_complete_for_each() {
    let (_d, s) = store();
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
    // a: both deliveries in one batch; b: only lane x's; c: its only one;
    // an unknown id and a repeat are ignored.
    let (a, b, c) = (x[0].record.id, x[1].record.id, x[2].record.id);
    let ya = y[0].record.id;
    let ghost = DeliveryId {
        webhook: 999_999,
        slot: 0,
    };
    s.complete_many(&[a, ya, b, c, c, ghost]).unwrap();
    assert!(
        s.get_webhook(a.webhook).unwrap().is_none(),
        "a: last deliveries gone"
    );
    assert!(
        s.get_webhook(c.webhook).unwrap().is_none(),
        "c: only delivery gone"
    );
    assert!(
        s.get_webhook(b.webhook).unwrap().is_some(),
        "b: lane y still needs it"
    );
    let (lanes, _) = s.stats().unwrap();
    assert_eq!(lanes.get("x"), None);
    assert_eq!(lanes["y"].pending, 1);
    s.complete_many(&[y[1].record.id]).unwrap();
    assert!(s.get_webhook(b.webhook).unwrap().is_none());
    assert!(s.stats().unwrap().0.is_empty());
}

#[test]
fn kept_counts_match_a_fresh_count_through_every_operation() {
    let (_d, s) = store();
    s.stats().unwrap(); // load the counts first, then change everything
    let check = |s: &SledStore, step: &str| {
        let (lanes, dead) = s.stats().unwrap();
        let fresh = s.count().unwrap();
        let kept: std::collections::BTreeMap<String, i64> = lanes
            .iter()
            .map(|(k, v)| (k.clone(), v.pending as i64))
            .collect();
        let recount: std::collections::BTreeMap<String, i64> =
            fresh.pending.into_iter().filter(|(_, n)| *n > 0).collect();
        assert_eq!(kept, recount, "after {step}");
        assert_eq!(dead as i64, fresh.dead, "after {step}");
    };
    s.accept_batch(
        &[
            accept("a", &["x", "y"]),
            accept("b", &["x"]),
            accept("a", &["x"]),
        ],
        10,
    )
    .unwrap();
    check(&s, "accept");
    let c = s.claim_due("x", 10, 100, 10).unwrap();
    check(&s, "claim");
    let mut r = c[0].record.clone();
    r.due_ms = 50;
    s.update(&r).unwrap();
    check(&s, "update");
    s.complete_many(&[c[1].record.id]).unwrap();
    check(&s, "complete_many");
    let buried = dead(&c[0].record, 20, "x");
    s.bury(&buried).unwrap();
    s.bury(&buried).unwrap();
    check(&s, "bury twice");
    s.replay(buried.id, 30).unwrap();
    check(&s, "replay");
    let y = s.claim_due("y", 10, 100, 10).unwrap();
    s.complete(y[0].record.id).unwrap();
    check(&s, "complete");
    let again = s.claim_due("x", 30, 100, 10).unwrap();
    let d2 = dead(&again[0].record, 40, "y");
    s.bury(&d2).unwrap();
    s.purge(d2.id).unwrap();
    check(&s, "purge");
    assert_eq!(s.release_leases(1_000).unwrap(), 0);
    check(&s, "release");
    let (lanes, dead) = s.stats().unwrap();
    assert!(lanes.is_empty() && dead == 0, "{lanes:?} {dead}");
}

fn accept_body(dedup: &str, lanes: &[&str], body: &str) -> Accept {
    let mut a = accept(dedup, lanes);
    a.webhook = Webhook::from_store(a.webhook.meta().clone(), Bytes::from(body.to_string()));
    a
}

#[test]
fn bodies_are_kept_in_segments_and_deleted_once_every_webhook_in_one_is_done() {
    let dir = tempfile::tempdir().unwrap();
    let segments_on_disk = || {
        std::fs::read_dir(dir.path().join("bodies"))
            .unwrap()
            .count()
    };
    // 1-byte segments: every batch starts a new one.
    let s = SledStore::open_with(dir.path(), 1).unwrap();
    s.keep_free(0); // the moves under test, whatever the disk holds
    for (i, batch) in [["a", "b"], ["c", "d"], ["e", "f"]].iter().enumerate() {
        let items: Vec<Accept> = batch
            .iter()
            .map(|d| accept_body(d, &["x"], &format!("{{\"n\":\"{d}{i}\"}}")))
            .collect();
        s.accept_batch(&items, 100).unwrap();
    }
    // A webhook without deliveries keeps no body.
    s.accept_batch(&[accept("none", &[])], 100).unwrap();
    assert_eq!((s.body_segments(), segments_on_disk()), (3, 3));

    let claimed = s.claim_due("x", 100, 1000, 10).unwrap();
    let bodies: Vec<&[u8]> = claimed.iter().map(|c| &c.webhook.body()[..]).collect();
    assert_eq!(
        bodies,
        [
            &br#"{"n":"a0"}"#[..],
            br#"{"n":"b0"}"#,
            br#"{"n":"c1"}"#,
            br#"{"n":"d1"}"#,
            br#"{"n":"e2"}"#,
            br#"{"n":"f2"}"#,
        ]
    );
    assert_eq!(s.reclaim().unwrap(), 0, "every segment still in use");
    // One of the first batch done: its segment stays.
    s.complete(claimed[0].record.id).unwrap();
    assert_eq!(s.reclaim().unwrap(), 0);
    // Both of the first batch and all of the last (the active segment) done.
    for c in [&claimed[1], &claimed[4], &claimed[5]] {
        s.complete(c.record.id).unwrap();
    }
    assert_eq!(s.reclaim().unwrap(), br#"{"n":"a0"}"#.len() as u64 * 2);
    assert_eq!(
        (s.body_segments(), segments_on_disk()),
        (2, 2),
        "the active segment is kept even when empty"
    );
    s.flush().unwrap();
    drop(s);

    // After a restart the rest is still there, and the last segment, no
    // longer active and empty, goes.
    let s = SledStore::open_with(dir.path(), 1).unwrap();
    s.keep_free(0); // the moves under test, whatever the disk holds
    s.release_leases(2000).unwrap();
    let again = s.claim_due("x", 2000, 3000, 10).unwrap();
    let bodies: Vec<&[u8]> = again.iter().map(|c| &c.webhook.body()[..]).collect();
    assert_eq!(bodies, [&br#"{"n":"c1"}"#[..], br#"{"n":"d1"}"#]);
    assert!(s.reclaim().unwrap() > 0);
    assert_eq!(s.body_segments(), 1);
    // A dead letter's body moves into the tree: its segment goes, the body
    // stays readable, through a restart, a replay and the delivery after it.
    let dead = dead(&again[0].record, 3000, "test");
    s.bury(&dead).unwrap();
    s.complete(again[1].record.id).unwrap();
    assert!(s.reclaim().unwrap() > 0);
    assert_eq!((s.body_segments(), segments_on_disk()), (0, 0));
    let letter = s.dead_letter(dead.id).unwrap().unwrap();
    assert_eq!(&letter.webhook.unwrap().body()[..], br#"{"n":"c1"}"#);
    drop(s);
    let s = SledStore::open_with(dir.path(), 1).unwrap();
    s.keep_free(0); // the moves under test, whatever the disk holds
    assert_eq!(s.replay(dead.id, 4000).unwrap().as_deref(), Some("x"));
    let c = s.claim_due("x", 4000, 5000, 10).unwrap();
    assert_eq!(&c[0].webhook.body()[..], br#"{"n":"c1"}"#);
    assert_eq!(s.keys_with_prefix(b'b'), 1);
    s.complete(dead.id).unwrap();
    assert_eq!((s.keys_with_prefix(b'b'), s.keys_with_prefix(b'w')), (0, 0));
}

#[test]
fn dead_bodies_move_in_chunks_a_huge_one_stays_and_old_dead_letters_move_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let s = SledStore::open_with(dir.path(), 1).unwrap();
    s.keep_free(0); // the moves under test, whatever the disk holds
    // 100 KiB of distinct bytes, so that chunks out of order would show.
    let chunked: String = (0..100 << 10)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let chunked = format!("{{\"pad\":\"{chunked}\"}}");
    let huge = format!("{{\"pad\":\"{}\"}}", "x".repeat(1 << 20));
    for (dedup, body) in [
        ("chunked", chunked.as_str()),
        ("huge", &huge),
        ("small", "{}"),
    ] {
        s.accept_batch(&[accept_body(dedup, &["x"], body)], 100)
            .unwrap();
    }
    s.accept_batch(&[accept("last", &["x"])], 100).unwrap();
    let c = s.claim_due("x", 100, 1000, 10).unwrap();
    let bury = |rec: &DeliveryRecord| dead(rec, 100, "test");
    // 100 KiB: moved, in 7 KiB chunks (no sled leaf of them past 128 KiB).
    s.bury(&bury(&c[0].record)).unwrap();
    assert_eq!(s.keys_with_prefix(b'b'), chunked.len().div_ceil(7 << 10));
    // Over 1 MiB: keeps its segment.
    s.bury(&bury(&c[1].record)).unwrap();
    assert_eq!(s.keys_with_prefix(b'b'), chunked.len().div_ceil(7 << 10));
    // A dead letter as a relay before this change left it: body in its segment.
    let small = bury(&c[2].record);
    s.bury_keeping_segment(&small);
    assert_eq!(s.body_segments(), 4);
    drop(s);

    // At start, reclaim moves the old one's body and frees its segment (and
    // the chunked one's, freed since its bury).
    let s = SledStore::open_with(dir.path(), 1).unwrap();
    s.keep_free(0);
    assert_eq!(s.reclaim().unwrap(), (chunked.len() + 2) as u64);
    assert_eq!(s.body_segments(), 2, "the huge one's and the last one's");
    let letter = s.dead_letter(small.id).unwrap().unwrap();
    assert_eq!(&letter.webhook.unwrap().body()[..], b"{}");
    let letter = s.dead_letter(c[0].record.id).unwrap().unwrap();
    assert_eq!(&letter.webhook.unwrap().body()[..], chunked.as_bytes());
    let letter = s.dead_letter(c[1].record.id).unwrap().unwrap();
    assert_eq!(letter.webhook.unwrap().body().len(), huge.len());

    // Purged, a moved body leaves nothing behind.
    s.purge(c[0].record.id).unwrap();
    s.purge(small.id).unwrap();
    assert_eq!(s.keys_with_prefix(b'b'), 0);
}

#[test]
fn a_queue_written_with_bodies_inside_its_records_is_still_read() {
    let (_d, s) = store();
    let out = s.accept_batch(&[accept("a", &["x"])], 100).unwrap();
    let AcceptOutcome::Queued(w) = out[0] else {
        panic!("{out:?}")
    };
    // The record as 0.1 wrote it: version 1, body inline.
    let old = accept_body("a", &["x"], r#"{"id":"written by 0.1"}"#);
    s.put_webhook_record(w, super::record::encode_webhook_inline(&old.webhook));
    let c = s.claim_due("x", 100, 1000, 10).unwrap();
    assert_eq!(&c[0].webhook.body()[..], br#"{"id":"written by 0.1"}"#);
    assert_eq!(c[0].webhook.meta().dedup_id, "a");
}

/// With webhooks "a" and "b" due on lane `x` and something wrong with
/// "a": a claim returns "b" alone, and "a" is the one dead letter, for a
/// reason starting with `why`; the counts say one pending, one dead.
fn b_claimed_and_a_dead(s: &SledStore, why: &str) -> DeadLetter {
    let c = s.claim_due("x", 200, 1000, 10).unwrap();
    assert_eq!(c.len(), 1, "the other delivery is still claimed");
    assert_eq!(c[0].webhook.meta().dedup_id, "b");
    let mut dead = s.dead_letters(None, 10).unwrap();
    assert_eq!(dead.len(), 1);
    let reason = reason_of(&dead[0]);
    assert!(reason.starts_with(why), "{reason}");
    let (lanes, n) = s.stats().unwrap();
    assert_eq!((lanes["x"].pending, n), (1, 1), "{lanes:?}");
    dead.remove(0)
}

#[test]
fn a_webhook_whose_body_is_gone_becomes_a_dead_letter_that_says_so() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = SledStore::open_with(dir.path(), 1).unwrap();
        s.accept_batch(&[accept("a", &["x"])], 100).unwrap();
        s.accept_batch(&[accept("b", &["x"])], 100).unwrap();
        s.flush().unwrap();
    }
    // An operator (or a broken disk) removes the first segment.
    let mut segments: Vec<_> = std::fs::read_dir(dir.path().join("bodies"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segments.sort();
    std::fs::remove_file(&segments[0]).unwrap();

    let s = SledStore::open_with(dir.path(), 1).unwrap();
    let dead = b_claimed_and_a_dead(&s, "the stored webhook cannot be read: body segment");
    assert!(dead.webhook.is_none());
}

#[test]
fn a_delivery_record_that_does_not_decode_becomes_a_dead_letter_and_the_lane_moves_on() {
    let (_d, s) = store();
    let out = s
        .accept_batch(&[accept("a", &["x"]), accept("b", &["x"])], 100)
        .unwrap();
    let AcceptOutcome::Queued(w) = out[0] else {
        panic!("{out:?}")
    };
    let id = DeliveryId {
        webhook: w,
        slot: 0,
    };
    s.stats().unwrap(); // counts kept in memory from here on
    s.put_delivery_record(id, b"\xffnot a record".to_vec());

    let dead = b_claimed_and_a_dead(&s, "the delivery record cannot be read (");
    assert_eq!(dead.record.id, id);
    assert_eq!(dead.record.lane, "x");
    assert!(dead.record.targets.is_empty());
    assert_eq!(dead.webhook.as_ref().unwrap().meta().dedup_id, "a");

    // A replay queues it again on its lane, webhook intact.
    assert_eq!(s.replay(id, 300).unwrap().as_deref(), Some("x"));
    let c = s.claim_due("x", 300, 2000, 10).unwrap();
    assert!(c.iter().any(|c| c.record.id == id), "{}", c.len());
}

#[test]
fn a_dead_letter_body_stays_in_its_segment_when_the_disk_is_short_of_room() {
    let (_d, s) = store();
    s.keep_free(u64::MAX);
    s.accept_batch(&[accept("a", &["x"])], 100).unwrap();
    let c = s.claim_due("x", 100, 1000, 10).unwrap();
    let dead = dead(&c[0].record, 100, "test");
    s.bury(&dead).unwrap();
    assert_eq!(s.keys_with_prefix(b'b'), 0, "no write sled could hang on");
    let letter = s.dead_letter(dead.id).unwrap().unwrap();
    assert_eq!(&letter.webhook.unwrap().body()[..], br#"{"id":1}"#);
}
