//! Section by section: turns the raw TOML tables into typed config, recording
//! every problem, then checks the rules that span sections.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use super::reader::Reader;
use super::*;

pub(super) fn config(root: &Reader<'_>) -> Option<Config> {
    let server = server(root);
    let retry = retry(root);
    let mapping = mapping(root);
    let storage = super::storage::read(root);
    let destinations = named_tables(root, "destinations", destination);
    let declared: BTreeSet<String> = root
        .peek_table("destinations")
        .map(|t| t.keys().cloned().collect())
        .unwrap_or_default();
    let sources = named_tables(root, "sources", |r| source(r, &declared));
    if sources.0.is_empty() && sources.1 {
        root.problem("sources", "define at least one [sources.NAME]");
    }
    let (sources, sources_ok) = sources;
    let (destinations, destinations_ok) = destinations;
    let (server, retry, mapping, storage) = (server?, retry?, mapping?, storage?);
    if !(sources_ok && destinations_ok) {
        return None;
    }
    Some(Config {
        server,
        storage,
        retry,
        mapping,
        sources,
        destinations,
    })
}

/// Names become URL segments and queue keys: keep them plain.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn named_tables<T>(
    root: &Reader<'_>,
    section: &str,
    read: impl Fn(&Reader<'_>) -> Option<T>,
) -> (BTreeMap<String, T>, bool) {
    let Some(table) = root.table(section) else {
        return (BTreeMap::new(), !root.has(section));
    };
    let parent = root.child(section, table);
    let mut out = BTreeMap::new();
    let mut ok = true;
    for name in table.keys() {
        let Some(t) = parent.table(name) else {
            ok = false;
            continue;
        };
        if !valid_name(name) {
            parent.problem(name, "names use only letters, digits, `_` and `-`");
            ok = false;
        }
        let r = parent.child(name, t);
        match read(&r) {
            Some(v) => {
                out.insert(name.clone(), v);
            }
            None => ok = false,
        }
        r.finish();
    }
    (out, ok)
}

/// An optional top-level table; absent reads as empty.
pub(super) fn section<'a>(root: &Reader<'a>, name: &str) -> (Reader<'a>, &'a toml::Table) {
    static EMPTY: std::sync::LazyLock<toml::Table> = std::sync::LazyLock::new(toml::Table::new);
    let t = root.table(name).unwrap_or(&EMPTY);
    (root.child(name, t), t)
}

fn socket_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse()
        .map_err(|_| format!("`{s}` is not an address like \"127.0.0.1:8080\""))
}

fn server(root: &Reader<'_>) -> Option<ServerConfig> {
    let (r, t) = section(root, "server");
    let listen = r.parsed("listen", socket_addr);
    let admin_listen = r.parsed("admin_listen", socket_addr);
    let admin_token = r.string("admin_token").filter(|s| !s.is_empty());
    let data_dir = r.string("data_dir");
    let max_body = r.integer("max_body_bytes", 1024, 64 << 20);
    let min_free = r.integer("min_free_bytes", 0, i64::MAX);
    let dedup_window = r.parsed("dedup_window", parse_duration);
    if let Some(w) = dedup_window {
        if w < ServerConfig::MIN_DEDUP_WINDOW {
            r.problem(
                "dedup_window",
                "must be at least 72h (Shopify redelivers for up to 48 hours)",
            );
        }
    }
    let max_body_bytes = max_body.map_or(ServerConfig::DEFAULT_MAX_BODY_BYTES, |v| v as u64);
    let limits = super::limits::read(&r, max_body_bytes);
    let bad = limits.is_none()
        || (t.contains_key("listen") && listen.is_none())
        || (t.contains_key("admin_listen") && admin_listen.is_none())
        || (t.contains_key("data_dir") && data_dir.is_none())
        || (t.contains_key("max_body_bytes") && max_body.is_none())
        || (t.contains_key("min_free_bytes") && min_free.is_none())
        || (t.contains_key("dedup_window") && dedup_window.is_none());
    r.finish();
    if bad {
        return None;
    }
    Some(ServerConfig {
        listen: listen.unwrap_or(ServerConfig::DEFAULT_LISTEN),
        admin_listen: admin_listen.unwrap_or(ServerConfig::DEFAULT_ADMIN_LISTEN),
        admin_token: admin_token.map(Secret),
        data_dir: data_dir
            .unwrap_or_else(|| ServerConfig::DEFAULT_DATA_DIR.into())
            .into(),
        max_body_bytes,
        min_free_bytes: min_free.map_or(ServerConfig::DEFAULT_MIN_FREE_BYTES, |v| v as u64),
        dedup_window: dedup_window.unwrap_or(ServerConfig::MIN_DEDUP_WINDOW),
        limits: limits?,
    })
}

