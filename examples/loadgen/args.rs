//! The command line, how the relay is run, and the load line every report opens with.

use std::path::PathBuf;

use clap::Parser;

#[derive(Parser, Debug, Clone)]
#[command(about = "shoprelay load generator with an exact delivery ledger")]
pub struct Args {
    /// Concurrent connections (one HTTP/1.1 client each).
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Webhooks per second in total; 0 = flat out.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Stop sending after this many seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Stop sending after this many webhooks.
    #[arg(long)]
    pub count: Option<u64>,
    /// Local destinations (0..=5); every webhook fans out to all of them.
    #[arg(long, default_value_t = 1)]
    pub destinations: usize,
    /// `concurrency` of each destination in the generated relay.toml.
    #[arg(long, default_value_t = 32)]
    pub dest_concurrency: usize,
    /// An external relay's Shopify webhook URL (its source secret must be
    /// `loadgen-secret`; point its destinations at --dest-port..+K).
    #[arg(long)]
    pub target: Option<String>,
    /// First port of the local destinations (0 = ephemeral; use with --target).
    #[arg(long, default_value_t = 0)]
    pub dest_port: u16,
    /// Run the relay as the real binary (honest RSS) instead of in process.
    #[arg(long)]
    pub spawn_binary: bool,
    /// The binary for --spawn-binary.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/target/release/shoprelay"))]
    pub binary: PathBuf,
    /// Destinations hold every request (down) until sending ends, then answer
    /// 200: the drain of the backlog is timed from that moment.
    #[arg(long)]
    pub backlog: bool,
    /// With --spawn-binary: kill -9 the relay when sending ends and start it
    /// again on the same data (with the backlog), timing until it serves.
    #[arg(long)]
    pub restart: bool,
    /// Seconds to wait for every acknowledged webhook to be delivered.
    #[arg(long, default_value_t = 120.0)]
    pub drain_timeout: f64,
    /// Where the relay's data dir is created (a temp dir inside it).
    #[arg(long, default_value = "/tmp")]
    pub data_root: PathBuf,
    /// Measure the ceiling (examples/ceiling.rs, a bare HMAC-verifying
    /// endpoint) under the same load, interleaved with the relay, and print
    /// the ratio relay/ceiling of acks/s.
    #[arg(long)]
    pub vs_ceiling: bool,
    /// With --vs-ceiling: rounds of (ceiling, relay).
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
    /// Give every destination a jq filter and transform (`RULES_FILTER`,
    /// `RULES_TRANSFORM`, with the destination's number in each).
    #[arg(long)]
    pub rules: bool,
    /// Runs without and with --rules under the same load, interleaved for
    /// --rounds, and prints the ratio of deliveries/s.
    #[arg(long)]
    pub vs_rules: bool,
    /// The ceiling binary for --vs-ceiling (cargo build --release --examples).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/target/release/examples/ceiling"))]
    pub ceiling_binary: PathBuf,
    /// Run the relays on PostgreSQL at this URL (`[storage] backend =
    /// "postgres"`), each run in a fresh schema of its own.
    #[arg(long)]
    pub storage_url: Option<String>,
    /// `[storage] pool_size` of each relay, with --storage-url.
    #[arg(long, default_value_t = 16)]
    pub pool_size: usize,
    /// Relays on the one database (needs --storage-url); the connections
    /// are spread over them round robin.
    #[arg(long, default_value_t = 1)]
    pub relays: usize,
    /// The PostgreSQL server's data dir (its postmaster.pid): its CPU, the
    /// postmaster and every backend, is reported next to the relay's.
    #[arg(long)]
    pub pg_data: Option<PathBuf>,
}

/// How the relay is run, from the arguments.
#[derive(Clone, Copy, PartialEq)]
pub enum Kind {
    InProcess,
    Child,
    External,
}

impl Kind {
    pub fn of(args: &Args) -> Kind {
        match (&args.target, args.spawn_binary) {
            (Some(_), _) => Kind::External,
            (None, true) => Kind::Child,
            (None, false) => Kind::InProcess,
        }
    }
    pub fn describe(self) -> &'static str {
        match self {
            Kind::InProcess => "in-process relay",
            Kind::Child => "spawned binary relay",
            Kind::External => "external relay",
        }
    }
}

/// The load of a run, as printed in its first line.
pub fn load_line(args: &Args, body_len: usize) -> String {
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
