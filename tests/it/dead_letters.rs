//! `shoprelay dead-letters list|show|replay|purge`: the real binary against
//! a relay in this process whose destination answers 400, then 200.

use serde_json::Value;

use crate::common::cli::{admin, json, send_test};
use crate::common::relay::{Opts, Relay, SECRET};
use crate::common::within;

#[tokio::test]
async fn unknown_dead_letter_is_a_clear_404() {
    let relay = Relay::start(Opts::default()).await;
    let id = "00000000000000ff-0";
    for args in [
        &["dead-letters", "show", id][..],
        &["dead-letters", "show", id, "--json"],
        &["dead-letters", "replay", id],
        &["dead-letters", "purge", id],
    ] {
        let r = admin(&relay, args, &[]).await;
        assert_eq!(r.code, 1, "{args:?}");
        assert_eq!(
            r.err.trim(),
            format!("error: no dead letter {id}"),
            "{args:?}"
        );
    }
    let r = admin(&relay, &["dead-letters", "replay", "--all"], &[]).await;
    assert_eq!(
        (r.code, r.out.as_str()),
        (0, "replayed 0 dead letter(s)\n"),
        "{}",
        r.err
    );
    let r = admin(&relay, &["dead-letters", "purge", "--all"], &[]).await;
    assert_eq!(
        (r.code, r.out.as_str()),
        (0, "purged 0 dead letter(s)\n"),
        "{}",
        r.err
    );
    relay.stop().await;
}

/// Waits until the relay holds exactly `n` dead letters; returns them (JSON).
async fn wait_dead(relay: &Relay, n: usize) -> Vec<Value> {
    within(&format!("{n} dead letter(s)"), async {
        loop {
            let r = admin(relay, &["dead-letters", "list", "--json"], &[]).await;
            let list = json(&r).as_array().cloned().unwrap_or_default();
            if list.len() == n {
                return list;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
}

async fn send_order(relay: &Relay, topic: &str) {
    let r = send_test(relay, topic, SECRET).await;
    assert_eq!(r.code, 0, "{}{}", r.out, r.err);
}

#[tokio::test]
async fn dead_letters_list_show_replay_purge() {
    use crate::common::receiver::{Answer, TestReceiver};
    let rx = TestReceiver::with(std::sync::Arc::new(|_| Answer {
        body: "{\"error\":\"unknown field\"}".into(),
        ..Answer::status(400)
    }))
    .await;
    let relay = Relay::start(Opts {
        dests: vec![crate::common::relay::Dest {
            name: "warehouse".into(),
            url: rx.url.clone(),
            extra: String::new(),
        }],
        // No identify before the track: one event, one request per webhook.
        extra: "[mapping]\nidentify_on_orders = false\n".into(),
        ..Opts::default()
    })
    .await;
    for topic in ["orders/paid", "refunds/create", "app/uninstalled"] {
        send_order(&relay, topic).await;
    }
    let list = wait_dead(&relay, 3).await;
    for d in &list {
        for key in [
            "id",
            "destination",
            "event",
            "attempts",
            "last_error",
            "first_attempt_at",
            "dead_at",
        ] {
            assert!(!d[key].is_null(), "{key} missing: {d}");
        }
        assert_eq!(d["destination"], "warehouse");
        assert_eq!(d["attempts"], 1, "a 400 is not retried: {d}");
    }
    let ids: Vec<String> = list
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect();

    // The table pages through everything, 2 at a time here.
    let r = admin(
        &relay,
        &["dead-letters", "list", "--page-size", "2"],
        &[("COLUMNS", "100")],
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.err);
    let lines: Vec<&str> = r.out.lines().collect();
    assert_eq!(lines.len(), 5, "{}", r.out);
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("LAST ERROR"),
        "{}",
        r.out
    );
    for (line, id) in lines[1..4].iter().zip(&ids) {
        assert!(
            line.starts_with(id.as_str()) && line.contains("warehouse"),
            "{line}"
        );
        assert!(line.contains("400"), "{line}");
        assert!(line.chars().count() <= 100, "{line}");
    }
    assert!(
        r.out.contains("orders/paid") && r.out.contains("app/uninstalled"),
        "{}",
        r.out
    );
    assert_eq!(lines[4], "3 dead letter(s)");

    let r = admin(&relay, &["dead-letters", "show", &ids[0], "--json"], &[]).await;
    let v = json(&r);
    assert_eq!(v["id"], ids[0].as_str());
    assert!(v["body"].as_str().unwrap().starts_with('{'), "{v}");
    let r = admin(&relay, &["dead-letters", "show", &ids[0]], &[]).await;
    assert_eq!(r.code, 0, "{}", r.err);
    assert!(
        r.out
            .starts_with(&format!("id                {}\n", ids[0])),
        "{}",
        r.out
    );
    assert!(r.out.contains("body ("), "{}", r.out);

    let r = admin(&relay, &["stats", "--json"], &[]).await;
    assert_eq!(json(&r)["dead"], 3);

    // Replay one with the destination fixed: it is delivered, and gone.
    rx.set(std::sync::Arc::new(|_| Answer::status(200)));
    let before = rx.count();
    let r = admin(&relay, &["dead-letters", "replay", &ids[0]], &[]).await;
    assert_eq!(r.code, 0, "{}", r.err);
    assert_eq!(
        r.out,
        format!("replayed {}: it is due for delivery now\n", ids[0])
    );
    let got = rx.wait_for(before + 1).await;
    assert_eq!(got[before].json()["event"], "Order Paid");
    wait_dead(&relay, 2).await;

    let r = admin(&relay, &["dead-letters", "purge", &ids[1]], &[]).await;
    assert_eq!(
        (r.code, r.out.clone()),
        (0, format!("purged {}\n", ids[1])),
        "{}",
        r.err
    );
    wait_dead(&relay, 1).await;
    let r = admin(&relay, &["dead-letters", "replay", "--all"], &[]).await;
    assert_eq!(
        (r.code, r.out.as_str()),
        (0, "replayed 1 dead letter(s)\n"),
        "{}",
        r.err
    );
    let got = rx.wait_for(before + 2).await;
    assert_eq!(got[before + 1].json()["event"], "App Uninstalled");
    wait_dead(&relay, 0).await;

    // purge --all: bury two more, then purge them together.
    rx.set(std::sync::Arc::new(|_| Answer::status(400)));
    send_order(&relay, "orders/paid").await;
    send_order(&relay, "orders/paid").await;
    wait_dead(&relay, 2).await;
    let r = admin(&relay, &["dead-letters", "purge", "--all"], &[]).await;
    assert_eq!(
        (r.code, r.out.as_str()),
        (0, "purged 2 dead letter(s)\n"),
        "{}",
        r.err
    );
    let r = admin(&relay, &["dead-letters", "list"], &[]).await;
    assert_eq!(r.out, "no dead letters\n");
    relay.stop().await;
}
