//! What a destination's jq rules cost per delivery, in CPU work alone: maps
//! loadgen's `orders/create` webhook and builds each destination's signed
//! request, `--iterations` times for `--destinations` destinations, without
//! rules (`--mode plain`) or with loadgen's `--rules` filter and transform on
//! every destination (`--mode rules`). No I/O, no threads, no clock in the
//! loop, so instruction counts compare across runs on a shared machine:
//!
//! ```text
//! cargo build --release --examples
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/plain.cg target/release/examples/rules_cost --mode plain
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/rules.cg target/release/examples/rules_cost --mode rules
//! ```
//!
//! (the `Collected` line of each is its instruction count; the difference
//! over iterations × destinations is the rules' cost per delivery). It also
//! prints wall time per webhook, which means little on a busy machine.

use std::time::Instant;

use bytes::Bytes;
use clap::Parser;
use shoprelay::config::Config;
use shoprelay::delivery::format::Encoder;
use shoprelay::delivery::rules::{Candidate, Rules, Selections};
use shoprelay::sources::{SourceKind, Webhook, WebhookMeta};

/// loadgen's body.
const FIXTURE: &str = include_str!("../tests/fixtures/shopify/orders__create.json");

/// The rules `loadgen --rules` gives destination N (the contract's examples,
/// different for each destination).
pub const FILTER: &str = r#".type != "track" or (.properties.total // 0) >= 10N"#;
pub const TRANSFORM: &str = r#".properties.channel = "shopify-dN""#;

#[derive(Parser, Debug)]
struct Args {
    /// `plain`: no rules; `rules`: a filter and a transform on every
    /// destination; `filter` or `transform`: only that one.
    #[arg(long, default_value = "rules")]
    mode: String,
    /// Webhooks mapped.
    #[arg(long, default_value_t = 2000)]
    iterations: u64,
    /// Destinations per webhook.
    #[arg(long, default_value_t = 5)]
    destinations: usize,
    /// Each destination works out its own outcome, parsing the event again
    /// (what the relay does for a destination not routed from the source).
    #[arg(long)]
    no_share: bool,
}

fn main() {
    let args = Args::parse();
    let (filter, transform) = match args.mode.as_str() {
        "plain" => (false, false),
        "rules" => (true, true),
        "filter" => (true, false),
        "transform" => (false, true),
        other => panic!("--mode is plain, rules, filter or transform, not {other}"),
    };
    let mut toml = String::from(
        "[mapping]\nidentify_on_orders = false\n[sources.shop]\nkind = \"shopify\"\nsecrets = [\"x\"]\n",
    );
    for d in 0..args.destinations {
        toml.push_str(&format!(
            "[destinations.d{d}]\nurl = \"http://127.0.0.1:9/\"\nshared_secret = \"s\"\n"
        ));
        let n = d.to_string();
        if filter {
            toml.push_str(&format!("filter = '{}'\n", FILTER.replace('N', &n)));
        }
        if transform {
            toml.push_str(&format!("transform = '{}'\n", TRANSFORM.replace('N', &n)));
        }
    }
    let cfg = Config::from_toml_str(&toml, &|_| None).expect("config");
    let dests: Vec<(&String, Rules, Encoder)> = cfg
        .destinations
        .iter()
        .map(|(name, d)| (name, Rules::new(name, d), Encoder::new(d).expect("encoder")))
        .collect();
    let body = Bytes::from(
        serde_json::to_vec(&serde_json::from_str::<serde_json::Value>(FIXTURE).expect("json"))
            .expect("json"),
    );
    let meta = WebhookMeta {
        kind: SourceKind::Shopify,
        source: "shop".into(),
        topic: "orders/create".into(),
        shop_domain: Some("acme.myshopify.com".into()),
        webhook_id: Some("wh-1".into()),
        event_id: Some("lg-x-1".into()),
        api_version: Some("2025-01".into()),
        triggered_at: None,
        dedup_id: "lg-x-1".into(),
        received_at_ms: 1_795_434_157_123,
    };
    let webhook = Webhook::for_test(meta, body);
    let mut bytes_out = 0usize;
    let started = Instant::now();
    let selections = Selections::new(&cfg);
    for _ in 0..args.iterations {
        // Once per webhook, as the lanes' mapping cache does.
        let events = shoprelay::mapping::map(&webhook, &cfg.mapping).expect("maps");
        let jsons: Vec<String> = events.iter().map(|e| e.to_json()).collect();
        let candidates: Vec<Candidate<'_>> = events
            .iter()
            .zip(&jsons)
            .map(|(e, json)| Candidate {
                call: e.call().as_str(),
                name: e.name(),
                json,
            })
            .collect();
        // Once per webhook, as its mapping does: every destination's
        // outcome (`--no-share`: each destination its own, per delivery).
        let selected = if args.no_share {
            Default::default()
        } else {
            selections.select("shop", &candidates)
        };
        for (name, rules, encoder) in &dests {
            let outcome = if args.no_share {
                std::sync::Arc::new(rules.select(&candidates))
            } else {
                shoprelay::delivery::rules::outcome(&selected, name, rules, &candidates)
            };
            let selection = outcome.as_ref().as_ref().expect("no run-time error");
            let requests = encoder
                .prepare(&selection.texts(&candidates), 1_795_434_157_123)
                .expect("prepare");
            bytes_out += requests.iter().map(|r| r.body.len()).sum::<usize>();
        }
    }
    let per = started.elapsed().as_nanos() as f64 / args.iterations as f64 / 1000.0;
    println!(
        "mode {} iterations {} destinations {}: {per:.1} µs per webhook (wall), {bytes_out} bytes built",
        args.mode, args.iterations, args.destinations
    );
}
