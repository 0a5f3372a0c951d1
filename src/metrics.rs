//! Counters, gauges and histograms for `/metrics` (Prometheus text format 0.0.4).
//!
//! Label sets are few and fixed (sources, topics, destinations from config),
//! so a mutex-guarded map is enough; the hot path takes the lock once per
//! request.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

pub mod names;

/// Delivery latency buckets, seconds.
const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Group-commit batch size buckets.
const BATCH_BUCKETS: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 512.0, 4096.0];

type Labels = Vec<(&'static str, String)>;

/// A gauge computed at scrape time: name, labels, value.
pub type Gauge = (&'static str, Labels, f64);

#[derive(Default)]
struct Histogram {
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

/// One metric family's help text and type.
struct Family {
    help: &'static str,
    kind: &'static str,
}

/// All metrics of one relay.
#[derive(Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<(&'static str, Labels), u64>>,
    histograms: Mutex<BTreeMap<(&'static str, Labels), Histogram>>,
}

fn family(name: &str) -> Family {
    let (help, kind) = match name {
        names::WEBHOOKS_RECEIVED => (
            "Webhooks received, by source, topic and outcome (queued, duplicate).",
            "counter",
        ),
        names::WEBHOOKS_REJECTED => ("Requests refused, by source and reason.", "counter"),
        names::DELIVERIES => (
            "Delivery attempts, by lane (a destination, or a first-success source) and outcome (delivered, retry, dead).",
            "counter",
        ),
        names::EVENTS_SKIPPED => (
            "Events a destination's filter skipped (rule=filter) or its transform dropped (rule=transform), by destination.",
            "counter",
        ),
        names::DEAD_LETTERS_TOTAL => ("Deliveries moved to the dead letters, by lane.", "counter"),
        names::DELIVERY_LATENCY => (
            "Time from accept to successful delivery, by lane.",
            "histogram",
        ),
        names::COMMIT_BATCH_SIZE => (
            "Webhooks written per group commit (one fdatasync each).",
            "histogram",
        ),
        names::QUEUE_DEPTH => (
            "Deliveries pending (waiting or in flight), by lane.",
            "gauge",
        ),
        names::QUEUE_OLDEST_DUE_AGE => ("Age of the earliest due delivery, by lane.", "gauge"),
        names::DEAD_LETTERS => ("Dead letters kept now.", "gauge"),
        names::LOG_DAMAGED_RANGES => (
            "Damaged ranges of the write-ahead log found and skipped since start.",
            "gauge",
        ),
        names::INGEST_CONNECTIONS => ("Open connections on the ingest listener.", "gauge"),
        names::UNVERIFIED_BODY_BYTES => (
            "Bytes held for request bodies whose signature is not verified yet.",
            "gauge",
        ),
        _ => ("", "untyped"),
    };
    Family { help, kind }
}

fn labels(pairs: &[(&'static str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, (*v).to_string())).collect()
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn render_labels(l: &[(&'static str, String)], extra: Option<(&str, &str)>) -> String {
    let mut parts: Vec<String> = l
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    if let Some((k, v)) = extra {
        parts.push(format!("{k}=\"{v}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

impl Metrics {
    /// Adds `n` to a counter.
    pub fn inc(&self, name: &'static str, pairs: &[(&'static str, &str)], n: u64) {
        let mut c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        *c.entry((name, labels(pairs))).or_insert(0) += n;
    }

    /// Reads a counter (for `/admin/stats`).
    pub fn counter_sum(&self, name: &'static str, filter: &[(&'static str, &str)]) -> u64 {
        let c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        c.iter()
            .filter(|((n, l), _)| {
                *n == name
                    && filter
                        .iter()
                        .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|(_, v)| *v)
            .sum()
    }

    /// A counter's values by the values of two of its labels (for
    /// `/admin/stats`), e.g. destination → rule → count.
    pub fn counter_table(
        &self,
        name: &'static str,
        row: &str,
        column: &str,
    ) -> BTreeMap<String, BTreeMap<String, u64>> {
        let c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        for ((n, l), v) in c.iter() {
            let get = |k: &str| l.iter().find(|(lk, _)| *lk == k).map(|(_, v)| v.clone());
            if let (true, Some(r), Some(c)) = (*n == name, get(row), get(column)) {
                *out.entry(r).or_default().entry(c).or_default() += v;
            }
        }
        out
    }

    /// Records one observation.
    pub fn observe(&self, name: &'static str, pairs: &[(&'static str, &str)], value: f64) {
        let bounds: &[f64] = if name == names::COMMIT_BATCH_SIZE {
            &BATCH_BUCKETS
        } else {
            &BUCKETS
        };
        let mut h = self.histograms.lock().unwrap_or_else(|p| p.into_inner());
        let e = h.entry((name, labels(pairs))).or_default();
        if e.buckets.is_empty() {
            e.buckets = vec![0; bounds.len()];
        }
        for (i, b) in bounds.iter().enumerate() {
            if value <= *b {
                e.buckets[i] += 1;
            }
        }
        e.sum += value;
        e.count += 1;
    }

    /// The exposition text; `gauges` are computed by the caller at scrape time.
    pub fn render(&self, gauges: &[Gauge]) -> String {
        let mut out = String::new();
        let mut last = "";
        let mut header = |out: &mut String, name: &'static str| {
            if name != last {
                let f = family(name);
                let _ = writeln!(out, "# HELP {name} {}\n# TYPE {name} {}", f.help, f.kind);
                last = name;
            }
        };
        for ((name, l), v) in self
            .counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            header(&mut out, name);
            let _ = writeln!(out, "{name}{} {v}", render_labels(l, None));
        }
        for ((name, l), h) in self
            .histograms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            header(&mut out, name);
            let bounds: &[f64] = if *name == names::COMMIT_BATCH_SIZE {
                &BATCH_BUCKETS
            } else {
                &BUCKETS
            };
            for (b, n) in bounds.iter().zip(&h.buckets) {
                let _ = writeln!(
                    out,
                    "{name}_bucket{} {n}",
                    render_labels(l, Some(("le", &b.to_string())))
                );
            }
            let _ = writeln!(
                out,
                "{name}_bucket{} {}",
                render_labels(l, Some(("le", "+Inf"))),
                h.count
            );
            let _ = writeln!(out, "{name}_sum{} {}", render_labels(l, None), h.sum);
            let _ = writeln!(out, "{name}_count{} {}", render_labels(l, None), h.count);
        }
        for (name, l, v) in gauges {
            header(&mut out, name);
            let _ = writeln!(out, "{name}{} {v}", render_labels(l, None));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_has_help_and_a_type() {
        for name in names::ALL {
            let f = family(name);
            assert!(!f.help.is_empty(), "{name}");
            assert_ne!(f.kind, "untyped", "{name}");
        }
        let unique: std::collections::BTreeSet<_> = names::ALL.into_iter().collect();
        assert_eq!(unique.len(), names::ALL.len());
    }
}
