//! CPU and memory of processes, from /proc.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

pub fn status_kb(pid: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// utime + stime of a process in seconds (clock ticks are 100 Hz on Linux).
pub fn cpu_secs(pid: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the `(comm)`, which may contain spaces.
            let rest = &s[s.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / 100.0)
        })
        .unwrap_or(0.0)
}

pub fn cpu_of(pids: &[String]) -> Option<f64> {
    (!pids.is_empty()).then(|| pids.iter().map(|p| cpu_secs(p)).sum())
}

/// Keeps the highest VmRSS of `pid` in `max`, sampled every 250 ms while
/// `sampling` holds.
pub fn spawn_rss_sampler(
    pid: String,
    sampling: Arc<AtomicBool>,
    max: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while sampling.load(Relaxed) {
            max.fetch_max(status_kb(&pid, "VmRSS:"), Relaxed);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
}
