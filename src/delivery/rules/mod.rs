//! A destination's rules: which mapped events it gets, and in what shape.
//! Applied at one place, after mapping and before the request is built, in
//! this order:
//!
//! | key | an event … |
//! |---|---|
//! | `events` | is kept when its name or call type is listed |
//! | `filter` (jq) | is sent when an output is true (anything but `false` and `null`); `false`, `null` or no output skips it |
//! | `transform` (jq) | is replaced by the one output, an object; no output drops it; two outputs or a non-object are errors |
//!
//! The transformed event is what is serialized, sent and signed. A run-time
//! error is a [`RuleError`]: the delivery becomes a dead letter with jq's
//! message (a rule cannot be fixed by retrying; a replay after relay.toml is
//! fixed runs the rules as they are then).

mod json;
mod read;
mod routes;

pub use routes::{Outcome, Selected, Selections, outcome};
#[cfg(test)]
mod tests;

use std::borrow::Cow;

use crate::config::{DestinationConfig, JqProgram};

use super::format::event_passes_filter;

/// How much of jq's message a dead letter keeps.
const MAX_MESSAGE_CHARS: usize = 500;

/// One mapped event, as a lane holds it.
#[derive(Clone, Copy, Debug)]
pub struct Candidate<'a> {
    /// `track`, `identify` or `delete`.
    pub call: &'a str,
    /// The track event's name.
    pub name: Option<&'a str>,
    /// Its JSON, exactly as it would be sent.
    pub json: &'a str,
}

/// What the rules do with one event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict<'a> {
    /// Send these bytes (the event itself, or the transform's output).
    Send(Cow<'a, str>),
    /// `events` does not list it.
    NotListed,
    /// `filter` yielded false, null or nothing.
    Filtered,
    /// `transform` yielded nothing.
    Dropped,
}

/// Which rule failed at run time, and jq's message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{key}: run-time error: {message}")]
pub struct RuleError {
    /// The rule's key, e.g. `destinations.crm.filter`.
    pub key: String,
    /// jq's message; it may quote the event (dead letters only, never the log).
    pub message: String,
}

/// One event a destination gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sent {
    /// The mapped event at this position, unchanged.
    Event(usize),
    /// A transform's output.
    Transformed(String),
}

/// The events a destination gets from one webhook, and what was left out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    /// What to send, in order.
    pub sent: Vec<Sent>,
    /// Skipped by `filter`.
    pub filtered: u32,
    /// Dropped by `transform` (no output).
    pub dropped: u32,
}

impl Selection {
    /// The bytes to send, in order; `events` are the webhook's mapped events.
    pub fn texts<'a>(&'a self, events: &[Candidate<'a>]) -> Vec<&'a str> {
        self.sent
            .iter()
            .filter_map(|s| match s {
                Sent::Event(i) => events.get(*i).map(|e| e.json),
                Sent::Transformed(json) => Some(json.as_str()),
            })
            .collect()
    }
}

/// Runs each destination's rules over a webhook's events, parsing each event
/// for jq once for all of them, and while it is fresh in the CPU's caches:
/// parsing and freeing the tree cost more than running a typical filter and
/// transform, and a tree kept for lanes that come later was the larger part
/// of what rules cost in a 5-way drain.
pub fn select_many(
    rules: &[&Rules],
    events: &[Candidate<'_>],
) -> Vec<Result<Selection, RuleError>> {
    let mut out: Vec<Result<Selection, RuleError>> =
        rules.iter().map(|_| Ok(Selection::default())).collect();
    for (i, event) in events.iter().enumerate() {
        let mut parsed = Lazy::default();
        for (r, result) in rules.iter().zip(out.iter_mut()) {
            let Ok(selection) = result else { continue };
            match r.apply_parsed(*event, &mut parsed) {
                Ok(v) => selection.add(i, v),
                Err(e) => *result = Err(e),
            }
        }
    }
    out
}

/// An event parsed for jq on first need.
#[derive(Default)]
struct Lazy(Option<Result<(jaq_json::Val, json::Spans), String>>);

impl Lazy {
    fn get(&mut self, json: &str) -> Result<&(jaq_json::Val, json::Spans), String> {
        self.0
            .get_or_insert_with(|| read::parse(json))
            .as_ref()
            .map_err(Clone::clone)
    }
}

impl Selection {
    fn add(&mut self, index: usize, v: Verdict<'_>) {
        match v {
            Verdict::Send(Cow::Borrowed(_)) => self.sent.push(Sent::Event(index)),
            Verdict::Send(Cow::Owned(json)) => self.sent.push(Sent::Transformed(json)),
            Verdict::NotListed => {}
            Verdict::Filtered => self.filtered += 1,
            Verdict::Dropped => self.dropped += 1,
        }
    }
}

/// `events`, `filter` and `transform` of one destination, built once.
#[derive(Clone, Debug)]
pub struct Rules {
    /// `destinations.NAME`: errors name `destinations.NAME.filter`.
    key: String,
    events: Option<Vec<String>>,
    filter: Option<JqProgram>,
    transform: Option<JqProgram>,
}

impl Rules {
    /// The rules of `[destinations.NAME]`.
    pub fn new(name: &str, cfg: &DestinationConfig) -> Rules {
        Rules {
            key: format!("destinations.{name}"),
            events: cfg.events.clone(),
            filter: cfg.filter.clone(),
            transform: cfg.transform.clone(),
        }
    }

    /// Whether only `events` applies (no jq to run).
    pub fn is_plain(&self) -> bool {
        self.filter.is_none() && self.transform.is_none()
    }

    /// What the rules do with one event.
    pub fn apply<'a>(&self, event: Candidate<'a>) -> Result<Verdict<'a>, RuleError> {
        self.apply_parsed(event, &mut Lazy::default())
    }

