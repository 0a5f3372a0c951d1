//! Which lanes each source feeds, and each lane's settings, computed once from a
//! validated [`Config`]. Ingest creates an accepted webhook's deliveries from
//! [`Routing::sources`]; delivery starts one lane per [`Routing::lanes`] entry (plus
//! an [`LaneSettings::orphan`] for each lane the queue holds work for that relay.toml
//! no longer names). Nothing else decides either.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::{Config, DeliveryMode, Format, StorageConfig};

/// Requests in flight at once on a first-success lane (each destination's own
/// `concurrency` is for its own lane).
pub const FIRST_SUCCESS_CONCURRENCY: usize = 8;
/// An orphan lane only dead-letters, one claim at a time.
pub const ORPHAN_CONCURRENCY: usize = 1;
/// The timeout an orphan lane's lease is derived from (it sends nothing).
pub const ORPHAN_TIMEOUT: Duration = Duration::from_secs(5);
/// Requests one delivery may need (an order's identify and track, one request
/// each with `format = "webhook"`), for the lease of a rate-limited lane.
pub const REQUESTS_PER_DELIVERY: usize = 3;

/// The lane of a first-success source: it works every delivery of that source,
/// trying its destinations in order.
pub fn first_success_lane(source: &str) -> String {
    format!("first-success:{source}")
}

/// One delivery each webhook of a source gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceLane {
    /// The lane that works it: a destination name, or [`first_success_lane`].
    pub lane: String,
    /// The destinations it goes to, in order.
    pub targets: Vec<String>,
}

/// How one lane runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaneSettings {
    pub name: String,
    /// Its destinations, in order, as relay.toml has them now (empty for an orphan).
    pub targets: Vec<String>,
    /// Requests in flight at once, at least 1.
    pub concurrency: usize,
    /// How long to wait for more events before a batch goes out (zero unbatched).
    pub linger: Duration,
    /// How long a claimed delivery is held: [`StorageConfig::lease_for`] its
    /// timeout, plus the wait its rate limits may impose on a full lane.
    pub lease: Duration,
}

impl LaneSettings {
    fn new(
        cfg: &Config,
        name: String,
        targets: Vec<String>,
        concurrency: usize,
        linger: Duration,
        timeout: Duration,
    ) -> LaneSettings {
        let concurrency = concurrency.max(1);
        // A rate limit holds claimed deliveries back: their lease covers the
        // wait (the lane's slots, each a few requests, one interval apart).
        let interval: Duration = targets
            .iter()
            .filter_map(|t| cfg.destinations.get(t)?.rate_limit)
            .map(|r| r.interval())
            .sum();
        let held = interval * (concurrency * REQUESTS_PER_DELIVERY) as u32;
        LaneSettings {
            name,
            targets,
            concurrency,
            linger,
            lease: cfg.storage.lease_for(timeout) + held,
        }
    }

    /// A lane the queue holds work for but relay.toml no longer names: it
    /// dead-letters what it holds, with the reason.
    pub fn orphan(storage: &StorageConfig, name: String) -> LaneSettings {
        LaneSettings {
            name,
            targets: vec![],
            concurrency: ORPHAN_CONCURRENCY,
            linger: Duration::ZERO,
            lease: storage.lease_for(ORPHAN_TIMEOUT),
        }
    }
}

/// Every source's lanes and every configured lane's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Routing {
    /// By source name: the deliveries each of its webhooks gets, in order.
    pub sources: BTreeMap<String, Vec<SourceLane>>,
    /// One per destination (in name order), then one per first-success source
    /// with destinations; no name twice.
    pub lanes: Vec<LaneSettings>,
}

