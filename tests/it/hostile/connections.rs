//! Connections up to the cap and past it, each sending a head that never
//! ends: the relay's descriptors stay within the cap, the admin `/healthz`
//! answers at once (its listener has its own cap), and a signed webhook is
//! answered long before the header timeout would have freed a connection.
//!
//! Measured before the cap: 20,000 idle connections ran the relay out of
//! descriptors, and ingest and the admin `/healthz` timed out for ~45 s.

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use super::{child_relay, gauge, signed};
use crate::common::proc::open_fds;
use crate::common::raw::connect;
use crate::common::{eventually, get_text, within};

const CAP: usize = 50;
/// Connections beyond the cap, sent after it is full.
const PAST: usize = 100;

/// Opens a connection that sends the start of a head and nothing more.
async fn slowloris(ingest: &str) -> tokio::net::TcpStream {
    let mut s = connect(ingest).await;
    let _ = s
        .write_all(b"POST /webhooks/shopify/acme HTTP/1.1\r\nHost: relay\r\n")
        .await;
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_leave_room_for_webhooks_and_admin() {
    // A long header timeout: only the cap can make room in this test.
    let (_dir, relay) = child_relay(&format!(
        "max_connections = {CAP}\nheader_read_timeout = \"60s\"\n"
    ));
    let pid = relay.child.id();
    let metrics_url = format!("{}/metrics", relay.admin);
    assert_eq!(signed(&relay.ingest, 0).await.0, 200);
    let open = || async {
        gauge(
            &get_text(&metrics_url).await,
            "shoprelay_ingest_connections",
        ) as usize
    };
    eventually("the warm-up connection closed", || async {
        (open().await == 0).then_some(())
    })
    .await;
    let fds_before = open_fds(pid);

    let mut held = Vec::new();
    for _ in 0..CAP {
        held.push(slowloris(&relay.ingest).await);
    }
    eventually("the cap filled", || async {
        (open().await == CAP).then_some(())
    })
    .await;
    for _ in 0..PAST {
        held.push(slowloris(&relay.ingest).await);
    }

    let started = Instant::now();
    let health = within(
        "admin /healthz",
        reqwest::get(format!("{}/healthz", relay.admin)),
    )
    .await
    .unwrap();
    let admin_took = started.elapsed();
    assert_eq!(health.status(), 200);
    assert!(admin_took < Duration::from_secs(2), "{admin_took:?}");

    let fds_full = open_fds(pid);
    let (status, webhook_took) = signed(&relay.ingest, 1).await;
    assert_eq!(status, 200);
    let fds_after = open_fds(pid);
    let open_after = open().await;
    eprintln!(
        "cap {CAP}, {} slow heads: admin /healthz in {admin_took:?}; a signed webhook answered 200 in \
         {webhook_took:?} (header_read_timeout 60s); descriptors {fds_before} before, {fds_full} at the cap, \
         {fds_after} after; {open_after} ingest connections open",
        CAP + PAST
    );
    // The accept loop holds at most one connection beyond the cap.
    for fds in [fds_full, fds_after] {
        assert!(fds <= fds_before + CAP + 1 + 4, "{fds} descriptors open");
    }
    assert!(open_after <= CAP, "{open_after} open");
    assert!(webhook_took < Duration::from_secs(15), "{webhook_took:?}");
    drop(held);
}
