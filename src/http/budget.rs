//! The memory budget for request bodies whose signature is not verified yet,
//! shared by every ingest connection (`server.unverified_body_budget`).
//!
//! Measured before it existed: 300 connections each sending a 1 MiB body
//! minus one byte and stalling took the relay from 35 to 496 MB, unsigned. A
//! body now reserves its bytes before they are read (its whole Content-Length
//! at once; a chunked body block by block as it arrives), so the bodies held never add
//! up to more than the budget.
//!
//! A budget alone would let stalled bodies keep every signed webhook out
//! until their body timeout. So when the budget is short, the request asking
//! evicts the oldest bodies older than itself that have been held at least
//! [`EVICTABLE_AFTER`] (they answer 503 and close), waiting at most
//! [`ROOM_WAIT`] for them to get that old and for their memory to be freed.
//! A genuine webhook is read in milliseconds; holding the budget against it
//! means re-sending the whole budget every second.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// A body held at least this long may be cut short for a newer request.
pub const EVICTABLE_AFTER: Duration = Duration::from_secs(1);
/// How long a request waits for evicted bodies to free their memory.
pub const ROOM_WAIT: Duration = Duration::from_secs(1);

/// Bytes that unverified bodies may hold, across all connections.
pub struct BodyBudget {
    /// The configured budget.
    total: u64,
    /// Bodies held younger than this are never evicted.
    evictable_after: Duration,
    /// Who holds what.
    ledger: Mutex<Ledger>,
    /// Woken whenever a holder gives its bytes back.
    freed: Notify,
}

struct Ledger {
    /// Bytes nobody holds.
    left: u64,
    /// Next holder id; ids grow with age order, so the map is oldest first.
    next: u64,
    holders: BTreeMap<u64, Holder>,
}

struct Holder {
    since: Instant,
    bytes: u64,
    /// Notified once when this body is evicted.
    evict: Arc<Notify>,
    evicted: bool,
}

/// One request's share of the budget; given back on drop.
pub struct Held {
    budget: Arc<BodyBudget>,
    id: u64,
    evict: Arc<Notify>,
}

impl BodyBudget {
    pub fn new(total: u64) -> Arc<BodyBudget> {
        BodyBudget::with_eviction_age(total, EVICTABLE_AFTER)
    }

    /// A budget whose bodies become evictable after `age` (tests use zero).
    pub fn with_eviction_age(total: u64, age: Duration) -> Arc<BodyBudget> {
        Arc::new(BodyBudget {
            total,
            evictable_after: age,
            ledger: Mutex::new(Ledger {
                left: total,
                next: 0,
                holders: BTreeMap::new(),
            }),
            freed: Notify::new(),
        })
    }

    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes held now (the `shoprelay_unverified_body_bytes` gauge).
    pub fn held(&self) -> u64 {
        self.total - self.ledger().left
    }

    /// Reserves `n` bytes for a new body, evicting older stalled bodies if
    /// need be; `None` when there is no room (the caller answers 503).
    pub async fn reserve(self: &Arc<Self>, n: u64) -> Option<Held> {
        let evict = Arc::new(Notify::new());
        let id = {
            let mut l = self.ledger();
            let id = l.next;
            l.next += 1;
            l.holders.insert(
                id,
                Holder {
                    since: Instant::now(),
                    bytes: 0,
                    evict: evict.clone(),
                    evicted: false,
                },
            );
            id
        };
        let held = Held {
            budget: self.clone(),
            id,
            evict,
        };
        held.grow(n).await.then_some(held)
    }

    /// Adds `n` bytes to holder `id`, whose eviction `evict` announces.
    async fn take(&self, id: u64, n: u64, evict: &Notify) -> bool {
        let give_up = Instant::now() + ROOM_WAIT;
        let mut wake_at;
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            // Registered before the ledger is unlocked: no wake-up is missed.
            freed.as_mut().enable();
            {
                let mut l = self.ledger();
                match l.holders.get(&id) {
                    Some(h) if !h.evicted => {}
                    _ => return false,
                }
                if l.left >= n {
                    l.left -= n;
                    if let Some(h) = l.holders.get_mut(&id) {
                        h.bytes += n;
                    }
                    return true;
                }
                wake_at = match l.evict_for(id, n, Instant::now(), self.evictable_after) {
                    Room::Coming => give_up,
                    Room::At(t) if t < give_up => t,
                    Room::At(_) | Room::Never => return false,
                };
            }
            tokio::select! {
                _ = freed => {}
                // Evicted while waiting: give the bytes back rather than wait on.
                _ = evict.notified() => return false,
                _ = tokio::time::sleep_until(wake_at) => {
                    if wake_at >= give_up {
                        return false;
                    }
                }
            }
        }
    }
}

/// Whether bodies older than a request can make room for it.
enum Room {
    /// Evicted (or already leaving): wait for them to be freed.
    Coming,
    /// Enough of them become evictable at this time.
    At(Instant),
    /// Not even all of them together would make room.
    Never,
}

