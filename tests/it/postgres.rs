//! Several relays on one PostgreSQL (`[storage] backend = "postgres"`): a
//! relay killed mid-delivery, dedup across relays, the database restarted
//! under load. They need a server: `scripts/test-postgres` starts one and
//! sets `SHOPRELAY_TEST_PG_URL`; without it they pass without running and say
//! so on stderr, and under `CI=true` they fail. They take turns (one restarts
//! the server).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::receiver::{Answer, TestReceiver};
use crate::common::relay::{Child_, Dest, Opts, Relay, SECRET, spawn_binary, toml};
use crate::common::sign::ShopifyWebhook;
use crate::common::{client, eventually, send_json, until, within};

const URL_VAR: &str = "SHOPRELAY_TEST_PG_URL";

/// One test at a time: one of them stops the server.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The test server's URL and this test's turn; None (reported) without one.
async fn begin() -> Option<(String, tokio::sync::MutexGuard<'static, ()>)> {
    match std::env::var(URL_VAR) {
        Ok(u) if !u.is_empty() => Some((u, TURN.lock().await)),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!(
                "{URL_VAR} is not set under CI=true: run the tests through scripts/test-postgres"
            )
        }
        _ => {
            let _ = writeln!(
                std::io::stderr(),
                "PostgreSQL relay test skipped: {URL_VAR} is not set (run scripts/test-postgres)"
            );
            None
        }
    }
}

/// A fresh schema named `name` on the server; a URL whose connections use it.
async fn schema_url(server: &str, name: &str) -> String {
    let (c, conn) = tokio_postgres::connect(server, tokio_postgres::NoTls)
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    c.batch_execute(&format!(
        "DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}"
    ))
    .await
    .unwrap();
    drop(c);
    let _ = conn.await;
    let sep = if server.contains('?') { '&' } else { '?' };
    format!("{server}{sep}options=-c%20search_path%3D{name}")
}

/// relay.toml's `[storage]` for the database at `url`.
fn storage(url: &str, lease: &str) -> String {
    format!(
        "\n[storage]\nbackend = \"postgres\"\nurl = \"{url}\"\npool_size = 8\nlease = \"{lease}\"\n"
    )
}

fn opts(db: &str, receiver: &TestReceiver, lease: &str) -> Opts {
    Opts {
        dests: vec![Dest {
            name: "wh".into(),
            url: receiver.url.clone(),
            extra: "concurrency = 4\ntimeout = \"1s\"\n".into(),
        }],
        extra: storage(db, lease),
        ..Opts::default()
    }
}

/// Webhook `n`: an order deletion, one track event, identified by event id.
fn numbered(n: usize) -> ShopifyWebhook<'static> {
    ShopifyWebhook {
        topic: "orders/delete",
        event_id: Some(format!("ev-{n}")),
        body: format!(r#"{{"id":{n}}}"#).into_bytes(),
        secret: SECRET,
    }
}

/// The event ids the receiver got, each with the messageIds it arrived with.
fn delivered(r: &TestReceiver) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for req in r.received() {
        let e = req.json();
        let id = e["context"]["source"]["event_id"].as_str().unwrap_or("?");
        let mid = e["messageId"].as_str().unwrap_or("?");
        out.entry(id.to_string())
            .or_default()
            .insert(mid.to_string());
    }
    out
}

/// Waits until every webhook in `acked` reached the receiver.
async fn all_delivered(r: &TestReceiver, acked: &[usize]) -> BTreeMap<String, BTreeSet<String>> {
    eventually("every acknowledged webhook delivered", || async {
        let got = delivered(r);
        acked
            .iter()
            .all(|n| got.contains_key(&format!("ev-{n}")))
            .then_some(got)
    })
    .await
}

