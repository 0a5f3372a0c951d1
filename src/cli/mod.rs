//! Subcommands. `serve` and `check` work on relay.toml; the others talk to a
//! running relay's admin API (or, for `send-test`, its ingest URL).

mod check;
mod client;
mod preview;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use shoprelay::config::Config;

/// Self-hosted relay: Shopify and convertedin webhooks in, Segment-spec events out.
#[derive(Parser, Debug)]
#[command(name = "shoprelay", version, about)]
pub struct Args {
    /// Path of relay.toml.
    #[arg(
        long,
        global = true,
        default_value = "./relay.toml",
        env = "SHOPRELAY_CONFIG"
    )]
    pub config: PathBuf,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Admin API base URL (default: from admin_listen in relay.toml).
    #[arg(long, global = true)]
    pub admin: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the relay.
    Serve,
    /// Validate relay.toml and print the routes (never a secret).
    Check,
    /// Sign and POST a sample webhook to a relay.
    SendTest(client::SendTest),
    /// Inspect, replay or purge dead letters on a running relay.
    #[command(subcommand)]
    DeadLetters(client::DeadLetters),
    /// PostgreSQL backend: create or upgrade the schema, then exit.
    Migrate,
    /// Show, offline, what each destination would get from one payload
    /// after its events, filter and transform.
    Preview(preview::Preview),
    /// Queue depth and counts from a running relay.
    Stats {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => b.init(),
        LogFormat::Json => b.json().flatten_event(true).init(),
    }
}

fn load(path: &std::path::Path) -> anyhow::Result<Config> {
    Config::load(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

pub fn main(args: Args) -> anyhow::Result<ExitCode> {
    let rt = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")
    };
    match args.command {
        Command::Check => check::run(&args.config),
        Command::Migrate => migrate(&load(&args.config)?),
        Command::Preview(p) => preview::run(&args.config, &p),
        Command::Serve => {
            init_logging(args.log_format);
            let cfg = load(&args.config)?;
            for w in cfg.warnings() {
                tracing::warn!("{w}");
            }
            rt()?.block_on(serve(cfg))
        }
        Command::SendTest(t) => rt()?.block_on(client::send_test(t)),
        Command::DeadLetters(cmd) => {
            let base = client::admin_base(args.admin.as_deref(), &args.config)?;
            rt()?.block_on(client::dead_letters(&base, cmd))
        }
        Command::Stats { json } => {
            let base = client::admin_base(args.admin.as_deref(), &args.config)?;
            rt()?.block_on(client::stats(&base, json))
        }
    }
}

/// `shoprelay migrate`: what `serve` does first, alone (under the same
/// advisory lock, so it is safe while relays run or start).
fn migrate(cfg: &Config) -> anyhow::Result<ExitCode> {
    use shoprelay::config::{Backend, masked_url};
    let Backend::Postgres(p) = &cfg.storage.backend else {
        anyhow::bail!(
            "[storage] backend is not \"postgres\": the embedded store needs no migration"
        );
    };
    let m = shoprelay::queue::postgres::PgStore::migrate_only(p.url.expose()).map_err(|e| {
        anyhow::anyhow!(
            "cannot migrate PostgreSQL at {}: {e}",
            masked_url(p.url.expose())
        )
    })?;
    if m.from == m.to {
        println!("schema at version {}: up to date", m.to);
    } else {
        println!("schema migrated from version {} to {}", m.from, m.to);
    }
    Ok(ExitCode::SUCCESS)
}

async fn serve(cfg: Config) -> anyhow::Result<ExitCode> {
    let bind = |addr| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))
    };
    let listeners = shoprelay::Listeners {
        ingest: bind(cfg.server.listen).await?,
        admin: bind(cfg.server.admin_listen).await?,
    };
    // The bound addresses, not the configured ones: port 0 picks a free port.
    let (ingest, admin) = (
        listeners.ingest.local_addr()?,
        listeners.admin.local_addr()?,
    );
    tracing::info!(%ingest, %admin, data_dir = %cfg.server.data_dir.display(), "listening");
    shoprelay::run(cfg, listeners, shoprelay::shutdown::signal()).await?;
    Ok(ExitCode::SUCCESS)
}
