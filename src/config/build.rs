//! Section by section: turns the raw TOML tables into typed config, recording
//! every problem, then checks the rules that span sections.
//!
//! One failure idiom throughout: reading a key gives `Option<T>`, and `None` only
//! after the problem was recorded under that key (the [`Reader`] accessors, and
//! [`check`] for a rule on the value read). An absent optional key is its default
//! ([`optional`]). A section reads every key first, so one run reports every
//! problem, then builds its struct with `?`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

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
    if sources.as_ref().is_some_and(BTreeMap::is_empty) {
        root.problem("sources", "define at least one [sources.NAME]");
    }
    Some(Config {
        server: server?,
        storage: storage?,
        retry: retry?,
        mapping: mapping?,
        sources: sources?,
        destinations: destinations?,
    })
}

/// An optional key: `Some(default)` when absent, else what `read` makes of it.
pub(super) fn optional<T>(
    r: &Reader<'_>,
    name: &str,
    default: T,
    read: impl FnOnce(&str) -> Option<T>,
) -> Option<T> {
    if r.has(name) {
        read(name)
    } else {
        Some(default)
    }
}

/// `value`, unless `problem` finds one in it: then that is recorded under `name`
/// and the value is `None`.
pub(super) fn check<T>(
    r: &Reader<'_>,
    name: &str,
    value: Option<T>,
    problem: impl FnOnce(&T) -> Option<String>,
) -> Option<T> {
    let value = value?;
    match problem(&value) {
        Some(reason) => {
            r.problem(name, reason);
            None
        }
        None => Some(value),
    }
}

fn duration(r: &Reader<'_>, name: &str, default: Duration) -> Option<Duration> {
    optional(r, name, default, |k| r.parsed(k, parse_duration))
}

/// Names become URL segments and queue keys: keep them plain.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `[section.NAME]` tables, each read by `read`; `None` if any could not be.
fn named_tables<T>(
    root: &Reader<'_>,
    section: &str,
    read: impl Fn(&Reader<'_>) -> Option<T>,
) -> Option<BTreeMap<String, T>> {
    let Some(table) = root.table(section) else {
        return (!root.has(section)).then(BTreeMap::new);
    };
    let parent = root.child(section, table);
    let entries: Vec<Option<(String, T)>> = table
        .keys()
        .map(|name| {
            let t = parent.table(name)?;
            let named = check(&parent, name, Some(()), |()| {
                (!valid_name(name)).then(|| "names use only letters, digits, `_` and `-`".into())
            });
            let r = parent.child(name, t);
            let value = read(&r);
            r.finish();
            named?;
            Some((name.clone(), value?))
        })
        .collect();
    entries.into_iter().collect()
}

/// An optional top-level table; absent reads as empty.
pub(super) fn section<'a>(root: &Reader<'a>, name: &str) -> Reader<'a> {
    static EMPTY: std::sync::LazyLock<toml::Table> = std::sync::LazyLock::new(toml::Table::new);
    root.child(name, root.table(name).unwrap_or(&EMPTY))
}

fn socket_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse()
        .map_err(|_| format!("`{s}` is not an address like \"127.0.0.1:8080\""))
}

fn server(root: &Reader<'_>) -> Option<ServerConfig> {
    let r = section(root, "server");
    let address = |k: &str| r.parsed(k, socket_addr);
    let listen = optional(&r, "listen", ServerConfig::DEFAULT_LISTEN, address);
    let admin_listen = optional(
        &r,
        "admin_listen",
        ServerConfig::DEFAULT_ADMIN_LISTEN,
        address,
    );
    let admin_token = optional(&r, "admin_token", None, |k| {
        r.string(k).map(|s| (!s.is_empty()).then_some(Secret(s)))
    });
    let data_dir = optional(&r, "data_dir", ServerConfig::DEFAULT_DATA_DIR.into(), |k| {
        r.string(k)
    });
    let max_body_bytes = optional(
        &r,
        "max_body_bytes",
        ServerConfig::DEFAULT_MAX_BODY_BYTES,
        |k| r.integer(k, 1024, 64 << 20).map(|v| v as u64),
    );
    let min_free_bytes = optional(
        &r,
        "min_free_bytes",
        ServerConfig::DEFAULT_MIN_FREE_BYTES,
        |k| r.integer(k, 0, i64::MAX).map(|v| v as u64),
    );
    let dedup_window = duration(&r, "dedup_window", ServerConfig::MIN_DEDUP_WINDOW);
    let dedup_window = check(&r, "dedup_window", dedup_window, |w| {
        (*w < ServerConfig::MIN_DEDUP_WINDOW)
            .then(|| "must be at least 72h (Shopify redelivers for up to 48 hours)".into())
    });
    let limits = super::limits::read(
        &r,
        max_body_bytes.unwrap_or(ServerConfig::DEFAULT_MAX_BODY_BYTES),
    );
    r.finish();
    Some(ServerConfig {
        listen: listen?,
        admin_listen: admin_listen?,
        admin_token: admin_token?,
        data_dir: data_dir?.into(),
        max_body_bytes: max_body_bytes?,
        min_free_bytes: min_free_bytes?,
        dedup_window: dedup_window?,
        limits: limits?,
    })
}

