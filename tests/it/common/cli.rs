//! Running the real `shoprelay` binary from a test, beside an in-process relay.

use std::process::Command;

use serde_json::Value;

use super::relay::Relay;
use super::within;

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

pub fn json(r: &Run) -> Value {
    serde_json::from_str(&r.out).unwrap_or_else(|e| panic!("{e}: {}{}", r.out, r.err))
}

pub fn convertedin_url(relay: &Relay) -> String {
    format!("{}/webhooks/convertedin/ci", relay.ingest)
}

/// `shoprelay send-test` of a built-in Shopify sample to the relay's `acme` source.
pub async fn send_test(relay: &Relay, topic: &str, secret: &str) -> Run {
    let shop = relay.shopify_url("acme");
    let args = [
        "send-test",
        "--to",
        &shop,
        "--secret",
        secret,
        "--topic",
        topic,
    ];
    shoprelay(&args, &[]).await
}
