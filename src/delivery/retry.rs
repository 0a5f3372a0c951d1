//! The retry schedule: a pure function from "how many attempts, since when, what the
//! destination asked for" to the next due time, which the caller stores in the queue.
//!
//! Why not the `backoff` crate: it is unmaintained (RUSTSEC-2025-0012), and it keeps
//! its state (current interval, elapsed time) in memory, which dies with the process.
//! Our deliveries outlive restarts, so the schedule must be recomputable from what
//! the queue record already holds: the attempt count and the first attempt's time.
//!
//! # The rules
//!
//! - Delay after the `n`th failed attempt (n ≥ 1): `base = min(initial_interval ·
//!   2^(n−1), max_interval)`, then "equal jitter": `base/2 + jitter · base/2`, so the
//!   delay lies in `[base/2, base]` and never exceeds `max_interval`. Half fixed keeps
//!   a floor under the wait; half random spreads a burst of failures (a destination
//!   that was down for everyone) apart. The caller draws the jitter, e.g.
//!   `rand::random::<f64>()`. With the defaults (1 s, 10 min, 4 h): 0.5–1 s, 1–2 s,
//!   2–4 s, …, then 5–10 min from the 11th attempt on; about 40 attempts in all.
//! - The window: the delivery gives up once `now ≥ first_attempt + max_age`.
//! - Inside the window the next attempt is due at `now + max(delay, Retry-After)`:
//!   never sooner than the destination asked, never faster than our own backoff.
//! - The due time is clamped to the window's end, so the last retry happens at the
//!   edge of the window, even when Retry-After asks for longer than what remains.
//!   When that attempt fails too, `now ≥ end` and the answer is [`Step::GiveUp`].

use std::time::Duration;

use crate::config::RetryConfig;

/// What to do after a failed attempt that may be retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Try again at this time (ms since the epoch); store it as the due time.
    RetryAt(u64),
    /// `max_age` has passed since the first attempt: dead-letter it.
    GiveUp,
}

/// The backoff before the next attempt, after `attempts` attempts (counting the one
/// that just failed; 0 is read as 1). `jitter` is a random number in `[0, 1)` from
/// the caller; values outside `[0, 1]` are clamped, NaN counts as 0. Never panics
/// or overflows.
pub fn backoff_delay(attempts: u32, cfg: &RetryConfig, jitter: f64) -> Duration {
    let doublings = attempts.saturating_sub(1);
    // 2^doublings overflows u32 from 32 on; by then any sane interval is capped anyway.
    let base = 2u32
        .checked_pow(doublings)
        .and_then(|factor| cfg.initial_interval.checked_mul(factor))
        .map_or(cfg.max_interval, |d| d.min(cfg.max_interval));
    let half = base / 2;
    let jitter = if jitter.is_nan() {
        0.0
    } else {
        jitter.clamp(0.0, 1.0)
    };
    // f64 → u64 casts saturate, so this cannot panic the way Duration::mul_f64 can.
    let extra = Duration::from_nanos((half.as_nanos() as f64 * jitter) as u64);
    // `base - half`, not `half`: an odd nanosecond stays in the fixed part.
    (base - half) + extra.min(half)
}

/// The next step after a retryable failure observed at `now_ms`. See the module doc.
pub fn next_step(
    now_ms: u64,
    first_attempt_at_ms: u64,
    attempts: u32,
    retry_after: Option<Duration>,
    cfg: &RetryConfig,
    jitter: f64,
) -> Step {
    let end = first_attempt_at_ms.saturating_add(millis_ceil(cfg.max_age));
    if now_ms >= end {
        return Step::GiveUp;
    }
    let wait = backoff_delay(attempts, cfg, jitter).max(retry_after.unwrap_or_default());
    Step::RetryAt(now_ms.saturating_add(millis_ceil(wait)).min(end))
}

/// The dead-letter reason when the window closes, e.g.
/// `gave up after 14 attempts over 4h: HTTP 503 Service Unavailable`.
pub fn give_up_reason(attempts: u32, cfg: &RetryConfig, last_error: &str) -> String {
    // As relay.toml writes it, and as `check` prints it.
    let window = crate::config::format_duration(cfg.max_age);
    let plural = if attempts == 1 { "" } else { "s" };
    format!("gave up after {attempts} attempt{plural} over {window}: {last_error}")
}

/// Whole milliseconds, rounded up so a non-zero delay never becomes "due now".
fn millis_ceil(d: Duration) -> u64 {
    let ms = d.as_nanos().div_ceil(1_000_000);
    u64::try_from(ms).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
