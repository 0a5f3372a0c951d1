//! What a run prints.

use std::sync::atomic::Ordering::Relaxed;

use crate::args::{Args, Kind};
use crate::ledger::Ledger;
use crate::run::RelayRun;

/// The full report of one relay run.
pub fn print_report(args: &Args, r: &RelayRun) {
    let l = &r.ledger;
    let kind = Kind::of(args);
    let (acked, missing, delivered, send_secs) = (r.acked, r.missing, r.delivered, r.send_secs);
    let (sent, refused, errors, dup_acks) = (
        l.sent.load(Relaxed),
        l.refused.load(Relaxed),
        l.errors.load(Relaxed),
        l.duplicate_acks.load(Relaxed),
    );
    println!("--- ledger");
    println!(
        "sent {sent}  acked {acked}  refused(non-200) {refused}  errors {errors}  duplicate-acks {dup_acks}"
    );
    for (d, n) in l.delivered.iter().enumerate() {
        println!("delivered to d{d}: {} unique", n.load(Relaxed));
    }
    println!(
        "duplicate deliveries {}  unknown {}  missing (acked, not delivered after {}s drain) {missing}",
        l.duplicates.load(Relaxed),
        l.unknown.load(Relaxed),
        args.drain_timeout
    );
    println!("--- throughput");
    println!(
        "acks/s {:.0}  (acked {acked} in {send_secs:.2}s of sending)",
        acked as f64 / send_secs
    );
    if args.destinations > 0 && r.last_us > 0 {
        let secs = r.last_us as f64 / 1e6;
        println!(
            "deliveries/s {:.0}  ({delivered} unique deliveries, first send → last delivery {secs:.2}s)",
            delivered as f64 / secs
        );
        if args.backlog {
            let drained = delivered - r.delivered_at_send_end;
            let dsecs = r.last_us.saturating_sub(r.back_us) as f64 / 1e6;
            println!(
                "backlog drain: {drained} deliveries in {dsecs:.2}s after the destinations came back = {:.0}/s",
                drained as f64 / dsecs
            );
            if let (Kind::Child, Some(c)) = (kind, r.drain_cpu) {
                println!(
                    "cpu while draining: relay {c:.2}s = {:.0} µs per delivery",
                    c * 1e6 / drained.max(1) as f64
                );
            }
        }
    }
    if let Some((spawned, served)) = r.restart_secs {
        println!(
            "restart with backlog: kill -9 → first 200 from the new process {spawned:.2}s (probe loop {served:.2}s)"
        );
    }
    let acked_f = acked.max(1) as f64;
    let self_cpu = r.self_cpu;
    match (kind, r.relay_cpu) {
        (Kind::Child, Some(c)) => println!(
            "cpu while sending: relay {c:.2}s = {:.0} µs per acked webhook; generator + destinations {self_cpu:.2}s ({:.0} µs per webhook); wall {send_secs:.2}s",
            c * 1e6 / acked_f,
            self_cpu * 1e6 / acked_f
        ),
        _ => println!(
            "cpu while sending: this process {self_cpu:.2}s = {:.0} µs per acked webhook (relay + generator + destinations); wall {send_secs:.2}s",
            self_cpu * 1e6 / acked_f
        ),
    }
    if let Some((c0, c1)) = r.db {
        let commits = (c1.commits - c0.commits).max(1) as f64;
        let syncs = c1.wal_syncs - c0.wal_syncs;
        println!(
            "database while sending: {:.0} commits ({:.0}/s), {:.1} webhooks per commit, {:.1} KB WAL per webhook, {syncs} WAL syncs ({:.1} webhooks per sync)",
            commits,
            commits / send_secs,
            acked_f / commits,
            (c1.wal_bytes - c0.wal_bytes) / acked_f / 1024.0,
            acked_f / syncs.max(1) as f64,
        );
    }
    if let Some(c) = r.pg_cpu {
        println!(
            "cpu while sending: PostgreSQL {c:.2}s = {:.0} µs per acked webhook",
            c * 1e6 / acked_f
        );
    }
    println!("--- latency");
    println!("{}", l.ack_latency.line("ack (from send)"));
    println!("{}", l.ack_from_schedule.line("ack (from schedule)"));
    if args.destinations > 0 {
        println!("{}", l.e2e.line("end-to-end (from schedule)"));
    }
    println!("--- memory");
    match (kind, r.hwm_kb) {
        (Kind::InProcess, Some(h)) => println!(
            "this process (relay + generator + destinations): VmHWM {} MB, max sampled VmRSS while sending {} MB",
            h / 1024,
            r.rss_send_kb / 1024
        ),
        (Kind::Child, Some(h)) => println!(
            "relay process{}: VmHWM {} MB{}, max sampled VmRSS while sending {} MB, max overall {} MB",
            if args.relays > 1 { "es (largest)" } else { "" },
            h / 1024,
            if args.restart {
                " (restarted process)"
            } else {
                ""
            },
            r.rss_send_kb / 1024,
            r.rss_max_kb / 1024
        ),
        _ => println!("external relay: not measured"),
    }
    println!(
        "RESULT {}",
        if r.balanced {
            "BALANCED"
        } else {
            "VOID (ledger does not balance)"
        }
    );
}

/// One side of a round: acks per second of sending and the ack latency
/// (from schedule); returns the rate and the printed figures.
pub fn side_figures(l: &Ledger, send_secs: f64) -> (f64, String) {
    let acked = l.acked.load(Relaxed);
    let rate = acked as f64 / send_secs;
    let h = &l.ack_from_schedule;
    let line = format!(
        "acks/s {rate:>8.0}  ack p50 {:>7.2}ms p99 {:>7.2}ms  (sent {}, acked {acked}, refused {}, errors {}, {send_secs:.2}s)",
        h.ms(0.5),
        h.ms(0.99),
        l.sent.load(Relaxed),
        l.refused.load(Relaxed),
        l.errors.load(Relaxed),
    );
    (rate, line)
}

/// Deliveries per second of a run: unique deliveries from the first send
/// to the last delivery.
pub fn deliveries_per_sec(r: &RelayRun) -> f64 {
    r.delivered as f64 / (r.last_us.max(1) as f64 / 1e6)
}

/// The median of the rounds' ratios (sorts them).
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 0 => (values[mid - 1] + values[mid]) / 2.0,
        _ => values[mid],
    }
}
