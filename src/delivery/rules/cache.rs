//! What each destination with jq rules gets from a webhook, worked out once
//! for all of them by the first lane that needs it ([`select_many`]), and
//! kept for the other lanes of the fan-out as they come to the webhook.
//!
//! Kept as the mapping cache keeps mapped webhooks: by webhook id, the last
//! [`KEPT`], since the result is a pure function of the stored webhook and
//! of relay.toml, which do not change while the relay runs. What is kept is
//! the outcome (transformed events as text), not jaq's tree of the event.

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};

use crate::config::Config;

use super::{Candidate, RuleError, Rules, Selection, select_many};

/// Webhooks kept: as many as the mapping cache, which the lanes of a
/// fan-out hit.
const KEPT: usize = 1024;

/// One destination's outcome for one webhook.
pub type Outcome = Arc<Result<Selection, RuleError>>;

/// Outcomes of one webhook, by destination; computed by the first lane that
/// asks (the others wait for it rather than compute it again).
type Outcomes = Arc<OnceLock<HashMap<String, Outcome>>>;

/// The outcomes of a webhook and the mapped events they were worked out from
/// (held, so their address is theirs alone): the mapping cache may map a
/// webhook again after it let it go, and a later mapping may differ (the
/// identity map changed), so outcomes only stand for the events they came from.
type Entry = (Arc<dyn Any + Send + Sync>, Outcomes);

/// The outcomes of recent webhooks, for every destination with jq rules.
pub struct Selections {
    /// Per source, its destinations that have a jq `filter` or `transform`.
    routes: HashMap<String, Vec<(String, Rules)>>,
    entries: Mutex<(HashMap<u64, Entry>, VecDeque<u64>)>,
}

impl Selections {
    /// For the sources and destinations of `cfg`.
    pub fn new(cfg: &Config) -> Selections {
        let routes = cfg
            .sources
            .iter()
            .map(|(source, s)| {
                let with_jq = s
                    .destinations
                    .iter()
                    .filter_map(|d| Some((d, cfg.destinations.get(d)?)))
                    .map(|(d, dcfg)| (d.clone(), Rules::new(d, dcfg)))
                    .filter(|(_, r)| !r.is_plain())
                    .collect();
                (source.clone(), with_jq)
            })
            .collect();
        Selections {
            routes,
            entries: Mutex::new((HashMap::new(), VecDeque::new())),
        }
    }

