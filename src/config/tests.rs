use super::*;

fn no_env(_: &str) -> Option<String> {
    None
}

fn problems(text: &str) -> Vec<String> {
    match Config::from_toml_str(text, &no_env) {
        Ok(_) => vec![],
        Err(ConfigError::Invalid(p)) => p.into_iter().map(|p| p.to_string()).collect(),
        Err(e) => vec![e.to_string()],
    }
}

const MINIMAL: &str = r#"
[sources.acme]
kind = "shopify"
secrets = ["s3cr3t-value"]
[destinations.wh]
url = "http://127.0.0.1:9000/events"
"#;

#[test]
fn shipped_relay_toml_parses_with_no_environment() {
    let text = include_str!("../../relay.toml");
    let cfg = Config::from_toml_str(text, &no_env).expect("shipped relay.toml must be valid");
    assert_eq!(cfg.sources["shop"].kind, SourceKind::Shopify);
    assert_eq!(cfg.sources["shop"].destinations, ["receiver"]);
    assert!(cfg.server.admin_token.is_none());
    assert_eq!(cfg.retry, RetryConfig::default());
}

#[test]
fn defaults_fill_what_is_omitted() {
    let cfg = Config::from_toml_str(MINIMAL, &no_env).unwrap();
    assert_eq!(cfg.server.listen.to_string(), "0.0.0.0:8080");
    assert_eq!(cfg.server.admin_listen.to_string(), "127.0.0.1:9090");
    assert_eq!(cfg.server.max_body_bytes, 1 << 20);
    let src = &cfg.sources["acme"];
    assert_eq!(src.destinations, ["wh"], "no list means every destination");
    assert_eq!(src.delivery, DeliveryMode::Fanout);
    let d = &cfg.destinations["wh"];
    assert_eq!(d.format, Format::Webhook);
    assert_eq!(d.timeout, Duration::from_secs(5));
}

#[test]
fn interpolation_and_defaults() {
    let text = r#"
[sources.acme]
kind = "shopify"
secrets = ["${A}", "${B:-fallback}"]
"#;
    let env = |n: &str| (n == "A").then(|| "from-env".to_string());
    let cfg = Config::from_toml_str(text, &env).unwrap();
    let s: Vec<_> = cfg.sources["acme"]
        .secrets
        .iter()
        .map(|s| s.expose())
        .collect();
    assert_eq!(s, ["from-env", "fallback"]);
}

#[test]
fn every_problem_is_reported_at_once_with_its_key() {
    let text = r#"
[server]
listen = "nowhere"
colour = "blue"
[retry]
max_age = "4 hours"
[sources.acme]
kind = "woocommerce"
secrets = ["${UNSET_SECRET_VAR}"]
destinations = ["a", "b", "c", "d", "e", "f", "ghost"]
[destinations.a]
url = "ftp://example.com/x"
format = "carrier-pigeon"
[destinations.b]
url = "http://127.0.0.1:1/b"
timeout = "soon"
[destinations.c]
url = "not a url"
[destinations.d]
url = "http://127.0.0.1:1/d"
[destinations.e]
url = "http://127.0.0.1:1/e"
[destinations.f]
url = "http://127.0.0.1:1/f"
format = "segment-api"
"#;
    let p = problems(text);
    let expect = [
        "server.listen: `nowhere` is not an address",
        "server.colour: unknown key",
        "retry.max_age: `4 hours` is not a duration",
        "sources.acme.kind: unknown kind `woocommerce`",
        "sources.acme.secrets[0]: environment variable UNSET_SECRET_VAR is not set",
        "sources.acme.destinations: 7 destinations; a source may have at most 5",
        "sources.acme.destinations: `ghost` is not a defined [destinations.ghost]",
        "destinations.a.url: scheme `ftp` is not http or https",
        "destinations.a.format: unknown format `carrier-pigeon`",
        "destinations.b.timeout: `soon` is not a duration",
        "destinations.c.url: not a valid URL",
        "destinations.f.write_key: is required for format \"segment-api\"",
    ];
    for e in expect {
        assert!(
            p.iter().any(|l| l.starts_with(e)),
            "missing `{e}` in {p:#?}"
        );
    }
}

