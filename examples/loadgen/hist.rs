//! A lock-free latency histogram.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Lock-free log-linear histogram of microseconds (HDR-style, < 1% error).
pub struct Hist {
    pub buckets: Vec<AtomicU64>,
}

pub const SUB: u64 = 128;

impl Hist {
    pub fn new() -> Hist {
        Hist {
            buckets: (0..4096).map(|_| AtomicU64::new(0)).collect(),
        }
    }
    pub fn index(v: u64) -> usize {
        if v < SUB {
            return v as usize;
        }
        let e = 63 - v.leading_zeros() as u64 - 6; // v >> e in [64, 128)
        (SUB + (e - 1) * 64 + ((v >> e) - 64)) as usize
    }
    pub fn upper(i: usize) -> u64 {
        let i = i as u64;
        if i < SUB {
            return i;
        }
        let e = (i - SUB) / 64 + 1;
        let m = (i - SUB) % 64 + 64;
        ((m + 1) << e) - 1
    }
    pub fn record(&self, us: u64) {
        let i = Self::index(us).min(self.buckets.len() - 1);
        self.buckets[i].fetch_add(1, Relaxed);
    }
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Relaxed)).sum()
    }
    pub fn quantile(&self, q: f64) -> u64 {
        let total = self.count();
        if total == 0 {
            return 0;
        }
        let want = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b.load(Relaxed);
            if seen >= want {
                return Self::upper(i);
            }
        }
        0
    }
    /// The `q` quantile in milliseconds.
    pub fn ms(&self, q: f64) -> f64 {
        self.quantile(q) as f64 / 1000.0
    }
    pub fn line(&self, what: &str) -> String {
        format!(
            "{what:<28} n={:<9} p50={:>9.2}ms p99={:>9.2}ms p99.9={:>9.2}ms max={:>9.2}ms",
            self.count(),
            self.ms(0.5),
            self.ms(0.99),
            self.ms(0.999),
            self.ms(1.0),
        )
    }
}
