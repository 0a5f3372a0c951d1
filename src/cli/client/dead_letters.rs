//! `shoprelay dead-letters list|show|replay|purge` over the admin API.

use std::process::ExitCode;

use reqwest::Method;
use serde_json::Value;

use super::{AdminApi, DeadLetters, print_json};

pub async fn dead_letters(api: &AdminApi, cmd: DeadLetters) -> anyhow::Result<ExitCode> {
    match cmd {
        DeadLetters::List { json, page_size } => {
            let all = list_all(api, usize::from(page_size)).await?;
            if json {
                print_json(&Value::Array(all));
            } else {
                print!("{}", table(&all, width()));
            }
        }
        DeadLetters::Show { id, json } => {
            let v = api
                .call(Method::GET, &format!("/admin/dead-letters/{id}"), &id)
                .await?;
            if json {
                print_json(&v);
            } else {
                print!("{}", details(&v));
            }
        }
        DeadLetters::Replay { id, all } => {
            let target = one_or_all("replay", id, all)?;
            let (path, label) = match &target {
                Some(id) => (format!("/admin/dead-letters/{id}/replay"), id.as_str()),
                None => ("/admin/dead-letters/replay".to_string(), ""),
            };
            let v = api.call(Method::POST, &path, label).await?;
            match target {
                Some(id) => println!("replayed {id}: it is due for delivery now"),
                None => println!("replayed {} dead letter(s)", count(&v, "replayed")),
            }
        }
        DeadLetters::Purge { id, all } => {
            let target = one_or_all("purge", id, all)?;
            let (path, label) = match &target {
                Some(id) => (format!("/admin/dead-letters/{id}"), id.as_str()),
                None => ("/admin/dead-letters".to_string(), ""),
            };
            let v = api.call(Method::DELETE, &path, label).await?;
            match target {
                Some(id) => println!("purged {id}"),
                None => println!("purged {} dead letter(s)", count(&v, "purged")),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Exactly one of an id and `--all`.
fn one_or_all(verb: &str, id: Option<String>, all: bool) -> anyhow::Result<Option<String>> {
    match (id, all) {
        (Some(id), false) => Ok(Some(id)),
        (None, true) => Ok(None),
        (Some(_), true) => anyhow::bail!("{verb}: give either an ID or --all, not both"),
        (None, false) => {
            anyhow::bail!("{verb}: give a dead letter ID (see `dead-letters list`) or --all")
        }
    }
}

fn count(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or(0)
}

/// Every dead letter, following `after=` page by page.
async fn list_all(api: &AdminApi, page_size: usize) -> anyhow::Result<Vec<Value>> {
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(a) => format!("/admin/dead-letters?limit={page_size}&after={a}"),
            None => format!("/admin/dead-letters?limit={page_size}"),
        };
        let page = match api.call(Method::GET, &path, "").await? {
            Value::Array(page) => page,
            other => anyhow::bail!("admin API answered a list with {other}"),
        };
        let n = page.len();
        after = page
            .last()
            .and_then(|d| d["id"].as_str())
            .map(str::to_string);
        all.extend(page);
        if n < page_size || after.is_none() {
            return Ok(all);
        }
    }
}

/// Terminal width from `COLUMNS`, else a width that suits most terminals.
fn width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .filter(|&c: &usize| c >= 40)
        .unwrap_or(120)
}

/// A JSON value as one line of text ("-" when absent).
fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.split_whitespace().collect::<Vec<_>>().join(" "),
        other => other.to_string(),
    }
}

/// `s` cut to `max` characters, with "…" when cut.
fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The `list` table: one line per dead letter, the last error cut to fit `width`.
pub fn table(list: &[Value], width: usize) -> String {
    if list.is_empty() {
        return "no dead letters\n".into();
    }
    let head = ["ID", "DESTINATION", "EVENT", "ATTEMPTS", "LAST ERROR"];
    let rows: Vec<[String; 5]> = list
        .iter()
        .map(|d| {
            [
                cell(&d["id"]),
                cell(&d["destination"]),
                cell(&d["event"]),
                cell(&d["attempts"]),
                cell(&d["last_error"]),
            ]
        })
        .collect();
    let w = |i: usize| {
        rows.iter()
            .map(|r| r[i].chars().count())
            .chain([head[i].len()])
            .max()
            .unwrap_or(0)
    };
    let (w0, w1, w2, w3) = (w(0), w(1), w(2), w(3));
    let room = width.saturating_sub(w0 + w1 + w2 + w3 + 8).max(20);
    let line = |r: [&str; 5]| {
        format!(
            "{:<w0$}  {:<w1$}  {:<w2$}  {:>w3$}  {}\n",
            r[0],
            r[1],
            r[2],
            r[3],
            truncate(r[4], room)
        )
    };
    let mut out = line(head);
    for r in &rows {
        out.push_str(&line([&r[0], &r[1], &r[2], &r[3], &r[4]]));
    }
    out.push_str(&format!("{} dead letter(s)\n", rows.len()));
    out
}

/// The readable form of `show`: the summary fields, then the raw body.
fn details(v: &Value) -> String {
    let mut out = String::new();
    for key in [
        "id",
        "destination",
        "event",
        "source",
        "webhook_id",
        "attempts",
        "last_status",
        "first_attempt_at",
        "dead_at",
        "last_error",
    ] {
        out.push_str(&format!("{key:<17} {}\n", cell(&v[key])));
    }
    if let Some(body) = v["body"].as_str() {
        out.push_str(&format!("body ({} bytes):\n{body}\n", body.len()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_lines_fit_the_width_and_errors_are_cut() {
        let long = "HTTP 400 Bad Request: ".to_string() + &"x".repeat(300);
        let list = vec![serde_json::json!({
            "id": "0000000000000001-0", "destination": "warehouse", "event": "orders/paid",
            "attempts": 1, "last_error": long,
        })];
        let out = table(&list, 80);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert!(lines[1].starts_with("0000000000000001-0  warehouse    orders/paid"));
        assert!(
            lines[1].ends_with('…') && lines[1].chars().count() <= 80,
            "{out}"
        );
        assert_eq!(table(&[], 80), "no dead letters\n");
    }

    #[test]
    fn replay_and_purge_need_exactly_one_target() {
        assert_eq!(
            one_or_all("replay", Some("a".into()), false).unwrap(),
            Some("a".into())
        );
        assert_eq!(one_or_all("replay", None, true).unwrap(), None);
        assert!(one_or_all("purge", None, false).is_err());
        assert!(one_or_all("purge", Some("a".into()), true).is_err());
    }
}
