//! Load generator with an exact ledger.
//!
//! Sends signed Shopify `orders/create` webhooks (unique `X-Shopify-Event-Id`,
//! a ~3 KB real-shaped body) over N connections, at a fixed rate or flat out,
//! for a bounded time or count, to a relay it starts itself (in process, or
//! the real binary with `--spawn-binary`) or to `--target URL`. It runs its own
//! destinations on 127.0.0.1 and counts every delivery by webhook, so a run
//! whose ledger does not balance (an acknowledged webhook not delivered to
//! every destination within the drain timeout) is reported as VOID.
//!
//! ```text
//! cargo run --release --example loadgen -- --destinations 0 --duration 10
//! cargo run --release --example loadgen -- --destinations 5 --rate 2500 --duration 20
//! cargo run --release --example loadgen -- --spawn-binary --destinations 1 --count 200000 --backlog --restart
//! ```
//!
//! Ceiling ratio: targets are stated as relay acks/s over the acks/s of a bare
//! warp server that only verifies the Shopify HMAC and answers 200
//! (`examples/ceiling.rs`). `--vs-ceiling` measures both in one run under the
//! same load (connections, rate, duration or count, payload), interleaved:
//! ceiling, relay, ceiling, relay for `--rounds` (default 2). Each round starts
//! a fresh ceiling as a child process (`--ceiling-binary`, default
//! `target/release/examples/ceiling`; it has its own runtime, like the relay
//! binary) and a fresh relay with its own destinations and data dir, in the
//! mode the other flags choose; the ledger check applies to the relay only.
//! It prints acks/s and ack p50/p99 (from schedule) of each side per round, and
//! the median over rounds of the per-round ratio. With `--spawn-binary` both
//! sides are separate processes sharing the machine with the generator, which
//! is the comparison the targets mean; build the examples first:
//!
//! ```text
//! cargo build --release && cargo build --release --examples
//! cargo run --release --example loadgen -- --spawn-binary --destinations 1 --duration 10 --vs-ceiling
//! ```
//!
//! PostgreSQL: `--storage-url URL` runs the relays on `[storage] backend =
//! "postgres"` (each run in a fresh schema `loadgen_RUN` of that database,
//! dropped at the end), `--relays N` starts N relays on it and spreads the
//! connections over them round robin, and `--pg-data DIR` (the server's data
//! dir) adds the server's CPU to the report. The report adds the database's
//! commits, webhooks per commit and WAL per webhook. `scripts/bench-postgres`
//! runs it against a throwaway server on this machine:
//!
//! ```text
//! scripts/bench-postgres --spawn-binary --destinations 1 --backlog --duration 10
//! scripts/bench-postgres --spawn-binary --relays 2 --destinations 1 --backlog --duration 10
//! ```
//!
//! Rules: `--rules` gives every destination a jq `filter` and `transform` (the
//! contract's examples; every loadgen event passes the filter, so the ledger
//! still balances). `--vs-rules` runs the relay without and with them under the
//! same load, interleaved for `--rounds`, and prints each side's deliveries/s
//! and acks/s per round and the median ratio of deliveries/s:
//!
//! ```text
//! cargo build --release && cargo build --release --examples
//! cargo run --release --example loadgen -- --spawn-binary --destinations 5 --duration 15 --vs-rules --rounds 3
//! ```
//!
//! Latency: ack latency is measured from when the request was sent and from
//! when it was scheduled; end-to-end latency (scheduled send → first arrival
//! at a destination) is always measured from the schedule, so a generator that
//! falls behind cannot hide delay.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use tokio::sync::watch;
use warp::Filter;

const SECRET: &str = "loadgen-secret";
const QUEUED: &[u8] = b"\"queued\"";
const FIXTURE: &str = include_str!("../tests/fixtures/shopify/orders__create.json");
/// `--rules`: the contract's example filter (every loadgen order passes it)
/// and transform (it keeps `context`, where the ledger finds the webhook),
/// with `N`, the destination's number, in each: no two destinations run the
/// same program.
const RULES_FILTER: &str = r#".type != "track" or (.properties.total // 0) >= 10N"#;
const RULES_TRANSFORM: &str = r#".properties.channel = "shopify-dN""#;

