//! `examples/node-receiver.js`, which verifies `X-Signature` exactly as Segment's
//! docs do (HMAC-SHA1 over `JSON.stringify(JSON.parse(body))`), accepts every
//! delivery of the relay, for `webhook` and `webhook-batch` (needs `node`);
//! so does `examples/receiver/`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use crate::common::cli::{admin, send_test};
use crate::common::relay::{Dest, Opts, Relay, SECRET};
use crate::common::{until, within};

#[path = "../../examples/receiver/routes.rs"]
mod rust_receiver;

const RX_SECRET: &str = "node-receiver-secret";

/// Lines a child process printed, collected by a reader thread.
type Lines = Arc<Mutex<Vec<String>>>;

/// Kills the receiver however the test ends.
struct Node(std::process::Child);
impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends a few topics through a relay whose `webhook` and `webhook-batch`
/// destinations both point at `url`; returns the final stats.
async fn deliver_to(url: &str) -> serde_json::Value {
    let dest = |name: &str, format: &str| Dest {
        name: name.into(),
        url: url.to_string(),
        extra: format!("format = \"{format}\"\nshared_secret = \"{RX_SECRET}\"\n"),
    };
    let relay = Relay::start(Opts {
        dests: vec![dest("wh", "webhook"), dest("batch", "webhook-batch")],
        ..Opts::default()
    })
    .await;
    for topic in TOPICS {
        let r = send_test(&relay, topic, SECRET).await;
        assert_eq!(r.code, 0, "{}{}", r.out, r.err);
    }
    let want = 2 * TOPICS.len() as u64;
    let stats = within("every delivery settled", async {
        loop {
            let r = admin(&relay, &["stats", "--json"], &[]).await;
            let v: serde_json::Value = serde_json::from_str(&r.out).unwrap();
            if v["delivered"].as_u64().unwrap_or(0) + v["dead"].as_u64().unwrap_or(0) >= want {
                return v;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    relay.stop().await;
    assert_eq!(stats["delivered"], want, "{stats}");
    stats
}

const TOPICS: [&str; 5] = [
    "orders/create",
    "customers/create",
    "refunds/create",
    "checkouts/create",
    "products/update",
];

#[tokio::test]
async fn rust_receiver_verifies_every_delivery() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/events", listener.local_addr().unwrap());
    tokio::spawn(
        warp::serve(rust_receiver::routes(RX_SECRET.as_bytes()))
            .incoming(listener)
            .run(),
    );
    let stats = deliver_to(&url).await;
    assert_eq!(
        stats["dead"], 0,
        "the receiver refused a signature: {stats}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_receiver_verifies_every_delivery_the_segment_way() {
    if Command::new("node").arg("--version").output().is_err() {
        crate::common::skip("node is not installed");
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/node-receiver.js");
    let mut node = Node(
        Command::new("node")
            .arg(script)
            .env("PORT", "0")
            .env("RECEIVER_SECRET", RX_SECRET)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let out: Lines = Arc::default();
    let err: Lines = Arc::default();
    for (pipe, log) in [
        (
            Box::new(node.0.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            out.clone(),
        ),
        (Box::new(node.0.stderr.take().unwrap()), err.clone()),
    ] {
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                log.lock().unwrap().push(line);
            }
        });
    }
    until("node listening", || !err.lock().unwrap().is_empty()).await;
    let first = err.lock().unwrap()[0].clone();
    let url = first.rsplit(' ').next().unwrap().to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{first}");

    let stats = deliver_to(&url).await;
    assert_eq!(
        stats["dead"],
        0,
        "node refused a signature: {:?}\n{stats}",
        err.lock().unwrap()
    );
    let lines = out.lock().unwrap().clone();
    // orders/create and customers/create are identify + track: 7 events, twice.
    assert_eq!(lines.len(), 14, "{lines:#?}");
    assert!(
        lines.iter().any(|l| l.contains("\"Order Completed\"")),
        "{lines:#?}"
    );
}