impl Routing {
    pub fn new(cfg: &Config) -> Routing {
        let sources = cfg
            .sources
            .iter()
            .map(|(name, s)| {
                let lanes = match s.delivery {
                    DeliveryMode::Fanout => s
                        .destinations
                        .iter()
                        .map(|d| SourceLane {
                            lane: d.clone(),
                            targets: vec![d.clone()],
                        })
                        .collect(),
                    DeliveryMode::FirstSuccess if s.destinations.is_empty() => vec![],
                    DeliveryMode::FirstSuccess => vec![SourceLane {
                        lane: first_success_lane(name),
                        targets: s.destinations.clone(),
                    }],
                };
                (name.clone(), lanes)
            })
            .collect();
        let mut lanes = Vec::new();
        for (name, d) in &cfg.destinations {
            let batching = d.format != Format::Webhook;
            lanes.push(LaneSettings::new(
                cfg,
                name.clone(),
                vec![name.clone()],
                d.concurrency,
                if batching { d.linger } else { Duration::ZERO },
                d.timeout,
            ));
        }
        for (name, s) in &cfg.sources {
            if s.delivery == DeliveryMode::FirstSuccess && !s.destinations.is_empty() {
                let timeout: Duration = s
                    .destinations
                    .iter()
                    .filter_map(|d| cfg.destinations.get(d))
                    .map(|d| d.timeout)
                    .sum();
                lanes.push(LaneSettings::new(
                    cfg,
                    first_success_lane(name),
                    s.destinations.clone(),
                    FIRST_SUCCESS_CONCURRENCY,
                    Duration::ZERO,
                    timeout,
                ));
            }
        }
        let mut seen = BTreeSet::new();
        lanes.retain(|l| seen.insert(l.name.clone()));
        Routing { sources, lanes }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routing(text: &str) -> Routing {
        let cfg = Config::from_toml_str(text, &|_| None).expect("valid config");
        Routing::new(&cfg)
    }

    const TWO: &str = r#"
[sources.shop]
kind = "shopify"
secrets = ["s"]
[sources.crm]
kind = "convertedin"
secrets = ["s"]
delivery = "first-success"
destinations = ["b", "a"]
[destinations.a]
url = "http://127.0.0.1:9/a"
timeout = "2s"
[destinations.b]
url = "http://127.0.0.1:9/b"
format = "webhook-batch"
linger = "20ms"
concurrency = 3
timeout = "10s"
rate_limit = "10/s"
"#;

    #[test]
    fn fan_out_and_first_success_lanes() {
        let r = routing(TWO);
        let lane = |l: &str, t: &[&str]| SourceLane {
            lane: l.into(),
            targets: t.iter().map(|s| s.to_string()).collect(),
        };
        assert_eq!(r.sources["shop"], [lane("a", &["a"]), lane("b", &["b"])]);
        assert_eq!(r.sources["crm"], [lane("first-success:crm", &["b", "a"])]);
        let names: Vec<&str> = r.lanes.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "first-success:crm"]);
    }

    #[test]
    fn lane_settings() {
        let r = routing(TWO);
        let [a, b, fs] = &r.lanes[..] else {
            panic!("three lanes: {r:?}")
        };
        assert_eq!(a.concurrency, 8);
        assert_eq!(a.linger, Duration::ZERO, "format webhook is not batched");
        assert_eq!(a.lease, Duration::from_secs(60), "10 × 2s, at least 60s");
        assert_eq!(b.concurrency, 3);
        assert_eq!(b.linger, Duration::from_millis(20));
        // 10 × 10s, plus 3 slots × 3 requests × 100ms of rate limit.
        assert_eq!(b.lease, Duration::from_millis(100_000 + 900));
        assert_eq!(fs.concurrency, FIRST_SUCCESS_CONCURRENCY);
        assert_eq!(fs.targets, ["b", "a"]);
        // 10 × (10s + 2s), plus 8 slots × 3 requests × b's 100ms.
        assert_eq!(fs.lease, Duration::from_millis(120_000 + 2_400));
        let cfg = Config::from_toml_str(TWO, &|_| None).expect("valid config");
        let o = LaneSettings::orphan(&cfg.storage, "gone".into());
        assert_eq!((o.concurrency, o.lease), (1, Duration::from_secs(60)));
        assert!(o.targets.is_empty());
    }

    #[test]
    fn first_success_without_destinations_feeds_no_lane() {
        let r = routing(
            "[sources.x]\nkind = \"shopify\"\nsecrets = [\"s\"]\ndelivery = \"first-success\"\ndestinations = []\n",
        );
        assert!(r.sources["x"].is_empty());
        assert!(r.lanes.is_empty());
    }
}
