//! One attempt at a delivery → a [`Decision`]: done, retry at a due time, or bury.
//!
//! It maps the webhook, keeps the events each destination wants, sends what is
//! not yet delivered and decides what the queue does next. The decision is
//! returned, not applied: `drive` writes it, in one place.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{MappingConfig, RetryConfig};
use crate::queue::{DeliveryRecord, DeliveryState, WebhookId};
use crate::sources::Webhook;

use super::classify::{Failure, Outcome};
use super::destination::Destination;
use super::format::event_passes_filter;
use super::retry::{Step, give_up_reason, next_step};

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
}

/// Shared by every lane.
pub struct Context {
    /// Destinations by name.
    pub destinations: HashMap<String, Arc<Destination>>,
    /// How webhooks become events.
    pub mapping: MappingConfig,
    /// The retry window.
    pub retry: RetryConfig,
    /// Wall clock, ms.
    pub clock: fn() -> u64,
    /// Recently mapped webhooks, so the lanes of one fan-out map it once.
    pub mapped: MappedCache,
}

/// What a lane needs of one mapped event: its routing keys and its bytes
/// (not the JSON tree, which is several times larger).
struct MappedEvent {
    call: crate::event::Call,
    name: Option<String>,
    json: String,
}

/// The events (or the mapping error) of a webhook.
type Mapped = Arc<Result<Vec<MappedEvent>, String>>;

/// Recently mapped webhooks by id. Mapping is a pure function of the stored
/// webhook (never changed after accept) and the mapping config (fixed for the
/// life of the process), so a hit gives exactly what mapping again would; it
/// saves a JSON parse of the body for every destination after the first,
/// which was a quarter of the relay's CPU in a five-way fan-out.
#[derive(Default)]
pub struct MappedCache {
    entries: std::sync::Mutex<(
        HashMap<WebhookId, Mapped>,
        std::collections::VecDeque<WebhookId>,
    )>,
}

/// Webhooks kept; fan-out lanes work the same webhooks at about the same time.
const MAPPED_CACHE: usize = 1024;

impl MappedCache {
    fn get_or_map(&self, id: WebhookId, webhook: &Webhook, cfg: &MappingConfig) -> Mapped {
        let lock = || self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = lock().0.get(&id) {
            return m.clone();
        }
        let mapped: Mapped = Arc::new(
            crate::mapping::map(webhook, cfg)
                .map(|events| {
                    events
                        .into_iter()
                        .map(|e| MappedEvent {
                            call: e.call(),
                            name: e.name().map(str::to_string),
                            json: e.to_json(),
                        })
                        .collect()
                })
                .map_err(|e| e.to_string()),
        );
        let mut guard = lock();
        let (map, order) = &mut *guard;
        if map.insert(id, mapped.clone()).is_none() {
            order.push_back(id);
            while order.len() > MAPPED_CACHE {
                if let Some(old) = order.pop_front() {
                    map.remove(&old);
                }
            }
        }
        mapped
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

/// Runs one attempt of `rec` (fan-out: one target; first-success: each target
/// in order until one takes everything).
pub async fn attempt(ctx: &Context, mut rec: DeliveryRecord, webhook: &Webhook) -> Decision {
    let started = (ctx.clock)();
    let mapped = ctx.mapped.get_or_map(rec.id.webhook, webhook, &ctx.mapping);
    let events = match mapped.as_ref() {
        Ok(e) => e,
        Err(e) => return bury_ours(rec, started, format!("cannot map the webhook: {e}")),
    };
    if rec.targets.is_empty() {
        // Nothing to send to is not a delivery.
        return bury_ours(rec, started, "no destination to send it to".into());
    }
    let first_success = rec.targets.len() > 1;
    // The last target's failure, and the Retry-After it asked for.
    let mut last: Option<(Failure, Option<Duration>)> = None;
    let mut any_retryable = false;
    for target in rec.targets.clone() {
        let Some(dest) = ctx.destinations.get(&target) else {
            let reason = format!("destination `{target}` is no longer in relay.toml");
            last = Some((Failure::no_answer(reason), None));
            continue;
        };
        let filter = dest.cfg.events.as_deref();
        let wanted: Vec<String> = events
            .iter()
            .filter(|e| event_passes_filter(filter, e.call.as_str(), e.name.as_deref()))
            .map(|e| e.json.clone())
            .collect();
        // Progress counts only for a single target; first-success resends the set.
        let skip = if first_success {
            0
        } else {
            (rec.events_done as usize).min(wanted.len())
        };
        let requests = match dest.encoder.prepare(&wanted[skip..], started) {
            Ok(r) => r,
            Err(e) => {
                last = Some((Failure::no_answer(e.to_string()), None));
                continue;
            }
        };
        let mut outcome = Outcome::Delivered;
        for req in &requests {
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
    let now = (ctx.clock)();
    rec.attempts = rec.attempts.saturating_add(1);
    let first = *rec.first_attempt_at_ms.get_or_insert(started);
    let Some((failure, retry_after)) = last else {
        return Decision::Done;
    };
    let reason = failure.reason();
    rec.last_error = Some(reason.clone());
    rec.last_status = failure.status;
    if !any_retryable {
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
