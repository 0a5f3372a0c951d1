//! Lanes: one task per destination (and per first-success source), driven by
//! the durable due-time index. A lane claims what is due (a lease), sends with
//! at most `concurrency` requests in flight, and otherwise sleeps until the
//! next due time or until ingest wakes it. No polling loop burns CPU when idle,
//! and a slow destination only ever occupies its own lane.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;

use crate::config::{Config, DeliveryMode};
use crate::metrics::Metrics;
use crate::queue::{Claimed, DeliveryState, Store};
use crate::shutdown::Shutdown;

use super::destination::{BuildError, Destination};
use super::worker::{Context, Decision, attempt};

/// The longest a lane sleeps without looking at its queue (a safety net: a
/// wake-up is never needed for correctness, only for promptness).
const MAX_IDLE: Duration = Duration::from_secs(30);

/// How long a busy lane lets more slots free up before it claims. A claim is
/// one atomic write however many deliveries it takes (and sled's batches hold
/// a database-wide write lock), so claiming one slot at a time as each
/// delivery ends costs a write per delivery.
const CLAIM_GATHER: Duration = Duration::from_millis(2);

/// All lanes of a relay.
pub struct Engine {
    wakers: HashMap<String, Arc<Notify>>,
    tasks: JoinSet<()>,
}

struct Lane {
    name: String,
    concurrency: usize,
    /// How long to wait for more events before a batch goes out.
    linger: Duration,
    lease: Duration,
    notify: Arc<Notify>,
    /// No longer in relay.toml: everything it holds is dead-lettered now, not
    /// when it comes due.
    orphan: bool,
}

impl Engine {
    /// Builds every destination and starts one lane per destination, per
    /// first-success source, and per lane the queue still holds work for.
    pub fn start(
        cfg: &Config,
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
        clock: fn() -> u64,
        stop: Shutdown,
    ) -> Result<Engine, BuildError> {
        let mut destinations = HashMap::new();
        for (name, d) in &cfg.destinations {
            destinations.insert(name.clone(), Arc::new(Destination::new(name, d)?));
        }
        let ctx = Arc::new(Context {
            destinations,
            mapping: cfg.mapping.clone(),
            retry: cfg.retry,
            clock,
            mapped: Default::default(),
        });
        let mut lanes: Vec<Lane> = Vec::new();
        let mut names = BTreeSet::new();
        let mut add = |name: String,
                       concurrency: usize,
                       linger: Duration,
                       timeout: Duration,
                       orphan: bool| {
            if names.insert(name.clone()) {
                lanes.push(Lane {
                    name,
                    concurrency: concurrency.max(1),
                    linger,
                    lease: (timeout * 10).max(Duration::from_secs(60)),
                    notify: Arc::new(Notify::new()),
                    orphan,
                });
            }
        };
        for (name, d) in &cfg.destinations {
            let batching = d.format != crate::config::Format::Webhook;
            add(
                name.clone(),
                d.concurrency,
                if batching { d.linger } else { Duration::ZERO },
                d.timeout,
                false,
            );
        }
        for (name, s) in &cfg.sources {
            if s.delivery == DeliveryMode::FirstSuccess && !s.destinations.is_empty() {
                let timeout: Duration = s
                    .destinations
                    .iter()
                    .filter_map(|d| cfg.destinations.get(d))
                    .map(|d| d.timeout)
                    .sum();
                add(
                    crate::queue::first_success_lane(name),
                    8,
                    Duration::ZERO,
                    timeout,
                    false,
                );
            }
        }
        // Work queued under a lane that is no longer configured still gets an
        // owner, which dead-letters it with the reason (nothing waits forever).
        if let Ok(stored) = store.lanes() {
            for name in stored {
                add(name, 1, Duration::ZERO, Duration::from_secs(5), true);
            }
        }
        let mut tasks = JoinSet::new();
        let mut wakers = HashMap::new();
        for lane in lanes {
            wakers.insert(lane.name.clone(), lane.notify.clone());
            tasks.spawn(run_lane(
                lane,
                store.clone(),
                ctx.clone(),
                metrics.clone(),
                stop.clone(),
            ));
        }
        Ok(Engine { wakers, tasks })
    }

    /// A function that wakes a lane by name (for ingest and replay).
    pub fn waker(&self) -> Arc<dyn Fn(&str) + Send + Sync> {
        let wakers = self.wakers.clone();
        Arc::new(move |lane: &str| {
            if let Some(n) = wakers.get(lane) {
                n.notify_one();
            }
        })
    }

