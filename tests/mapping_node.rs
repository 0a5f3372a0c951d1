//! The byte contract with JavaScript receivers: for every event we produce,
//! `JSON.stringify(JSON.parse(json)) === json` in node. Receivers that follow
//! Segment's documented check sign the re-serialised body, so any difference
//! (a `1.0`, a reordered integer key, a rounded 64-bit number) fails their HMAC.
//!
//! Without node the test is skipped with a note, unless `CI` is set: there it fails.

#[path = "mapping_support/fixtures.rs"]
mod fixtures;
#[path = "mapping_support/strategies.rs"]
mod strategies;
#[path = "mapping_support/webhook.rs"]
mod webhook;

use std::io::Write;
use std::process::Command;

use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;
use shoprelay::config::{MappingConfig, Naming, UserIdRule};
use shoprelay::mapping::map;
use shoprelay::sources::SourceKind;

/// Reads one event per line; prints `<lines> <mismatches>`, the first few
/// mismatches on stderr, and exits 1 on any mismatch.
const CHECK: &str = r#"
const lines = require('fs').readFileSync(process.argv[1], 'utf8').split('\n').filter(l => l.length);
let bad = 0;
for (const line of lines) {
  let again;
  try { again = JSON.stringify(JSON.parse(line)); } catch (e) { again = '<' + e.message + '>'; }
  if (again !== line && ++bad <= 5) console.error('sent:  ' + line + '\nnode:  ' + again);
}
console.log(lines.length + ' ' + bad);
process.exit(bad ? 1 : 0);
"#;

/// Tricky bodies beyond the fixtures: every number and string edge we know of.
const SAMPLES: &[&str] = &[
    r#"{"id":9007199254740993,"email":"a@b.c","total_price":"0.10","line_items":[{"price":"1e2","quantity":1.0}]}"#,
    r#"{"id":1,"n":[1.0,1e2,1E21,1e-7,-0,0.1,5e-324,1.7976931348623157e308,1e400,123456789012345678901234567890]}"#,
    r#"{"id":1,"10":"a","0":"b","_10":"c","4294967295":"d","4294967294":"e","01":"f","-1":"g","__proto__":{"1":2}}"#,
    "{\"id\":1,\"s\":\"\\u0000\\u001f\\u007f\\u2028\\u2029\\ud83d\\udecd\\\"\\\\/\u{1F6CD}\u{FE0F}e\u{301}\"}",
    r#"{"id":1,"note":"cut emoji \ud83d","customer":{"email":"\udc00@x.y"}}"#,
    r#"{"id":1,"customer":{"id":18446744073709551615,"email":"","first_name":"Zoë","total_spent":"19.90","orders_count":1e0}}"#,
];

fn events_json() -> Vec<String> {
    let configs = [
        MappingConfig::default(),
        MappingConfig {
            naming: Naming::Snake,
            user_id: UserIdRule::CustomerId,
            ..MappingConfig::default()
        },
    ];
    let mut bodies: Vec<(SourceKind, String, Vec<u8>)> = fixtures::fixtures()
        .into_iter()
        .map(|(_, f)| (f.kind, f.topic, f.body))
        .collect();
    for topic in shoprelay::mapping::topics().chain(["inventory_levels/update"]) {
        for sample in SAMPLES {
            bodies.push((
                SourceKind::Shopify,
                topic.to_owned(),
                sample.as_bytes().to_vec(),
            ));
        }
    }
    // proptest-generated bodies, from a fixed seed so failures reproduce.
    let mut runner = TestRunner::deterministic();
    let strategy = (strategies::topic(), strategies::body());
    for _ in 0..400 {
        let (topic, body) = strategy.new_tree(&mut runner).expect("generate").current();
        let bytes = serde_json::to_vec(&body).expect("serialise");
        bodies.push((SourceKind::Convertedin, topic, bytes));
    }
    let mut out = Vec::new();
    for (kind, topic, body) in &bodies {
        let webhook = webhook::webhook(*kind, topic, "node", body);
        for cfg in &configs {
            if let Ok(events) = map(&webhook, cfg) {
                out.extend(events.iter().map(|e| e.to_json()));
            }
        }
    }
    out
}

#[test]
fn javascript_reserialises_every_event_byte_for_byte() {
    let version = Command::new("node").arg("--version").output();
    if !version.as_ref().is_ok_and(|o| o.status.success()) {
        assert!(
            std::env::var_os("CI").is_none(),
            "node is required when CI is set: {version:?}"
        );
        eprintln!("note: node not found; skipping the JavaScript byte-compatibility test");
        return;
    }
    let lines = events_json();
    assert!(lines.len() > 500, "too few events: {}", lines.len());
    assert!(lines.iter().all(|l| !l.contains('\n')));
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(lines.join("\n").as_bytes())
        .expect("write events");
    file.flush().expect("flush");
    let output = Command::new("node")
        .arg("-e")
        .arg(CHECK)
        .arg(file.path())
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "node found mismatches ({stdout}):\n{stderr}"
    );
    assert_eq!(
        stdout.trim(),
        format!("{} 0", lines.len()),
        "node read every event"
    );
}
