//! Checks across the delivery modules against the outside world: Segment's documented
//! signature check run by node itself, and real HTTP attempts through reqwest.

mod wire;

use std::path::Path;
use std::process::Command;

use super::format::tests::dest;
use super::format::{Encoder, Prepared};
use crate::config::{Format, Secret};

const NOW: u64 = 1_795_434_157_123;
const SECRET: &str = "s3cr3t-ключ-🔑";

/// Sample events as objects; node turns them into the canonical strings the mapping
/// would hand us (integer-like keys move first, numbers print the JS way).
const SAMPLES_JS: &str = r#"[
  {type:"track", event:"Order Completed", userId:"zoë@exämple.com",
   properties:{total:600, price:19.9, discount:0, tiny:-1.5e-7, big:1e21, neg:-0,
               name:"Café ☕ 😀 日本語 한국어", currency:"EUR"}},
  {type:"identify", userId:"42", traits:{quote:"he said \"hi\"", backslash:"C:\\path\\",
   newline:"a\nb\r\tc", separators:"x\u2028y\u2029z", ctrl:"\u0001\u001f\u007f",
   html:"</script><!--", emoji:"👩‍👩‍👧"}},
  {type:"delete", userId:"7", b:1, "10":"integer keys first", "":"empty key", a:[1,2.5,null,true,{}]},
  {type:"track", event:"Checkout Started", anonymousId:"anon", properties:{products:[{price:1e-7},{price:123456789012345680000}]}}
]"#;

/// Written by hand, in the exact form JSON.stringify prints.
const HAND_WRITTEN: &[&str] = &[
    r#"{"type":"track","event":"Order Paid","properties":{"total":600,"tax":19.9,"n":0,"x":-1.5e-7}}"#,
    "{\"s\":\"é 😀 中文 \\\"q\\\" \\\\ \\n \u{2028}\"}",
];

fn node_available() -> bool {
    let found = Command::new("node").arg("--version").output();
    match found {
        Ok(out) if out.status.success() => true,
        _ if std::env::var_os("CI").is_some() => panic!("node is required when CI is set"),
        _ => {
            eprintln!("note: node not found; skipping the JavaScript signature check");
            false
        }
    }
}

