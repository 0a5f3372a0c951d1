//! Every fixture webhook, relayed to a Node receiver that verifies
//! `X-Signature` exactly as Segment's docs do: HMAC-SHA1 over
//! `JSON.stringify(JSON.parse(body))`. A byte of difference fails it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::common::relay::{Dest, Opts, Relay, SECRET};
use crate::common::sign::ShopifyWebhook;
use crate::common::{client, send_json, within};

const NODE_RECEIVER: &str = r#"
const http = require('http'), crypto = require('crypto');
const secret = process.argv[1];
let ok = 0, bad = 0;
http.createServer((req, res) => {
  let raw = '';
  req.setEncoding('utf8');
  req.on('data', c => raw += c);
  req.on('end', () => {
    if (req.url === '/stats') { res.end(JSON.stringify({ ok, bad })); return; }
    const body = JSON.parse(raw);
    const signed = Array.isArray(body) ? JSON.stringify(body[0]) : JSON.stringify(body);
    const digest = crypto.createHmac('sha1', secret).update(Buffer.from(signed, 'utf-8')).digest('hex');
    if (digest === req.headers['x-signature']) { ok += Array.isArray(body) ? body.length : 1; res.writeHead(200); res.end('ok'); }
    else { bad++; res.writeHead(401); res.end('bad signature'); }
  });
}).listen(0, '127.0.0.1', function () { console.log(this.address().port); });
"#;

#[tokio::test]
async fn a_segment_style_node_receiver_verifies_every_event() {
    let node = Command::new("node")
        .args(["-e", NODE_RECEIVER, "node-secret"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn();
    let Ok(node) = node else {
        crate::common::skip("node is not installed");
        return;
    };
    // Killed on drop, so a failing assertion never leaves node running.
    struct Guard(std::process::Child);
    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut node = Guard(node);
    let mut port = String::new();
    BufReader::new(node.0.stdout.take().unwrap())
        .read_line(&mut port)
        .unwrap();
    let base = format!("http://127.0.0.1:{}", port.trim());
    let relay = Relay::start(Opts {
        dests: vec![
            Dest {
                name: "one".into(),
                url: format!("{base}/one"),
                extra: "shared_secret = \"node-secret\"".into(),
            },
            Dest {
                name: "batch".into(),
                url: format!("{base}/batch"),
                extra:
                    "shared_secret = \"node-secret\"\nformat = \"webhook-batch\"\nlinger = \"20ms\""
                        .into(),
            },
        ],
        ..Opts::default()
    })
    .await;
    let c = client();
    let mut expected_events = 0;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/shopify");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for (i, path) in files.iter().enumerate() {
        let name = path.file_name().unwrap().to_str().unwrap();
        if name.ends_with(".expected.json") || !name.ends_with(".json") {
            continue;
        }
        let expected: Value = serde_json::from_str(
            &std::fs::read_to_string(path.with_extension("expected.json")).unwrap(),
        )
        .unwrap();
        expected_events += expected.as_array().map_or(0, Vec::len);
        let topic = name.split('.').next().unwrap().replace("__", "/");
        let h = ShopifyWebhook {
            topic: &topic,
            event_id: Some(format!("node-{i}")),
            body: std::fs::read(path).unwrap(),
            secret: SECRET,
        };
        let r = h
            .request(&c, &relay.shopify_url("acme"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{name}");
    }
    assert!(
        expected_events > 30,
        "only {expected_events} events in the fixtures"
    );
    let stats = within("node to verify every event twice", async {
        loop {
            let s = send_json("node's stats", c.get(format!("{base}/stats"))).await;
            if s["bad"] != 0 || s["ok"].as_u64().unwrap() >= 2 * expected_events as u64 {
                return s;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    drop(node);
    assert_eq!(stats["bad"], 0, "node rejected a signature: {stats}");
    assert_eq!(stats["ok"].as_u64().unwrap(), 2 * expected_events as u64);
    relay.stop().await;
}