#[test]
fn secrets_never_appear_in_problems() {
    let text = r#"
[server]
admin_token = 12345
[sources.acme]
kind = "shopify"
secrets = "s3cr3t-value"
[destinations.wh]
url = "http://127.0.0.1:9000/events"
shared_secret = ["s3cr3t-value"]
headers = { "Bad Header" = "s3cr3t-value" }
"#;
    let p = problems(text);
    assert!(p.len() >= 4, "{p:#?}");
    assert!(!p.join("\n").contains("s3cr3t"), "{p:#?}");
    assert!(!p.join("\n").contains("12345"), "{p:#?}");
}

#[test]
fn too_many_implicit_destinations_is_refused() {
    let mut text = String::from("[sources.acme]\nkind = \"shopify\"\nsecrets = [\"x\"]\n");
    for i in 0..6 {
        text.push_str(&format!(
            "[destinations.d{i}]\nurl = \"http://127.0.0.1:1/\"\n"
        ));
    }
    let p = problems(&text);
    assert!(
        p[0].starts_with("sources.acme.destinations: not set, so it means all 6"),
        "{p:?}"
    );
}

#[test]
fn bad_toml_names_the_line() {
    let p = problems("[server]\nlisten = \n");
    assert!(p[0].starts_with("line 2: not valid TOML"), "{p:?}");
}

#[test]
fn no_source_is_refused() {
    let p = problems("[server]\n");
    assert!(
        p.iter()
            .any(|l| l.starts_with("sources: define at least one")),
        "{p:?}"
    );
}

#[test]
fn listener_limits_default_and_parse() {
    let cfg = Config::from_toml_str(MINIMAL, &no_env).unwrap();
    assert_eq!(cfg.server.limits, ListenerLimits::default());
    let l = ListenerLimits::default();
    assert_eq!(l.header_read_timeout, Duration::from_secs(10));
    assert_eq!(l.body_read_timeout, Duration::from_secs(30));
    assert_eq!(l.idle_timeout, Duration::from_secs(75));
    assert_eq!(l.max_connections, None);
    assert_eq!(l.unverified_body_budget, 64 << 20);

    let text = format!(
        "[server]\nheader_read_timeout = \"2s\"\nbody_read_timeout = \"5s\"\nidle_timeout = \"1m\"\n\
         max_connections = 50\nunverified_body_budget = 8388608\n{MINIMAL}"
    );
    let cfg = Config::from_toml_str(&text, &no_env).unwrap();
    assert_eq!(
        cfg.server.limits,
        ListenerLimits {
            header_read_timeout: Duration::from_secs(2),
            body_read_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            max_connections: Some(50),
            unverified_body_budget: 8 << 20,
        }
    );
}

#[test]
fn bad_listener_limits_are_reported_with_their_keys() {
    let text = format!(
        "[server]\nheader_read_timeout = \"0s\"\nidle_timeout = \"soon\"\nmax_connections = 0\n\
         max_body_bytes = 2048\nunverified_body_budget = 1024\n{MINIMAL}"
    );
    let p = problems(&text);
    for e in [
        "server.header_read_timeout: must be greater than 0",
        "server.idle_timeout: `soon` is not a duration",
        "server.max_connections: 0 is out of range",
        "server.unverified_body_budget: 1024 is less than max_body_bytes (2048)",
    ] {
        assert!(
            p.iter().any(|l| l.starts_with(e)),
            "missing `{e}` in {p:#?}"
        );
    }
}

