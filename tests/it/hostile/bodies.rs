//! Bodies that stall one byte short, unsigned, on many connections at once,
//! with a Content-Length and chunked: the relay's resident memory stays
//! within the unverified body budget plus a margin, and a signed webhook
//! sent meanwhile is answered 200.
//!
//! Measured before the budget: 300 such connections took the relay from 35
//! to 496 MB (654 MB chunked).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{child_relay, gauge, signed};
use crate::common::proc::{PeakRss, mib, rss};
use crate::common::raw::connect;
use crate::common::{get_text, until};

/// Connections that stall a body.
const STALLS: usize = 128;
/// Each declares (or streams) `max_body_bytes` and sends all but one byte.
const BODY: usize = 1 << 20;
const BUDGET: u64 = 16 << 20;
/// Room above the budget for everything else: 128 connections' buffers and
/// tasks, and the allocator keeping the memory of evicted and refused bodies
/// (measured peaks over the baseline: 19–25 MiB with a Content-Length; chunked,
/// read into fixed blocks, 20–27 with glibc's malloc and 24–27 with mimalloc,
/// 27–47 while its buffer doubled as it grew; unbounded, 128 MiB).
const MARGIN: u64 = 32 << 20;

/// What the stalling clients saw.
#[derive(Default)]
struct Seen {
    /// Wrote their whole body, or were cut off while writing.
    done_writing: AtomicUsize,
    /// The relay ended the connection (503 and close, or a reset).
    ended: AtomicUsize,
    /// ... having answered 503 with `Retry-After: 1`.
    busy: AtomicUsize,
}

async fn stall(ingest: String, chunked: bool, seen: Arc<Seen>) {
    let (mut r, mut w) = connect(&ingest).await.into_split();
    let framing = if chunked {
        "Transfer-Encoding: chunked".to_string()
    } else {
        format!("Content-Length: {BODY}")
    };
    let head = format!(
        "POST /webhooks/shopify/acme HTTP/1.1\r\nHost: relay\r\nX-Shopify-Topic: orders/create\r\n\
         X-Shopify-Hmac-Sha256: bm90LWEtc2lnbmF0dXJl\r\n{framing}\r\n\r\n"
    );
    let piece = vec![b' '; 64 << 10];
    let writing = async {
        w.write_all(head.as_bytes()).await?;
        for i in 0..BODY / piece.len() {
            // All but the last byte.
            let part = if i + 1 == BODY / piece.len() {
                &piece[1..]
            } else {
                &piece[..]
            };
            if chunked {
                w.write_all(format!("{:x}\r\n", part.len()).as_bytes())
                    .await?;
                w.write_all(part).await?;
                w.write_all(b"\r\n").await?;
            } else {
                w.write_all(part).await?;
            }
        }
        Ok::<_, std::io::Error>(())
    };
    let _ = writing.await;
    seen.done_writing.fetch_add(1, Ordering::Relaxed);
    let mut answer = vec![0u8; 512];
    let n = r.read(&mut answer).await.unwrap_or(0);
    let answer = String::from_utf8_lossy(&answer[..n]).to_ascii_lowercase();
    if answer.starts_with("http/1.1 503") && answer.contains("\r\nretry-after: 1\r\n") {
        seen.busy.fetch_add(1, Ordering::Relaxed);
    }
    seen.ended.fetch_add(1, Ordering::Relaxed);
    drop(w);
}

async fn stalled_bodies_stay_within_the_budget(chunked: bool) {
    let (_dir, relay) = child_relay(&format!(
        "unverified_body_budget = {BUDGET}\nbody_read_timeout = \"60s\"\n"
    ));
    let pid = relay.child.id();
    // Warm up the paths a signed webhook takes, then measure.
    assert_eq!(signed(&relay.ingest, 0).await.0, 200);
    let metrics_url = format!("{}/metrics", relay.admin);
    get_text(&metrics_url).await;
    let baseline = rss(pid);
    let peak = PeakRss::start(pid);

    let seen = Arc::new(Seen::default());
    let clients: Vec<_> = (0..STALLS)
        .map(|_| tokio::spawn(stall(relay.ingest.clone(), chunked, seen.clone())))
        .collect();
    until(
        "every stalling client wrote its body or was cut off",
        || seen.done_writing.load(Ordering::Relaxed) == STALLS,
    )
    .await;
    // A 1 MiB body holds 1 MiB of the budget: at most 16 stay.
    let fit = (BUDGET / BODY as u64) as usize;
    until("the budget to refuse all bodies it cannot hold", || {
        seen.ended.load(Ordering::Relaxed) >= STALLS - fit
    })
    .await;
    let held = gauge(
        &get_text(&metrics_url).await,
        "shoprelay_unverified_body_bytes",
    );
    assert!(held as u64 <= BUDGET, "held {held} of {BUDGET}");

    // A signed webhook gets in meanwhile: it evicts the oldest stalled body.
    let (status, took) = signed(&relay.ingest, 1).await;
    assert_eq!(status, 200);
    let ended = seen.ended.load(Ordering::Relaxed);
    let busy = seen.busy.load(Ordering::Relaxed);
    let peak = peak.stop();
    let kind = if chunked { "chunked" } else { "Content-Length" };
    eprintln!(
        "{kind}: {STALLS} stalled 1 MiB bodies, budget {} MiB: RSS {:.1} MiB before, peak {:.1} MiB \
         (+{:.1}); {ended} connections ended by the relay ({busy} with 503 + Retry-After read), \
         {} MiB held after; the signed webhook answered 200 in {took:?}",
        mib(BUDGET),
        mib(baseline),
        mib(peak),
        mib(peak.saturating_sub(baseline)),
        mib(held as u64),
    );
    assert!(
        peak <= baseline + BUDGET + MARGIN,
        "{kind}: RSS peaked at {:.1} MiB, {:.1} MiB over the {:.1} MiB baseline (budget {} MiB + margin {} MiB)",
        mib(peak),
        mib(peak - baseline),
        mib(baseline),
        mib(BUDGET),
        mib(MARGIN)
    );
    assert!(busy > 0, "no client read a 503 with Retry-After");
    for c in clients {
        c.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_bodies_with_content_length_stay_within_the_budget() {
    stalled_bodies_stay_within_the_budget(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_chunked_bodies_stay_within_the_budget() {
    stalled_bodies_stay_within_the_budget(true).await;
}

/// A body past `body_read_timeout` is answered 408 and its connection closed.
#[tokio::test]
async fn a_body_past_its_timeout_is_answered_408() {
    use crate::common::raw::closed_within;
    use crate::common::relay::{Opts, Relay};
    let relay = Relay::start(Opts {
        server_extra: "body_read_timeout = \"1s\"\n".into(),
        ..Opts::default()
    })
    .await;
    let mut s = connect(&relay.ingest).await;
    s.write_all(b"POST /webhooks/shopify/acme HTTP/1.1\r\nHost: relay\r\nContent-Length: 100\r\n\r\n{\"id\":")
        .await
        .unwrap();
    let (took, got) = closed_within(&mut s, Duration::from_secs(10))
        .await
        .expect("closed after the body timeout");
    let got = String::from_utf8_lossy(&got).to_ascii_lowercase();
    assert!(got.starts_with("http/1.1 408"), "{got}");
    assert!(got.contains("\r\nconnection: close\r\n"), "{got}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );
    relay.stop().await;
}
