//! `/metrics` is valid Prometheus text exposition (format 0.0.4), checked by a
//! small line-format validator rather than by eye.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::common::relay::{Opts, Relay, SECRET};
use crate::common::sign::ShopifyWebhook;
use crate::common::{client, within};

/// One sample line: metric name, labels in order, value.
type Sample = (String, Vec<(String, String)>, f64);

fn valid_name(s: &str, colon: bool) -> bool {
    let ok = |c: char, first: bool| {
        c.is_ascii_alphabetic() || c == '_' || (colon && c == ':') || (!first && c.is_ascii_digit())
    };
    let mut cs = s.chars();
    cs.next().is_some_and(|c| ok(c, true)) && cs.all(|c| ok(c, false))
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s.parse().map_err(|_| format!("bad value `{s}`")),
    }
}

/// `name{a="x",b="y"} value [timestamp]`.
fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    if !valid_name(name, true) {
        return Err(format!("bad metric name `{name}`"));
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(r) = rest.strip_prefix('{') {
        rest = r;
        loop {
            if let Some(r) = rest.strip_prefix('}') {
                rest = r;
                break;
            }
            let eq = rest.find("=\"").ok_or("label without =\"")?;
            let key = &rest[..eq];
            if !valid_name(key, false) {
                return Err(format!("bad label name `{key}`"));
            }
            let mut val = String::new();
            let mut chars = rest[eq + 2..].char_indices();
            let end = loop {
                match chars.next().ok_or("unterminated label value")? {
                    (_, '\\') => match chars.next().ok_or("dangling escape")?.1 {
                        'n' => val.push('\n'),
                        c @ ('\\' | '"') => val.push(c),
                        c => return Err(format!("bad escape \\{c}")),
                    },
                    (i, '"') => break eq + 2 + i + 1,
                    (_, c) => val.push(c),
                }
            };
            labels.push((key.to_string(), val));
            rest = &rest[end..];
            rest = rest.strip_prefix(',').unwrap_or(rest);
        }
    }
    let mut parts = rest
        .strip_prefix(' ')
        .ok_or("no space before the value")?
        .split(' ');
    let value = parse_value(parts.next().ok_or("no value")?)?;
    if let Some(ts) = parts.next() {
        ts.parse::<i64>()
            .map_err(|_| format!("bad timestamp `{ts}`"))?;
    }
    if parts.next().is_some() {
        return Err("trailing text".into());
    }
    Ok((name.to_string(), labels, value))
}

/// The family a sample belongs to, given the declared types.
fn family_of<'a>(name: &'a str, types: &HashMap<String, String>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if types
                .get(base)
                .is_some_and(|t| t == "histogram" || t == "summary")
            {
                return base;
            }
        }
    }
    name
}