#[derive(Parser, Debug, Clone)]
#[command(about = "shoprelay load generator with an exact delivery ledger")]
struct Args {
    /// Concurrent connections (one HTTP/1.1 client each).
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Webhooks per second in total; 0 = flat out.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Stop sending after this many seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Stop sending after this many webhooks.
    #[arg(long)]
    count: Option<u64>,
    /// Local destinations (0..=5); every webhook fans out to all of them.
    #[arg(long, default_value_t = 1)]
    destinations: usize,
    /// `concurrency` of each destination in the generated relay.toml.
    #[arg(long, default_value_t = 32)]
    dest_concurrency: usize,
    /// An external relay's Shopify webhook URL (its source secret must be
    /// `loadgen-secret`; point its destinations at --dest-port..+K).
    #[arg(long)]
    target: Option<String>,
    /// First port of the local destinations (0 = ephemeral; use with --target).
    #[arg(long, default_value_t = 0)]
    dest_port: u16,
    /// Run the relay as the real binary (honest RSS) instead of in process.
    #[arg(long)]
    spawn_binary: bool,
    /// The binary for --spawn-binary.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/target/release/shoprelay"))]
    binary: PathBuf,
    /// Destinations hold every request (down) until sending ends, then answer
    /// 200: the drain of the backlog is timed from that moment.
    #[arg(long)]
    backlog: bool,
    /// With --spawn-binary: kill -9 the relay when sending ends and start it
    /// again on the same data (with the backlog), timing until it serves.
    #[arg(long)]
    restart: bool,
    /// Seconds to wait for every acknowledged webhook to be delivered.
    #[arg(long, default_value_t = 120.0)]
    drain_timeout: f64,
    /// Where the relay's data dir is created (a temp dir inside it).
    #[arg(long, default_value = "/tmp")]
    data_root: PathBuf,
    /// Measure the ceiling (examples/ceiling.rs, a bare HMAC-verifying
    /// endpoint) under the same load, interleaved with the relay, and print
    /// the ratio relay/ceiling of acks/s.
    #[arg(long)]
    vs_ceiling: bool,
    /// With --vs-ceiling: rounds of (ceiling, relay).
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Give every destination a jq filter and transform (`RULES_FILTER`,
    /// `RULES_TRANSFORM`, with the destination's number in each).
    #[arg(long)]
    rules: bool,
    /// Runs without and with --rules under the same load, interleaved for
    /// --rounds, and prints the ratio of deliveries/s.
    #[arg(long)]
    vs_rules: bool,
    /// The ceiling binary for --vs-ceiling (cargo build --release --examples).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/target/release/examples/ceiling"))]
    ceiling_binary: PathBuf,
    /// Run the relays on PostgreSQL at this URL (`[storage] backend =
    /// "postgres"`), each run in a fresh schema of its own.
    #[arg(long)]
    storage_url: Option<String>,
    /// `[storage] pool_size` of each relay, with --storage-url.
    #[arg(long, default_value_t = 16)]
    pool_size: usize,
    /// Relays on the one database (needs --storage-url); the connections
    /// are spread over them round robin.
    #[arg(long, default_value_t = 1)]
    relays: usize,
    /// The PostgreSQL server's data dir (its postmaster.pid): its CPU, the
    /// postmaster and every backend, is reported next to the relay's.
    #[arg(long)]
    pg_data: Option<PathBuf>,
}

/// Lock-free log-linear histogram of microseconds (HDR-style, < 1% error).
struct Hist {
    buckets: Vec<AtomicU64>,
}

const SUB: u64 = 128;

impl Hist {
    fn new() -> Hist {
        Hist {
            buckets: (0..4096).map(|_| AtomicU64::new(0)).collect(),
        }
    }
    fn index(v: u64) -> usize {
        if v < SUB {
            return v as usize;
        }
        let e = 63 - v.leading_zeros() as u64 - 6; // v >> e in [64, 128)
        (SUB + (e - 1) * 64 + ((v >> e) - 64)) as usize
    }
    fn upper(i: usize) -> u64 {
        let i = i as u64;
        if i < SUB {
            return i;
        }
        let e = (i - SUB) / 64 + 1;
        let m = (i - SUB) % 64 + 64;
        ((m + 1) << e) - 1
    }
    fn record(&self, us: u64) {
        let i = Self::index(us).min(self.buckets.len() - 1);
        self.buckets[i].fetch_add(1, Relaxed);
    }
    fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Relaxed)).sum()
    }
    fn quantile(&self, q: f64) -> u64 {
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
    fn ms(&self, q: f64) -> f64 {
        self.quantile(q) as f64 / 1000.0
    }
    fn line(&self, what: &str) -> String {
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

/// A growable array of atomics indexed by webhook number, allocated in chunks
/// as numbers are issued (so a long run costs memory only for what it sends).
struct Slots<T> {
    chunks: Vec<OnceLock<Box<[T]>>>,
}

const CHUNK: u64 = 1 << 16;
const MAX_WEBHOOKS: u64 = 64 << 20;

impl<T: Default> Slots<T> {
    fn new() -> Self {
        Slots {
            chunks: (0..MAX_WEBHOOKS / CHUNK).map(|_| OnceLock::new()).collect(),
        }
    }
    fn get(&self, n: u64) -> Option<&T> {
        let c = self.chunks.get((n / CHUNK) as usize)?;
        let chunk = c.get_or_init(|| (0..CHUNK).map(|_| T::default()).collect());
        chunk.get((n % CHUNK) as usize)
    }
}

/// Everything counted in one run.
struct Ledger {
    run: String,
    start: Instant,
    /// Numbers handed out to senders.
    issued: AtomicU64,
    sent: AtomicU64,
    acked: AtomicU64,
    duplicate_acks: AtomicU64,
    refused: AtomicU64,
    errors: AtomicU64,
    /// Scheduled send time per webhook, µs since start, + 1 (0 = never sent).
    scheduled: Slots<AtomicU64>,
    /// 1 once the relay answered 200 queued.
    ack: Slots<AtomicU8>,
    /// Arrivals per destination per webhook.
    arrivals: Vec<Slots<AtomicU8>>,
    delivered: Vec<AtomicU64>,
    duplicates: AtomicU64,
    unknown: AtomicU64,
    last_delivery_us: AtomicU64,
    ack_latency: Hist,
    ack_from_schedule: Hist,
    e2e: Hist,
}

impl Ledger {
    fn us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    /// Records one request a destination received.
    fn arrival(&self, dest: usize, body: &[u8]) {
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
    fn missing(&self) -> u64 {
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
fn webhook_number(body: &[u8], run: &str) -> Option<u64> {
    let text = std::str::from_utf8(body).ok()?;
    let at = text.find("\"event_id\":\"")? + "\"event_id\":\"".len();
    let rest = text[at..].strip_prefix("lg-")?.strip_prefix(run)?;
    let rest = rest.strip_prefix('-')?;
    let end = rest.find('"')?;
    rest[..end].parse().ok()
}

fn sign(body: &[u8]) -> String {
    shoprelay::sources::sign::shopify(SECRET, body)
}

/// Local destinations: count what arrives; hold it while `down` is true.
/// Returns their addresses and their servers' tasks (abort them to close the
/// listeners).
async fn start_destinations(
    k: usize,
    base_port: u16,
    ledger: Arc<Ledger>,
    down: watch::Receiver<bool>,
) -> (Vec<SocketAddr>, Vec<tokio::task::JoinHandle<()>>) {
    let mut addrs = Vec::new();
    let mut tasks = Vec::new();
    for d in 0..k {
        let (ledger, down) = (ledger.clone(), down.clone());
        let route = warp::post()
            .and(warp::body::bytes())
            .then(move |body: Bytes| {
                let (ledger, mut down) = (ledger.clone(), down.clone());
                async move {
                    // Down: hold the request (the relay's attempt times out) rather
                    // than refuse it, so the backlog is not churned by retries.
                    let _ = down.wait_for(|d| !*d).await;
                    ledger.arrival(d, &body);
                    warp::reply::with_status("", warp::http::StatusCode::OK)
                }
            });
        let port = if base_port == 0 {
            0
        } else {
            base_port + d as u16
        };
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind a destination port on 127.0.0.1");
        addrs.push(listener.local_addr().expect("bound address"));
        tasks.push(tokio::spawn(warp::serve(route).incoming(listener).run()));
    }
    (addrs, tasks)
}

fn relay_toml(
    data: &std::path::Path,
    dests: &[SocketAddr],
    args: &Args,
    storage: Option<&str>,
) -> String {
    let names: Vec<String> = (0..dests.len()).map(|d| format!("\"d{d}\"")).collect();
    let mut t = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
         data_dir = {:?}\nmax_body_bytes = 1048576\nmin_free_bytes = 1073741824\n\n\
         [mapping]\nidentify_on_orders = false\n\n\
         [sources.shop]\nkind = \"shopify\"\nsecrets = [\"{SECRET}\"]\ndestinations = [{}]\n",
        data.display().to_string(),
        names.join(", ")
    );
    for (d, addr) in dests.iter().enumerate() {
        t.push_str(&format!(
            "\n[destinations.d{d}]\nurl = \"http://{addr}/events\"\ntimeout = \"5s\"\nconcurrency = {}\n",
            args.dest_concurrency
        ));
        if args.rules {
            let n = d.to_string();
            t.push_str(&format!(
                "filter = '{}'\ntransform = '{}'\n",
                RULES_FILTER.replace('N', &n),
                RULES_TRANSFORM.replace('N', &n)
            ));
        }
    }
    if let Some(url) = storage {
        t.push_str(&format!(
            "\n[storage]\nbackend = \"postgres\"\nurl = {url:?}\npool_size = {}\n",
            args.pool_size
        ));
    }
    t
}

/// The database side of a run on PostgreSQL: a schema of the run's own, and
/// what the server did meanwhile.
mod db {
    use shoprelay::config::pg_url;

    /// Connects to `url` as the relay would (sslmode and all).
    async fn connect(url: &str) -> tokio_postgres::Client {
        let target = pg_url::parse(url).unwrap_or_else(|e| panic!("--storage-url: {e}"));
        let connector = target
            .connector()
            .unwrap_or_else(|e| panic!("--storage-url: {e}"));
        let (client, conn) = target
            .pg
            .connect(connector)
            .await
            .unwrap_or_else(|e| panic!("connecting to --storage-url: {e}"));
        tokio::spawn(conn);
        client
    }

    /// Creates schema `loadgen_RUN`; returns the URL whose connections use it.
    pub async fn fresh_schema(url: &str, run: &str) -> String {
        let c = connect(url).await;
        c.batch_execute(&format!("CREATE SCHEMA loadgen_{run}"))
            .await
            .expect("create the run's schema");
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}options=-c%20search_path%3Dloadgen_{run}")
    }

    pub async fn drop_schema(url: &str, run: &str) {
        let c = connect(url).await;
        if let Err(e) = c
            .batch_execute(&format!("DROP SCHEMA loadgen_{run} CASCADE"))
            .await
        {
            eprintln!("could not drop schema loadgen_{run}: {e}");
        }
    }

    /// The server's counters that tell where a webhook's cost goes.
    #[derive(Clone, Copy, Default)]
    pub struct Counters {
        pub commits: i64,
        pub wal_bytes: f64,
        pub wal_syncs: i64,
    }

    pub async fn counters(url: &str) -> Counters {
        let c = connect(url).await;
        let commits: i64 = c
            .query_one(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
                &[],
            )
            .await
            .map(|r| r.get(0))
            .unwrap_or(0);
        // pg_stat_wal is PostgreSQL 14+.
        let (wal_bytes, wal_syncs) = c
            .query_one("SELECT wal_bytes::float8, wal_sync FROM pg_stat_wal", &[])
            .await
            .map(|r| (r.get(0), r.get(1)))
            .unwrap_or((0.0, 0));
        Counters {
            commits,
            wal_bytes,
            wal_syncs,
        }
    }
}

/// CPU seconds of the PostgreSQL server whose data dir is `data`: the
/// postmaster with its reaped children, and its live backends.
fn pg_cpu_secs(data: &std::path::Path) -> f64 {
    let Some(pm) = std::fs::read_to_string(data.join("postmaster.pid"))
        .ok()
        .and_then(|s| s.lines().next().map(str::to_string))
    else {
        return 0.0;
    };
    let fields = |pid: &str| -> Option<Vec<String>> {
        let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let rest = &s[s.rfind(')')? + 2..];
        Some(rest.split_whitespace().map(str::to_string).collect())
    };
    let secs = |f: &[String], from: usize, to: usize| -> f64 {
        f[from..=to]
            .iter()
            .filter_map(|v| v.parse::<f64>().ok())
            .sum::<f64>()
            / 100.0
    };
    // utime, stime, cutime, cstime are fields 11..=14 after the comm.
    let mut total = fields(&pm).map_or(0.0, |f| secs(&f, 11, 14));
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let pid = e.file_name().to_string_lossy().into_owned();
            if !pid.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            if let Some(f) = fields(&pid) {
                if f.get(1).map(String::as_str) == Some(pm.as_str()) {
                    total += secs(&f, 11, 12);
                }
            }
        }
    }
    total
}

/// A relay the generator runs: in this process, or the real binary.
enum Relay {
    InProcess {
        stop: tokio::sync::oneshot::Sender<()>,
        task: tokio::task::JoinHandle<Result<(), shoprelay::RunError>>,
    },
    Child {
        child: std::process::Child,
    },
    External,
}

async fn start_in_process(toml: &str) -> (Relay, String) {
    let cfg = shoprelay::config::Config::from_toml_str(toml, &|_| None)
        .unwrap_or_else(|e| panic!("generated config: {e}\n{toml}"));
    let ingest = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = ingest.local_addr().expect("bound address");
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(shoprelay::run(
        cfg,
        shoprelay::Listeners { ingest, admin },
        async move {
            let _ = rx.await;
        },
    ));
    (
        Relay::InProcess { stop, task },
        format!("http://{addr}/webhooks/shopify/shop"),
    )
}

fn spawn_binary(binary: &std::path::Path, config: &std::path::Path) -> (Relay, String) {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(binary)
        .args(["serve", "--log-format", "json", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "start {}: {e} (cargo build --release first)",
                binary.display()
            )
        });
    let stderr = child.stderr.take().expect("piped stderr");
    let mut lines = BufReader::new(stderr).lines();
    let ingest = loop {
        let line = lines
            .next()
            .expect("relay exited before listening")
            .expect("read relay stderr");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if v["message"] == "listening" {
            break v["ingest"].as_str().expect("ingest address").to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (
        Relay::Child { child },
        format!("http://{ingest}/webhooks/shopify/shop"),
    )
}

fn status_kb(pid: &str, field: &str) -> u64 {
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
fn cpu_secs(pid: &str) -> f64 {
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

fn relay_pid(relay: &Relay) -> Option<String> {
    match relay {
        Relay::InProcess { .. } => Some("self".into()),
        Relay::Child { child } => Some(child.id().to_string()),
        Relay::External => None,
    }
}

struct Sender {
    /// `host:port` and request head of each relay; connection `i` sends to
    /// target `i % len` (round robin by connection).
    targets: Vec<(String, Vec<u8>)>,
    body: Bytes,
    ledger: Arc<Ledger>,
    rate: f64,
    count: u64,
    /// When sending began: the rate's schedule and the deadline count from here.
    start: Instant,
    deadline: Instant,
}

/// One keep-alive HTTP/1.1 connection that speaks just enough of the protocol
/// to post a webhook and read the answer (status, Content-Length, body). A
/// general-purpose client costs the generator more CPU per request than the
/// relay spends storing the webhook, and both share this machine's two cores;
/// like wrk, the generator should be the cheap side of the measurement.
struct Conn {
    stream: tokio::net::TcpStream,
    buf: Vec<u8>,
}

/// An answer: status and whether its body said `"queued"`.
struct Answer {
    status: u16,
    queued: bool,
}

impl Conn {
    async fn open(addr: &str) -> std::io::Result<Conn> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(4096),
        })
    }

    async fn round_trip(&mut self, request: &[u8]) -> std::io::Result<Answer> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let bad =
            |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
        self.stream.write_all(request).await?;
        self.buf.clear();
        let (head_len, status, body_len) = loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = std::str::from_utf8(&self.buf[..end]).map_err(|_| bad("head"))?;
                let status = head
                    .get(9..12)
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| bad("status line"))?;
                let len = head
                    .lines()
                    .filter_map(|l| l.split_once(':'))
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                    .ok_or_else(|| bad("no content-length"))?;
                break (end + 4, status, len);
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(bad("closed"));
            }
        };
        while self.buf.len() < head_len + body_len {
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(bad("closed mid-body"));
            }
        }
        let body = &self.buf[head_len..head_len + body_len];
        Ok(Answer {
            status,
            queued: body.windows(QUEUED.len()).any(|w| w == QUEUED),
        })
    }
}