fn retry(root: &Reader<'_>) -> Option<RetryConfig> {
    let (r, t) = section(root, "retry");
    let d = RetryConfig::default();
    let mut ok = true;
    let mut dur = |name: &str, default: Duration| {
        if !t.contains_key(name) {
            return default;
        }
        r.parsed(name, parse_duration).unwrap_or_else(|| {
            ok = false;
            default
        })
    };
    let cfg = RetryConfig {
        max_age: dur("max_age", d.max_age),
        initial_interval: dur("initial_interval", d.initial_interval),
        max_interval: dur("max_interval", d.max_interval),
    };
    if cfg.initial_interval.is_zero() {
        r.problem("initial_interval", "must be greater than 0");
        ok = false;
    }
    if cfg.max_interval < cfg.initial_interval {
        r.problem("max_interval", "must not be shorter than initial_interval");
        ok = false;
    }
    r.finish();
    ok.then_some(cfg)
}

fn mapping(root: &Reader<'_>) -> Option<MappingConfig> {
    let (r, _) = section(root, "mapping");
    let mut cfg = MappingConfig::default();
    let mut ok = true;
    if let Some(s) = r.string("naming") {
        match s.as_str() {
            "segment" => cfg.naming = Naming::Segment,
            "snake" => cfg.naming = Naming::Snake,
            other => {
                r.problem(
                    "naming",
                    format!("`{other}` is not \"segment\" or \"snake\""),
                );
                ok = false;
            }
        }
    }
    if let Some(s) = r.string("user_id") {
        match s.as_str() {
            "email" => cfg.user_id = UserIdRule::Email,
            "customer_id" => cfg.user_id = UserIdRule::CustomerId,
            other => {
                r.problem(
                    "user_id",
                    format!("`{other}` is not \"email\" or \"customer_id\""),
                );
                ok = false;
            }
        }
    }
    if let Some(b) = r.bool("identify_on_orders") {
        cfg.identify_on_orders = b;
    }
    if r.string("identity_retention").is_some() {
        match r.parsed("identity_retention", parse_duration) {
            Some(d) if d >= super::mapping::MIN_IDENTITY_RETENTION => cfg.identity_retention = d,
            Some(_) => {
                r.problem(
                    "identity_retention",
                    "must be at least 2d (an order's refunds and fulfillments come days after it)",
                );
                ok = false;
            }
            None => ok = false,
        }
    }
    if let Some(events) = r.string_map("events") {
        for (topic, name) in events {
            if name.trim().is_empty() {
                r.problem(
                    &format!("events.\"{topic}\""),
                    "event name must not be empty",
                );
                ok = false;
            } else {
                cfg.events.insert(topic, name);
            }
        }
    }
    r.finish();
    ok.then_some(cfg)
}

/// Routes are checked against every declared destination, even one that
/// failed to build, so a single run reports both kinds of problem.
fn source(r: &Reader<'_>, declared: &BTreeSet<String>) -> Option<SourceConfig> {
    let kind = r.required_string("kind").and_then(|k| match k.as_str() {
        "shopify" => Some(SourceKind::Shopify),
        "convertedin" => Some(SourceKind::Convertedin),
        other => {
            r.problem(
                "kind",
                format!("unknown kind `{other}` (expected \"shopify\" or \"convertedin\")"),
            );
            None
        }
    });
    let secrets = match r.strings("secrets") {
        Some(s) if s.is_empty() || s.iter().any(|s| s.is_empty()) => {
            r.problem("secrets", "needs at least one non-empty secret");
            None
        }
        Some(s) => Some(s.into_iter().map(Secret).collect()),
        None => {
            if !r.has("secrets") {
                r.problem("secrets", "is required");
            }
            None
        }
    };
    let delivery = match r.string("delivery").as_deref() {
        None | Some("fanout") => Some(DeliveryMode::Fanout),
        Some("first-success") => Some(DeliveryMode::FirstSuccess),
        Some(other) => {
            r.problem(
                "delivery",
                format!("`{other}` is not \"fanout\" or \"first-success\""),
            );
            None
        }
    };
    let destinations = if r.has("destinations") {
        route(r, r.strings("destinations")?, declared)
    } else {
        route_all(r, declared)
    };
    Some(SourceConfig {
        kind: kind?,
        secrets: secrets?,
        destinations,
        delivery: delivery?,
    })
}

/// No list means every destination, which must then be at most five.
fn route_all(r: &Reader<'_>, declared: &BTreeSet<String>) -> Vec<String> {
    if declared.len() > MAX_DESTINATIONS_PER_SOURCE {
        r.problem(
            "destinations",
            format!(
                "not set, so it means all {} destinations; a source may have at most {MAX_DESTINATIONS_PER_SOURCE}: list them",
                declared.len()
            ),
        );
    }
    declared.iter().cloned().collect()
}

