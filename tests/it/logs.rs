//! `shoprelay serve` at info level never logs a secret or a payload: the
//! real binary, secrets from the environment, accepted and refused webhooks,
//! deliveries that succeed, are retried and are dead-lettered.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use crate::common::receiver::{Answer, TestReceiver};
use crate::common::sign;
use crate::common::{client, until, within};

const SECRETS: [(&str, &str); 5] = [
    ("SHOPIFY_WEBHOOK_SECRET", "shp-secret-4f1a9c"),
    ("CONVERTEDIN_WEBHOOK_SECRET", "ci-secret-77d2e0"),
    ("RECEIVER_SECRET", "rx-secret-0b3e51"),
    ("SHOPRELAY_ADMIN_TOKEN", "admin-token-c9a4"),
    ("SEGMENT_WRITE_KEY", "wk-secret-5e8f13"),
];
/// In every payload; must never reach the log.
const MARKER: &str = "PAYLOAD-MARKER-91b3";

fn config(dir: &std::path::Path, ok: &str, bad: &str, seg: &str) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
admin_token = "${{SHOPRELAY_ADMIN_TOKEN}}"
data_dir = {dir:?}
max_body_bytes = 4096
min_free_bytes = 0
[retry]
initial_interval = "50ms"
max_interval = "100ms"
[sources.shop]
kind = "shopify"
secrets = ["${{SHOPIFY_WEBHOOK_SECRET}}"]
[sources.ci]
kind = "convertedin"
secrets = ["${{CONVERTEDIN_WEBHOOK_SECRET}}"]
destinations = ["ok"]
[destinations.ok]
url = "{ok}"
shared_secret = "${{RECEIVER_SECRET}}"
[destinations.bad]
url = "{bad}"
[destinations.seg]
url = "{seg}"
format = "segment-api"
write_key = "${{SEGMENT_WRITE_KEY}}"
"#,
        dir = dir.join("data").display().to_string(),
    )
}

fn order(n: u32) -> Vec<u8> {
    format!(
        r#"{{"id":{n},"email":"marker-{n}@example.com","note":"{MARKER}","total_price":"10.00","line_items":[]}}"#
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_logs_no_secret_and_no_payload() {
    let ok = TestReceiver::start().await;
    let bad = TestReceiver::with(Arc::new(|_| Answer {
        body: "rejected by test".into(),
        ..Answer::status(400)
    }))
    .await;
    // Fails once (a retry is logged), then accepts.
    let seg =
        TestReceiver::with(Arc::new(|n| Answer::status(if n == 0 { 503 } else { 200 }))).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.toml");
    std::fs::write(&path, config(dir.path(), &ok.url, &bad.url, &seg.url)).unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_shoprelay"))
        .args(["serve", "--log-format", "json", "--config"])
        .arg(&path)
        .envs(SECRETS)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let l = log.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            l.lock().unwrap().push(line);
        }
    });
    let listening = |log: &Vec<String>| {
        log.iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["message"] == "listening")
    };
    until("relay listening", || {
        listening(&log.lock().unwrap()).is_some()
    })
    .await;
    let v = listening(&log.lock().unwrap()).unwrap();
    let (ingest, admin) = (v["ingest"].as_str().unwrap(), v["admin"].as_str().unwrap());
    let shop = format!("http://{ingest}/webhooks/shopify/shop");
    let ci = format!("http://{ingest}/webhooks/convertedin/ci/orders/create");
    let (secret, ci_secret) = (SECRETS[0].1, SECRETS[1].1);
    let c = client();
    let post = |url: &str, body: Vec<u8>, sig: Option<String>, id: &str| {
        let mut r = c
            .post(url)
            .header("x-shopify-topic", "orders/create")
            .header("x-shopify-event-id", id)
            .body(body);
        if let Some(s) = sig {
            r = r.header("x-shopify-hmac-sha256", s);
        }
        r
    };
    let expect = |status: u16, req: reqwest::RequestBuilder| async move {
        let r = within("ingest", req.send()).await.unwrap();
        assert_eq!(r.status().as_u16(), status);
    };
    // Accepted, duplicate, convertedin.
    for n in 1..=2 {
        expect(
            200,
            post(
                &shop,
                order(n),
                Some(sign::shopify(secret, &order(n))),
                &format!("e{n}"),
            ),
        )
        .await;
    }
    expect(
        200,
        post(
            &shop,
            order(1),
            Some(sign::shopify(secret, &order(1))),
            "e1",
        ),
    )
    .await;
    let ci_req = c
        .post(&ci)
        .header("x-hmac-sha256", sign::hex(ci_secret, &order(3)))
        .body(order(3));
    expect(200, ci_req).await;
    // Refused: wrong and missing signature, not an object, too big, no such source.
    expect(
        401,
        post(
            &shop,
            order(4),
            Some(sign::shopify("guess", &order(4))),
            "e4",
        ),
    )
    .await;
    expect(401, post(&shop, order(5), None, "e5")).await;
    let arr = format!(r#"["{MARKER}"]"#).into_bytes();
    expect(
        400,
        post(&shop, arr.clone(), Some(sign::shopify(secret, &arr)), "e6"),
    )
    .await;
    let big = MARKER.repeat(300).into_bytes();
    expect(
        413,
        post(&shop, big.clone(), Some(sign::shopify(secret, &big)), "e7"),
    )
    .await;
    let other = format!("http://{ingest}/webhooks/shopify/nope");
    expect(
        404,
        post(
            &other,
            order(8),
            Some(sign::shopify(secret, &order(8))),
            "e8",
        ),
    )
    .await;
    // Admin: refused token, then the right one.
    let dl = format!("http://{admin}/admin/dead-letters");
    expect(401, c.get(&dl).bearer_auth("wrong")).await;

    // Every webhook reaches `ok`, is retried once at `seg`, is buried at `bad`.
    ok.wait_for(3).await;
    seg.wait_for(2).await;
    within("two dead letters", async {
        loop {
            let r = c.get(&dl).bearer_auth(SECRETS[3].1).send().await.unwrap();
            let v: serde_json::Value = r.json().await.unwrap();
            if v.as_array().is_some_and(|a| a.len() == 2) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;

    let pid = child.id().to_string();
    let term = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(term.success());
    let status = within(
        "relay exit",
        tokio::task::spawn_blocking(move || child.wait()),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(status.success(), "{status:?}");
    until("final log line", || {
        log.lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("checkpoint written"))
    })
    .await;

    let text = log.lock().unwrap().join("\n");
    for (name, value) in SECRETS {
        assert!(!text.contains(value), "{name} in the log:\n{text}");
    }
    assert!(
        !text.contains(MARKER) && !text.contains("marker-"),
        "payload in the log:\n{text}"
    );
    for expected in ["webhook refused", "will retry", "dead letters"] {
        assert!(text.contains(expected), "no `{expected}` line:\n{text}");
    }
}