/// The request for webhook `n`: the fixed head, its two ids, the shared body.
fn request(out: &mut Vec<u8>, s: &Sender, head: &[u8], n: u64) {
    use std::io::Write;
    out.clear();
    out.extend_from_slice(head);
    let run = &s.ledger.run;
    let _ = write!(
        out,
        "x-shopify-event-id: lg-{run}-{n}\r\nx-shopify-webhook-id: wh-{run}-{n}\r\n\r\n"
    );
    out.extend_from_slice(&s.body);
}

/// `host:port` and the request head shared by every webhook of a run.
fn request_head(url: &str, body_len: usize, signature: &str) -> (String, Vec<u8>) {
    let u = url::Url::parse(url).expect("--target is an http:// URL");
    assert_eq!(u.scheme(), "http", "the load generator speaks plain HTTP");
    let host = u.host_str().expect("URL has a host");
    let addr = format!("{host}:{}", u.port_or_known_default().unwrap_or(80));
    let head = format!(
        "POST {} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         x-shopify-topic: orders/create\r\nx-shopify-hmac-sha256: {signature}\r\n\
         x-shopify-shop-domain: loadgen.myshopify.com\r\nx-shopify-api-version: 2025-01\r\n\
         content-length: {body_len}\r\n",
        u.path()
    );
    (addr, head.into_bytes())
}