    /// Waits until every lane has stopped and finished its in-flight sends.
    pub async fn join(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    tokio::task::spawn_blocking(f).await.ok()
}

async fn run_lane(
    lane: Lane,
    store: Arc<dyn Store>,
    ctx: Arc<Context>,
    metrics: Arc<Metrics>,
    mut stop: Shutdown,
) {
    let permits = Arc::new(Semaphore::new(lane.concurrency));
    let mut inflight = JoinSet::new();
    let (done_tx, done_rx) = tokio::sync::mpsc::unbounded_channel();
    let completer = tokio::spawn(complete_batches(done_rx, store.clone(), lane.name.clone()));
    loop {
        if stop.is_set() {
            break;
        }
        // Wait for a free slot before claiming, so a claim never outlives its lease in a queue.
        let first = tokio::select! {
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = stop.recv() => break,
        };
        if !inflight.is_empty() && permits.available_permits() + 1 < lane.concurrency / 2 {
            tokio::time::sleep(CLAIM_GATHER).await;
        }
        let mut slots = vec![first];
        while let Ok(p) = permits.clone().try_acquire_owned() {
            slots.push(p);
        }
        // An orphan takes everything at once, due or not: it only buries.
        let now = if lane.orphan {
            u64::MAX / 4
        } else {
            (ctx.clock)()
        };
        let lease_until = now + lane.lease.as_millis() as u64;
        let (s, name, n) = (store.clone(), lane.name.clone(), slots.len());
        let claimed = match blocking(move || s.claim_due(&name, now, lease_until, n)).await {
            Some(Ok(c)) => c,
            Some(Err(e)) => {
                tracing::error!(lane = lane.name, error = %e, "cannot read the queue; retrying in 1s");
                drop(slots);
                sleep_or_stop(Duration::from_secs(1), &lane.notify, &mut stop).await;
                continue;
            }
            None => break,
        };
        let got = claimed.len();
        for (c, permit) in claimed.into_iter().zip(slots.drain(..)) {
            let (store, ctx, metrics, lane_name) = (
                store.clone(),
                ctx.clone(),
                metrics.clone(),
                lane.name.clone(),
            );
            let (notify, done) = (lane.notify.clone(), done_tx.clone());
            let orphan = lane.orphan;
            inflight.spawn(async move {
                deliver(c, &lane_name, orphan, &store, &ctx, &metrics, &done).await;
                drop(permit);
                // The lane may be asleep until a lease that just ended: have it
                // look again (a retry may now be the earliest due time).
                notify.notify_one();
            });
        }
        drop(slots);
        while inflight.try_join_next().is_some() {}
        if got > 0 {
            continue;
        }
        // Nothing due: sleep until the next due time, a wake-up, or stop.
        let s = store.clone();
        let name = lane.name.clone();
        let next = blocking(move || s.next_due(&name))
            .await
            .and_then(Result::ok)
            .flatten();
        let wait = match next {
            Some(due) => Duration::from_millis(due.saturating_sub((ctx.clock)())).min(MAX_IDLE),
            None => MAX_IDLE,
        };
        if wait.is_zero() {
            // Due now but not claimed: every slot is busy; wait for one.
            continue;
        }
        sleep_or_stop(wait, &lane.notify, &mut stop).await;
        if !lane.linger.is_zero() {
            tokio::time::sleep(lane.linger).await;
        }
    }
    // Finish what is in flight; anything not finished keeps its lease and is
    // released at the next start.
    while inflight.join_next().await.is_some() {}
    // Record every completion before the lane reports itself stopped (the
    // final flush comes after).
    drop(done_tx);
    let _ = completer.await;
}

/// Most completions in one write.
const MAX_COMPLETE_BATCH: usize = 1024;

/// Records successful deliveries, many per write: while one write runs, the
/// next completions queue up, so the batch grows with load (as group commit
/// does for ingest). Until its completion is written, a delivery keeps its
/// lease, so nothing claims it again; a crash in between redelivers it with
/// the same messageId, as a crash just after the send always could.
async fn complete_batches(
    mut done: tokio::sync::mpsc::UnboundedReceiver<crate::queue::DeliveryId>,
    store: Arc<dyn Store>,
    lane: String,
) {
    let mut ids = Vec::new();
    while done.recv_many(&mut ids, MAX_COMPLETE_BATCH).await > 0 {
        let s = store.clone();
        let batch = std::mem::take(&mut ids);
        let n = batch.len();
        match blocking(move || s.complete_many(&batch)).await {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                tracing::error!(lane, count = n, error = %e, "cannot record delivered deliveries; they are sent again when their leases end")
            }
            None => tracing::error!(lane, count = n, "recording delivered deliveries panicked"),
        }
    }
}

