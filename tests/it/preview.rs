//! `shoprelay preview`: golden output for every shipped sample, through one
//! destination per kind of rule (tests/fixtures/preview/relay.toml).
//! `UPDATE_GOLDEN=1 cargo test --test it preview` rewrites the golden file.

use crate::common::cli::{Run, shoprelay};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Every shipped sample as (source, topic, file).
fn samples() -> Vec<(&'static str, String, String)> {
    let mut out = Vec::new();
    let mut shopify: Vec<String> = std::fs::read_dir(format!("{ROOT}/samples/shopify"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    shopify.sort();
    for name in shopify {
        let topic = name.trim_end_matches(".json").replace("__", "/");
        out.push(("shop", topic, format!("samples/shopify/{name}")));
    }
    for resource in ["orders", "products", "collections", "customers"] {
        for action in ["create", "update", "delete"] {
            let file = format!("samples/convertedin/{resource}.json");
            out.push(("ci", format!("{resource}/{action}"), file));
        }
    }
    out.push((
        "ci",
        "app/uninstalled".into(),
        "samples/convertedin/app.json".into(),
    ));
    out
}

async fn preview(args: &[&str]) -> Run {
    let config = format!("{ROOT}/tests/fixtures/preview/relay.toml");
    let mut all = vec!["preview", "--config", &config];
    all.extend(args);
    // Where an event's time is when it was received, "now" is fixed.
    shoprelay(&all, &[("SOURCE_DATE_EPOCH", "1795434157")]).await
}

#[tokio::test]
async fn golden_output_for_the_shipped_samples() {
    let mut text = String::new();
    for (source, topic, file) in samples() {
        let payload = format!("{ROOT}/{file}");
        let r = preview(&["--source", source, "--topic", &topic, "--payload", &payload]).await;
        assert!(r.err.is_empty(), "{topic}: {}", r.err);
        text.push_str(&format!(
            "$ shoprelay preview --source {source} --topic {topic} --payload {file}   # exit {}\n{}\n",
            r.code, r.out
        ));
    }
    let golden = format!("{ROOT}/tests/fixtures/preview/samples.txt");
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::write(&golden, &text).unwrap();
    }
    let want = std::fs::read_to_string(&golden)
        .unwrap_or_else(|e| panic!("{golden}: {e} (run with UPDATE_GOLDEN=1)"));
    if text != want {
        let first = text
            .lines()
            .zip(want.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        panic!(
            "preview output differs from {golden} at line {}:\n  got:  {}\n  want: {}\n(UPDATE_GOLDEN=1 rewrites it after review)",
            first + 1,
            text.lines().nth(first).unwrap_or("<end>"),
            want.lines().nth(first).unwrap_or("<end>"),
        );
    }
}

#[tokio::test]
async fn json_output_is_the_events_as_sent_and_why_others_are_not() {
    let r = preview(&["--topic", "orders/paid", "--json"]).await;
    assert_eq!(r.code, 0, "{}", r.err);
    let v: serde_json::Value =
        serde_json::from_str(&r.out).unwrap_or_else(|e| panic!("{e}: {}{}", r.out, r.err));
    assert_eq!(v["source"], "shop", "the first shopify source by name");
    assert_eq!(v["topic"], "orders/paid");
    let dests = v["destinations"].as_array().unwrap();
    let names: Vec<&str> = dests.iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["warehouse", "crm", "audit", "tracks"]);
    let crm = &dests[1];
    assert_eq!(crm["events"].as_array().unwrap().len(), 1);
    assert_eq!(crm["events"][0]["event"], "Order Paid");
    assert!(crm["events"][0]["total"].as_f64().unwrap() >= 100.0);
    assert_eq!(crm["skipped"][0]["type"], "identify");
    assert_eq!(crm["skipped"][0]["why"], "not in events");
    assert!(crm["error"].is_null());
    let warehouse = &dests[0];
    assert!(warehouse["events"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn a_run_time_error_exits_1_and_bad_arguments_say_what_is_wrong() {
    let ci = format!("{ROOT}/samples/convertedin/customers.json");
    let r = preview(&[
        "--kind",
        "convertedin",
        "--topic",
        "customers/create",
        "--payload",
        &ci,
    ])
    .await;
    assert_eq!(r.code, 0, "{}{}", r.out, r.err);
    assert!(
        r.out
            .starts_with("customers/create at source ci (convertedin, fanout)"),
        "{}",
        r.out
    );

    // convertedin's sample order has products without a SKU.
    let r = preview(&["--source", "ci", "--topic", "orders/update"]).await;
    assert_eq!(r.code, 1, "{}", r.out);
    assert!(
        r.out.contains(
            "tracks: would be a dead letter\n  destinations.tracks.filter: run-time error: "
        ),
        "{}",
        r.out
    );
    for (args, want) in [
        (
            &["--topic", "orders/paid", "--source", "nope"][..],
            "no [sources.nope] in relay.toml (sources: ci, shop)",
        ),
        (
            &[
                "--topic",
                "orders/paid",
                "--source",
                "ci",
                "--kind",
                "shopify",
            ][..],
            "source `ci` is convertedin, not --kind shopify",
        ),
        (
            &["--topic", "orders/paid", "--kind", "woo"][..],
            "--kind must be shopify or convertedin",
        ),
        (
            &["--topic", "nope/nope"][..],
            "no built-in shopify sample for topic `nope/nope`",
        ),
        (
            &["--topic", "orders/paid", "--payload", "/nonexistent.json"][..],
            "cannot read /nonexistent.json",
        ),
    ] {
        let r = preview(args).await;
        assert_eq!(r.code, 1, "{args:?}: {}", r.out);
        assert!(r.err.contains(want), "{args:?}: {}", r.err);
    }
    // A config with a rule that does not compile is refused like `check` does.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("relay.toml");
    std::fs::write(&bad, "[sources.s]\nkind = \"shopify\"\nsecrets = [\"x\"]\n[destinations.d]\nurl = \"http://127.0.0.1:9/\"\ntransform = '{a: '\n").unwrap();
    let r = shoprelay(
        &[
            "preview",
            "--config",
            bad.to_str().unwrap(),
            "--topic",
            "orders/paid",
        ],
        &[],
    )
    .await;
    assert_eq!(r.code, 1);
    assert!(
        r.err
            .contains("destinations.d.transform: jq program does not compile"),
        "{}",
        r.err
    );
}
