//! `shoprelay preview`: maps one payload offline with relay.toml and shows,
//! per destination of the source, the events it would receive after
//! `events`, `filter` and `transform`, or why none. Nothing is sent and no
//! relay needs to run: operators try a rule here before deploying it.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use bytes::Bytes;
use clap::Args;
use serde_json::{Value, json};
use shoprelay::config::{Config, ConfigError, SourceConfig};
use shoprelay::delivery::rules::{Candidate, Rules, Verdict};
use shoprelay::sources::{SourceKind, WebhookMeta};

use super::client::sample;

#[derive(Args, Debug)]
pub struct Preview {
    /// Topic, e.g. orders/paid (convertedin: resource/action).
    #[arg(long)]
    pub topic: String,
    /// The webhook body; default: the built-in sample for the topic.
    #[arg(long)]
    pub payload: Option<PathBuf>,
    /// The source it arrives at; default: the first source of --kind.
    #[arg(long)]
    pub source: Option<String>,
    /// Sender kind: shopify or convertedin (default: the source's, else shopify).
    #[arg(long)]
    pub kind: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// What the rules do with one mapped event.
enum Fate {
    /// Sent as these bytes; `transformed` when a transform made them.
    Sent { json: String, transformed: bool },
    /// Left out, and why.
    Left(&'static str),
}

/// What one destination would get.
struct Outcome {
    name: String,
    /// Per mapped event, in order (up to a run-time error).
    fates: Vec<Fate>,
    /// A run-time error: the whole delivery would be a dead letter.
    error: Option<String>,
}

pub fn run(config: &Path, p: &Preview) -> anyhow::Result<ExitCode> {
    let cfg = match Config::load(config) {
        Ok(cfg) => cfg,
        Err(ConfigError::Invalid(problems)) => {
            eprintln!("{}: {} problem(s)", config.display(), problems.len());
            for problem in problems {
                eprintln!("  {problem}");
            }
            return Ok(ExitCode::FAILURE);
        }
        Err(e) => anyhow::bail!("{e}"),
    };
    let (name, source) = pick_source(&cfg, p.source.as_deref(), p.kind.as_deref())?;
    let topic = p.topic.trim().to_ascii_lowercase();
    let body = match &p.payload {
        Some(path) => std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?,
        None => sample(source.kind.as_str(), &topic)?.as_bytes().to_vec(),
    };
    let meta = meta(name, source.kind, &topic, &body);
    let mapped =
        shoprelay::mapping::map_unverified_for_preview(meta, Bytes::from(body), &cfg.mapping);
    let events = match &mapped {
        Ok(events) => events,
        Err(e) => {
            let error = format!("cannot map the webhook: {e}");
            if p.json {
                let v = json!({"source": name, "kind": source.kind.as_str(), "topic": topic,
                    "error": error, "destinations": []});
                emit(&format!("{}\n", serde_json::to_string_pretty(&v)?));
            } else {
                emit(&format!(
                    "{topic} at source {name}: would be a dead letter for every destination\n  {error}\n"
                ));
            }
            return Ok(ExitCode::FAILURE);
        }
    };
    let jsons: Vec<String> = events.iter().map(|e| e.to_json()).collect();
    let outcomes: Vec<Outcome> = source
        .destinations
        .iter()
        .filter_map(|d| Some((d, cfg.destinations.get(d)?)))
        .map(|(d, dcfg)| {
            let rules = Rules::new(d, dcfg);
            let mut fates = Vec::new();
            let mut error = None;
            for (e, json) in events.iter().zip(&jsons) {
                let c = Candidate {
                    call: e.call().as_str(),
                    name: e.name(),
                    json,
                };
                match rules.apply(c) {
                    Ok(v) => fates.push(fate(v)),
                    Err(err) => {
                        error = Some(err.to_string());
                        break;
                    }
                }
            }
            Outcome {
                name: d.clone(),
                fates,
                error,
            }
        })
        .collect();
    let labels: Vec<String> = events
        .iter()
        .map(|e| match e.name() {
            Some(n) => format!("{} {n:?}", e.call().as_str()),
            None => e.call().as_str().to_string(),
        })
        .collect();
    if p.json {
        let v = json!({
            "source": name,
            "kind": source.kind.as_str(),
            "topic": topic,
            "delivery": source.delivery.as_str(),
            "mapped": events.len(),
            "destinations": outcomes.iter().map(|o| as_json(o, events)).collect::<Vec<_>>(),
        });
        emit(&format!("{}\n", serde_json::to_string_pretty(&v)?));
    } else {
        emit(&render(name, source, &topic, &labels, &outcomes));
    }
    Ok(if outcomes.iter().any(|o| o.error.is_some()) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Writes to stdout; a closed pipe (`| head`) is not an error.
fn emit(text: &str) {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

/// `--source`, else the first source of `--kind` (default shopify), by name.
fn pick_source<'a>(
    cfg: &'a Config,
    name: Option<&str>,
    kind: Option<&str>,
) -> anyhow::Result<(&'a str, &'a SourceConfig)> {
    let kind = match kind {
        None => None,
        Some("shopify") => Some(SourceKind::Shopify),
        Some("convertedin") => Some(SourceKind::Convertedin),
        Some(other) => anyhow::bail!("--kind must be shopify or convertedin, not `{other}`"),
    };
    let names = || cfg.sources.keys().cloned().collect::<Vec<_>>().join(", ");
    if let Some(name) = name {
        let (name, source) = cfg.sources.get_key_value(name).ok_or_else(|| {
            anyhow::anyhow!("no [sources.{name}] in relay.toml (sources: {})", names())
        })?;
        if kind.is_some_and(|k| k != source.kind) {
            anyhow::bail!(
                "source `{name}` is {}, not --kind {}",
                source.kind.as_str(),
                kind.map_or("", |k| k.as_str())
            );
        }
        return Ok((name, source));
    }
    let kind = kind.unwrap_or(SourceKind::Shopify);
    cfg.sources
        .iter()
        .find(|(_, s)| s.kind == kind)
        .map(|(n, s)| (n.as_str(), s))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "relay.toml has no {} source; pass --source NAME (sources: {})",
                kind.as_str(),
                names()
            )
        })
}

/// The webhook's meta as the relay would store it, without the headers a sender
/// adds: no shop domain or webhook id; its id is the content hash (so the
/// messageIds are stable for one payload). `SOURCE_DATE_EPOCH` (seconds)
/// stands for now where an event's time falls back to when it was received.
fn meta(source: &str, kind: SourceKind, topic: &str, body: &[u8]) -> WebhookMeta {
    let now = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map_or_else(shoprelay::timefmt::now_ms, |s| s * 1000);
    WebhookMeta {
        kind,
        source: source.to_string(),
        topic: topic.to_string(),
        shop_domain: None,
        webhook_id: None,
        event_id: None,
        api_version: None,
        triggered_at: None,
        dedup_id: shoprelay::sources::content_id(topic, body),
        received_at_ms: now,
    }
}

fn fate(v: Verdict<'_>) -> Fate {
    match v {
        Verdict::Send(json) => Fate::Sent {
            transformed: matches!(json, Cow::Owned(_)),
            json: json.into_owned(),
        },
        Verdict::NotListed => Fate::Left("not in events"),
        Verdict::Filtered => Fate::Left("skipped by filter"),
        Verdict::Dropped => Fate::Left("dropped by transform"),
    }
}

/// Sent bytes as a JSON value (key order and number text kept).
fn value(json: &str) -> Value {
    serde_json::from_str(json).unwrap_or_else(|_| Value::String(json.to_string()))
}

fn as_json(o: &Outcome, events: &[shoprelay::event::Event]) -> Value {
    let sent: Vec<Value> = o
        .fates
        .iter()
        .filter_map(|f| match f {
            Fate::Sent { json, .. } => Some(value(json)),
            Fate::Left(_) => None,
        })
        .collect();
    let skipped: Vec<Value> = o
        .fates
        .iter()
        .zip(events)
        .filter_map(|(f, e)| match f {
            Fate::Left(why) => Some(json!({
                "type": e.call().as_str(),
                "event": e.name(),
                "messageId": e.message_id(),
                "why": why,
            })),
            Fate::Sent { .. } => None,
        })
        .collect();
    json!({"name": o.name, "events": sent, "skipped": skipped, "error": o.error})
}

/// The readable form: per destination, a summary line, then each event's fate.
fn render(
    source: &str,
    cfg: &SourceConfig,
    topic: &str,
    labels: &[String],
    outcomes: &[Outcome],
) -> String {
    let mut out = format!(
        "{topic} at source {source} ({}, {}): {} event(s) mapped\n",
        cfg.kind.as_str(),
        cfg.delivery.as_str(),
        labels.len()
    );
    if outcomes.is_empty() {
        out.push_str("\n(no destinations: webhooks are stored and dropped)\n");
    }
    let w = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0);
    for o in outcomes {
        out.push('\n');
        if let Some(e) = &o.error {
            out.push_str(&format!("{}: would be a dead letter\n  {e}\n", o.name));
            continue;
        }
        let sent = o
            .fates
            .iter()
            .filter(|f| matches!(f, Fate::Sent { .. }))
            .count();
        let summary = if sent > 0 {
            format!("{sent} event(s)")
        } else if labels.is_empty() {
            "no event (the webhook maps to none)".to_string()
        } else {
            let mut why: Vec<&str> = o
                .fates
                .iter()
                .filter_map(|f| match f {
                    Fate::Left(why) => Some(*why),
                    Fate::Sent { .. } => None,
                })
                .collect();
            why.dedup();
            format!("no event ({})", why.join(", "))
        };
        out.push_str(&format!("{}: {summary}\n", o.name));
        for (f, label) in o.fates.iter().zip(labels) {
            match f {
                Fate::Sent { json, transformed } => {
                    let how = if *transformed {
                        "sent, transformed:"
                    } else {
                        "sent:"
                    };
                    out.push_str(&format!("  {label:<w$}  {how}\n"));
                    let pretty = serde_json::to_string_pretty(&value(json)).unwrap_or_default();
                    for line in pretty.lines() {
                        out.push_str(&format!("    {line}\n"));
                    }
                }
                Fate::Left(why) => out.push_str(&format!("  {label:<w$}  {why}\n")),
            }
        }
    }
    out
}