async fn sleep_or_stop(d: Duration, notify: &Notify, stop: &mut Shutdown) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = notify.notified() => {}
        _ = stop.recv() => {}
    }
}

/// An error for the log: up to the destination's answer body, which may echo
/// the payload (PII); the full text stays in the dead letter for operators.
fn loggable(error: &str) -> &str {
    match error.find(": ") {
        Some(i) if error.starts_with("HTTP ") => &error[..i],
        Some(i) if error.starts_with("gave up") => match error[i + 2..].find(": ") {
            Some(j) if error[i + 2..].starts_with("HTTP ") => &error[..i + 2 + j],
            _ => error,
        },
        _ => error,
    }
}

async fn deliver(
    c: Claimed,
    lane: &str,
    orphan: bool,
    store: &Arc<dyn Store>,
    ctx: &Context,
    metrics: &Metrics,
    done: &tokio::sync::mpsc::UnboundedSender<crate::queue::DeliveryId>,
) {
    let id = c.record.id;
    let received = c.webhook.meta().received_at_ms;
    let topic = c.webhook.meta().topic.clone();
    let decision = if orphan {
        let mut rec = c.record;
        let reason = match rec.targets.as_slice() {
            [one] if !ctx.destinations.contains_key(one) => {
                format!("destination `{one}` is no longer in relay.toml")
            }
            _ => format!(
                "lane `{lane}` is no longer in relay.toml (destination removed or delivery mode changed)"
            ),
        };
        rec.state = DeliveryState::Dead {
            dead_at_ms: (ctx.clock)(),
            reason,
        };
        Decision::Bury(rec)
    } else {
        attempt(ctx, c.record, &c.webhook).await
    };
    let s = store.clone();
    let (outcome, result) = match decision {
        Decision::Done => {
            let secs = (ctx.clock)().saturating_sub(received) as f64 / 1000.0;
            metrics.observe(
                "shoprelay_delivery_latency_seconds",
                &[("lane", lane)],
                secs,
            );
            // Batched by the lane's completer; a closed channel means the
            // lane is gone and the lease will bring the delivery back.
            let _ = done.send(id);
            ("delivered", Some(Ok(())))
        }
        Decision::Retry(rec) => {
            if rec.attempts == 1 || rec.attempts.is_power_of_two() {
                let error = loggable(rec.last_error.as_deref().unwrap_or(""));
                tracing::info!(lane, id = %id, topic, attempts = rec.attempts, status = rec.last_status, error, "delivery failed; will retry");
            }
            ("retry", blocking(move || s.update(&rec)).await)
        }
        Decision::Bury(rec) => {
            if let DeliveryState::Dead { reason, .. } = &rec.state {
                let reason = loggable(reason);
                tracing::warn!(lane, id = %id, topic, attempts = rec.attempts, status = rec.last_status, reason, "delivery moved to the dead letters (see `shoprelay dead-letters show`)");
            }
            metrics.inc("shoprelay_dead_letters_total", &[("lane", lane)], 1);
            ("dead", blocking(move || s.bury(&rec)).await)
        }
    };
    metrics.inc(
        "shoprelay_deliveries_total",
        &[("lane", lane), ("outcome", outcome)],
        1,
    );
    if let Some(Err(e)) = result {
        // The lease stays; the delivery comes due again when it ends.
        tracing::error!(lane, id = %id, error = %e, "cannot record the delivery outcome");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn logged_errors_stop_before_the_answer_body() {
        for (full, logged) in [
            (
                "HTTP 400 Bad Request: {\"email\":\"a@b.c\"}",
                "HTTP 400 Bad Request",
            ),
            (
                "gave up after 9 attempts over 4h: HTTP 503 Service Unavailable: echo a@b.c",
                "gave up after 9 attempts over 4h: HTTP 503 Service Unavailable",
            ),
            ("timed out after 5s", "timed out after 5s"),
            (
                "cannot map the webhook: orders/create: line_items is not an array",
                "cannot map the webhook: orders/create: line_items is not an array",
            ),
        ] {
            assert_eq!(super::loggable(full), logged);
        }
    }
}
