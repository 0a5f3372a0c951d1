//! Heads that never end, connections that send nothing, kept-alive
//! connections left idle, and HTTP/2 without TLS: each is closed on its clock.

use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::common::raw::{closed_within, connect, read_answer};
use crate::common::relay::{Opts, Relay};

const HEAD: Duration = Duration::from_secs(1);
const IDLE: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_heads_silent_and_idle_connections_are_closed_on_time() {
    let relay = Relay::start(Opts {
        server_extra: "header_read_timeout = \"1s\"\nidle_timeout = \"3s\"\n".into(),
        ..Opts::default()
    })
    .await;

    // Sends nothing at all.
    let mut silent = connect(&relay.ingest).await;
    // A head one byte every 100 ms, never finished (slowloris).
    let (mut slow, mut slow_w) = connect(&relay.ingest).await.into_split();
    let trickle = tokio::spawn(async move {
        if slow_w
            .write_all(b"POST /webhooks/shopify/acme HTTP/1.1\r\nHost: relay\r\nX-Pad: ")
            .await
            .is_err()
        {
            return;
        }
        while slow_w.write_all(b"x").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    // One request answered, then left idle: the idle clock, not the head's.
    let mut idle = connect(&relay.ingest).await;
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: relay\r\n\r\n")
        .await
        .unwrap();
    let answer = read_answer(&mut idle).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    let limit = IDLE * 3;
    let (silent, slow, idle) = tokio::join!(
        closed_within(&mut silent, limit),
        closed_within(&mut slow, limit),
        closed_within(&mut idle, limit),
    );
    let (silent, _) = silent.expect("a silent connection stays open");
    let (slow, _) = slow.expect("a slow head stays open");
    let (idle, _) = idle.expect("an idle connection stays open");
    eprintln!(
        "closed after: silent {silent:?}, slow head {slow:?} (header_read_timeout 1s), idle {idle:?} (idle_timeout 3s)"
    );
    let margin = Duration::from_millis(1500);
    for (what, took) in [("silent", silent), ("slow head", slow)] {
        assert!(
            took >= HEAD - Duration::from_millis(200),
            "{what}: {took:?}"
        );
        assert!(took <= HEAD + margin, "{what}: {took:?}");
    }
    assert!(idle >= IDLE - Duration::from_millis(200), "idle: {idle:?}");
    assert!(idle <= IDLE + margin, "idle: {idle:?}");
    trickle.abort();
    relay.stop().await;
}

#[tokio::test]
async fn h2c_prior_knowledge_is_not_served() {
    let relay = Relay::start(Opts::default()).await;
    let mut s = connect(&relay.ingest).await;
    // The HTTP/2 connection preface, then an empty SETTINGS frame.
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let (_, got) = closed_within(&mut s, Duration::from_secs(5))
        .await
        .expect("an h2c connection is closed at once");
    // No SETTINGS frame back (HTTP/2 would answer with one): HTTP/1.1 or nothing.
    assert!(
        got.is_empty() || got.starts_with(b"HTTP/1.1 "),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    relay.stop().await;
}

#[tokio::test]
async fn a_head_over_16_kib_is_refused_431() {
    let relay = Relay::start(Opts::default()).await;
    let mut s = connect(&relay.ingest).await;
    let head = format!(
        "POST /webhooks/shopify/acme HTTP/1.1\r\nHost: relay\r\nX-Pad: {}\r\n\r\n",
        "x".repeat(20 << 10)
    );
    let _ = s.write_all(head.as_bytes()).await;
    let (_, got) = closed_within(&mut s, Duration::from_secs(5))
        .await
        .expect("closed after the refusal");
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 431"), "{got}");
    relay.stop().await;
}
