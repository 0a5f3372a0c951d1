//! Commands that talk to a running relay.

use std::path::Path;
use std::process::ExitCode;

use clap::{Args, Subcommand};

#[derive(Args, Debug)]
pub struct SendTest {
    /// The relay's webhook URL, e.g. http://127.0.0.1:8080/webhooks/shopify/shop.
    #[arg(long)]
    pub to: String,
    /// The source's secret.
    #[arg(long, env = "SHOPRELAY_TEST_SECRET", hide_env_values = true)]
    pub secret: String,
    /// Topic, e.g. orders/paid.
    #[arg(long, default_value = "orders/create")]
    pub topic: String,
    /// Sender kind.
    #[arg(long, default_value = "shopify")]
    pub kind: String,
    /// Send this file instead of the built-in sample.
    #[arg(long)]
    pub payload: Option<std::path::PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum DeadLetters {
    /// One line per dead letter.
    List {
        #[arg(long)]
        json: bool,
    },
    /// One dead letter in full.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Send one (or all) again now, with a fresh retry window.
    Replay {
        id: Option<String>,
        #[arg(long)]
        all: bool,
    },
    /// Delete one (or all).
    Purge {
        id: Option<String>,
        #[arg(long)]
        all: bool,
    },
}

pub fn admin_base(flag: Option<&str>, _config: &Path) -> anyhow::Result<String> {
    Ok(flag
        .unwrap_or("http://127.0.0.1:9090")
        .trim_end_matches('/')
        .to_string())
}

pub async fn send_test(_t: SendTest) -> anyhow::Result<ExitCode> {
    anyhow::bail!("send-test is not implemented yet")
}

pub async fn dead_letters(_base: &str, _cmd: DeadLetters) -> anyhow::Result<ExitCode> {
    anyhow::bail!("dead-letters is not implemented yet")
}

pub async fn stats(_base: &str, _json: bool) -> anyhow::Result<ExitCode> {
    anyhow::bail!("stats is not implemented yet")
}