fn node(script: &str, arg: &Path) -> (bool, String) {
    let out = Command::new("node")
        .arg("-e")
        .arg(script)
        .arg(arg)
        .output()
        .expect("run node");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn canonical_samples(dir: &Path) -> Vec<String> {
    let script = format!(
        "require('fs').writeFileSync(process.argv[1], JSON.stringify({SAMPLES_JS}.map(o => JSON.stringify(o))))"
    );
    let file = dir.join("samples.json");
    let (ok, text) = node(&script, &file);
    assert!(ok, "node: {text}");
    let bytes = std::fs::read(&file).expect("samples");
    let mut events: Vec<String> = serde_json::from_slice(&bytes).expect("samples json");
    events.extend(HAND_WRITTEN.iter().map(|s| s.to_string()));
    events
}

/// Segment's documented receiver check, plus: every body re-serialises to itself.
const VERIFY_JS: &str = r#"
const fs = require('fs'), crypto = require('crypto'), dir = process.argv[1];
const secret = fs.readFileSync(dir + '/secret', 'utf8');
let bad = 0, n = 0;
for (const f of fs.readdirSync(dir).filter(f => f.endsWith('.body')).sort()) {
  const base = dir + '/' + f.slice(0, -5);
  const kind = fs.readFileSync(base + '.kind', 'utf8');
  const raw = fs.readFileSync(base + '.body', 'utf8');
  const body = JSON.parse(raw);
  if (JSON.stringify(body) !== raw) { console.error(f + ': not JS-canonical'); bad++; }
  if (kind !== 'segment-api') {
    const signed = kind === 'webhook' ? JSON.stringify(body) : JSON.stringify(body[0]);
    const digest = crypto.createHmac('sha1', secret).update(signed, 'utf-8').digest('hex');
    if (digest !== fs.readFileSync(base + '.sig', 'utf8')) { console.error(f + ': bad signature'); bad++; }
  }
  n++;
}
console.log('checked ' + n + ', failed ' + bad);
process.exit(bad || n === 0 ? 1 : 0);
"#;

fn write_requests(dir: &Path, format: Format, reqs: &[Prepared]) {
    for (i, r) in reqs.iter().enumerate() {
        let base = dir.join(format!("{}-{i:03}", format.as_str()));
        std::fs::write(base.with_extension("body"), &r.body).expect("write");
        std::fs::write(base.with_extension("kind"), format.as_str()).expect("write");
        let sig = r
            .headers
            .iter()
            .find(|(n, _)| n == "x-signature")
            .map(|(_, v)| v.as_bytes());
        std::fs::write(base.with_extension("sig"), sig.unwrap_or_default()).expect("write");
    }
}

#[test]
fn node_verifies_our_signatures_like_a_segment_receiver() {
    if !node_available() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let events = canonical_samples(tmp.path());
    assert!(
        events
            .iter()
            .any(|e| e.contains(r#""10":"integer keys first""#))
    );
    let reqs_dir = tmp.path().join("requests");
    std::fs::create_dir(&reqs_dir).expect("mkdir");
    std::fs::write(reqs_dir.join("secret"), SECRET).expect("write");
    let mut written = 0;
    for format in [Format::Webhook, Format::WebhookBatch, Format::SegmentApi] {
        let mut d = dest(format);
        d.shared_secret = Some(Secret::new(SECRET));
        d.write_key = Some(Secret::new("wk"));
        d.batch_size = 4;
        let reqs = Encoder::new(&d)
            .expect("encoder")
            .prepare(&events, NOW)
            .expect("prepare");
        write_requests(&reqs_dir, format, &reqs);
        written += reqs.len();
    }
    // 6 single events, 2 batches of ≤ 4, 2 Segment batches of ≤ 4.
    assert_eq!(written, events.len() + 4);
    let (ok, text) = node(VERIFY_JS, &reqs_dir);
    assert!(ok, "node rejected our requests: {text}");
    assert!(
        text.contains(&format!("checked {written}, failed 0")),
        "{text}"
    );

    // The harness itself can fail: a changed body no longer verifies.
    let tampered = tmp.path().join("tampered");
    std::fs::create_dir(&tampered).expect("mkdir");
    std::fs::write(tampered.join("secret"), SECRET).expect("write");
    let mut d = dest(Format::Webhook);
    d.shared_secret = Some(Secret::new(SECRET));
    let mut reqs = Encoder::new(&d)
        .expect("encoder")
        .prepare(&[r#"{"a":1}"#], NOW)
        .expect("prepare");
    reqs[0].body = bytes::Bytes::from_static(br#"{"a":2}"#);
    write_requests(&tampered, Format::Webhook, &reqs);
    let (ok, text) = node(VERIFY_JS, &tampered);
    assert!(!ok && text.contains("bad signature"), "{text}");
}

/// Transforms that compute numbers, add integer-like keys, escape-worthy
/// strings and nesting: what they output is signed as it is sent, and node
/// must find each body JS-canonical with a valid signature.
#[test]
fn node_verifies_transformed_events() {
    if !node_available() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let events = canonical_samples(tmp.path());
    let transforms = [
        ".",
        r#"if .properties then .properties.total = ((.properties.total // 1) * 1.1) end | .x = [0.1 + 0.2, 1e21, -0.0, 1e-7, 5e-324, 9007199254740993]"#,
        r#".extra = {"b": 1, "10": "ten", "2": "two", "a": {"01": 1, "1": 2}} | .note = "é\u0001\u001f\"\\\n\u2028 😀""#,
        r#"del(.context) | .count = ([.. | numbers] | length) | .avg = ([.. | numbers] | add / (length + 1))"#,
        r#"{type, messageId: "m", n: (now | floor) * 0 + 3.0, s: (tostring | .[0:5])}"#,
    ];
    let reqs_dir = tmp.path().join("requests");
    std::fs::create_dir(&reqs_dir).expect("mkdir");
    std::fs::write(reqs_dir.join("secret"), SECRET).expect("write");
    let mut written = 0;
    for (i, program) in transforms.iter().enumerate() {
        let mut d = dest(Format::Webhook);
        d.shared_secret = Some(Secret::new(SECRET));
        d.transform = Some(crate::config::JqProgram::compile(program).expect(program));
        let rules = super::rules::Rules::new("t", &d);
        let candidates: Vec<super::rules::Candidate<'_>> = events
            .iter()
            .map(|json| super::rules::Candidate {
                call: "track",
                name: None,
                json,
            })
            .collect();
        let selection = rules.select(&candidates).expect(program);
        assert_eq!(selection.sent.len(), events.len(), "{program}");
        let reqs = Encoder::new(&d)
            .expect("encoder")
            .prepare(&selection.texts(&candidates), NOW)
            .expect("prepare");
        let dir = reqs_dir.join(format!("t{i}"));
        std::fs::create_dir(&dir).expect("mkdir");
        std::fs::write(dir.join("secret"), SECRET).expect("write");
        write_requests(&dir, Format::Webhook, &reqs);
        let (ok, text) = node(VERIFY_JS, &dir);
        assert!(ok, "node rejected the output of {program}: {text}");
        written += reqs.len();
    }
    assert_eq!(written, transforms.len() * events.len());
}
