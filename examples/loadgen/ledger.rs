//! The exact ledger: what was sent, acknowledged and delivered, per webhook.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::hist::Hist;

/// A growable array of atomics indexed by webhook number, allocated in chunks
/// as numbers are issued (so a long run costs memory only for what it sends).
pub struct Slots<T> {
    pub chunks: Vec<OnceLock<Box<[T]>>>,
}

pub const CHUNK: u64 = 1 << 16;

pub const MAX_WEBHOOKS: u64 = 64 << 20;

impl<T: Default> Slots<T> {
    pub fn new() -> Self {
        Slots {
            chunks: (0..MAX_WEBHOOKS / CHUNK).map(|_| OnceLock::new()).collect(),
        }
    }
    pub fn get(&self, n: u64) -> Option<&T> {
        let c = self.chunks.get((n / CHUNK) as usize)?;
        let chunk = c.get_or_init(|| (0..CHUNK).map(|_| T::default()).collect());
        chunk.get((n % CHUNK) as usize)
    }
}

/// Everything counted in one run.
pub struct Ledger {
    pub run: String,
    pub start: Instant,
    /// Numbers handed out to senders.
    pub issued: AtomicU64,
    pub sent: AtomicU64,
    pub acked: AtomicU64,
    pub duplicate_acks: AtomicU64,
    pub refused: AtomicU64,
    pub errors: AtomicU64,
    /// Scheduled send time per webhook, µs since start, + 1 (0 = never sent).
    pub scheduled: Slots<AtomicU64>,
    /// 1 once the relay answered 200 queued.
    pub ack: Slots<AtomicU8>,
    /// Arrivals per destination per webhook.
    pub arrivals: Vec<Slots<AtomicU8>>,
    pub delivered: Vec<AtomicU64>,
    pub duplicates: AtomicU64,
    pub unknown: AtomicU64,
    pub last_delivery_us: AtomicU64,
    pub ack_latency: Hist,
    pub ack_from_schedule: Hist,
    pub e2e: Hist,
}

impl Ledger {
    pub fn us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    /// Records one request a destination received.
    pub fn arrival(&self, dest: usize, body: &[u8]) {
        let now = self.us();
        let probe: &[u8] = b"\"event_id\":\"probe-";
        if body.windows(probe.len()).any(|w| w == probe) {
            return; // the restart probe, not part of the ledger
        }
        let Some(n) = webhook_number(body, &self.run) else {
            self.unknown.fetch_add(1, Relaxed);
            return;
        };
        let (Some(slot), Some(sched)) = (self.arrivals[dest].get(n), self.scheduled.get(n)) else {
            self.unknown.fetch_add(1, Relaxed);
            return;
        };
        if slot.fetch_add(1, Relaxed) == 0 {
            self.delivered[dest].fetch_add(1, Relaxed);
            let s = sched.load(Relaxed);
            if s > 0 {
                self.e2e.record(now.saturating_sub(s - 1));
            }
        } else {
            self.duplicates.fetch_add(1, Relaxed);
        }
        self.last_delivery_us.fetch_max(now, Relaxed);
    }

    /// Acknowledged webhooks some destination has not received yet.
    pub fn missing(&self) -> u64 {
        let issued = self.issued.load(Relaxed);
        let mut missing = 0;
        for n in 0..issued {
            if self.ack.get(n).is_some_and(|a| a.load(Relaxed) == 1) {
                for d in &self.arrivals {
                    if d.get(n).is_some_and(|c| c.load(Relaxed) == 0) {
                        missing += 1;
                    }
                }
            }
        }
        missing
    }
}

/// The webhook number from `context.source.event_id` = `lg-RUN-N`.
pub fn webhook_number(body: &[u8], run: &str) -> Option<u64> {
    let text = std::str::from_utf8(body).ok()?;
    let at = text.find("\"event_id\":\"")? + "\"event_id\":\"".len();
    let rest = text[at..].strip_prefix("lg-")?.strip_prefix(run)?;
    let rest = rest.strip_prefix('-')?;
    let end = rest.find('"')?;
    rest[..end].parse().ok()
}

/// A fresh ledger for one run: its own run id, counters and histograms.
pub fn new_ledger(destinations: usize) -> Arc<Ledger> {
    Arc::new(Ledger {
        run: format!("{:08x}", rand::random::<u32>()),
        start: Instant::now(),
        issued: AtomicU64::new(0),
        sent: AtomicU64::new(0),
        acked: AtomicU64::new(0),
        duplicate_acks: AtomicU64::new(0),
        refused: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        scheduled: Slots::new(),
        ack: Slots::new(),
        arrivals: (0..destinations).map(|_| Slots::new()).collect(),
        delivered: (0..destinations).map(|_| AtomicU64::new(0)).collect(),
        duplicates: AtomicU64::new(0),
        unknown: AtomicU64::new(0),
        last_delivery_us: AtomicU64::new(0),
        ack_latency: Hist::new(),
        ack_from_schedule: Hist::new(),
        e2e: Hist::new(),
    })
}

/// Counts on stderr once a second, until aborted.
pub fn spawn_progress(l: Arc<Ledger>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = (0, 0);
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let acked = l.acked.load(Relaxed);
            let del: u64 = l.delivered.iter().map(|d| d.load(Relaxed)).sum();
            eprintln!(
                "  t={:>5.1}s acked {acked} (+{}/s) delivered {del} (+{}/s) refused {} errors {}",
                l.start.elapsed().as_secs_f64(),
                acked - last.0,
                del - last.1,
                l.refused.load(Relaxed),
                l.errors.load(Relaxed)
            );
            last = (acked, del);
        }
    })
}