async fn send_loop(s: Arc<Sender>, i: usize) {
    let l = &s.ledger;
    let (addr, head) = &s.targets[i % s.targets.len()];
    let mut conn: Option<Conn> = None;
    let mut req = Vec::with_capacity(head.len() + s.body.len() + 128);
    loop {
        let n = l.issued.fetch_add(1, Relaxed);
        if n >= s.count {
            return;
        }
        let sched = if s.rate > 0.0 {
            let at = s.start + Duration::from_secs_f64(n as f64 / s.rate);
            if at >= s.deadline {
                return;
            }
            tokio::time::sleep_until(at.into()).await;
            at
        } else {
            let now = Instant::now();
            if now >= s.deadline {
                return;
            }
            now
        };
        // `issued` may exceed what is sent (the last number each sender drew);
        // the slots of numbers never sent stay 0 and are never counted.
        let sched_us = sched.duration_since(l.start).as_micros() as u64;
        if let Some(slot) = l.scheduled.get(n) {
            slot.store(sched_us + 1, Relaxed);
        }
        request(&mut req, &s, head, n);
        let sent_at = Instant::now();
        l.sent.fetch_add(1, Relaxed);
        let answer = async {
            let c = match &mut conn {
                Some(c) => c,
                None => conn.insert(Conn::open(addr).await?),
            };
            c.round_trip(&req).await
        };
        let r = tokio::time::timeout(Duration::from_secs(30), answer).await;
        match r {
            Ok(Ok(a)) if a.status == 200 => {
                let done = Instant::now();
                if a.queued {
                    if let Some(a) = l.ack.get(n) {
                        a.store(1, Relaxed);
                    }
                    l.acked.fetch_add(1, Relaxed);
                    l.ack_latency
                        .record(done.duration_since(sent_at).as_micros() as u64);
                    l.ack_from_schedule
                        .record(done.duration_since(sched).as_micros() as u64);
                } else {
                    l.duplicate_acks.fetch_add(1, Relaxed);
                }
            }
            Ok(Ok(_)) => {
                l.refused.fetch_add(1, Relaxed);
            }
            Ok(Err(_)) | Err(_) => {
                // The connection's state is unknown: start a fresh one.
                conn = None;
                l.errors.fetch_add(1, Relaxed);
            }
        }
    }
}

