//! One run against the relay: destinations, relays, load, drain, ledger check.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::watch;

use crate::args::{Args, Kind};
use crate::db::{self, pg_cpu_secs};
use crate::ledger::{Ledger, spawn_progress};
use crate::procfs::{cpu_of, cpu_secs, spawn_rss_sampler, status_kb};
use crate::receivers::start_destinations;
use crate::relay::{Relay, relay_pids, relay_toml, spawn_binary, start_in_process, stop_child};
use crate::sender::{send_load, time_to_serve};

/// What one run against the relay measured.
pub struct RelayRun {
    pub ledger: Arc<Ledger>,
    pub send_secs: f64,
    pub acked: u64,
    pub relay_cpu: Option<f64>,
    pub self_cpu: f64,
    pub delivered_at_send_end: u64,
    pub rss_send_kb: u64,
    pub rss_max_kb: u64,
    pub restart_secs: Option<(f64, f64)>,
    pub back_us: u64,
    pub drain_cpu: Option<f64>,
    pub hwm_kb: Option<u64>,
    pub missing: u64,
    pub delivered: u64,
    pub last_us: u64,
    pub balanced: bool,
    /// With --storage-url: the server's counters over the sending.
    pub db: Option<(db::Counters, db::Counters)>,
    /// With --pg-data: the server's CPU seconds while sending.
    pub pg_cpu: Option<f64>,
}

/// One run against the relay: starts the destinations and the relays, sends
/// the load, waits for the drain, stops the relays and checks the ledger.
pub async fn relay_run(
    args: &Args,
    ledger: Arc<Ledger>,
    body: &Bytes,
    signature: &str,
) -> RelayRun {
    let (down_tx, down_rx) = watch::channel(args.backlog);
    let (dests, dest_tasks) =
        start_destinations(args.destinations, args.dest_port, ledger.clone(), down_rx).await;

    let storage = match &args.storage_url {
        Some(url) => Some(db::fresh_schema(url, &ledger.run).await),
        None => None,
    };
    let data = tempfile::tempdir_in(&args.data_root).expect("temp data dir");
    let mut relays = Vec::new();
    let mut urls = Vec::new();
    let mut configs = Vec::new();
    for i in 0..args.relays {
        let toml = relay_toml(
            &data.path().join(format!("data{i}")),
            &dests,
            args,
            storage.as_deref(),
        );
        let config = data.path().join(format!("relay{i}.toml"));
        std::fs::write(&config, &toml).expect("write relay.toml");
        let (relay, url) = match Kind::of(args) {
            Kind::External => (Relay::External, args.target.clone().expect("--target")),
            Kind::Child => spawn_binary(&args.binary, &config),
            Kind::InProcess => start_in_process(&toml).await,
        };
        relays.push(relay);
        urls.push(url);
        configs.push(config);
    }

    // RSS sampler: the relays' resident set while sending (the largest).
    let sampling = Arc::new(AtomicBool::new(true));
    let rss_max = Arc::new(AtomicU64::new(0));
    let samplers: Vec<_> = relay_pids(&relays)
        .into_iter()
        .map(|pid| spawn_rss_sampler(pid, sampling.clone(), rss_max.clone()))
        .collect();
    let progress = spawn_progress(ledger.clone());
    let pids = relay_pids(&relays);
    let relay_cpu0 = cpu_of(&pids);
    let self_cpu0 = cpu_secs("self");
    let pg_cpu0 = args.pg_data.as_deref().map(pg_cpu_secs);
    let db0 = match &storage {
        Some(url) => Some(db::counters(url).await),
        None => None,
    };
    let send_secs = send_load(&urls, body, signature, &ledger, args).await;
    let relay_cpu = cpu_of(&pids).zip(relay_cpu0).map(|(c, c0)| c - c0);
    let self_cpu = cpu_secs("self") - self_cpu0;
    let pg_cpu = args
        .pg_data
        .as_deref()
        .map(pg_cpu_secs)
        .zip(pg_cpu0)
        .map(|(c, c0)| c - c0);
    let db = match (&storage, db0) {
        (Some(url), Some(c0)) => Some((c0, db::counters(url).await)),
        _ => None,
    };
    let delivered_at_send_end: u64 = ledger.delivered.iter().map(|d| d.load(Relaxed)).sum();
    let rss_send_kb = rss_max.load(Relaxed);

    let mut restart_secs = None;
    if args.restart {
        if let Relay::Child { child } = &mut relays[0] {
            let _ = child.kill(); // SIGKILL
            let _ = child.wait();
        }
        let t = Instant::now();
        let (r, url2) = spawn_binary(&args.binary, &configs[0]);
        relays[0] = r;
        let served = time_to_serve(&url2, body, signature, &ledger.run).await;
        restart_secs = Some((t.elapsed().as_secs_f64(), served.as_secs_f64()));
        for pid in relay_pids(&relays) {
            spawn_rss_sampler(pid, sampling.clone(), rss_max.clone());
        }
    }
    // Destinations come back (backlog mode): the drain is timed from here.
    let back_us = ledger.us();
    let pids = relay_pids(&relays);
    let drain_cpu0 = cpu_of(&pids);
    let _ = down_tx.send(false);
    let acked = ledger.acked.load(Relaxed);
    let want = acked * args.destinations as u64;
    let drain_deadline = Instant::now() + Duration::from_secs_f64(args.drain_timeout);
    while Instant::now() < drain_deadline {
        let del: u64 = ledger.delivered.iter().map(|d| d.load(Relaxed)).sum();
        if del >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drain_cpu = cpu_of(&pids).zip(drain_cpu0).map(|(c, c0)| c - c0);
    progress.abort();
    sampling.store(false, Relaxed);
    for s in samplers {
        let _ = s.await;
    }
    let hwm_kb = pids.iter().map(|pid| status_kb(pid, "VmHWM:")).max();
    let missing = ledger.missing();
    let delivered: u64 = ledger.delivered.iter().map(|d| d.load(Relaxed)).sum();
    let last_us = ledger.last_delivery_us.load(Relaxed);

    let l = &ledger;
    let dup_acks = l.duplicate_acks.load(Relaxed);
    let balanced = l.sent.load(Relaxed)
        == acked + l.refused.load(Relaxed) + l.errors.load(Relaxed) + dup_acks
        && missing == 0
        && l.unknown.load(Relaxed) == 0
        && dup_acks == 0;

    for relay in relays {
        match relay {
            Relay::InProcess { stop, task } => {
                let _ = stop.send(());
                let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
            }
            Relay::Child { mut child } => stop_child(&mut child),
            Relay::External => {}
        }
    }
    for t in dest_tasks {
        t.abort();
    }
    if let Some(url) = &args.storage_url {
        db::drop_schema(url, &ledger.run).await;
    }
    drop(data);
    RelayRun {
        ledger,
        send_secs,
        acked,
        relay_cpu,
        self_cpu,
        delivered_at_send_end,
        rss_send_kb,
        rss_max_kb: rss_max.load(Relaxed),
        restart_secs,
        back_us,
        drain_cpu,
        hwm_kb,
        missing,
        delivered,
        last_us,
        balanced,
        db,
        pg_cpu,
    }
}
