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
    for (label, key, what) in [
        ("received", "received", "webhooks accepted since start"),
        ("duplicates", "duplicates", "webhooks answered `duplicate`"),
        (
            "rejected",
            "rejected",
            "webhooks refused (signature, size, JSON, source)",
        ),
        (
            "delivered",
            "delivered",
            "deliveries that reached their destination",
        ),
        (
            "retrying",
            "retrying",
            "failed attempts that will be retried",
        ),
        (
            "dead letters",
            "dead",
            "kept now; see `shoprelay dead-letters list`",
        ),
        (
            "skipped",
            "skipped",
            "events left out by a destination's filter or transform",
        ),
    ] {
        out.push_str(&format!("{label:<13} {:>8}  {what}\n", n(&v[key])));
    }
    if let Some(by) = v["skipped_by_destination"]
        .as_object()
        .filter(|m| !m.is_empty())
    {
        let w = by
            .keys()
            .map(|k| k.chars().count())
            .max()
            .unwrap_or(0)
            .max(11);
        out.push_str(&format!(
            "\n{:<w$}  {:>8}  {:>9}\n",
            "DESTINATION", "FILTERED", "DROPPED"
        ));
        for (dest, rules) in by {
            out.push_str(&format!(
                "{dest:<w$}  {:>8}  {:>9}\n",
                rules["filter"].as_u64().unwrap_or(0),
                rules["transform"].as_u64().unwrap_or(0),
            ));
        }
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

#[cfg(test)]
mod tests {
    #[test]
    fn readable_stats_with_lanes() {
        let v = serde_json::json!({
            "received": 3, "duplicates": 0, "rejected": 1, "delivered": 2,
            "retrying": 9, "dead": 1,
            "lanes": {
                "warehouse": {"pending": 3, "oldest_due_age_seconds": 12},
                "segment": {"pending": 0, "oldest_due_age_seconds": null},
            },
        });
        let out = super::render(&v);
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            lines[0].starts_with("received             3  webhooks"),
            "{out}"
        );
        assert!(lines[5].starts_with("dead letters         1"), "{out}");
        assert_eq!(
            lines[6],
            "skipped              -  events left out by a destination's filter or transform"
        );
        assert_eq!(lines[8], "LANE        PENDING  OLDEST DUE");
        assert_eq!(lines[9], "warehouse         3  12s ago");
        assert_eq!(lines[10], "segment           0  -");
        let v = serde_json::json!({
            "skipped": 4,
            "skipped_by_destination": {"crm": {"filter": 3, "transform": 1}, "warehouse": {"filter": 2}},
            "lanes": {},
        });
        let out = super::render(&v);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[6],
            "skipped              4  events left out by a destination's filter or transform"
        );
        assert_eq!(lines[8], "DESTINATION  FILTERED    DROPPED");
        assert_eq!(lines[9], "crm                 3          1");
        assert_eq!(lines[10], "warehouse           2          0");
        let empty = super::render(&serde_json::json!({"lanes": {}}));
        assert!(empty.ends_with("\nqueue: empty\n"), "{empty}");
    }
}