/// Waits until `url` answers 200 to a fresh signed webhook; returns how long.
async fn time_to_serve(url: &str, body: &Bytes, signature: &str, run: &str) -> Duration {
    let started = Instant::now();
    let client = reqwest::Client::new();
    loop {
        let r = client
            .post(url)
            .header("x-shopify-topic", "orders/create")
            .header("x-shopify-hmac-sha256", signature)
            .header("x-shopify-event-id", format!("probe-{run}"))
            .body(body.clone())
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        if r.is_ok_and(|r| r.status() == 200) || started.elapsed() > Duration::from_secs(120) {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A fresh ledger for one run: its own run id, counters and histograms.
fn new_ledger(destinations: usize) -> Arc<Ledger> {
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

/// The body every webhook carries (the fixture as compact JSON) and its
/// signature under `loadgen-secret`.
fn payload() -> (Bytes, String) {
    let v: serde_json::Value = serde_json::from_str(FIXTURE).expect("fixture is JSON");
    let body: Bytes = serde_json::to_vec(&v).expect("serialise").into();
    let signature = sign(&body);
    (body, signature)
}

/// How the relay is run, from the arguments.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    InProcess,
    Child,
    External,
}

impl Kind {
    fn of(args: &Args) -> Kind {
        match (&args.target, args.spawn_binary) {
            (Some(_), _) => Kind::External,
            (None, true) => Kind::Child,
            (None, false) => Kind::InProcess,
        }
    }
    fn describe(self) -> &'static str {
        match self {
            Kind::InProcess => "in-process relay",
            Kind::Child => "spawned binary relay",
            Kind::External => "external relay",
        }
    }
}

/// The load of a run, as printed in its first line.
fn load_line(args: &Args, body_len: usize) -> String {
    format!(
        "{} connections, rate {}, duration {}s, count {}, {} destinations{}, body {body_len} bytes{}{}",
        args.connections,
        if args.rate > 0.0 {
            format!("{}/s", args.rate)
        } else {
            "flat out".into()
        },
        args.duration,
        args.count.map_or("unbounded".into(), |c| c.to_string()),
        args.destinations,
        if args.rules { " with rules" } else { "" },
        if args.backlog {
            ", destinations down while sending"
        } else {
            ""
        },
        match &args.storage_url {
            Some(u) => format!(
                ", {} relay(s) on PostgreSQL {} (pool {})",
                args.relays,
                shoprelay::config::masked_url(u),
                args.pool_size
            ),
            None => String::new(),
        }
    )
}

/// Counts on stderr once a second, until aborted.
fn spawn_progress(l: Arc<Ledger>) -> tokio::task::JoinHandle<()> {
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

/// Keeps the highest VmRSS of `pid` in `max`, sampled every 250 ms while
/// `sampling` holds.
fn spawn_rss_sampler(
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

/// Sends the load the arguments describe (connections, rate, duration,
/// count) to `urls` (connections spread over them round robin), counting
/// into `ledger`: the one sender both the relay and the ceiling are measured
/// with. Returns the seconds from the start of sending to the last answer.
async fn send_load(
    urls: &[String],
    body: &Bytes,
    signature: &str,
    ledger: &Arc<Ledger>,
    args: &Args,
) -> f64 {
    let targets = urls
        .iter()
        .map(|u| request_head(u, body.len(), signature))
        .collect();
    let start = Instant::now();
    let sender = Arc::new(Sender {
        targets,
        body: body.clone(),
        ledger: ledger.clone(),
        rate: args.rate,
        count: args.count.unwrap_or(MAX_WEBHOOKS).min(MAX_WEBHOOKS),
        start,
        deadline: start + Duration::from_secs_f64(args.duration),
    });
    let senders: Vec<_> = (0..args.connections)
        .map(|i| tokio::spawn(send_loop(sender.clone(), i)))
        .collect();
    for s in senders {
        let _ = s.await;
    }
    start.elapsed().as_secs_f64()
}

/// What one run against the relay measured.
struct RelayRun {
    ledger: Arc<Ledger>,
    send_secs: f64,
    acked: u64,
    relay_cpu: Option<f64>,
    self_cpu: f64,
    delivered_at_send_end: u64,
    rss_send_kb: u64,
    rss_max_kb: u64,
    restart_secs: Option<(f64, f64)>,
    back_us: u64,
    drain_cpu: Option<f64>,
    hwm_kb: Option<u64>,
    missing: u64,
    delivered: u64,
    last_us: u64,
    balanced: bool,
    /// With --storage-url: the server's counters over the sending.
    db: Option<(db::Counters, db::Counters)>,
    /// With --pg-data: the server's CPU seconds while sending.
    pg_cpu: Option<f64>,
}

/// The pids of `relays`, each once (in-process relays are all this process).
fn relay_pids(relays: &[Relay]) -> Vec<String> {
    let mut pids: Vec<String> = relays.iter().filter_map(relay_pid).collect();
    pids.dedup();
    pids
}

fn cpu_of(pids: &[String]) -> Option<f64> {
    (!pids.is_empty()).then(|| pids.iter().map(|p| cpu_secs(p)).sum())
}

/// One run against the relay: starts the destinations and the relays, sends
/// the load, waits for the drain, stops the relays and checks the ledger.
async fn relay_run(args: &Args, ledger: Arc<Ledger>, body: &Bytes, signature: &str) -> RelayRun {
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

/// SIGTERM, then SIGKILL if the relay has not exited within a minute: a
/// graceful stop lets a relay run under a profiler (`--binary` a wrapper
/// script that execs `valgrind --tool=callgrind …`) write its profile.
fn stop_child(child: &mut std::process::Child) {
    let pid = rustix::process::Pid::from_child(child);
    if rustix::process::kill_process(pid, rustix::process::Signal::TERM).is_ok() {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The full report of one relay run.
fn print_report(args: &Args, r: &RelayRun) {
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

/// Starts the ceiling binary on an ephemeral port; returns it and its
/// webhook URL once it printed `listening on ADDR`.
fn spawn_ceiling(binary: &std::path::Path) -> (std::process::Child, String) {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(binary)
        .args(["--listen", "127.0.0.1:0", "--secret", SECRET])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "start {}: {e} (cargo build --release --examples first)",
                binary.display()
            )
        });
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let line = lines
        .next()
        .expect("ceiling exited before listening")
        .expect("read ceiling stdout");
    let addr = line
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("ceiling printed {line:?}, not `listening on ADDR`"))
        .to_string();
    std::thread::spawn(move || for _ in lines {});
    (child, format!("http://{addr}/webhooks/shopify/shop"))
}

/// One run against a fresh ceiling process; returns the seconds of sending.
async fn ceiling_run(args: &Args, ledger: &Arc<Ledger>, body: &Bytes, signature: &str) -> f64 {
    let (mut child, url) = spawn_ceiling(&args.ceiling_binary);
    let progress = spawn_progress(ledger.clone());
    let secs = send_load(&[url], body, signature, ledger, args).await;
    progress.abort();
    let _ = child.kill();
    let _ = child.wait();
    secs
}

/// One side of a round: acks per second of sending and the ack latency
/// (from schedule); returns the rate and the printed figures.
fn side_figures(l: &Ledger, send_secs: f64) -> (f64, String) {
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

/// `--vs-ceiling`: rounds of ceiling then relay under the same load. Prints
/// each side's figures per round and the median of the rounds' ratios;
/// false when a relay ledger did not balance or the ceiling refused or
/// failed a request.
async fn vs_ceiling(args: &Args, body: &Bytes, signature: &str) -> bool {
    if !args.ceiling_binary.exists() {
        eprintln!(
            "{} not found: build it first with `cargo build --release --examples` (or pass --ceiling-binary)",
            args.ceiling_binary.display()
        );
        std::process::exit(2);
    }
    println!(
        "loadgen vs ceiling: {} against {} (a child process), {}, {} rounds",
        Kind::of(args).describe(),
        args.ceiling_binary.display(),
        load_line(args, body.len()),
        args.rounds
    );
    let mut ratios = Vec::new();
    let mut valid = true;
    for round in 1..=args.rounds {
        let ceiling = new_ledger(0);
        let secs = ceiling_run(args, &ceiling, body, signature).await;
        let (ceiling_rate, figures) = side_figures(&ceiling, secs);
        let clean = ceiling.refused.load(Relaxed) == 0 && ceiling.errors.load(Relaxed) == 0;
        println!(
            "round {round} ceiling: {figures}{}",
            if clean { "" } else { "  NOT CLEAN" }
        );
        let r = relay_run(args, new_ledger(args.destinations), body, signature).await;
        let (relay_rate, figures) = side_figures(&r.ledger, r.send_secs);
        println!(
            "round {round} relay:   {figures}  ledger {}",
            if r.balanced { "BALANCED" } else { "VOID" }
        );
        let ratio = relay_rate / ceiling_rate;
        println!("round {round} ratio relay/ceiling: {ratio:.2}");
        ratios.push(ratio);
        valid &= clean && r.balanced;
    }
    let median = median(&mut ratios);
    println!("ratio relay/ceiling: {median:.2} (median of rounds)");
    println!(
        "RESULT {}",
        if valid {
            "BALANCED"
        } else {
            "VOID (a relay ledger does not balance or the ceiling refused or failed requests)"
        }
    );
    valid
}

/// Deliveries per second of a run: unique deliveries from the first send
/// to the last delivery.
fn deliveries_per_sec(r: &RelayRun) -> f64 {
    r.delivered as f64 / (r.last_us.max(1) as f64 / 1e6)
}

/// `--vs-rules`: rounds of the relay without then with `--rules`, under the
/// same load. Prints each side per round and the median ratio of
/// deliveries/s (with/without); false when a ledger did not balance.
async fn vs_rules(args: &Args, body: &Bytes, signature: &str) -> bool {
    println!(
        "loadgen vs rules: {}, {}, {} rounds; rules on destination N: filter = '{RULES_FILTER}', transform = '{RULES_TRANSFORM}'",
        Kind::of(args).describe(),
        load_line(args, body.len()),
        args.rounds
    );
    let mut ratios = Vec::new();
    let mut valid = true;
    for round in 1..=args.rounds {
        let mut rates = [0.0; 2];
        for (side, rules) in [false, true].into_iter().enumerate() {
            let a = Args {
                rules,
                ..args.clone()
            };
            let r = relay_run(&a, new_ledger(a.destinations), body, signature).await;
            let (_, figures) = side_figures(&r.ledger, r.send_secs);
            rates[side] = deliveries_per_sec(&r);
            let cpu = match r.relay_cpu {
                Some(c) => format!(
                    "  relay cpu while sending {:.0} µs per acked webhook",
                    c * 1e6 / r.acked.max(1) as f64
                ),
                None => String::new(),
            };
            println!(
                "round {round} {}: deliveries/s {:>8.0}  {figures}{cpu}  ledger {}",
                if rules { "rules   " } else { "no rules" },
                rates[side],
                if r.balanced { "BALANCED" } else { "VOID" }
            );
            valid &= r.balanced;
        }
        let ratio = rates[1] / rates[0];
        println!("round {round} ratio rules/no rules (deliveries/s): {ratio:.3}");
        ratios.push(ratio);
    }
    let median = median(&mut ratios);
    println!(
        "ratio rules/no rules: {median:.3} (median of rounds; the rules cost {:.1}% of fan-out throughput)",
        (1.0 - median) * 100.0
    );
    println!(
        "RESULT {}",
        if valid {
            "BALANCED"
        } else {
            "VOID (a ledger does not balance)"
        }
    );
    valid
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    assert!(args.destinations <= 5, "--destinations is 0..=5");
    assert!(
        !args.restart || args.spawn_binary,
        "--restart needs --spawn-binary"
    );
    assert!(
        !(args.restart && args.vs_ceiling),
        "--restart does not go with --vs-ceiling"
    );
    assert!(args.rounds >= 1, "--rounds is at least 1");
    assert!(args.relays >= 1, "--relays is at least 1");
    assert!(
        args.relays == 1 || args.storage_url.is_some(),
        "--relays above 1 needs --storage-url (relays share a queue only in PostgreSQL)"
    );
    assert!(
        !(args.restart && args.relays > 1),
        "--restart runs with one relay"
    );
    assert!(
        args.target.is_none() || args.storage_url.is_none(),
        "--storage-url configures relays this generator starts, not --target"
    );
    assert!(
        !(args.vs_rules && (args.vs_ceiling || args.restart)),
        "--vs-rules goes with neither --vs-ceiling nor --restart"
    );
    let (body, signature) = payload();
    if args.vs_rules {
        if !vs_rules(&args, &body, &signature).await {
            std::process::exit(2);
        }
        return;
    }
    if args.vs_ceiling {
        if !vs_ceiling(&args, &body, &signature).await {
            std::process::exit(2);
        }
        return;
    }
    let ledger = new_ledger(args.destinations);
    println!(
        "loadgen run {}: {}, {}",
        ledger.run,
        Kind::of(&args).describe(),
        load_line(&args, body.len())
    );
    let r = relay_run(&args, ledger, &body, &signature).await;
    print_report(&args, &r);
    if !r.balanced {
        std::process::exit(2);
    }
}

/// The median of the rounds' ratios (sorts them).
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 0 => (values[mid - 1] + values[mid]) / 2.0,
        _ => values[mid],
    }
}