fn route(r: &Reader<'_>, list: Vec<String>, declared: &BTreeSet<String>) -> Vec<String> {
    if list.len() > MAX_DESTINATIONS_PER_SOURCE {
        r.problem(
            "destinations",
            format!(
                "{} destinations; a source may have at most {MAX_DESTINATIONS_PER_SOURCE}",
                list.len()
            ),
        );
    }
    let mut seen = BTreeSet::new();
    for d in &list {
        if !declared.contains(d) {
            r.problem(
                "destinations",
                format!("`{d}` is not a defined [destinations.{d}]"),
            );
        }
        if !seen.insert(d) {
            r.problem("destinations", format!("`{d}` is listed twice"));
        }
    }
    list
}

fn destination(r: &Reader<'_>) -> Option<DestinationConfig> {
    let url = r
        .required_string("url")
        .and_then(|s| match url::Url::parse(&s) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Some(u),
            Ok(u) => {
                r.problem(
                    "url",
                    format!("scheme `{}` is not http or https", u.scheme()),
                );
                None
            }
            Err(e) => {
                r.problem("url", format!("not a valid URL: {e}"));
                None
            }
        });
    let format = match r.string("format").as_deref() {
        None | Some("webhook") => Some(Format::Webhook),
        Some("webhook-batch") => Some(Format::WebhookBatch),
        Some("segment-api") => Some(Format::SegmentApi),
        Some(other) => {
            r.problem(
                "format",
                format!(
                    "unknown format `{other}` (expected \"webhook\", \"webhook-batch\" or \"segment-api\")"
                ),
            );
            None
        }
    };
    let shared_secret = r.string("shared_secret").filter(|s| !s.is_empty());
    let write_key = r.string("write_key").filter(|s| !s.is_empty());
    if format == Some(Format::SegmentApi) && write_key.is_none() {
        r.problem("write_key", "is required for format \"segment-api\"");
    }
    let timeout = duration_or(r, "timeout", DestinationConfig::DEFAULT_TIMEOUT);
    if matches!(timeout, Some(t) if t.is_zero()) {
        r.problem("timeout", "must be greater than 0");
    }
    let linger = duration_or(r, "linger", DestinationConfig::DEFAULT_LINGER);
    let headers = r.string_map("headers").map(|hs| {
        hs.into_iter()
            .filter(|(k, v)| {
                let name_ok = reqwest::header::HeaderName::from_bytes(k.as_bytes()).is_ok();
                let value_ok = reqwest::header::HeaderValue::from_str(v).is_ok();
                if !name_ok {
                    r.problem(&format!("headers.\"{k}\""), "is not a valid header name");
                } else if !value_ok {
                    r.problem(
                        &format!("headers.\"{k}\""),
                        "value is not a valid header value",
                    );
                }
                name_ok && value_ok
            })
            .map(|(k, v)| (k, Secret(v)))
            .collect()
    });
    let events = r.strings("events");
    if matches!(&events, Some(e) if e.is_empty()) {
        r.problem(
            "events",
            "an empty filter would drop every event; remove the key to send all",
        );
    }
    let concurrency = r
        .integer("concurrency", 1, DestinationConfig::MAX_CONCURRENCY as i64)
        .map_or(Some(DestinationConfig::DEFAULT_CONCURRENCY), |c| {
            Some(c as usize)
        });
    let batch_max = if format == Some(Format::SegmentApi) {
        DestinationConfig::MAX_SEGMENT_API_BATCH_SIZE
    } else {
        DestinationConfig::MAX_BATCH_SIZE
    } as i64;
    let batch_size = if r.has("batch_size") {
        r.integer("batch_size", 1, batch_max).map(|b| b as usize)
    } else {
        Some(DestinationConfig::DEFAULT_BATCH_SIZE)
    };
    let filter = program(r, "filter");
    let transform = program(r, "transform");
    let rate_limit = if r.has("rate_limit") {
        r.parsed("rate_limit", parse_rate_limit).map(Some)
    } else {
        Some(None)
    };
    Some(DestinationConfig {
        url: url?,
        format: format?,
        shared_secret: shared_secret.map(Secret),
        write_key: write_key.map(Secret),
        timeout: timeout?,
        headers: headers.unwrap_or_default(),
        events,
        concurrency: concurrency?,
        batch_size: batch_size?,
        linger: linger?,
        filter: filter?,
        transform: transform?,
        rate_limit: rate_limit?,
    })
}

/// An optional jq program: `Some(None)` when absent, `None` when it does not
/// compile (reported with its key and where in the program).
fn program(r: &Reader<'_>, name: &str) -> Option<Option<JqProgram>> {
    if !r.has(name) {
        return Some(None);
    }
    let source = r.string(name)?;
    if source.trim().is_empty() {
        r.problem(
            name,
            "is empty; remove the key to send every event unchanged",
        );
        return None;
    }
    match JqProgram::compile(&source) {
        Ok(p) => Some(Some(p)),
        Err(e) => {
            r.problem(name, e.to_string());
            None
        }
    }
}

fn duration_or(r: &Reader<'_>, name: &str, default: Duration) -> Option<Duration> {
    if r.has(name) {
        r.parsed(name, parse_duration)
    } else {
        Some(default)
    }
}
