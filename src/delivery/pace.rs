//! `rate_limit`: a token bucket that holds one token, shared by a lane's
//! concurrent requests, so requests to the destination are spaced evenly,
//! one every `1/rate` at most. A request reserves the next free slot and
//! waits for it; holding back is neither a failure nor an attempt.
//!
//! The bucket lives in this process: with several relays on one PostgreSQL
//! queue, each relay keeps to the limit on its own.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::RateLimit;
use crate::shutdown::Shutdown;

/// One destination's bucket.
#[derive(Debug)]
pub struct Pacer {
    /// Spacing between two requests at the limit.
    interval: Duration,
    /// When the next request may go (the bucket refills then).
    next: Mutex<Option<Instant>>,
}

/// When a request asking at `now` may go, and when the one after it may:
/// the earliest free slot, at least `interval` after the previous one. An
/// idle bucket holds one token, so nothing bursts after a quiet spell.
pub fn reserve(next: Option<Instant>, now: Instant, interval: Duration) -> (Instant, Instant) {
    let at = next.map_or(now, |n| n.max(now));
    (at, at + interval)
}

impl Pacer {
    pub fn new(limit: RateLimit) -> Pacer {
        Pacer {
            interval: limit.interval(),
            next: Mutex::new(None),
        }
    }

    /// Waits for this request's turn; false when `stop` fired first (the
    /// caller hands the delivery back instead of sending).
    pub async fn wait(&self, stop: &mut Shutdown) -> bool {
        let at = {
            let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
            let (at, after) = reserve(*next, Instant::now(), self.interval);
            *next = Some(after);
            at
        };
        if at <= Instant::now() {
            return true;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(at) => true,
            _ = stop.recv() => false,
        }
    }

    /// The spacing between two requests.
    pub fn interval(&self) -> Duration {
        self.interval
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_spaced_by_the_interval_and_idle_time_is_not_saved_up() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let i = ms(20);
        // First request of an idle bucket: now.
        let (at, next) = reserve(None, t0, i);
        assert_eq!((at, next), (t0, t0 + i));
        // Three asking at once: 0, 20, 40 ms.
        let (a, n) = reserve(Some(next), t0, i);
        assert_eq!(a, t0 + i);
        let (b, n) = reserve(Some(n), t0, i);
        assert_eq!(b, t0 + ms(40));
        // Asking after a quiet second: now, not a burst of saved tokens.
        let later = t0 + ms(1000);
        let (c, n) = reserve(Some(n), later, i);
        assert_eq!(c, later);
        let (d, _) = reserve(Some(n), later, i);
        assert_eq!(d, later + i);
    }

    #[tokio::test]
    async fn waits_in_turn_and_stops_on_shutdown() {
        let p = Pacer::new(crate::config::parse_rate_limit("10/s").expect("rate"));
        let (trigger, mut stop) = crate::shutdown::channel();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(p.wait(&mut stop).await);
        }
        let took = Instant::now() - t0;
        assert!(
            took >= Duration::from_millis(200) && took < Duration::from_secs(5),
            "{took:?}"
        );
        trigger.fire();
        assert!(
            !p.wait(&mut stop).await,
            "a held-back request gives way to shutdown"
        );
    }
}
