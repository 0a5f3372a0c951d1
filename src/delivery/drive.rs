//! Drives one delivery: its attempt, then the [`Decision`] written to the queue, metrics and log.
//!
//! Successes are not written one by one: each lane's completer
//! ([`complete_batches`]) records them in batches.

use std::sync::Arc;

use crate::metrics::{Metrics, names};
use crate::queue::{Claimed, Store};

use super::attempt::{Context, Decision, attempt, bury};
use super::blocking::blocking;

/// Most completions in one write.
const MAX_COMPLETE_BATCH: usize = 1024;

/// Records successful deliveries, many per write: while one write runs, the
/// next completions queue up, so the batch grows with load (as group commit
/// does for ingest). Until its completion is written, a delivery keeps its
/// lease, so nothing claims it again; a crash in between redelivers it with
/// the same messageId, as a crash just after the send always could.
pub(super) async fn complete_batches(
    mut done: tokio::sync::mpsc::UnboundedReceiver<(crate::queue::DeliveryId, u64)>,
    store: Arc<dyn Store>,
    lane: String,
) {
    let mut ids = Vec::new();
    while done.recv_many(&mut ids, MAX_COMPLETE_BATCH).await > 0 {
        // First attempts that succeeded are completed in memory, here: a trip
        // to the blocking pool per batch cost more than the completion
        // (README → Performance). Only what needs the index goes there.
        store.complete_in_memory(&lane, &mut ids);
        if ids.is_empty() {
            continue;
        }
        let s = store.clone();
        let batch = std::mem::take(&mut ids);
        let n = batch.len();
        let l = lane.clone();
        match blocking(move || s.complete_many(&l, &batch)).await {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                tracing::error!(lane, count = n, error = %e, "cannot record delivered deliveries; they are sent again when their leases end")
            }
            None => tracing::error!(lane, count = n, "recording delivered deliveries panicked"),
        }
    }
}

pub(super) async fn deliver(
    c: Claimed,
    lane: &str,
    orphan: bool,
    store: &Arc<dyn Store>,
    ctx: &Context,
    metrics: &Metrics,
    done: &tokio::sync::mpsc::UnboundedSender<(crate::queue::DeliveryId, u64)>,
) {
    let id = c.record.id;
    let lease = c.lease;
    let received = c.webhook.meta().received_at_ms;
    let webhook = c.webhook;
    let topic = webhook.meta().topic.as_str();
    let decision = if orphan {
        let reason = match c.record.targets.as_slice() {
            [one] if !ctx.destinations.contains_key(one) => {
                format!("destination `{one}` is no longer in relay.toml")
            }
            _ => format!(
                "lane `{lane}` is no longer in relay.toml (destination removed or delivery mode changed)"
            ),
        };
        bury(c.record, (ctx.clock)(), reason.clone(), reason)
    } else {
        attempt(ctx, c.record, &webhook).await
    };
    let s = store.clone();
    let (outcome, result) = match decision {
        // Stopping while held back by a rate limit: nothing was decided.
        Decision::HandBack => return,
        Decision::Done => {
            let secs = (ctx.clock)().saturating_sub(received) as f64 / 1000.0;
            metrics.observe(names::DELIVERY_LATENCY, &[("lane", lane)], secs);
            // Batched by the lane's completer; a closed channel means the
            // lane is gone and the lease will bring the delivery back.
            let _ = done.send((id, lease));
            ("delivered", Some(Ok(())))
        }
        Decision::Retry {
            record: rec,
            summary,
        } => {
            if rec.attempts == 1 || rec.attempts.is_power_of_two() {
                let error = summary.as_str();
                tracing::info!(lane, id = %id, topic, attempts = rec.attempts, status = rec.last_status, error, "delivery failed; will retry");
            }
            ("retry", blocking(move || s.update(&rec, lease)).await)
        }
        Decision::Bury {
            record: rec,
            summary,
        } => {
            let reason = summary.as_str();
            tracing::warn!(lane, id = %id, topic, attempts = rec.attempts, status = rec.last_status, reason, "delivery moved to the dead letters (see `shoprelay dead-letters show`)");
            metrics.inc(names::DEAD_LETTERS_TOTAL, &[("lane", lane)], 1);
            ("dead", blocking(move || s.bury(&rec, lease)).await)
        }
    };
    metrics.inc(
        names::DELIVERIES,
        &[("lane", lane), ("outcome", outcome)],
        1,
    );
    if let Some(Err(e)) = result {
        // The lease stays; the delivery comes due again when it ends.
        tracing::error!(lane, id = %id, error = %e, "cannot record the delivery outcome");
    }
}
