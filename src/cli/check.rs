//! `shoprelay check`: every problem with its key, or the routes. Never a secret.

use std::path::Path;
use std::process::ExitCode;

use shoprelay::config::{Config, ConfigError, DeliveryMode, format_duration};

pub fn run(path: &Path) -> anyhow::Result<ExitCode> {
    let cfg = match Config::load(path) {
        Ok(cfg) => cfg,
        Err(ConfigError::Invalid(problems)) => {
            eprintln!("{}: {} problem(s)", path.display(), problems.len());
            for p in problems {
                eprintln!("  {p}");
            }
            return Ok(ExitCode::FAILURE);
        }
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    print!("{}", describe(&cfg));
    for w in cfg.warnings() {
        eprintln!("warning: {w}");
    }
    Ok(ExitCode::SUCCESS)
}

/// A URL for display: no password, no query (either may carry a credential).
fn display_url(u: &url::Url) -> String {
    let mut u = u.clone();
    if u.password().is_some() {
        let _ = u.set_password(Some("***"));
    }
    if u.query().is_some() {
        u.set_query(Some("…"));
    }
    u.to_string()
}

/// The route table `check` prints.
pub fn describe(cfg: &Config) -> String {
    let s = &cfg.server;
    let mut out = format!(
        "ok: {} source(s), {} destination(s)\n\
         ingest  http://{}  (max body {} bytes)\n\
         admin   http://{}  (token: {})\n\
         storage {}\n\
         retry   up to {} after the first attempt, {} doubling to {}\n\
         mapping userId = {}, identity map kept {} after last seen\n\
         limits  head {}, body {}, idle {}, {} connections, {} MiB for unverified bodies\n",
        cfg.sources.len(),
        cfg.destinations.len(),
        s.listen,
        s.max_body_bytes,
        s.admin_listen,
        if s.admin_token.is_some() {
            "set"
        } else {
            "none"
        },
        cfg.storage.describe(&s.data_dir),
        format_duration(cfg.retry.max_age),
        format_duration(cfg.retry.initial_interval),
        format_duration(cfg.retry.max_interval),
        match cfg.mapping.user_id {
            shoprelay::config::UserIdRule::Email => "email, else customer id",
            shoprelay::config::UserIdRule::CustomerId => "customer id",
        },
        format_duration(cfg.mapping.identity_retention),
        format_duration(s.limits.header_read_timeout),
        format_duration(s.limits.body_read_timeout),
        format_duration(s.limits.idle_timeout),
        s.limits
            .max_connections
            .unwrap_or_else(shoprelay::http::listener::default_max_connections),
        s.limits.unverified_body_budget >> 20,
    );
    for (name, src) in &cfg.sources {
        let path = match src.kind {
            shoprelay::sources::SourceKind::Shopify => format!("/webhooks/shopify/{name}"),
            shoprelay::sources::SourceKind::Convertedin => {
                format!("/webhooks/convertedin/{name}/{{resource}}/{{action}}")
            }
        };
        out.push_str(&format!(
            "\nsource {name} ({}, {} secret(s), {})\n  POST http://{}{path}\n",
            src.kind.as_str(),
            src.secrets.len(),
            src.delivery.as_str(),
            s.listen,
        ));
        if src.destinations.is_empty() {
            out.push_str("  → (no destinations: webhooks are stored and dropped)\n");
        }
        for (i, d) in src.destinations.iter().enumerate() {
            let Some(dest) = cfg.destinations.get(d) else {
                continue;
            };
            let order = if src.delivery == DeliveryMode::FirstSuccess {
                format!("{}. ", i + 1)
            } else {
                String::new()
            };
            let auth = match (&dest.shared_secret, &dest.write_key) {
                (_, Some(_)) => "write key set",
                (Some(_), _) => "signed",
                _ => "unsigned",
            };
            let mut filter = dest
                .events
                .as_ref()
                .map(|e| format!(", only {}", e.join(", ")))
                .unwrap_or_default();
            // Whether rules are set, not their text: `${VAR}` may be in it.
            for (set, what) in [
                (dest.filter.is_some(), "jq filter"),
                (dest.transform.is_some(), "jq transform"),
            ] {
                if set {
                    filter.push_str(", ");
                    filter.push_str(what);
                }
            }
            if let Some(rate) = dest.rate_limit {
                filter.push_str(&format!(", at most {rate}"));
            }
            out.push_str(&format!(
                "  → {order}{d}  {}  {}  ({auth}, timeout {}{filter})\n",
                dest.format.as_str(),
                display_url(&dest.url),
                format_duration(dest.timeout),
            ));
        }
    }
    out
}