/// Every problem in `text`, as "line N: …".
pub fn validate(text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let mut types: HashMap<String, String> = HashMap::new();
    let mut helps = BTreeSet::new();
    let mut done: BTreeSet<String> = BTreeSet::new(); // families whose block ended
    let mut current = String::new();
    let mut series = BTreeSet::new();
    let mut samples: Vec<Sample> = Vec::new();
    if !text.is_empty() && !text.ends_with('\n') {
        problems.push("no final newline".into());
    }
    for (i, line) in text.lines().enumerate() {
        let mut bad = |m: String| problems.push(format!("line {}: {m}: {line}", i + 1));
        if line.is_empty() {
            continue;
        }
        if let Some(c) = line.strip_prefix("# ") {
            let mut w = c.splitn(3, ' ');
            match (w.next(), w.next(), w.next()) {
                (Some("HELP"), Some(name), _) if !helps.insert(name.to_string()) => {
                    bad(format!("second HELP for {name}"))
                }
                (Some("TYPE"), Some(name), Some(t)) => {
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&t) {
                        bad(format!("unknown type {t}"));
                    }
                    if types.insert(name.into(), t.into()).is_some() {
                        bad(format!("second TYPE for {name}"));
                    }
                    if series
                        .iter()
                        .any(|(n, _): &(String, String)| family_of(n, &types) == name)
                    {
                        bad(format!("TYPE for {name} after its samples"));
                    }
                }
                _ => {}
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let s = match parse_sample(line) {
            Ok(s) => s,
            Err(e) => {
                bad(e);
                continue;
            }
        };
        let fam = family_of(&s.0, &types).to_string();
        if fam != current {
            if done.contains(&fam) {
                bad(format!("samples of {fam} are not together"));
            }
            done.insert(std::mem::replace(&mut current, fam.clone()));
        }
        let key = format!("{:?}", s.1);
        if !series.insert((s.0.clone(), key)) {
            bad("duplicate series".into());
        }
        if types.get(&fam).is_some_and(|t| t == "counter") && (s.2 < 0.0 || s.2.is_nan()) {
            bad("negative counter".into());
        }
        samples.push(s);
    }
    check_histograms(&samples, &types, &mut problems);
    problems
}

/// Buckets cumulative, `+Inf` present and equal to `_count`, `_sum` present.
fn check_histograms(
    samples: &[Sample],
    types: &HashMap<String, String>,
    problems: &mut Vec<String>,
) {
    // (family, labels without le) → (buckets by le, sum, count)
    type H = (Vec<(f64, f64)>, Option<f64>, Option<f64>);
    let mut hs: BTreeMap<(String, String), H> = BTreeMap::new();
    for (name, labels, v) in samples {
        let fam = family_of(name, types);
        if types.get(fam).map(String::as_str) != Some("histogram") {
            continue;
        }
        let le = labels
            .iter()
            .find(|(k, _)| k == "le")
            .map(|(_, v)| v.clone());
        let rest: Vec<_> = labels.iter().filter(|(k, _)| k != "le").collect();
        let e = hs
            .entry((fam.to_string(), format!("{rest:?}")))
            .or_default();
        match (name.strip_prefix(fam), le) {
            (Some("_bucket"), Some(le)) => match parse_value(&le) {
                Ok(b) => e.0.push((b, *v)),
                Err(m) => problems.push(format!("{name}: le {m}")),
            },
            (Some("_bucket"), None) => problems.push(format!("{name}: bucket without le")),
            (Some("_sum"), _) => e.1 = Some(*v),
            (Some("_count"), _) => e.2 = Some(*v),
            _ => problems.push(format!("{name}: not a histogram series")),
        }
    }
    for ((fam, labels), (mut buckets, sum, count)) in hs {
        let at = format!("{fam}{labels}");
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        if buckets.windows(2).any(|w| w[1].1 < w[0].1) {
            problems.push(format!("{at}: buckets not cumulative"));
        }
        match (buckets.last(), count) {
            (Some((b, n)), Some(c)) if b.is_infinite() && *n == c => {}
            _ => problems.push(format!("{at}: +Inf bucket missing or not equal to _count")),
        }
        if sum.is_none() {
            problems.push(format!("{at}: no _sum"));
        }
    }
}

#[test]
fn the_validator_catches_what_it_should() {
    let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"q\\\"\"} 3\n\
                # TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 4.5\nh_count 2\n";
    assert_eq!(validate(good), Vec::<String>::new());
    for bad in [
        "a b c d\n",
        "a{x=\"1} 2\n",
        "# TYPE h histogram\nh_bucket{le=\"1\"} 3\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 2\n",
        "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 2\n",
        "# TYPE a counter\na 1\n# TYPE b gauge\nb 1\na{x=\"y\"} 2\n",
        "a 1\na 2\n",
        "a 1\n# TYPE a gauge\n",
        "# TYPE c counter\nc -1\n",
    ] {
        assert!(!validate(bad).is_empty(), "accepted: {bad}");
    }
}

#[tokio::test]
async fn metrics_is_prometheus_text_exposition() {
    let relay = Relay::start(Opts::default()).await;
    let c = client();
    let url = relay.shopify_url("acme");
    for (i, secret) in [SECRET, SECRET, "wrong"].into_iter().enumerate() {
        let hook = ShopifyWebhook {
            topic: "orders/create",
            event_id: Some(format!("m{i}")),
            body: format!(r#"{{"id":{i},"line_items":[]}}"#).into_bytes(),
            secret,
        };
        within("ingest", hook.request(&c, &url).send())
            .await
            .unwrap();
    }
    let r = within("metrics", c.get(format!("{}/metrics", relay.admin)).send())
        .await
        .unwrap();
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    let text = within("metrics body", r.text()).await.unwrap();
    assert!(
        text.contains("_bucket{"),
        "a histogram is exercised: {text}"
    );
    let problems = validate(&text);
    assert!(problems.is_empty(), "{problems:#?}\n{text}");
    assert!(
        text.lines().any(|l| l == "shoprelay_log_damaged_ranges 0"),
        "damaged log ranges are exposed: {text}"
    );
    relay.stop().await;
}