fn retry(root: &Reader<'_>) -> Option<RetryConfig> {
    let r = section(root, "retry");
    let d = RetryConfig::default();
    let max_age = duration(&r, "max_age", d.max_age);
    let initial_interval = duration(&r, "initial_interval", d.initial_interval);
    let max_interval = duration(&r, "max_interval", d.max_interval);
    let initial_interval = check(&r, "initial_interval", initial_interval, |i| {
        i.is_zero().then(|| "must be greater than 0".into())
    });
    let max_interval = check(&r, "max_interval", max_interval, |m| {
        initial_interval
            .is_some_and(|i| *m < i)
            .then(|| "must not be shorter than initial_interval".into())
    });
    r.finish();
    Some(RetryConfig {
        max_age: max_age?,
        initial_interval: initial_interval?,
        max_interval: max_interval?,
    })
}

fn mapping(root: &Reader<'_>) -> Option<MappingConfig> {
    let r = section(root, "mapping");
    let d = MappingConfig::default();
    let naming = optional(&r, "naming", d.naming, |k| {
        r.string(k).and_then(|s| match s.as_str() {
            "segment" => Some(Naming::Segment),
            "snake" => Some(Naming::Snake),
            other => {
                r.problem(k, format!("`{other}` is not \"segment\" or \"snake\""));
                None
            }
        })
    });
    let user_id = optional(&r, "user_id", d.user_id, |k| {
        r.string(k).and_then(|s| match s.as_str() {
            "email" => Some(UserIdRule::Email),
            "customer_id" => Some(UserIdRule::CustomerId),
            other => {
                r.problem(k, format!("`{other}` is not \"email\" or \"customer_id\""));
                None
            }
        })
    });
    let identify_on_orders = optional(&r, "identify_on_orders", d.identify_on_orders, |k| {
        r.bool(k)
    });
    let identity_retention = duration(&r, "identity_retention", d.identity_retention);
    let identity_retention = check(&r, "identity_retention", identity_retention, |d| {
        (*d < super::mapping::MIN_IDENTITY_RETENTION).then(|| {
            "must be at least 2d (an order's refunds and fulfillments come days after it)".into()
        })
    });
    let events = optional(&r, "events", d.events, |k| {
        let events = r.string_map(k)?;
        let unnamed = events
            .iter()
            .filter(|(topic, name)| {
                let empty = name.trim().is_empty();
                if empty {
                    r.problem(&format!("{k}.\"{topic}\""), "event name must not be empty");
                }
                empty
            })
            .count();
        (unnamed == 0).then(|| events.into_iter().collect())
    });
    r.finish();
    Some(MappingConfig {
        naming: naming?,
        events: events?,
        user_id: user_id?,
        identify_on_orders: identify_on_orders?,
        identity_retention: identity_retention?,
    })
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
    let secrets = if r.has("secrets") {
        check(r, "secrets", r.strings("secrets"), |s| {
            (s.is_empty() || s.iter().any(String::is_empty))
                .then(|| "needs at least one non-empty secret".into())
        })
    } else {
        r.problem("secrets", "is required");
        None
    };
    let delivery = optional(r, "delivery", DeliveryMode::Fanout, |k| {
        r.string(k).and_then(|s| match s.as_str() {
            "fanout" => Some(DeliveryMode::Fanout),
            "first-success" => Some(DeliveryMode::FirstSuccess),
            other => {
                r.problem(
                    k,
                    format!("`{other}` is not \"fanout\" or \"first-success\""),
                );
                None
            }
        })
    });
    let destinations = if r.has("destinations") {
        r.strings("destinations")
            .and_then(|list| route(r, list, declared))
    } else {
        route_all(r, declared)
    };
    Some(SourceConfig {
        kind: kind?,
        secrets: secrets?.into_iter().map(Secret).collect(),
        destinations: destinations?,
        delivery: delivery?,
    })
}

/// No list means every destination, which must then be at most five.
fn route_all(r: &Reader<'_>, declared: &BTreeSet<String>) -> Option<Vec<String>> {
    check(
        r,
        "destinations",
        Some(declared.iter().cloned().collect()),
        |all: &Vec<String>| {
            (all.len() > MAX_DESTINATIONS_PER_SOURCE).then(|| {
            format!(
                "not set, so it means all {} destinations; a source may have at most {MAX_DESTINATIONS_PER_SOURCE}: list them",
                all.len()
            )
        })
        },
    )
}

