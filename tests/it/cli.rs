//! The operator commands (`send-test`, `stats`, `dead-letters`) as the real
//! binary, against a relay running in this process.

use std::process::Command;

use serde_json::Value;

use crate::common::relay::{Opts, Relay, SECRET};
use crate::common::within;

/// What one run of the binary printed.
pub struct Run {
    pub code: i32,
    pub out: String,
    pub err: String,
}

/// Runs `shoprelay ARGS` off the async thread (the relay under test shares
/// it), with none of the caller's relay variables, within the test limit.
pub async fn shoprelay(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shoprelay"));
    cmd.args(args);
    for v in [
        "SHOPRELAY_ADMIN_TOKEN",
        "SHOPRELAY_CONFIG",
        "SHOPRELAY_TEST_SECRET",
        "COLUMNS",
    ] {
        cmd.env_remove(v);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = within(
        &format!("shoprelay {args:?}"),
        tokio::task::spawn_blocking(move || cmd.output()),
    )
    .await
    .unwrap()
    .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        out: String::from_utf8_lossy(&out.stdout).into_owned(),
        err: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `--config` pointing nowhere, so only `--admin` and the environment count.
pub const NO_CONFIG: &str = "/nonexistent/relay.toml";

/// `shoprelay ARGS --admin URL` (the admin flag after the subcommand's own args).
pub async fn admin(relay: &Relay, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--admin", &relay.admin, "--config", NO_CONFIG]);
    shoprelay(&all, env).await
}

fn json(r: &Run) -> Value {
    serde_json::from_str(&r.out).unwrap_or_else(|e| panic!("{e}: {}{}", r.out, r.err))
}

fn convertedin_url(relay: &Relay) -> String {
    format!("{}/webhooks/convertedin/ci", relay.ingest)
}

#[tokio::test]
async fn send_test_stats_and_an_empty_dead_letter_list() {
    let relay = Relay::start(Opts::default()).await;
    let shop = relay.shopify_url("acme");
    for topic in ["orders/paid", "customers/redact"] {
        let r = shoprelay(
            &[
                "send-test",
                "--to",
                &shop,
                "--secret",
                SECRET,
                "--topic",
                topic,
            ],
            &[],
        )
        .await;
        assert_eq!(r.code, 0, "{}{}", r.out, r.err);
        assert!(
            r.out.contains("200") && r.out.contains("\"queued\""),
            "{}",
            r.out
        );
    }
    // convertedin deduplicates on the body; each run adds a unique field.
    for _ in 0..2 {
        let r = shoprelay(
            &[
                "send-test",
                "--kind",
                "convertedin",
                "--to",
                &convertedin_url(&relay),
                "--secret",
                SECRET,
                "--topic",
                "orders/create",
            ],
            &[],
        )
        .await;
        assert_eq!(r.code, 0, "{}{}", r.out, r.err);
        assert!(r.out.contains("\"queued\""), "{}", r.out);
    }

    let r = admin(&relay, &["stats", "--json"], &[]).await;
    assert_eq!(r.code, 0, "{}", r.err);
    let v = json(&r);
    assert_eq!(v["received"], 4, "{v}");
    assert_eq!(v["dead"], 0, "{v}");
    let r = admin(&relay, &["stats"], &[]).await;
    assert_eq!(r.code, 0, "{}", r.err);
    assert!(
        r.out
            .lines()
            .any(|l| l.split_whitespace().take(2).eq(["received", "4"])),
        "{}",
        r.out
    );
    assert!(r.out.contains("dead letters"), "{}", r.out);

    let r = admin(&relay, &["dead-letters", "list"], &[]).await;
    assert_eq!(
        (r.code, r.out.as_str()),
        (0, "no dead letters\n"),
        "{}",
        r.err
    );
    let r = admin(&relay, &["dead-letters", "list", "--json"], &[]).await;
    assert_eq!(json(&r), serde_json::json!([]));
    relay.stop().await;
}

#[tokio::test]
async fn send_test_refusals_never_print_the_secret() {
    let relay = Relay::start(Opts::default()).await;
    let shop = relay.shopify_url("acme");
    let r = shoprelay(
        &[
            "send-test",
            "--to",
            &shop,
            "--secret",
            "wrong-secret-xyz",
            "--topic",
            "orders/paid",
        ],
        &[],
    )
    .await;
    assert_eq!(r.code, 1, "{}{}", r.out, r.err);
    assert!(r.out.contains("401"), "{}", r.out);
    assert!(!r.out.contains("wrong-secret-xyz") && !r.err.contains("wrong-secret-xyz"));

    let r = shoprelay(
        &[
            "send-test",
            "--to",
            &shop,
            "--secret",
            SECRET,
            "--topic",
            "nope/never",
        ],
        &[],
    )
    .await;
    assert_eq!(r.code, 1);
    assert!(
        r.err.contains("`nope/never`") && r.err.contains("orders/paid"),
        "{}",
        r.err
    );
    assert_eq!(r.err.lines().count(), 1, "{}", r.err);

    // --payload sends the file as is, here with a convertedin URL given in full.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("body.json");
    std::fs::write(&file, r#"{"id":7,"note":"from a file"}"#).unwrap();
    let url = format!("{}/app/uninstalled", convertedin_url(&relay));
    let file = file.to_string_lossy().into_owned();
    let args = [
        "send-test",
        "--kind",
        "convertedin",
        "--to",
        &url,
        "--payload",
        &file,
        "--topic",
        "ignored/here",
    ];
    let r = shoprelay(&args, &[("SHOPRELAY_TEST_SECRET", SECRET)]).await;
    assert_eq!(r.code, 0, "{}{}", r.out, r.err);
    // The same bytes again: convertedin's dedup says so.
    let r = shoprelay(&args, &[("SHOPRELAY_TEST_SECRET", SECRET)]).await;
    assert!(r.out.contains("\"duplicate\""), "{}", r.out);
    relay.stop().await;
}

#[tokio::test]
async fn admin_token_from_env_or_config_and_the_401_message() {
    let relay = Relay::start(Opts {
        admin_token: Some("t0ken-abc".into()),
        ..Opts::default()
    })
    .await;
    let r = admin(&relay, &["stats"], &[]).await;
    assert_eq!(r.code, 1);
    assert_eq!(
        r.err.trim(),
        "error: admin API refused the token: set admin_token in relay.toml or pass SHOPRELAY_ADMIN_TOKEN"
    );
    let r = admin(
        &relay,
        &["dead-letters", "list"],
        &[("SHOPRELAY_ADMIN_TOKEN", "nope")],
    )
    .await;
    assert_eq!(r.code, 1);
    assert!(r.err.contains("refused the token"), "{}", r.err);
    let r = admin(
        &relay,
        &["stats", "--json"],
        &[("SHOPRELAY_ADMIN_TOKEN", "t0ken-abc")],
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.err);
    assert!(json(&r)["lanes"].is_object());

    // No --admin: admin_listen and admin_token from relay.toml; a wildcard
    // bind is reached on 127.0.0.1. --config before the subcommand.
    let port = relay.admin.rsplit(':').next().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("relay.toml");
    let text = crate::common::relay::toml(
        &Opts {
            admin_token: Some("t0ken-abc".into()),
            ..Opts::default()
        },
        dir.path(),
    )
    .replace(
        "admin_listen = \"127.0.0.1:0\"",
        &format!("admin_listen = \"0.0.0.0:{port}\""),
    );
    std::fs::write(&cfg, text).unwrap();
    let cfg = cfg.to_string_lossy().into_owned();
    let r = shoprelay(&["--config", &cfg, "dead-letters", "list"], &[]).await;
    assert_eq!(
        (r.code, r.out.as_str()),
        (0, "no dead letters\n"),
        "{}",
        r.err
    );
    assert!(!r.out.contains("t0ken") && !r.err.contains("t0ken"));
    relay.stop().await;
}

#[tokio::test]
async fn unreachable_admin_api_and_bad_arguments() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    for args in [
        &["stats"][..],
        &["dead-letters", "list"],
        &["dead-letters", "replay", "--all"],
    ] {
        let mut all = args.to_vec();
        all.extend(["--admin", &url, "--config", NO_CONFIG]);
        let r = shoprelay(&all, &[]).await;
        assert_eq!(r.code, 1, "{args:?}");
        assert_eq!(
            r.err.trim(),
            format!("error: cannot reach the admin API at {url}: is `shoprelay serve` running?")
        );
    }
    for verb in ["replay", "purge"] {
        let r = shoprelay(
            &["dead-letters", verb, "--admin", &url, "--config", NO_CONFIG],
            &[],
        )
        .await;
        assert_eq!(r.code, 1);
        assert!(r.err.contains("or --all"), "{}", r.err);
        let both = [
            "dead-letters",
            verb,
            "0000000000000001-0",
            "--all",
            "--admin",
            &url,
        ];
        let r = shoprelay(&both, &[]).await;
        assert_eq!(r.code, 1);
        assert!(r.err.contains("not both"), "{}", r.err);
    }
    // Neither --admin nor a readable config.
    let r = shoprelay(&["stats", "--config", NO_CONFIG], &[]).await;
    assert_eq!(r.code, 1);
    assert!(r.err.contains("--admin"), "{}", r.err);
}

#[tokio::test]
async fn unknown_dead_letter_is_a_clear_404() {
    let relay = Relay::start(Opts::default()).await;
    let id = "00000000000000ff-0";
    for args in [
        &["dead-letters", "show", id][..],
        &["dead-letters", "show", id, "--json"],
        &["dead-letters", "replay", id],
        &["dead-letters", "purge", id],
    ] {
        let r = admin(&relay, args, &[]).await;
        assert_eq!(r.code, 1, "{args:?}");
        assert_eq!(
            r.err.trim(),
            format!("error: no dead letter {id}"),
            "{args:?}"
        );
    }
    let r = admin(&relay, &["dead-letters", "replay", "--all"], &[]).await;
    assert_eq!(
        (r.code, r.out.as_str()),
        (0, "replayed 0 dead letter(s)\n"),
        "{}",
        r.err
    );
    let r = admin(&relay, &["dead-letters", "purge", "--all"], &[]).await;
    assert_eq!(
        (r.code, r.out.as_str()),
        (0, "purged 0 dead letter(s)\n"),
        "{}",
        r.err
    );
    relay.stop().await;
}

/// Waits until the relay holds exactly `n` dead letters; returns them (JSON).
async fn wait_dead(relay: &Relay, n: usize) -> Vec<Value> {
    within(&format!("{n} dead letter(s)"), async {
        loop {
            let r = admin(relay, &["dead-letters", "list", "--json"], &[]).await;
            let list = json(&r).as_array().cloned().unwrap_or_default();
            if list.len() == n {
                return list;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
}

async fn send_order(relay: &Relay, topic: &str) {
    let shop = relay.shopify_url("acme");
    let r = shoprelay(
        &[
            "send-test",
            "--to",
            &shop,
            "--secret",
            SECRET,
            "--topic",
            topic,
        ],
        &[],
    )
    .await;
    assert_eq!(r.code, 0, "{}{}", r.out, r.err);
}

#[tokio::test]
async fn dead_letters_list_show_replay_purge() {
    use crate::common::receiver::{Answer, TestReceiver};
    let rx = TestReceiver::with(std::sync::Arc::new(|_| Answer {
        body: "{\"error\":\"unknown field\"}".into(),
        ..Answer::status(400)
    }))
    .await;
    let relay = Relay::start(Opts {
        dests: vec![crate::common::relay::Dest {
            name: "warehouse".into(),
            url: rx.url.clone(),
            extra: String::new(),
        }],
        // No identify before the track: one event, one request per webhook.
        extra: "[mapping]\nidentify_on_orders = false\n".into(),
        ..Opts::default()
    })
    .await;
    for topic in ["orders/paid", "refunds/create", "app/uninstalled"] {
        send_order(&relay, topic).await;
    }
    let list = wait_dead(&relay, 3).await;
    for d in &list {
        for key in [
            "id",
            "destination",
            "event",
            "attempts",
            "last_error",
            "first_attempt_at",
            "dead_at",
        ] {
            assert!(!d[key].is_null(), "{key} missing: {d}");
        }
        assert_eq!(d["destination"], "warehouse");
        assert_eq!(d["attempts"], 1, "a 400 is not retried: {d}");
    }
    let ids: Vec<String> = list
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect();

    // The table pages through everything, 2 at a time here.
    let r = admin(
        &relay,
        &["dead-letters", "list", "--page-size", "2"],
        &[("COLUMNS", "100")],
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.err);
    let lines: Vec<&str> = r.out.lines().collect();
    assert_eq!(lines.len(), 5, "{}", r.out);
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("LAST ERROR"),
        "{}",
        r.out
    );
    for (line, id) in lines[1..4].iter().zip(&ids) {
        assert!(
            line.starts_with(id.as_str()) && line.contains("warehouse"),
            "{line}"
        );
        assert!(line.contains("400"), "{line}");
        assert!(line.chars().count() <= 100, "{line}");
    }
    assert!(
        r.out.contains("orders/paid") && r.out.contains("app/uninstalled"),
        "{}",
        r.out
    );
    assert_eq!(lines[4], "3 dead letter(s)");

    let r = admin(&relay, &["dead-letters", "show", &ids[0], "--json"], &[]).await;
    let v = json(&r);
    assert_eq!(v["id"], ids[0].as_str());
    assert!(v["body"].as_str().unwrap().starts_with('{'), "{v}");
    let r = admin(&relay, &["dead-letters", "show", &ids[0]], &[]).await;
    assert_eq!(r.code, 0, "{}", r.err);
    assert!(
        r.out
            .starts_with(&format!("id                {}\n", ids[0])),
        "{}",
        r.out
    );
    assert!(r.out.contains("body ("), "{}", r.out);

    let r = admin(&relay, &["stats", "--json"], &[]).await;
    assert_eq!(json(&r)["dead"], 3);

    // Replay one with the destination fixed: it is delivered, and gone.
    rx.set(std::sync::Arc::new(|_| Answer::status(200)));
    let before = rx.count();
    let r = admin(&relay, &["dead-letters", "replay", &ids[0]], &[]).await;
    assert_eq!(r.code, 0, "{}", r.err);
    assert_eq!(
        r.out,
        format!("replayed {}: it is due for delivery now\n", ids[0])
    );
    let got = rx.wait_for(before + 1).await;
    assert_eq!(got[before].json()["event"], "Order Paid");
    wait_dead(&relay, 2).await;

    let r = admin(&relay, &["dead-letters", "purge", &ids[1]], &[]).await;
    assert_eq!(
        (r.code, r.out.clone()),
        (0, format!("purged {}\n", ids[1])),
        "{}",
        r.err
    );
    wait_dead(&relay, 1).await;
    let r = admin(&relay, &["dead-letters", "replay", "--all"], &[]).await;
    assert_eq!(
        (r.code, r.out.as_str()),
        (0, "replayed 1 dead letter(s)\n"),
        "{}",
        r.err
    );
    let got = rx.wait_for(before + 2).await;
    assert_eq!(got[before + 1].json()["event"], "App Uninstalled");
    wait_dead(&relay, 0).await;

    // purge --all: bury two more, then purge them together.
    rx.set(std::sync::Arc::new(|_| Answer::status(400)));
    send_order(&relay, "orders/paid").await;
    send_order(&relay, "orders/paid").await;
    wait_dead(&relay, 2).await;
    let r = admin(&relay, &["dead-letters", "purge", "--all"], &[]).await;
    assert_eq!(
        (r.code, r.out.as_str()),
        (0, "purged 2 dead letter(s)\n"),
        "{}",
        r.err
    );
    let r = admin(&relay, &["dead-letters", "list"], &[]).await;
    assert_eq!(r.out, "no dead letters\n");
    relay.stop().await;
}
