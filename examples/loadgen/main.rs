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

mod args;
mod db;
mod hist;
mod ledger;
mod procfs;
mod receivers;
mod relay;
mod report;
mod run;
mod sender;
mod vs_ceiling;
mod vs_rules;

use clap::Parser;

use args::{Args, Kind, load_line};
use ledger::new_ledger;
use report::print_report;
use run::relay_run;
use sender::payload;
use vs_ceiling::vs_ceiling;
use vs_rules::vs_rules;

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
