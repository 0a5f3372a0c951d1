//! One attempt at a delivery → a [`Decision`]: done, retry at a due time, or bury.
//!
//! It maps the webhook, keeps the events each destination wants, sends what is
//! not yet delivered and decides what the queue does next. The decision is
//! returned, not applied: `drive` writes it, in one place.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{MappingConfig, RetryConfig};
use crate::metrics::{Metrics, names};
use crate::queue::{DeliveryRecord, DeliveryState, Store, StoreError};
use crate::shutdown::Shutdown;
use crate::sources::Webhook;

use super::classify::{Failure, Outcome};
use super::destination::Destination;
use super::retry::{Step, give_up_reason, next_step};
use super::rules::{self, Candidate, RuleError, Selections};

/// What the queue does with a delivery after an attempt.
#[derive(Debug)]
pub enum Decision {
    /// Every event reached a destination: forget it.
    Done,
    /// Try again at `record.due_ms`.
    Retry {
        /// Progress, and the full error in `last_error`.
        record: DeliveryRecord,
        /// The error as the log shows it, without the destination's words.
        summary: String,
    },
    /// Give up.
    Bury {
        /// `state` is `Dead` with the full reason.
        record: DeliveryRecord,
        /// The reason as the log shows it, without the destination's words.
        summary: String,
    },
    /// The relay is stopping while the delivery waited for its turn under a
    /// `rate_limit`: write nothing; it is due again as stored (not an attempt).
    HandBack,
}

/// Shared by every lane.
pub struct Context {
    /// Destinations by name.
    pub destinations: HashMap<String, Arc<Destination>>,
    /// How webhooks become events.
    pub mapping: Arc<MappingConfig>,
    /// Where the identity map lives (MAPPING.md → Identity); `None` maps
    /// knowing nothing of earlier webhooks.
    pub identity: Option<Arc<dyn Store>>,
    /// The retry window.
    pub retry: RetryConfig,
    /// Wall clock, ms.
    pub clock: fn() -> u64,
    /// Recently mapped webhooks, so the lanes of one fan-out map it once.
    pub mapped: super::mapped::MappedCache,
    /// Each source's destinations with jq rules, run when a webhook is mapped.
    pub selections: Arc<Selections>,
    /// Events left out by a destination's filter or transform are counted here.
    pub metrics: Arc<Metrics>,
    /// Ends a wait for a `rate_limit` slot.
    pub stop: Shutdown,
}

#[cfg(test)]
impl Context {
    /// A context for unit tests: the default mapping, no jq rules, and a stop
    /// that fires only when the returned trigger does (keep it alive).
    pub(crate) fn for_tests(
        destinations: HashMap<String, Arc<Destination>>,
        identity: Option<Arc<dyn Store>>,
        retry: RetryConfig,
        clock: fn() -> u64,
    ) -> (Context, crate::shutdown::Trigger) {
        let (trigger, stop) = crate::shutdown::channel();
        let cfg = crate::config::Config::from_toml_str(
            "[sources.s]\nkind = \"shopify\"\nsecrets = [\"x\"]\ndestinations = []\n",
            &|_| None,
        )
        .expect("test config");
        let ctx = Context {
            destinations,
            mapping: Arc::new(MappingConfig::default()),
            identity,
            retry,
            clock,
            mapped: Default::default(),
            selections: Arc::new(Selections::new(&cfg)),
            metrics: Default::default(),
            stop,
        };
        (ctx, trigger)
    }
}

/// Dead-letters `rec` with `reason`; `summary` is what the log may show of it.
pub(super) fn bury(mut rec: DeliveryRecord, now: u64, reason: String, summary: String) -> Decision {
    rec.state = DeliveryState::Dead {
        dead_at_ms: now,
        reason,
    };
    Decision::Bury {
        record: rec,
        summary,
    }
}

/// A reason in our own words only (nothing the destination said): logged whole.
fn bury_ours(rec: DeliveryRecord, now: u64, reason: String) -> Decision {
    bury(rec, now, reason.clone(), reason)
}

/// The identity map could not be read or written: the attempt is retried on
/// the usual schedule, like a destination that did not answer.
fn unmapped(ctx: &Context, rec: DeliveryRecord, started: u64, e: StoreError) -> Decision {
    let failure = Failure::no_answer(format!("identity map unavailable: {e}"));
    failed(ctx, rec, started, started, failure, None, true)
}

/// An attempt that started at `started` failed with `failure` at `now`: the
/// next attempt's due time, or the dead letters when `retryable` is false or
/// the retry window is over.
fn failed(
    ctx: &Context,
    mut rec: DeliveryRecord,
    started: u64,
    now: u64,
    failure: Failure,
    retry_after: Option<Duration>,
    retryable: bool,
) -> Decision {
    rec.attempts = rec.attempts.saturating_add(1);
    let first = *rec.first_attempt_at_ms.get_or_insert(started);
    let reason = failure.reason();
    rec.last_error = Some(reason.clone());
    rec.last_status = failure.status;
    if !retryable {
        return bury(rec, now, reason, failure.summary);
    }
    match next_step(
        now,
        first,
        rec.attempts,
        retry_after,
        &ctx.retry,
        rand::random::<f64>(),
    ) {
        Step::RetryAt(due) => {
            rec.due_ms = due;
            Decision::Retry {
                record: rec,
                summary: failure.summary,
            }
        }
        Step::GiveUp => {
            let summary = give_up_reason(rec.attempts, &ctx.retry, &failure.summary);
            let reason = give_up_reason(rec.attempts, &ctx.retry, &reason);
            bury(rec, now, reason, summary)
        }
    }
}

