//! Commands that talk to a running relay: the admin API (`dead-letters`,
//! `stats`) and the ingest URL (`send-test`).

mod dead_letters;
mod samples;
mod send_test;
mod stats;

use std::path::Path;
use std::time::Duration;

use clap::{Args, Subcommand};
use reqwest::{Method, StatusCode};
use shoprelay::config::{Config, ConfigError};

pub use dead_letters::dead_letters;
pub(crate) use send_test::sample;
pub use send_test::send_test;
pub use stats::stats;

#[derive(Args, Debug)]
pub struct SendTest {
    /// The relay's webhook URL, e.g. http://127.0.0.1:8080/webhooks/shopify/shop
    /// (convertedin: the source's base URL; /{resource}/{action} is appended).
    #[arg(long)]
    pub to: String,
    /// The source's secret (never printed).
    #[arg(long, env = "SHOPRELAY_TEST_SECRET", hide_env_values = true)]
    pub secret: String,
    /// Topic, e.g. orders/paid.
    #[arg(long, default_value = "orders/create")]
    pub topic: String,
    /// Sender kind: shopify or convertedin.
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
        /// Print the admin API's JSON array.
        #[arg(long)]
        json: bool,
        /// Dead letters asked for per request (the list pages through them all).
        #[arg(long, default_value_t = 500, hide = true, value_parser = clap::value_parser!(u16).range(1..))]
        page_size: u16,
    },
    /// One dead letter in full.
    Show {
        id: String,
        /// Print the admin API's JSON.
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

/// Where the admin API is and how to authenticate to it.
#[derive(Debug)]
pub struct AdminApi {
    /// Base URL without a trailing slash, e.g. `http://127.0.0.1:9090`.
    pub base: String,
    /// Bearer token for `/admin/*`, if any.
    token: Option<String>,
}

const TOKEN_ENV: &str = "SHOPRELAY_ADMIN_TOKEN";

/// `--admin` wins; else `admin_listen` from relay.toml (a wildcard bind is
/// reached on 127.0.0.1). The token comes from relay.toml, else from
/// `SHOPRELAY_ADMIN_TOKEN`.
pub fn admin_base(flag: Option<&str>, config: &Path) -> anyhow::Result<AdminApi> {
    let env_token = || std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty());
    let loaded = Config::load(config);
    let token = match &loaded {
        Ok(cfg) => cfg
            .server
            .admin_token
            .as_ref()
            .map(|t| t.expose().to_string())
            .filter(|t| !t.is_empty())
            .or_else(env_token),
        Err(_) => env_token(),
    };
    let base = match (flag, loaded) {
        (Some(url), _) => url.trim_end_matches('/').to_string(),
        (None, Ok(cfg)) => {
            let mut addr = cfg.server.admin_listen;
            if addr.ip().is_unspecified() {
                addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            format!("http://{addr}")
        }
        (None, Err(ConfigError::Invalid(problems))) => anyhow::bail!(
            "cannot find the admin API: {} has {} problem(s) (see `shoprelay check --config {0}`); pass --admin URL",
            config.display(),
            problems.len()
        ),
        (None, Err(e)) => anyhow::bail!("cannot find the admin API: {e}; pass --admin URL"),
    };
    Ok(AdminApi { base, token })
}

/// A failed admin call, in words an operator can act on.
fn http_error(api: &AdminApi, status: StatusCode, body: &[u8], what: &str) -> anyhow::Error {
    match status {
        StatusCode::UNAUTHORIZED => anyhow::anyhow!(
            "admin API refused the token: set admin_token in relay.toml or pass {TOKEN_ENV}"
        ),
        StatusCode::NOT_FOUND if !what.is_empty() => anyhow::anyhow!("no dead letter {what}"),
        _ => {
            let msg = serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(200).collect());
            anyhow::anyhow!("admin API at {} answered {status}: {msg}", api.base)
        }
    }
}

impl AdminApi {
    /// Calls `path` (starting with `/admin/`) and returns the JSON answer.
    /// `id` names the dead letter a 404 is about ("" when none).
    async fn call(
        &self,
        method: Method,
        path: &str,
        id: &str,
    ) -> anyhow::Result<serde_json::Value> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let mut req = client.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let unreachable = || {
            anyhow::anyhow!(
                "cannot reach the admin API at {}: is `shoprelay serve` running?",
                self.base
            )
        };
        let resp = req.send().await.map_err(|_| unreachable())?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|_| unreachable())?;
        if !status.is_success() {
            return Err(http_error(self, status, &body, id));
        }
        serde_json::from_slice(&body).map_err(|e| {
            anyhow::anyhow!(
                "admin API at {} answered with something other than JSON ({e}): is --admin the admin listener?",
                self.base
            )
        })
    }
}

/// Pretty JSON for `--json`.
fn print_json(v: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    );
}
