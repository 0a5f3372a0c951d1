//! `shoprelay stats`: counts and queue depth per lane from `GET /admin/stats`.

use std::process::ExitCode;

use reqwest::Method;
use serde_json::Value;

use super::{AdminApi, print_json};

pub async fn stats(api: &AdminApi, json: bool) -> anyhow::Result<ExitCode> {
    let v = api.call(Method::GET, "/admin/stats", "").await?;
    if json {
        print_json(&v);
    } else {
        print!("{}", render(&v));
    }
    Ok(ExitCode::SUCCESS)
}

fn n(v: &Value) -> String {
    v.as_u64().map_or_else(|| "-".into(), |n| n.to_string())
}

/// The readable form: counts, then one line per lane.
pub fn render(v: &Value) -> String {
    let mut out = String::new();
    for (label, key) in [
        ("received", "received"),
        ("duplicates", "duplicates"),
        ("rejected", "rejected"),
        ("delivered", "delivered"),
        ("retrying", "retrying"),
        ("dead letters", "dead"),
    ] {
        out.push_str(&format!("{label:<13} {:>8}\n", n(&v[key])));
    }
    let lanes = v["lanes"].as_object().filter(|l| !l.is_empty());
    let Some(lanes) = lanes else {
        out.push_str("\nqueue: empty\n");
        return out;
    };
    let w = lanes
        .keys()
        .map(|k| k.chars().count())
        .max()
        .unwrap_or(0)
        .max(4);
    out.push_str(&format!("\n{:<w$}  {:>8}  OLDEST DUE\n", "LANE", "PENDING"));
    for (lane, s) in lanes {
        let age = s["oldest_due_age_seconds"]
            .as_u64()
            .map_or_else(|| "-".into(), |a| format!("{a}s ago"));
        out.push_str(&format!("{lane:<w$}  {:>8}  {age}\n", n(&s["pending"])));
    }
    out
}
