//! One customer, one profile, through the real relay: the sequence of
//! `tests/mapping_support/sequence.rs` sent step by step, every call's userId or
//! anonymousId checked at a real receiver; and the identity map surviving a
//! graceful restart and a kill -9.

#[path = "../mapping_support/sequence.rs"]
mod sequence;

use serde_json::Value;

use crate::common::receiver::TestReceiver;
use crate::common::relay::{Dest, Opts, Relay, SECRET, spawn_binary, toml};
use crate::common::sign::ShopifyWebhook;
use crate::common::{client, eventually, get_json, send_json};

fn opts(receiver: &TestReceiver) -> Opts {
    Opts {
        dests: vec![Dest {
            name: "wh".into(),
            url: receiver.url.clone(),
            extra: String::new(),
        }],
        ..Opts::default()
    }
}

fn signed(i: usize, step: &sequence::Step) -> ShopifyWebhook<'static> {
    ShopifyWebhook {
        topic: step.topic,
        event_id: Some(format!("identity-{i}-{}", step.topic)),
        body: serde_json::to_vec(&step.body).unwrap(),
        secret: SECRET,
    }
}

/// Waits until the relay at `admin` has nothing pending.
async fn drained(admin: &str) {
    eventually("queue drained", || async {
        get_json(format!("{admin}/admin/stats")).await["lanes"]
            .as_object()
            .is_some_and(|l| l.is_empty())
            .then_some(())
    })
    .await
}

/// Sends step `i` and returns the calls it produced at the receiver.
async fn send_step(
    url: &str,
    admin: &str,
    receiver: &TestReceiver,
    i: usize,
    step: &sequence::Step,
) -> Vec<Value> {
    let before = receiver.count();
    let answer = send_json("send a step", signed(i, step).request(&client(), url)).await;
    assert_eq!(answer["status"], "queued", "step {i}: {answer}");
    receiver.wait_for(before + step.calls.len()).await;
    drained(admin).await;
    receiver.received()[before..]
        .iter()
        .map(|r| r.json())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_of_the_sequence_lands_on_its_customers_profile() {
    let receiver = TestReceiver::start().await;
    let relay = Relay::start(opts(&receiver)).await;
    let url = relay.shopify_url("acme");
    let mut anonymous = Vec::new();
    for (i, step) in sequence::steps().iter().enumerate() {
        let calls = send_step(&url, &relay.admin, &receiver, i, step).await;
        if let Err(e) = sequence::check(i, step, &calls, &mut anonymous) {
            panic!("{e}");
        }
    }
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_map_survives_a_graceful_restart() {
    let receiver = TestReceiver::start().await;
    let steps = sequence::steps();
    let relay = Relay::start(opts(&receiver)).await;
    send_step(
        &relay.shopify_url("acme"),
        &relay.admin,
        &receiver,
        4,
        &steps[4],
    )
    .await;
    let dir = relay.stop().await;

    let mut relay = Relay::start_in(opts(&receiver), dir).await;
    relay.wait_open().await;
    let calls = send_step(
        &relay.shopify_url("acme"),
        &relay.admin,
        &receiver,
        5,
        &steps[5],
    )
    .await;
    assert_eq!(calls[0]["userId"], sequence::ANN, "{}", calls[0]);
    assert_eq!(calls[0]["properties"]["currency"], "USD");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_map_survives_kill_9() {
    let receiver = TestReceiver::start().await;
    let steps = sequence::steps();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("relay.toml");
    std::fs::write(&cfg, toml(&opts(&receiver), &dir.path().join("data"))).unwrap();

    let mut relay = spawn_binary(&cfg);
    relay.wait_open().await;
    let url = format!("{}/webhooks/shopify/acme", relay.ingest);
    let answer = send_json("Ann's order", signed(4, &steps[4]).request(&client(), &url)).await;
    assert_eq!(answer["status"], "queued");
    // Killed as soon as the order reached the destination: the map entry may
    // not have reached a checkpoint, but then neither did the delivery, which
    // is sent again after the restart and teaches the map again.
    receiver.wait_for(steps[4].calls.len()).await;
    relay.child.kill().unwrap();
    relay.child.wait().unwrap();

    let mut relay = spawn_binary(&cfg);
    relay.wait_open().await;
    drained(&relay.admin).await;
    let url = format!("{}/webhooks/shopify/acme", relay.ingest);
    let calls = send_step(&url, &relay.admin, &receiver, 5, &steps[5]).await;
    relay.child.kill().unwrap();
    relay.child.wait().unwrap();
    assert_eq!(calls.len(), 1, "{calls:#?}");
    assert_eq!(calls[0]["userId"], sequence::ANN, "{}", calls[0]);
    assert_eq!(calls[0]["properties"]["currency"], "USD");
}
