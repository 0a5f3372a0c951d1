//! Failed deliveries: what is retried and when (backoff, `Retry-After`,
//! `max_age`), and what goes to the dead letters at once.

use super::*;

fn fail_then_ok(failures: usize, status: u16) -> crate::common::receiver::Script {
    Arc::new(move |n| {
        if n < failures {
            Answer::status(status)
        } else {
            Answer::status(200)
        }
    })
}

#[tokio::test]
async fn server_errors_are_retried_with_backoff_and_delivered_once() {
    // Three 500s, then 200: each event arrives once after its retries.
    let r = TestReceiver::with(fail_then_ok(3, 500)).await;
    let relay = Relay::start(Opts {
        dests: vec![dest("wh", &r, "")],
        extra: FAST_RETRY.into(),
        ..Opts::default()
    })
    .await;
    post(&relay, &order(2)).await;
    let got = r.wait_for(5).await; // 3 failures + identify + track
    relay.wait_drained().await;
    let all = r.received();
    assert_eq!(all.len(), 5, "nothing sent twice after success");
    // Equal jitter: each gap is at least half its base of 100, 200, 400 ms.
    let gaps: Vec<u128> = got
        .windows(2)
        .take(3)
        .map(|w| (w[1].at - w[0].at).as_millis())
        .collect();
    assert!(
        gaps[0] >= 50 && gaps[1] >= 100 && gaps[2] >= 200,
        "backoff gaps {gaps:?}"
    );
    let ids: Vec<String> = all
        .iter()
        .map(|g| g.json()["messageId"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids[0], ids[3], "a retry carries the same messageId");
    assert_ne!(ids[3], ids[4]);
    assert_eq!(relay.stats().await["retrying"], 3);
    relay.stop().await;
}

#[tokio::test]
async fn client_errors_and_redirects_go_to_the_dead_letters_at_once() {
    let bad = TestReceiver::with(Arc::new(|_| Answer {
        body: "missing field userId".into(),
        ..Answer::status(400)
    }))
    .await;
    let redirect = TestReceiver::with(Arc::new(|_| Answer {
        headers: vec![("location".into(), "http://127.0.0.1:1/elsewhere".into())],
        ..Answer::status(302)
    }))
    .await;
    let relay = Relay::start(Opts {
        dests: vec![
            dest("bad", &bad, "events = [\"track\"]"),
            dest("moved", &redirect, "events = [\"track\"]"),
        ],
        extra: FAST_RETRY.into(),
        ..Opts::default()
    })
    .await;
    post(&relay, &order(3)).await;
    let dl = wait_dead(&relay, 2).await;
    let by_dest = |d: &str| dl.iter().find(|x| x["destination"] == d).unwrap().clone();
    let b = by_dest("bad");
    assert_eq!(b["attempts"], 1);
    assert_eq!(b["last_status"], 400);
    assert!(
        b["last_error"]
            .as_str()
            .unwrap()
            .contains("missing field userId"),
        "{b}"
    );
    assert_eq!(b["event"], "orders/create");
    assert!(
        b["first_attempt_at"].is_string() && b["dead_at"].is_string(),
        "{b}"
    );
    assert_eq!(by_dest("moved")["last_status"], 302);
    // Not retried, not followed: one request each.
    assert_eq!(bad.count(), 1);
    assert_eq!(redirect.count(), 1);

    // Replay after the destination is fixed: delivered again with the same messageId.
    bad.set(Arc::new(|_| Answer::status(200)));
    let id = b["id"].as_str().unwrap();
    assert_eq!(relay.replay(id).await, 200);
    let got = bad.wait_for(2).await;
    assert_eq!(got[1].json()["messageId"], got[0].json()["messageId"]);
    assert_eq!(relay.dead_letters().await.len(), 1);
    let m = by_dest("moved");
    let shown = get_json(format!(
        "{}/admin/dead-letters/{}",
        relay.admin,
        m["id"].as_str().unwrap()
    ))
    .await;
    assert!(
        shown["body"]
            .as_str()
            .unwrap()
            .contains("buyer3@example.com"),
        "show includes the raw webhook"
    );
    let r = client()
        .delete(format!("{}/admin/dead-letters", relay.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["purged"], 1);
    assert!(relay.dead_letters().await.is_empty());
    relay.stop().await;
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let r = TestReceiver::with(Arc::new(|n| {
        if n == 0 {
            Answer {
                headers: vec![("retry-after".into(), "1".into())],
                ..Answer::status(429)
            }
        } else {
            Answer::status(200)
        }
    }))
    .await;
    let relay = Relay::start(Opts {
        dests: vec![dest("wh", &r, "events = [\"track\"]")],
        extra: FAST_RETRY.into(),
        ..Opts::default()
    })
    .await;
    post(&relay, &order(4)).await;
    let got = r.wait_for(2).await;
    let gap = got[1].at - got[0].at;
    assert!(
        gap >= Duration::from_millis(990),
        "Retry-After: 1 ignored, retried after {gap:?}"
    );
    relay.stop().await;
}

#[tokio::test]
async fn max_age_turns_a_failing_delivery_into_a_dead_letter() {
    let r = TestReceiver::with(Arc::new(|_| Answer::status(503))).await;
    let relay = Relay::start(Opts {
        dests: vec![dest("wh", &r, "events = [\"track\"]")],
        extra:
            "[retry]\ninitial_interval = \"50ms\"\nmax_interval = \"100ms\"\nmax_age = \"500ms\"\n"
                .into(),
        ..Opts::default()
    })
    .await;
    post(&relay, &order(5)).await;
    let dl = wait_dead(&relay, 1).await;
    let attempts = dl[0]["attempts"].as_u64().unwrap();
    assert!(attempts >= 3, "{}", dl[0]);
    assert!(
        dl[0]["last_error"]
            .as_str()
            .unwrap()
            .starts_with("gave up after"),
        "{}",
        dl[0]
    );
    assert_eq!(
        attempts as usize,
        r.count(),
        "every attempt reached the receiver"
    );
    relay.stop().await;
}