fn start_child(dir: &std::path::Path, name: &str, opts: &Opts) -> Child_ {
    let cfg = dir.join(format!("{name}.toml"));
    std::fs::write(&cfg, toml(opts, &dir.join(name))).unwrap();
    spawn_binary(&cfg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_relays_one_killed_mid_delivery_every_acked_webhook_arrives_with_its_first_message_id()
 {
    let Some((server, _turn)) = begin().await else {
        return;
    };
    let db = schema_url(&server, "it_three_relays").await;
    // Slow answers keep deliveries in flight when the relay dies.
    let receiver = TestReceiver::with(Arc::new(|_| Answer {
        delay_ms: 200,
        ..Answer::status(200)
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let o = opts(&db, &receiver, "2s");
    let mut relays: Vec<Child_> = (0..3)
        .map(|i| start_child(dir.path(), &format!("relay{i}"), &o))
        .collect();
    for r in &mut relays {
        r.wait_open().await;
    }
    // 240 webhooks spread over the three relays, 24 at a time.
    let c = client();
    let mut acked = Vec::new();
    for chunk in (0..240).collect::<Vec<usize>>().chunks(24) {
        let sends = chunk.iter().map(|&n| {
            let url = format!("{}/webhooks/shopify/acme", relays[n % 3].ingest);
            let req = numbered(n).request(&c, &url);
            async move { (n, send_json("accept", req).await) }
        });
        for (n, answer) in futures_util::future::join_all(sends).await {
            assert_eq!(answer["status"], "queued", "webhook {n}: {answer}");
            acked.push(n);
        }
    }
    // Relay 0 dies while its lane has requests in flight, and stays dead.
    until("deliveries under way", || receiver.count() >= 24).await;
    let at_kill = receiver.count();
    relays[0].child.kill().unwrap();
    relays[0].child.wait().unwrap();

    // The survivors take what relay 0 held once its leases end, and agree
    // the queue is empty (a request relay 0 had sent reached the receiver
    // already: only the empty queue says its redelivery is done).
    for r in &relays[1..] {
        eventually("the queue drained", || async {
            let s = crate::common::get_json(format!("{}/admin/stats", r.admin)).await;
            s["lanes"]
                .as_object()
                .is_some_and(|l| l.is_empty())
                .then_some(())
        })
        .await;
    }
    let got = all_delivered(&receiver, &acked).await;
    let changed: Vec<_> = got.iter().filter(|(_, ids)| ids.len() > 1).collect();
    assert!(
        changed.is_empty(),
        "a repeat with a new messageId: {changed:?}"
    );
    let repeats = receiver.count() - got.len();
    assert!(
        repeats > 0,
        "relay 0 was killed with nothing in flight ({at_kill} received then): the test proved nothing; its log:\n{}",
        relays[0].log.last().join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_webhook_sent_to_two_relays_is_a_duplicate_at_the_second() {
    let Some((server, _turn)) = begin().await else {
        return;
    };
    let db = schema_url(&server, "it_dedup").await;
    let receiver = TestReceiver::start().await;
    let mut a = Relay::start(opts(&db, &receiver, "5s")).await;
    let mut b = Relay::start(opts(&db, &receiver, "5s")).await;
    a.wait_open().await;
    b.wait_open().await;
    let c = client();
    let first = send_json("to a", numbered(1).request(&c, &a.shopify_url("acme"))).await;
    assert_eq!(first["status"], "queued", "{first}");
    let second = send_json("to b", numbered(1).request(&c, &b.shopify_url("acme"))).await;
    assert_eq!(second["status"], "duplicate", "{second}");
    receiver.wait_for(1).await;
    a.wait_drained().await;
    // Both relays answer for the one queue (the counters are each relay's own).
    let (sa, sb) = (a.stats().await, b.stats().await);
    assert_eq!((&sa["lanes"], &sa["dead"]), (&sb["lanes"], &sb["dead"]));
    assert_eq!(
        (sa["received"].as_u64(), sb["duplicates"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(receiver.count(), 1);
    a.stop().await;
    b.stop().await;
}

/// Runs the throwaway server's pg_ctl (`SHOPRELAY_TEST_PG_CTL`, from scripts/test-postgres).
async fn pg_ctl(args: &'static [&'static str]) {
    let script = std::env::var("SHOPRELAY_TEST_PG_CTL")
        .expect("SHOPRELAY_TEST_PG_CTL (set by scripts/test-postgres)");
    let status = within(
        "pg_ctl",
        tokio::task::spawn_blocking(move || {
            std::process::Command::new("bash")
                .arg(script)
                .args(args)
                .stdout(std::process::Stdio::null())
                .status()
        }),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(status.success(), "pg_ctl {args:?}: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_restarted_under_load_503_while_down_nothing_acked_lost() {
    let Some((server, _turn)) = begin().await else {
        return;
    };
    let db = schema_url(&server, "it_restart").await;
    let receiver = TestReceiver::start().await;
    let mut relay = Relay::start(opts(&db, &receiver, "2s")).await;
    relay.wait_open().await;
    let url = relay.shopify_url("acme");
    let acked: Arc<Mutex<Vec<usize>>> = Arc::default();
    let (refused, stop) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let next = Arc::new(AtomicUsize::new(0));
    let senders: Vec<_> = (0..4)
        .map(|_| {
            let (url, acked, refused, stop, next) = (
                url.clone(),
                acked.clone(),
                refused.clone(),
                stop.clone(),
                next.clone(),
            );
            tokio::spawn(async move {
                let c = client();
                while !stop.load(Ordering::Relaxed) {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    match numbered(n)
                        .request(&c, &url)
                        .send()
                        .await
                        .map(|r| r.status())
                    {
                        Ok(s) if s == 200 => acked.lock().unwrap().push(n),
                        Ok(s) if s == 503 => {
                            refused.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        other => panic!("webhook {n}: {other:?}"),
                    }
                }
            })
        })
        .collect();
    let count = |a: &Arc<Mutex<Vec<usize>>>| a.lock().unwrap().len();
    until("100 acknowledged", || count(&acked) >= 100).await;

    pg_ctl(&["stop", "-m", "fast"]).await;
    until("ingest answers 503", || refused.load(Ordering::Relaxed) > 0).await;
    eventually("/healthz answers 503", || async {
        (relay.healthz().await == 503).then_some(())
    })
    .await;
    let before = count(&acked);
    pg_ctl(&["start"]).await;
    until("100 more acknowledged", || count(&acked) >= before + 100).await;
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        within("senders to stop", s).await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let got = all_delivered(&receiver, &acked).await;
    assert!(got.values().all(|ids| ids.len() == 1), "one messageId each");
    assert_eq!(relay.healthz().await, 200);
    relay.stop().await;
}

/// `shoprelay CMD --config PATH`: exit code and stdout + stderr.
fn run_cli(cmd: &str, config: &std::path::Path) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shoprelay"))
        .arg(cmd)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_on_a_database_that_takes_only_tls_with_sslmode_require() {
    let Some((server, _turn)) = begin().await else {
        return;
    };
    let ca = match std::env::var("SHOPRELAY_TEST_PG_CA") {
        Ok(ca) if !ca.is_empty() => ca,
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!(
                "SHOPRELAY_TEST_PG_CA is not set under CI=true: run the tests through scripts/test-postgres"
            )
        }
        _ => {
            let _ = writeln!(
                std::io::stderr(),
                "PostgreSQL TLS relay test skipped: SHOPRELAY_TEST_PG_CA is not set (run scripts/test-postgres)"
            );
            return;
        }
    };
    let plain = schema_url(&server, "it_tls").await;
    // The role the test server takes only over TLS, with a password (the
    // server trusts it; check must not show it).
    let mut url = url::Url::parse(&plain).unwrap();
    url.set_username("shoprelay_tls").unwrap();
    url.set_password(Some("hunter2")).unwrap();
    let require = format!("{url}&sslmode=require");
    let receiver = TestReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let o = opts(&require, &receiver, "5s");
    let cfg = dir.path().join("relay.toml");
    std::fs::write(&cfg, toml(&o, &dir.path().join("data"))).unwrap();

    let (code, out) = run_cli("check", &cfg);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("postgres://shoprelay_tls:***@127.0.0.1:") && out.contains("sslmode=require"),
        "{out}"
    );
    assert!(!out.contains("hunter2"), "{out}");
    let (code, out) = run_cli("migrate", &cfg);
    assert_eq!(code, 0, "{out}");
    // check reads the root file: a missing one is named.
    let verify = dir.path().join("verify.toml");
    for (root, ok) in [(ca.as_str(), true), ("/nonexistent/ca.pem", false)] {
        let o = opts(
            &format!("{url}&sslmode=verify-full&sslrootcert={root}"),
            &receiver,
            "5s",
        );
        std::fs::write(&verify, toml(&o, &dir.path().join("data"))).unwrap();
        let (code, out) = run_cli("check", &verify);
        assert_eq!(code == 0, ok, "{out}");
        assert!(
            ok || out.contains("sslrootcert /nonexistent/ca.pem"),
            "{out}"
        );
        assert!(!out.contains("hunter2"), "{out}");
    }

    let mut relay = spawn_binary(&cfg);
    relay.wait_open().await;
    let c = client();
    let ingest = format!("{}/webhooks/shopify/acme", relay.ingest);
    for n in 0..20 {
        let answer = send_json("accept", numbered(n).request(&c, &ingest)).await;
        assert_eq!(answer["status"], "queued", "{answer}");
    }
    all_delivered(&receiver, &(0..20).collect::<Vec<_>>()).await;

    // The same relay with sslmode=disable: the server refuses the role,
    // and serve says so on one line, without the password.
    let disable = dir.path().join("disable.toml");
    let o = opts(&format!("{url}&sslmode=disable"), &receiver, "5s");
    std::fs::write(&disable, toml(&o, &dir.path().join("data2"))).unwrap();
    let (code, out) = run_cli("serve", &disable);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("pg_hba.conf rejects"), "{out}");
    assert!(!out.contains("hunter2"), "{out}");
    relay.child.kill().unwrap();
    relay.child.wait().unwrap();
}