impl Ledger {
    /// Makes room for `n` more bytes for holder `id` by evicting the oldest
    /// bodies older than it that have been held at least `age`.
    fn evict_for(&mut self, id: u64, n: u64, now: Instant, age: Duration) -> Room {
        let leaving: u64 = self
            .holders
            .values()
            .filter(|h| h.evicted)
            .map(|h| h.bytes)
            .sum();
        let mut coming = self.left + leaving;
        if coming >= n {
            return Room::Coming;
        }
        // Ids grow with `since`: the candidates come oldest first.
        let candidates = || {
            self.holders
                .range(..id)
                .map(|(_, h)| h)
                .filter(|h| !h.evicted && h.bytes > 0)
        };
        let mut total = coming;
        let Some(last) = candidates().find(|h| {
            total += h.bytes;
            total >= n
        }) else {
            return Room::Never;
        };
        let ready = last.since + age;
        if ready > now {
            return Room::At(ready);
        }
        for h in self.holders.range_mut(..id).map(|(_, h)| h) {
            if coming >= n {
                break;
            }
            if h.evicted || h.bytes == 0 {
                continue;
            }
            h.evicted = true;
            h.evict.notify_one();
            coming += h.bytes;
        }
        Room::Coming
    }
}

impl Held {
    /// Reserves `n` more bytes for this body (a chunked body growing).
    pub async fn grow(&self, n: u64) -> bool {
        self.budget.take(self.id, n, &self.evict).await
    }

    /// Gives back `n` of this body's bytes (the buffer it outgrew).
    pub fn release(&self, n: u64) {
        let mut l = self.budget.ledger();
        let Some(h) = l.holders.get_mut(&self.id) else {
            return;
        };
        let n = n.min(h.bytes);
        h.bytes -= n;
        l.left += n;
        drop(l);
        self.budget.freed.notify_waiters();
    }

    /// Resolves when this body has been evicted for a newer request.
    pub async fn evicted(&self) {
        self.evict.notified().await
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut l = self.budget.ledger();
        if let Some(h) = l.holders.remove(&self.id) {
            l.left += h.bytes;
        }
        drop(l);
        self.budget.freed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reservations_add_up_to_the_budget_and_are_given_back() {
        // Nothing becomes evictable within the test.
        let b = BodyBudget::with_eviction_age(100, Duration::from_secs(60));
        let a = b.reserve(60).await.expect("room for 60");
        assert_eq!(b.held(), 60);
        assert!(b.reserve(50).await.is_none(), "60 + 50 > 100");
        assert!(a.grow(40).await);
        assert_eq!(b.held(), 100);
        assert!(!a.grow(1).await, "nothing younger may be evicted for it");
        assert_eq!(b.held(), 100);
        drop(a);
        assert_eq!(b.held(), 0);
        assert!(b.reserve(100).await.is_some());
        assert_eq!(b.held(), 0, "dropped at once");
    }

    #[tokio::test]
    async fn a_request_waits_for_a_stalled_body_to_become_evictable() {
        let b = BodyBudget::with_eviction_age(100, Duration::from_millis(200));
        let stalled = b.reserve(100).await.unwrap();
        let holder = tokio::spawn(async move {
            stalled.evicted().await;
            drop(stalled);
        });
        let started = Instant::now();
        assert!(b.reserve(10).await.is_some());
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(150), "{waited:?}");
        assert!(waited < ROOM_WAIT, "{waited:?}");
        holder.await.unwrap();
    }

    #[tokio::test]
    async fn a_body_too_young_to_go_in_time_means_no_room_at_once() {
        let b = BodyBudget::with_eviction_age(100, Duration::from_secs(60));
        let _young = b.reserve(100).await.unwrap();
        let started = Instant::now();
        assert!(b.reserve(10).await.is_none());
        assert!(started.elapsed() < Duration::from_millis(100));
    }

    #[tokio::test]
    async fn a_newer_request_evicts_the_oldest_held_body() {
        let b = BodyBudget::with_eviction_age(100, Duration::ZERO);
        let oldest = b.reserve(50).await.unwrap();
        let older = b.reserve(50).await.unwrap();
        // The holder of the oldest body gives it back when told to go.
        let watcher = tokio::spawn(async move {
            oldest.evicted().await;
            drop(oldest);
        });
        let newer = b.reserve(30).await.expect("room after an eviction");
        watcher.await.unwrap();
        assert_eq!(b.held(), 80);
        // An older body growing never evicts a newer one.
        assert!(!older.grow(30).await);
        drop((older, newer));
        assert_eq!(b.held(), 0);
    }

    #[tokio::test]
    async fn an_evicted_body_that_is_not_given_back_fails_the_wait() {
        let b = BodyBudget::with_eviction_age(100, Duration::ZERO);
        let stuck = b.reserve(100).await.unwrap();
        let started = Instant::now();
        assert!(b.reserve(10).await.is_none());
        assert!(started.elapsed() >= ROOM_WAIT);
        assert!(!stuck.grow(1).await, "an evicted body cannot grow");
    }
}