    fn apply_parsed<'a>(
        &self,
        event: Candidate<'a>,
        parsed: &mut Lazy,
    ) -> Result<Verdict<'a>, RuleError> {
        if !event_passes_filter(self.events.as_deref(), event.call, event.name) {
            return Ok(Verdict::NotListed);
        }
        if self.is_plain() {
            return Ok(Verdict::Send(Cow::Borrowed(event.json)));
        }
        let rule = if self.filter.is_some() {
            "filter"
        } else {
            "transform"
        };
        // `parsed` outlives the writing: a transform's output is written
        // with the spans of this tree, whose arrays and objects it shares
        // (jaq copies one before it changes it).
        let (value, spans) = parsed.get(event.json).map_err(|m| self.error(rule, m))?;
        if let Some(filter) = &self.filter {
            if !passes(filter, value.clone()).map_err(|m| self.error("filter", m))? {
                return Ok(Verdict::Filtered);
            }
        }
        let Some(transform) = &self.transform else {
            return Ok(Verdict::Send(Cow::Borrowed(event.json)));
        };
        let output =
            transformed(transform, value.clone()).map_err(|m| self.error("transform", m))?;
        match output {
            Some(v) => {
                let json = json::write(&v, Some((event.json, spans)))
                    .map_err(|m| self.error("transform", m))?;
                Ok(Verdict::Send(Cow::Owned(json)))
            }
            None => Ok(Verdict::Dropped),
        }
    }

    /// Applies the rules to every event of a webhook; the first run-time
    /// error fails the whole selection (the delivery is one unit).
    pub fn select(&self, events: &[Candidate<'_>]) -> Result<Selection, RuleError> {
        select_many(&[self], events)
            .pop()
            .unwrap_or_else(|| Ok(Selection::default()))
    }

    fn error(&self, rule: &str, message: String) -> RuleError {
        // jq quotes the value it failed on, which may be the whole event.
        let mut message: String = message.replace(['\n', '\r'], " ");
        if let Some((cut, _)) = message.char_indices().nth(MAX_MESSAGE_CHARS) {
            message.truncate(cut);
            message.push('…');
        }
        RuleError {
            key: format!("{}.{rule}", self.key),
            message,
        }
    }
}

/// A filter passes an event when an output is true in jq's sense (not
/// `false`, not `null`); evaluation stops there. An error before that fails.
fn passes(filter: &JqProgram, event: jaq_json::Val) -> Result<bool, String> {
    let mut verdict = Ok(false);
    filter.run(event, |out| match out {
        Ok(v) if truthy(&v) => {
            verdict = Ok(true);
            false
        }
        Ok(_) => true,
        Err(e) => {
            verdict = Err(e);
            false
        }
    });
    verdict
}

fn truthy(v: &jaq_json::Val) -> bool {
    !matches!(v, jaq_json::Val::Null | jaq_json::Val::Bool(false))
}

/// The transform's single output, an object; `None` for no output.
fn transformed(
    transform: &JqProgram,
    event: jaq_json::Val,
) -> Result<Option<jaq_json::Val>, String> {
    let mut first = None;
    let mut failure = None;
    transform.run(event, |out| match out {
        Ok(v) if first.is_none() => {
            first = Some(v);
            true
        }
        Ok(_) => {
            failure = Some(
                "the transform yielded more than one output (it must yield one object, or nothing to drop the event)"
                    .to_string(),
            );
            false
        }
        Err(e) => {
            failure = Some(e);
            false
        }
    });
    if let Some(e) = failure {
        return Err(e);
    }
    match first {
        None => Ok(None),
        Some(v @ jaq_json::Val::Obj(_)) => Ok(Some(v)),
        Some(other) => Err(format!(
            "the transform yielded {}, not an object",
            kind(&other)
        )),
    }
}

/// A value's type as jq names it, with an article.
fn kind(v: &jaq_json::Val) -> &'static str {
    use jaq_json::Val;
    match v {
        Val::Null => "null",
        Val::Bool(_) => "a boolean",
        Val::Num(_) => "a number",
        Val::TStr(_) | Val::BStr(_) => "a string",
        Val::Arr(_) => "an array",
        Val::Obj(_) => "an object",
    }
}
