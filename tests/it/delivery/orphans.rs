//! Work the relay cannot deliver as relay.toml and the store stand: an
//! unmappable webhook, a removed destination, a damaged delivery record.
//! Each becomes a dead letter that says why, never a silent queue.

use super::*;

#[tokio::test]
async fn an_unmappable_webhook_is_a_dead_letter_with_its_body_and_reason() {
    let r = TestReceiver::start().await;
    let relay = Relay::start(Opts {
        dests: vec![dest("wh", &r, "")],
        ..Opts::default()
    })
    .await;
    let body = br#"{"id":42,"email":"x@example.com","line_items":"not a list"}"#.to_vec();
    let h = ShopifyWebhook {
        topic: "orders/create",
        event_id: Some("unmappable".into()),
        body,
        secret: SECRET,
    };
    assert_eq!(
        post(&relay, &h).await["status"],
        "queued",
        "authentic: accepted, never dropped"
    );
    let dl = wait_dead(&relay, 1).await;
    let reason = dl[0]["last_error"].as_str().unwrap();
    assert!(reason.contains("line_items is not an array"), "{reason}");
    let id = dl[0]["id"].as_str().unwrap();
    let shown = get_json(format!("{}/admin/dead-letters/{id}", relay.admin)).await;
    assert!(
        shown["body"].as_str().unwrap().contains("not a list"),
        "raw body kept: {shown}"
    );
    assert_eq!(r.count(), 0);
    // Replay maps it again (still unmappable here, so it comes back with the reason).
    assert_eq!(relay.replay(id).await, 200);
    relay
        .wait_metric(r#"shoprelay_dead_letters_total{lane="wh"} 2"#)
        .await;
    assert_eq!(relay.dead_letters().await.len(), 1);
    relay.stop().await;
}

#[tokio::test]
async fn work_for_a_removed_destination_becomes_dead_letters_not_a_silent_queue() {
    let r = TestReceiver::with(Arc::new(|_| Answer::status(503))).await;
    let slow_retry = "[retry]\ninitial_interval = \"1h\"\nmax_interval = \"1h\"\n";
    let relay = Relay::start(Opts {
        dests: vec![dest("old", &r, "")],
        extra: slow_retry.into(),
        ..Opts::default()
    })
    .await;
    post(&relay, &order(7)).await;
    r.wait_for(1).await;
    let dir = relay.stop().await;
    // Restart with `old` gone from relay.toml: its pending deliveries say why.
    let relay = Relay::start_in(Opts::default(), dir).await;
    let dl = wait_dead(&relay, 1).await;
    let reason = dl[0]["last_error"].as_str().unwrap();
    assert!(
        reason.contains("destination `old` is no longer in relay.toml"),
        "{reason}"
    );
    relay.stop().await;
}

#[tokio::test]
async fn a_damaged_delivery_record_becomes_a_dead_letter_and_replays_to_the_lane() {
    damaged_record_then_replay(false).await;
}

#[tokio::test]
async fn a_damaged_first_success_record_replays_to_the_first_destination() {
    damaged_record_then_replay(true).await;
}

/// Two webhooks pending on disk, one delivery record damaged between two
/// runs: the other is delivered, the damaged one is a dead letter saying
/// why, and its replay reaches the (first) destination relay.toml has for
/// its lane, signed, with the messageId it had before.
async fn damaged_record_then_replay(first_success: bool) {
    // Nothing answers 2xx yet: both deliveries stay pending on disk.
    let r = TestReceiver::with(Arc::new(|_| Answer::status(503))).await;
    let second = TestReceiver::with(Arc::new(|_| Answer::status(503))).await;
    let opts = || Opts {
        dests: if first_success {
            vec![dest("first", &r, ""), dest("second", &second, "")]
        } else {
            vec![dest("wh", &r, "")]
        },
        acme_extra: if first_success {
            "delivery = \"first-success\"".into()
        } else {
            String::new()
        },
        extra: format!("{FAST_RETRY}[mapping]\nidentify_on_orders = false\n"),
        ..Opts::default()
    };
    let relay = Relay::start(opts()).await;
    post(&relay, &order(1)).await;
    post(&relay, &order(2)).await;
    let tried = |n: &str| {
        r.received()
            .iter()
            .any(|x| x.json()["properties"]["order_id"] == n)
    };
    until("both webhooks tried once", || tried("1") && tried("2")).await;
    let dir = relay.stop().await;
    let sent_before = r.count();

    // Damage one delivery record the way a bad disk or a bad upgrade would.
    let damaged_webhook = {
        let db = sled::open(dir.path().join("index")).unwrap();
        let tree = db.open_tree("relay").unwrap();
        let (k, _) = tree.scan_prefix(b"d").next().unwrap().unwrap();
        tree.insert(&k, &b"\xffnot a delivery record"[..]).unwrap();
        db.flush().unwrap();
        hex::encode(&k[1..9])
    };

    r.set(Arc::new(|_| Answer::status(200)));
    let relay = Relay::start_in(opts(), dir).await;
    let dl = wait_dead(&relay, 1).await;
    let d = &dl[0];
    assert_eq!(d["webhook_id"], damaged_webhook.as_str(), "{d}");
    let lane = if first_success {
        "first-success:acme"
    } else {
        "wh"
    };
    assert_eq!(d["destination"], lane, "{d}");
    assert!(
        d["last_error"]
            .as_str()
            .unwrap()
            .starts_with("the delivery record cannot be read ("),
        "{d}"
    );
    relay.wait_drained().await;
    assert_eq!(r.count(), sent_before + 1, "the undamaged webhook, once");

    let id = d["id"].as_str().unwrap();
    assert_eq!(relay.replay(id).await, 200);
    let got = r.wait_for(sent_before + 2).await;
    let last = got.last().unwrap();
    assert_eq!(
        last.header("x-signature").unwrap(),
        sha1_hex(DEST_SECRET, &last.body)
    );
    assert!(
        got[..sent_before]
            .iter()
            .any(|x| x.json()["messageId"] == last.json()["messageId"]),
        "replayed with a new messageId"
    );
    assert!(relay.dead_letters().await.is_empty());
    relay.wait_drained().await;
    relay.stop().await;
}