    /// What `target` (whose rules are `rules`) gets of webhook `webhook`,
    /// received at `source`, whose mapped events are `events`, held by `mapped`
    /// (the mapping cache's entry: outcomes are kept per entry).
    #[allow(clippy::too_many_arguments)]
    pub fn get(
        &self,
        webhook: u64,
        mapped: &Arc<dyn Any + Send + Sync>,
        source: &str,
        target: &str,
        rules: &Rules,
        events: &[Candidate<'_>],
    ) -> Outcome {
        if rules.is_plain() {
            // Only `events`: nothing to parse, nothing worth keeping.
            return Arc::new(rules.select(events));
        }
        let routed = self.routes.get(source).map_or(&[][..], Vec::as_slice);
        if !routed.iter().any(|(d, _)| d == target) {
            // Not routed from this source by relay.toml now (work queued
            // before a change): this destination alone.
            return Arc::new(rules.select(events));
        }
        let entry = self.entry(webhook, mapped);
        let outcomes = entry.get_or_init(|| {
            let all: Vec<&Rules> = routed.iter().map(|(_, r)| r).collect();
            routed
                .iter()
                .map(|(d, _)| d.clone())
                .zip(select_many(&all, events).into_iter().map(Arc::new))
                .collect()
        });
        match outcomes.get(target) {
            Some(o) => o.clone(),
            None => Arc::new(rules.select(events)),
        }
    }

    fn entry(&self, webhook: u64, mapped: &Arc<dyn Any + Send + Sync>) -> Outcomes {
        let mut guard = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let (map, order) = &mut *guard;
        match map.get(&webhook) {
            Some((from, outcomes)) if Arc::ptr_eq(from, mapped) => return outcomes.clone(),
            Some(_) => {}
            None => order.push_back(webhook),
        }
        let outcomes = Outcomes::default();
        map.insert(webhook, (mapped.clone(), outcomes.clone()));
        while order.len() > KEPT {
            if let Some(old) = order.pop_front() {
                map.remove(&old);
            }
        }
        outcomes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        let text = r#"
[sources.shop]
kind = "shopify"
secrets = ["x"]
destinations = ["plain", "crm", "ads"]
[sources.other]
kind = "shopify"
secrets = ["x"]
destinations = ["plain"]
[destinations.plain]
url = "http://127.0.0.1:9/p"
[destinations.crm]
url = "http://127.0.0.1:9/c"
filter = '.n > 1'
[destinations.ads]
url = "http://127.0.0.1:9/a"
transform = '.seen = "ads"'
[destinations.late]
url = "http://127.0.0.1:9/l"
filter = '.n > 2'
"#;
        Config::from_toml_str(text, &|_| None).expect("config")
    }

    fn rules(cfg: &Config, name: &str) -> Rules {
        Rules::new(name, &cfg.destinations[name])
    }

    #[test]
    fn each_destination_gets_its_own_outcome_computed_once_per_webhook() {
        let cfg = config();
        let s = Selections::new(&cfg);
        let events = [
            Candidate {
                call: "track",
                name: Some("A"),
                json: r#"{"n":1}"#,
            },
            Candidate {
                call: "track",
                name: Some("B"),
                json: r#"{"n":2}"#,
            },
        ];
        let held: Arc<dyn Any + Send + Sync> = Arc::new(());
        let crm = s.get(1, &held, "shop", "crm", &rules(&cfg, "crm"), &events);
        let sel = crm.as_ref().as_ref().expect("no error");
        assert_eq!(sel.texts(&events), [r#"{"n":2}"#]);
        assert_eq!(sel.filtered, 1);
        let ads = s.get(1, &held, "shop", "ads", &rules(&cfg, "ads"), &events);
        let sel = ads.as_ref().as_ref().expect("no error");
        assert_eq!(
            sel.texts(&events),
            [r#"{"n":1,"seen":"ads"}"#, r#"{"n":2,"seen":"ads"}"#]
        );
        // Asked again: the same outcome, not computed anew.
        let again = s.get(1, &held, "shop", "crm", &rules(&cfg, "crm"), &events);
        assert!(Arc::ptr_eq(&crm, &again));
        // Another webhook id is another entry.
        let other = s.get(2, &held, "shop", "crm", &rules(&cfg, "crm"), &events);
        assert!(!Arc::ptr_eq(&crm, &other));
        // The same webhook mapped anew (another cache entry): worked out anew.
        let remapped: Arc<dyn Any + Send + Sync> = Arc::new(());
        let fresh = s.get(1, &remapped, "shop", "crm", &rules(&cfg, "crm"), &events);
        assert!(!Arc::ptr_eq(&crm, &fresh));
        // Plain rules and destinations not routed from the source are
        // worked out on the spot.
        let plain = s.get(1, &held, "shop", "plain", &rules(&cfg, "plain"), &events);
        assert_eq!(plain.as_ref().as_ref().unwrap().sent.len(), 2);
        let late = s.get(1, &held, "other", "late", &rules(&cfg, "late"), &events);
        assert_eq!(late.as_ref().as_ref().unwrap().filtered, 2);
    }

    #[test]
    fn old_webhooks_make_room() {
        let cfg = config();
        let s = Selections::new(&cfg);
        let events = [Candidate {
            call: "track",
            name: None,
            json: r#"{"n":5}"#,
        }];
        let held: Arc<dyn Any + Send + Sync> = Arc::new(());
        let first = s.get(0, &held, "shop", "crm", &rules(&cfg, "crm"), &events);
        for id in 1..=KEPT as u64 {
            s.get(id, &held, "shop", "crm", &rules(&cfg, "crm"), &events);
        }
        let again = s.get(0, &held, "shop", "crm", &rules(&cfg, "crm"), &events);
        assert!(!Arc::ptr_eq(&first, &again));
        assert_eq!(first, again);
    }
}