/// A source's list of destinations: at most five, each defined, none twice.
fn route(r: &Reader<'_>, list: Vec<String>, declared: &BTreeSet<String>) -> Option<Vec<String>> {
    let too_many = list.len() > MAX_DESTINATIONS_PER_SOURCE;
    if too_many {
        r.problem(
            "destinations",
            format!(
                "{} destinations; a source may have at most {MAX_DESTINATIONS_PER_SOURCE}",
                list.len()
            ),
        );
    }
    let mut seen = BTreeSet::new();
    let wrong = list
        .iter()
        .filter(|d| {
            let undefined = !declared.contains(*d);
            if undefined {
                r.problem(
                    "destinations",
                    format!("`{d}` is not a defined [destinations.{d}]"),
                );
            }
            let twice = !seen.insert(*d);
            if twice {
                r.problem("destinations", format!("`{d}` is listed twice"));
            }
            undefined || twice
        })
        .count();
    (!too_many && wrong == 0).then_some(list)
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
    let format = optional(r, "format", Format::Webhook, |k| {
        r.string(k).and_then(|s| match s.as_str() {
            "webhook" => Some(Format::Webhook),
            "webhook-batch" => Some(Format::WebhookBatch),
            "segment-api" => Some(Format::SegmentApi),
            other => {
                r.problem(
                    k,
                    format!(
                        "unknown format `{other}` (expected \"webhook\", \"webhook-batch\" or \"segment-api\")"
                    ),
                );
                None
            }
        })
    });
    let secret = |k: &str| r.string(k).map(|s| (!s.is_empty()).then_some(Secret(s)));
    let shared_secret = optional(r, "shared_secret", None, secret);
    let write_key = match optional(r, "write_key", None, secret) {
        Some(None) | None if format == Some(Format::SegmentApi) => {
            r.problem("write_key", "is required for format \"segment-api\"");
            None
        }
        write_key => write_key,
    };
    let timeout = duration(r, "timeout", DestinationConfig::DEFAULT_TIMEOUT);
    let timeout = check(r, "timeout", timeout, |t| {
        t.is_zero().then(|| "must be greater than 0".into())
    });
    let linger = duration(r, "linger", DestinationConfig::DEFAULT_LINGER);
    let headers = optional(r, "headers", Vec::new(), |k| {
        let headers = r.string_map(k)?;
        let invalid = headers
            .iter()
            .filter(|(name, value)| {
                let key = format!("{k}.\"{name}\"");
                if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                    r.problem(&key, "is not a valid header name");
                } else if reqwest::header::HeaderValue::from_str(value).is_err() {
                    r.problem(&key, "value is not a valid header value");
                } else {
                    return false;
                }
                true
            })
            .count();
        (invalid == 0).then(|| headers.into_iter().map(|(k, v)| (k, Secret(v))).collect())
    });
    let events = optional(r, "events", None, |k| {
        let events = check(r, k, r.strings(k), |e| {
            e.is_empty().then(|| {
                "an empty filter would drop every event; remove the key to send all".into()
            })
        });
        events.map(Some)
    });
    let concurrency = optional(
        r,
        "concurrency",
        DestinationConfig::DEFAULT_CONCURRENCY,
        |k| {
            r.integer(k, 1, DestinationConfig::MAX_CONCURRENCY as i64)
                .map(|c| c as usize)
        },
    );
    let batch_max = if format == Some(Format::SegmentApi) {
        DestinationConfig::MAX_SEGMENT_API_BATCH_SIZE
    } else {
        DestinationConfig::MAX_BATCH_SIZE
    } as i64;
    let batch_size = optional(
        r,
        "batch_size",
        DestinationConfig::DEFAULT_BATCH_SIZE,
        |k| r.integer(k, 1, batch_max).map(|b| b as usize),
    );
    let filter = program(r, "filter");
    let transform = program(r, "transform");
    let rate_limit = optional(r, "rate_limit", None, |k| {
        r.parsed(k, parse_rate_limit).map(Some)
    });
    Some(DestinationConfig {
        url: url?,
        format: format?,
        shared_secret: shared_secret?,
        write_key: write_key?,
        timeout: timeout?,
        headers: headers?,
        events: events?,
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
    optional(r, name, None, |k| {
        let source = r.string(k)?;
        if source.trim().is_empty() {
            r.problem(k, "is empty; remove the key to send every event unchanged");
            return None;
        }
        match JqProgram::compile(&source) {
            Ok(p) => Some(Some(p)),
            Err(e) => {
                r.problem(k, e.to_string());
                None
            }
        }
    })
}
