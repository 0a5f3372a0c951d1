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

use crate::config::routing::LaneSettings;
use crate::config::{Config, Routing};
use crate::metrics::Metrics;
use crate::queue::Store;
use crate::shutdown::Shutdown;

use super::attempt::Context;
use super::blocking::blocking;
use super::destination::{BuildError, Destination};
use super::drive::{complete_batches, deliver};

/// The longest a lane sleeps without looking at its queue (a safety net: a
/// wake-up is never needed for correctness, only for promptness).
const MAX_IDLE: Duration = Duration::from_secs(30);

/// How long a busy lane lets more slots free up before it claims. Claims
/// are cheap now (the lane's window and the log's tail are in memory), so
/// this is short: at 2 ms it capped a lane at about half its concurrency
/// per 2 ms (crash campaign drain, concurrency 16: 2.5k → 3.5k deliveries/s
/// at 200 µs).
const CLAIM_GATHER: Duration = Duration::from_micros(200);

/// All lanes of a relay.
pub struct Engine {
    wakers: HashMap<String, Arc<Notify>>,
    tasks: JoinSet<()>,
}

struct Lane {
    /// Name, targets (for a delivery whose record lost its own, rebuilt after it
    /// could not be read), concurrency, linger and lease: from `config::routing`.
    settings: LaneSettings,
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
        routing: &Routing,
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
            mapping: Arc::new(cfg.mapping.clone()),
            identity: Some(store.clone()),
            retry: cfg.retry,
            clock,
            mapped: Default::default(),
            selections: Arc::new(super::rules::Selections::new(cfg)),
            metrics: metrics.clone(),
            stop: stop.clone(),
        });
        let lane = |settings: LaneSettings, orphan: bool| Lane {
            settings,
            notify: Arc::new(Notify::new()),
            orphan,
        };
        let mut lanes: Vec<Lane> = Vec::new();
        let mut names = BTreeSet::new();
        for s in &routing.lanes {
            names.insert(s.name.clone());
            lanes.push(lane(s.clone(), false));
        }
        // Work queued under a lane that is no longer configured still gets an
        // owner, which dead-letters it with the reason (nothing waits forever).
        if let Ok(stored) = store.lanes() {
            for name in stored {
                if names.insert(name.clone()) {
                    lanes.push(lane(LaneSettings::orphan(&cfg.storage, name), true));
                }
            }
        }
        let mut tasks = JoinSet::new();
        let mut wakers = HashMap::new();
        for lane in lanes {
            wakers.insert(lane.settings.name.clone(), lane.notify.clone());
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

async fn run_lane(
    lane: Lane,
    store: Arc<dyn Store>,
    ctx: Arc<Context>,
    metrics: Arc<Metrics>,
    mut stop: Shutdown,
) {
    let permits = Arc::new(Semaphore::new(lane.settings.concurrency));
    let mut inflight = JoinSet::new();
    let (done_tx, done_rx) = tokio::sync::mpsc::unbounded_channel();
    let completer = tokio::spawn(complete_batches(
        done_rx,
        store.clone(),
        lane.settings.name.clone(),
    ));
    loop {
        if stop.is_set() {
            break;
        }
        // Wait for a free slot before claiming, so a claim never outlives its lease in a queue.
        let first = tokio::select! {
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = stop.recv() => break,
        };
        if !inflight.is_empty() && permits.available_permits() + 1 < lane.settings.concurrency / 2 {
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
        let lease_until = now + lane.settings.lease.as_millis() as u64;
        let (s, name, n) = (store.clone(), lane.settings.name.clone(), slots.len());
        let claimed = match blocking(move || s.claim_due(&name, now, lease_until, n)).await {
            Some(Ok(c)) => c,
            Some(Err(e)) => {
                tracing::error!(lane = lane.settings.name, error = %e, "cannot read the queue; retrying in 1s");
                drop(slots);
                sleep_or_stop(Duration::from_secs(1), &lane.notify, &mut stop).await;
                continue;
            }
            None => break,
        };
        let got = claimed.len();
        for (mut c, permit) in claimed.into_iter().zip(slots.drain(..)) {
            if c.record.targets.is_empty() {
                c.record.targets = lane.settings.targets.clone();
            }
            let (store, ctx, metrics, lane_name) = (
                store.clone(),
                ctx.clone(),
                metrics.clone(),
                lane.settings.name.clone(),
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
        let name = lane.settings.name.clone();
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
        if !lane.settings.linger.is_zero() {
            tokio::time::sleep(lane.settings.linger).await;
        }
    }
    // Finish what is in flight; anything not finished is due again at the next
    // start (leases live in memory).
    while inflight.join_next().await.is_some() {}
    // Record every completion before the lane reports itself stopped (the
    // final flush comes after).
    drop(done_tx);
    let _ = completer.await;
}

async fn sleep_or_stop(d: Duration, notify: &Notify, stop: &mut Shutdown) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = notify.notified() => {}
        _ = stop.recv() => {}
    }
}
