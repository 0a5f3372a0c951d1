//! `shoprelay check` on the shipped relay.toml and on broken files.

use std::process::Command;

fn check(config: &str, env: &[(&str, &str)]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.toml");
    std::fs::write(&path, config).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shoprelay"));
    cmd.arg("check").arg("--config").arg(&path);
    for v in [
        "SHOPIFY_WEBHOOK_SECRET",
        "CONVERTEDIN_WEBHOOK_SECRET",
        "RECEIVER_SECRET",
        "SHOPRELAY_ADMIN_TOKEN",
        "SHOPRELAY_DATA_DIR",
    ] {
        cmd.env_remove(v);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn shipped_config_checks_and_prints_routes_without_secrets() {
    let shipped = include_str!("../../relay.toml");
    let (code, out, err) = check(
        shipped,
        &[
            ("SHOPIFY_WEBHOOK_SECRET", "super-secret-shop"),
            ("RECEIVER_SECRET", "super-secret-recv"),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("POST http://127.0.0.1:8080/webhooks/shopify/shop"),
        "{out}"
    );
    assert!(
        out.contains("→ receiver  webhook  http://127.0.0.1:9000/events"),
        "{out}"
    );
    assert!(
        !out.contains("super-secret") && !err.contains("super-secret"),
        "{out}{err}"
    );
    assert!(
        !out.contains("shoprelay-dev"),
        "default secrets are secrets too: {out}"
    );
}

#[test]
fn the_mapping_rule_and_identity_retention_are_shown() {
    let shipped = include_str!("../../relay.toml");
    let (code, out, err) = check(shipped, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(
            "mapping userId = email, else customer id, identity map kept 365d after last seen"
        ),
        "{out}"
    );
    let by_id = shipped
        .replace("user_id = \"email\"", "user_id = \"customer_id\"")
        .replace(
            "identity_retention = \"365d\"",
            "identity_retention = \"30d\"",
        );
    let (code, out, err) = check(&by_id, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("mapping userId = customer id, identity map kept 30d after last seen"),
        "{out}"
    );
}

#[test]
fn every_broken_case_names_its_key() {
    let base = "[sources.acme]\nkind = \"shopify\"\nsecrets = [\"x\"]\ndestinations = [\"d\"]\n[destinations.d]\nurl = \"http://127.0.0.1:1/\"\n";
    let cases: &[(&str, &str)] = &[
        (
            "[server]\nlisten = \"nowhere\"\n",
            "server.listen: `nowhere` is not an address",
        ),
        ("[server]\ncolour = 1\n", "server.colour: unknown key"),
        (
            "[retry]\nmax_age = \"forever\"\n",
            "retry.max_age: `forever` is not a duration",
        ),
        (
            "[destinations.e]\nurl = \"ftp://x/\"\n",
            "destinations.e.url: scheme `ftp` is not http or https",
        ),
        (
            "[destinations.e]\nurl = \"::\"\n",
            "destinations.e.url: not a valid URL",
        ),
        (
            "[destinations.e]\nurl = \"http://x/\"\nformat = \"smoke\"\n",
            "destinations.e.format: unknown format `smoke`",
        ),
        (
            "[sources.b]\nkind = \"woo\"\nsecrets = [\"x\"]\n",
            "sources.b.kind: unknown kind `woo`",
        ),
        (
            "[sources.b]\nkind = \"shopify\"\nsecrets = [\"${NOT_SET_ANYWHERE}\"]\ndestinations = []\n",
            "sources.b.secrets[0]: environment variable NOT_SET_ANYWHERE is not set",
        ),
        (
            "[sources.b]\nkind = \"shopify\"\nsecrets = [\"x\"]\ndestinations = [\"ghost\"]\n",
            "sources.b.destinations: `ghost` is not a defined [destinations.ghost]",
        ),
        (
            "[sources.b]\nkind = \"shopify\"\nsecrets = [\"x\"]\ndestinations = [\"d\",\"d1\",\"d2\",\"d3\",\"d4\",\"d5\"]\n\
             [destinations.d1]\nurl = \"http://x/\"\n[destinations.d2]\nurl = \"http://x/\"\n[destinations.d3]\nurl = \"http://x/\"\n\
             [destinations.d4]\nurl = \"http://x/\"\n[destinations.d5]\nurl = \"http://x/\"\n",
            "sources.b.destinations: 6 destinations; a source may have at most 5",
        ),
        (
            "[destinations.e]\nurl = \"http://x/\"\ntimeout = \"5 seconds\"\n",
            "destinations.e.timeout: `5 seconds` is not a duration",
        ),
        (
            "[destinations.e]\nurl = \"http://x/\"\nformat = \"segment-api\"\n",
            "destinations.e.write_key: is required",
        ),
        (
            "[destinations.crm]\nurl = \"http://x/\"\nfilter = '.properties.total >'\n",
            "destinations.crm.filter: jq program does not compile: expected term, found end of input at line 1, column 20",
        ),
        (
            "[destinations.crm]\nurl = \"http://x/\"\ntransform = '.properties |= with_entries(.key |= ascii_upcase'\n",
            "destinations.crm.transform: jq program does not compile: expected a closing delimiter for `(`, found end of input at line 1, column 49",
        ),
        (
            "[destinations.crm]\nurl = \"http://x/\"\ntransform = 'del(.traits.email) | mystery'\n",
            "destinations.crm.transform: jq program does not compile: undefined filter `mystery/0` at line 1, column 22",
        ),
        (
            "[destinations.crm]\nurl = \"http://x/\"\nrate_limit = \"50/h\"\n",
            "destinations.crm.rate_limit: `50/h` is not a rate",
        ),
    ];
    for (extra, want) in cases {
        let (code, out, err) = check(&format!("{base}{extra}"), &[]);
        assert_eq!(code, 1, "{extra}: {out}");
        assert!(
            err.lines().any(|l| l.trim().starts_with(want)),
            "{extra}\nwant `{want}` in:\n{err}"
        );
    }
}

#[test]
fn all_problems_at_once() {
    let (code, _, err) = check(
        "[server]\nlisten = \"x\"\n[sources.a]\nkind = \"?\"\nsecrets = [\"${NOPE_1}\"]\n",
        &[],
    );
    assert_eq!(code, 1);
    assert!(err.contains("3 problem(s)"), "{err}");
}

#[test]
fn a_missing_file_is_one_clear_line() {
    let out = Command::new(env!("CARGO_BIN_EXE_shoprelay"))
        .args(["check", "--config", "/nonexistent/relay.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot read /nonexistent/relay.toml"), "{err}");
}

#[test]
fn an_open_admin_listener_without_a_token_is_warned_about_and_limits_are_shown() {
    let base = "[sources.acme]\nkind = \"shopify\"\nsecrets = [\"x\"]\n";
    let (code, out, err) = check(
        &format!("[server]\nadmin_listen = \"0.0.0.0:9090\"\nmax_connections = 300\n{base}"),
        &[],
    );
    assert_eq!(code, 0, "a warning is not a problem: {err}");
    assert!(
        err.contains("warning: server.admin_listen: 0.0.0.0:9090 is not a loopback address and no admin_token is set"),
        "{err}"
    );
    assert!(
        out.contains(
            "limits  head 10s, body 30s, idle 1m15s, 300 connections, 64 MiB for unverified bodies"
        ),
        "{out}"
    );
    let (code, _, err) = check(
        &format!("[server]\nadmin_listen = \"0.0.0.0:9090\"\nadmin_token = \"t\"\n{base}"),
        &[],
    );
    assert_eq!(code, 0);
    assert!(!err.contains("warning"), "{err}");
}

#[test]
fn rules_and_rate_limits_are_shown_but_not_their_text() {
    let (code, out, err) = check(
        "[sources.acme]\nkind = \"shopify\"\nsecrets = [\"x\"]\n\
         [destinations.crm]\nurl = \"http://127.0.0.1:1/crm\"\nevents = [\"Order Completed\"]\n\
         filter = '.properties.total >= ${MIN_TOTAL}'\ntransform = '.properties.channel = \"web\"'\nrate_limit = \"600/m\"\n",
        &[("MIN_TOTAL", "100")],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(
            "(unsigned, timeout 5s, only Order Completed, jq filter, jq transform, at most 600/m)"
        ),
        "{out}"
    );
    assert!(!out.contains("properties"), "{out}");
}
