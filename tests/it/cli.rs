//! The operator commands `send-test` and `stats`, the admin token and an
//! unreachable admin API: the real binary against a relay in this process.

use crate::common::cli::{NO_CONFIG, admin, convertedin_url, json, send_test, shoprelay};
use crate::common::relay::{Opts, Relay, SECRET};

#[tokio::test]
async fn send_test_stats_and_an_empty_dead_letter_list() {
    let relay = Relay::start(Opts::default()).await;
    for topic in ["orders/paid", "customers/redact"] {
        let r = send_test(&relay, topic, SECRET).await;
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
    let r = send_test(&relay, "orders/paid", "wrong-secret-xyz").await;
    assert_eq!(r.code, 1, "{}{}", r.out, r.err);
    assert!(r.out.contains("401"), "{}", r.out);
    assert!(!r.out.contains("wrong-secret-xyz") && !r.err.contains("wrong-secret-xyz"));

    let r = send_test(&relay, "nope/never", SECRET).await;
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
    // An invalid config: one line pointing at `check`, not the problem list.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("relay.toml");
    std::fs::write(&bad, "[server]\nbogus = 1\n").unwrap();
    let r = shoprelay(&["stats", "--config", &bad.to_string_lossy()], &[]).await;
    assert_eq!(r.code, 1);
    assert_eq!(r.err.lines().count(), 1, "{}", r.err);
    assert!(
        r.err.contains("shoprelay check") && r.err.contains("--admin"),
        "{}",
        r.err
    );
}

#[tokio::test]
async fn a_second_relay_on_the_same_data_dir_says_so_and_exits() {
    let mut relay = Relay::start(Opts::default()).await;
    // The first relay holds the data_dir only once its store is open (the
    // second one won that race once under load, and kept running).
    relay.wait_open().await;
    let cfg = relay.dir.path().join("second.toml");
    std::fs::write(
        &cfg,
        crate::common::relay::toml(&Opts::default(), relay.dir.path()),
    )
    .unwrap();
    let r = shoprelay(&["serve", "--config", cfg.to_str().unwrap()], &[]).await;
    assert_eq!(r.code, 1, "{}", r.err);
    let line = r.err.lines().last().unwrap_or_default();
    assert!(
        line.starts_with("error: cannot open the database in ")
            && line.contains(
                "it is in use by another process (is another relay running on this data_dir?): "
            ),
        "{}",
        r.err
    );
    relay.stop().await;
}