#[test]
fn an_open_admin_listener_without_a_token_is_warned_about() {
    let open = format!("[server]\nadmin_listen = \"0.0.0.0:9090\"\n{MINIMAL}");
    let w = Config::from_toml_str(&open, &no_env).unwrap().warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].to_string()
            .starts_with("server.admin_listen: 0.0.0.0:9090 is not a loopback address"),
        "{w:?}"
    );
    let with_token =
        format!("[server]\nadmin_listen = \"0.0.0.0:9090\"\nadmin_token = \"t\"\n{MINIMAL}");
    let cfg = Config::from_toml_str(&with_token, &no_env).unwrap();
    assert!(cfg.warnings().is_empty());
    let loopback = format!("[server]\nadmin_listen = \"[::1]:9090\"\n{MINIMAL}");
    let cfg = Config::from_toml_str(&loopback, &no_env).unwrap();
    assert!(cfg.warnings().is_empty());
}

#[test]
fn identity_retention_defaults_parses_and_has_a_floor() {
    let cfg = Config::from_toml_str(MINIMAL, &no_env).unwrap();
    assert_eq!(
        cfg.mapping.identity_retention,
        Duration::from_secs(365 * 86_400)
    );
    let cfg = Config::from_toml_str(
        &format!("{MINIMAL}\n[mapping]\nidentity_retention = \"30d\"\n"),
        &no_env,
    )
    .unwrap();
    assert_eq!(
        cfg.mapping.identity_retention,
        Duration::from_secs(30 * 86_400)
    );
    for (value, problem) in [
        ("1h", "mapping.identity_retention: must be at least 2d"),
        (
            "soon",
            "mapping.identity_retention: `soon` is not a duration",
        ),
    ] {
        let got = problems(&format!(
            "{MINIMAL}\n[mapping]\nidentity_retention = \"{value}\"\n"
        ));
        assert!(
            got.len() == 1 && got[0].starts_with(problem),
            "{value}: {got:?}"
        );
    }
}

#[test]
fn rules_and_rate_limits_are_read() {
    let text = format!(
        "{MINIMAL}filter = '.type != \"track\" or (.properties.total // 0) >= 100'\n\
         transform = '.properties.channel = \"shopify\"'\nrate_limit = \"50/s\"\n"
    );
    let cfg = Config::from_toml_str(&text, &no_env).unwrap();
    let d = &cfg.destinations["wh"];
    assert_eq!(
        d.filter.as_ref().map(JqProgram::source),
        Some(r#".type != "track" or (.properties.total // 0) >= 100"#)
    );
    assert!(d.transform.is_some());
    assert_eq!(d.rate_limit.map(|r| r.to_string()).as_deref(), Some("50/s"));
    let plain = Config::from_toml_str(MINIMAL, &no_env).unwrap();
    let d = &plain.destinations["wh"];
    assert!(d.filter.is_none() && d.transform.is_none() && d.rate_limit.is_none());
}

#[test]
fn a_rule_that_does_not_compile_is_named_with_its_key_and_position() {
    let text = r#"
[sources.acme]
kind = "shopify"
secrets = ["x"]
[destinations.crm]
url = "http://127.0.0.1:1/crm"
filter = '.properties.total >= '
transform = """
.properties
| nosuch(.a)"""
rate_limit = "fast"
[destinations.ok]
url = "http://127.0.0.1:1/ok"
filter = ""
"#;
    let p = problems(text);
    let expect = [
        "destinations.crm.filter: jq program does not compile: expected term, found end of input at line 1, column 22",
        "destinations.crm.transform: jq program does not compile: undefined filter `nosuch/1` at line 2, column 3",
        "destinations.crm.rate_limit: `fast` is not a rate",
        "destinations.ok.filter: is empty",
    ];
    for e in expect {
        assert!(
            p.iter().any(|l| l.starts_with(e)),
            "missing `{e}` in {p:#?}"
        );
    }
}

#[test]
fn an_unreadable_retry_interval_is_one_problem() {
    let text = format!("{MINIMAL}[retry]\ninitial_interval = \"soon\"\nmax_interval = \"1ms\"\n");
    assert_eq!(
        problems(&text),
        [
            r#"retry.initial_interval: `soon` is not a duration (use e.g. "500ms", "5s", "10m", "4h")"#
        ]
    );
}
