//! Which destinations of a source have jq rules, and what each of them gets
//! of one webhook: worked out once per webhook for all of them, by the
//! mapping of that webhook (`delivery::mapped`), off the async workers, and
//! kept with its mapped events for every lane of the fan-out.
//!
//! Done there rather than by the first lane to need it: the lanes of a
//! fan-out come to a webhook at about the same time, and the others waited
//! for that lane's jq runs on the async workers (5-way fan-out with rules on
//! every destination: 0.75 of the throughput without rules while computed
//! by the first lane, see docs/PERFORMANCE.md).

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::Config;

use super::{Candidate, RuleError, Rules, Selection, select_many};

/// One destination's outcome for one webhook.
pub type Outcome = Arc<Result<Selection, RuleError>>;

/// The outcomes of one webhook, by destination with jq rules.
pub type Selected = HashMap<String, Outcome>;

/// For every source, its destinations with a jq `filter` or `transform`.
pub struct Selections {
    routes: HashMap<String, Vec<(String, Rules)>>,
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
        Selections { routes }
    }

    /// What each destination with jq rules routed from `source` gets of a
    /// webhook whose mapped events are `events` (each event parsed for jq
    /// once for all of them).
    pub fn select(&self, source: &str, events: &[Candidate<'_>]) -> Selected {
        let routed = self.routes.get(source).map_or(&[][..], Vec::as_slice);
        if routed.is_empty() {
            return Selected::new();
        }
        let all: Vec<&Rules> = routed.iter().map(|(_, r)| r).collect();
        routed
            .iter()
            .map(|(d, _)| d.clone())
            .zip(select_many(&all, events).into_iter().map(Arc::new))
            .collect()
    }
}

/// What `target` (whose rules are `rules`) gets: the outcome worked out with
/// the webhook's mapping, or, for a destination with only `events` or one not
/// routed from the source by relay.toml now (work queued before a change),
/// worked out on the spot.
pub fn outcome(
    selected: &Selected,
    target: &str,
    rules: &Rules,
    events: &[Candidate<'_>],
) -> Outcome {
    match selected.get(target) {
        Some(o) => o.clone(),
        None => Arc::new(rules.select(events)),
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
    fn each_destination_with_jq_gets_its_own_outcome() {
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
        let selected = s.select("shop", &events);
        let mut keys: Vec<&str> = selected.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["ads", "crm"], "only destinations with jq rules");
        let crm = outcome(&selected, "crm", &rules(&cfg, "crm"), &events);
        let sel = crm.as_ref().as_ref().expect("no error");
        assert_eq!(sel.texts(&events), [r#"{"n":2}"#]);
        assert_eq!(sel.filtered, 1);
        let ads = outcome(&selected, "ads", &rules(&cfg, "ads"), &events);
        let sel = ads.as_ref().as_ref().expect("no error");
        assert_eq!(
            sel.texts(&events),
            [r#"{"n":1,"seen":"ads"}"#, r#"{"n":2,"seen":"ads"}"#]
        );
        // Asked again: the outcome worked out with the mapping.
        let again = outcome(&selected, "crm", &rules(&cfg, "crm"), &events);
        assert!(Arc::ptr_eq(&crm, &again));
        // Plain rules and destinations not routed from the source are
        // worked out on the spot.
        let plain = outcome(&selected, "plain", &rules(&cfg, "plain"), &events);
        assert_eq!(plain.as_ref().as_ref().unwrap().sent.len(), 2);
        let other = s.select("other", &events);
        assert!(other.is_empty());
        let late = outcome(&other, "late", &rules(&cfg, "late"), &events);
        assert_eq!(late.as_ref().as_ref().unwrap().filtered, 2);
    }
}