/// A filter or transform failed at run time: not retryable (the same event
/// and program fail again). jq's message may quote the event, so the log gets
/// only the key; the dead letter gets the message.
fn rule_failure(e: RuleError) -> Failure {
    Failure {
        status: None,
        summary: format!("{}: run-time error", e.key),
        location: None,
        excerpt: Some(e.message),
    }
}

/// Counts what a destination's filter skipped and its transform dropped, per
/// destination (once per delivery: only on its first attempt).
fn count_left_out(metrics: &Metrics, destination: &str, filtered: u32, dropped: u32) {
    for (rule, n) in [("filter", filtered), ("transform", dropped)] {
        if n > 0 {
            metrics.inc(
                names::EVENTS_SKIPPED,
                &[("destination", destination), ("rule", rule)],
                u64::from(n),
            );
        }
    }
}

/// Runs one attempt of `rec` (fan-out: one target; first-success: each target
/// in order until one takes everything).
pub async fn attempt(ctx: &Context, mut rec: DeliveryRecord, webhook: &Webhook) -> Decision {
    let started = (ctx.clock)();
    let identity = ctx.identity.as_ref();
    let found = ctx.mapped.get_or_map(
        rec.id.webhook,
        webhook,
        &ctx.mapping,
        &ctx.selections,
        identity,
        ctx.clock,
    );
    let mapped = match found.await {
        Ok(mapped) => mapped,
        Err(e) => return unmapped(ctx, rec, started, e),
    };
    let mapped = match mapped.as_ref() {
        Ok(m) => m,
        Err(e) => return bury_ours(rec, started, format!("cannot map the webhook: {e}")),
    };
    if rec.targets.is_empty() {
        // Nothing to send to is not a delivery.
        return bury_ours(rec, started, "no destination to send it to".into());
    }
    let candidates: Vec<Candidate<'_>> = mapped.events.iter().map(|e| e.candidate()).collect();
    let first_success = rec.targets.len() > 1;
    // The last target's failure, and the Retry-After it asked for.
    let mut last: Option<(Failure, Option<Duration>)> = None;
    let mut any_retryable = false;
    // Borrowed while the loop updates `rec`'s progress; put back after.
    let targets = std::mem::take(&mut rec.targets);
    for target in &targets {
        let Some(dest) = ctx.destinations.get(target) else {
            let reason = format!("destination `{target}` is no longer in relay.toml");
            last = Some((Failure::no_answer(reason), None));
            continue;
        };
        // `events`, `filter`, `transform` (delivery::rules): what this
        // destination gets, worked out when the webhook was mapped.
        let selection = rules::outcome(&mapped.selected, target, &dest.rules, &candidates);
        let wanted = match selection.as_ref() {
            Ok(selection) => {
                if rec.attempts == 0 {
                    count_left_out(&ctx.metrics, target, selection.filtered, selection.dropped);
                }
                selection.texts(&candidates)
            }
            Err(e) => {
                last = Some((rule_failure(e.clone()), None));
                continue;
            }
        };
        // Progress counts only for a single target; first-success resends the set.
        let skip = if first_success {
            0
        } else {
            (rec.events_done as usize).min(wanted.len())
        };
        // A rate-limited destination: the first request waits for its slot
        // before it is built (Segment's sentAt is the time it is sent).
        let mut stop = ctx.stop.clone();
        let pace = dest.pacer.as_ref();
        if let Some(pacer) = pace.filter(|_| skip < wanted.len()) {
            if !pacer.wait(&mut stop).await {
                return Decision::HandBack;
            }
        }
        let requests = match dest.encoder.prepare(&wanted[skip..], (ctx.clock)()) {
            Ok(r) => r,
            Err(e) => {
                last = Some((Failure::no_answer(e.to_string()), None));
                continue;
            }
        };
        let mut outcome = Outcome::Delivered;
        for (i, req) in requests.iter().enumerate() {
            if let Some(pacer) = pace.filter(|_| i > 0) {
                if !pacer.wait(&mut stop).await {
                    return Decision::HandBack;
                }
            }
            outcome = dest.post(req, ctx.clock).await;
            if !matches!(outcome, Outcome::Delivered) {
                break;
            }
            if !first_success {
                rec.events_done += req.events as u32;
            }
        }
        last = Some(match outcome {
            Outcome::Delivered => return Decision::Done,
            Outcome::Retry {
                retry_after,
                failure,
            } => {
                any_retryable = true;
                (failure, retry_after)
            }
            Outcome::Fail(failure) => (failure, None),
        });
    }
    rec.targets = targets;
    let Some((failure, retry_after)) = last else {
        return Decision::Done;
    };
    failed(
        ctx,
        rec,
        started,
        (ctx.clock)(),
        failure,
        retry_after,
        any_retryable,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The identity map could not be read: the attempt is a retry on the usual
    /// schedule (never a mapping without the map, never a dead letter while the
    /// window lasts), and the reason says what failed.
    #[test]
    fn an_unreadable_identity_map_retries_the_attempt() {
        let (ctx, _trigger) =
            Context::for_tests(HashMap::new(), None, RetryConfig::default(), || 1_000);
        let id = crate::queue::DeliveryId {
            webhook: 1,
            slot: 0,
        };
        let rec = DeliveryRecord::new(id, "wh".into(), vec!["wh".into()], 1_000);
        let e = StoreError::Backend("database: connection refused".into());
        match unmapped(&ctx, rec, 1_000, e) {
            Decision::Retry { record, summary } => {
                assert_eq!(record.attempts, 1);
                assert!(record.due_ms > 1_000, "due later: {}", record.due_ms);
                assert!(summary.contains("identity map unavailable"), "{summary}");
                assert!(summary.contains("connection refused"), "{summary}");
            }
            other => panic!("not a retry: {other:?}"),
        }
    }
}
