//! `[storage]`: which backend holds the queue. The embedded store (the
//! default) needs nothing; PostgreSQL needs a URL, which usually carries a
//! password, so it is a [`Secret`] and only [`masked_url`] is ever shown.

use std::time::Duration;

use super::build::{check, optional, section};
use super::reader::Reader;
use super::{Secret, parse_duration};

/// `[storage]`.
#[derive(Clone, Debug, Default)]
pub struct StorageConfig {
    /// Where the queue lives.
    pub backend: Backend,
    /// How long a claimed delivery is held before a claim (another relay's,
    /// or this one's after a restart) may take it again; `None`: derived from
    /// the lane's destination timeout (10 × timeout, at least 60 s).
    pub lease: Option<Duration>,
}

/// The queue's backend.
#[derive(Clone, Debug, Default)]
pub enum Backend {
    /// The write-ahead log and sled index in `server.data_dir`.
    #[default]
    Embedded,
    /// A PostgreSQL database that several relays may share.
    Postgres(PostgresConfig),
}

/// `backend = "postgres"`.
#[derive(Clone, Debug)]
pub struct PostgresConfig {
    /// `postgres://user:password@host:5432/db?…`: a secret, for the password.
    pub url: Secret,
    /// Connections each relay keeps open at most.
    pub pool_size: usize,
}

/// Connections per relay when `pool_size` is not set: the committer, one
/// per busy lane's claims and outcomes, admin reads.
pub const DEFAULT_POOL_SIZE: usize = 16;

impl StorageConfig {
    /// The least lease derived from a timeout.
    pub const MIN_DERIVED_LEASE: Duration = Duration::from_secs(60);
    /// A derived lease is this many times the destination's timeout.
    pub const LEASE_TIMEOUTS: u32 = 10;

    /// The lease of a lane whose destination times out after `timeout`:
    /// `lease` when set, else [`Self::LEASE_TIMEOUTS`] × `timeout`, at least
    /// [`Self::MIN_DERIVED_LEASE`].
    pub fn lease_for(&self, timeout: Duration) -> Duration {
        self.lease
            .unwrap_or((timeout * Self::LEASE_TIMEOUTS).max(Self::MIN_DERIVED_LEASE))
    }

    /// One line for `check` and logs: the backend, with no password.
    pub fn describe(&self, data_dir: &std::path::Path) -> String {
        match &self.backend {
            Backend::Embedded => format!("embedded in {}", data_dir.display()),
            Backend::Postgres(p) => format!(
                "postgres {} (pool {})",
                masked_url(p.url.expose()),
                p.pool_size
            ),
        }
    }
}

/// A PostgreSQL URL for display: the password and any `password=` parameter
/// replaced by `***`.
pub fn masked_url(raw: &str) -> String {
    let Ok(mut u) = url::Url::parse(raw) else {
        return "(not a URL)".into();
    };
    if u.password().is_some() {
        let _ = u.set_password(Some("***"));
    }
    if u.query().is_some() {
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| {
                let v = if k.eq_ignore_ascii_case("password") {
                    "***".to_string()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    u.to_string()
}

/// Checks a PostgreSQL URL; the reason never repeats the value.
pub fn check_postgres_url(raw: &str) -> Result<(), String> {
    let example = "(like postgres://user:password@host:5432/db)";
    let u = url::Url::parse(raw).map_err(|e| format!("not a URL: {e} {example}"))?;
    if !matches!(u.scheme(), "postgres" | "postgresql") {
        return Err(format!(
            "scheme `{}` is not postgres or postgresql {example}",
            u.scheme()
        ));
    }
    // As the store reads it: sslmode and sslrootcert, then tokio-postgres.
    let target = super::pg_url::parse(raw).map_err(|e| {
        if e.starts_with("not a valid") {
            format!("{e} {example}")
        } else {
            e
        }
    })?;
    // The root file is read now, so `check` finds a missing or empty one.
    if target.verify != super::pg_url::Verify::Nothing {
        target.load_roots()?;
    }
    let cfg = target.pg;
    if cfg.get_hosts().is_empty() {
        return Err(format!("names no host {example}"));
    }
    if cfg.get_dbname().is_none() {
        return Err(format!("names no database {example}"));
    }
    Ok(())
}

pub(super) fn read(root: &Reader<'_>) -> Option<StorageConfig> {
    let r = section(root, "storage");
    let lease = optional(&r, "lease", None, |k| {
        let lease = check(&r, k, r.parsed(k, parse_duration), |d| {
            (*d < Duration::from_secs(1)).then(|| "must be at least 1s".into())
        });
        lease.map(Some)
    });
    let name = optional(&r, "backend", "sled".to_owned(), |k| r.string(k));
    let backend = match name.as_deref() {
        // Unreadable (its problem recorded): the embedded store's rules still apply.
        None | Some("sled" | "embedded") => {
            let postgres_only = ["url", "pool_size"]
                .into_iter()
                .filter(|key| {
                    let set = r.has(key);
                    if set {
                        r.mark_read(key);
                        r.problem(key, "only for backend = \"postgres\"");
                    }
                    set
                })
                .count();
            (name.is_some() && postgres_only == 0).then_some(Backend::Embedded)
        }
        Some("postgres") => {
            let url = r.required_string("url").and_then(|u| {
                check_postgres_url(&u)
                    .map_err(|e| r.problem("url", e))
                    .ok()
                    .map(|()| Secret::new(u))
            });
            let pool_size = optional(&r, "pool_size", DEFAULT_POOL_SIZE, |k| {
                r.integer(k, 1, 1024).map(|n| n as usize)
            });
            Some(Backend::Postgres(PostgresConfig {
                url: url?,
                pool_size: pool_size?,
            }))
        }
        Some(other) => {
            r.problem(
                "backend",
                format!("`{other}` is not \"sled\" or \"postgres\""),
            );
            None
        }
    };
    r.finish();
    Some(StorageConfig {
        backend: backend?,
        lease: lease?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, ConfigError};

    #[test]
    fn a_lease_is_ten_timeouts_at_least_a_minute_unless_set() {
        let derived = StorageConfig::default();
        assert_eq!(
            derived.lease_for(Duration::from_secs(5)),
            Duration::from_secs(60)
        );
        assert_eq!(
            derived.lease_for(Duration::from_secs(10)),
            Duration::from_secs(100)
        );
        let set = StorageConfig {
            lease: Some(Duration::from_secs(7)),
            ..StorageConfig::default()
        };
        assert_eq!(
            set.lease_for(Duration::from_secs(10)),
            Duration::from_secs(7)
        );
    }

    const BASE: &str = "[sources.acme]\nkind = \"shopify\"\nsecrets = [\"s\"]\n";

    fn parse(storage: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, Vec<String>> {
        Config::from_toml_str(&format!("{BASE}[storage]\n{storage}"), env).map_err(|e| match e {
            ConfigError::Invalid(p) => p.iter().map(|p| p.to_string()).collect(),
            other => vec![other.to_string()],
        })
    }

    fn none(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn postgres_url_from_the_environment_shown_without_its_password() {
        let env = |n: &str| {
            (n == "DATABASE_URL").then(|| "postgres://relay:hunter2@db.internal:5433/queue".into())
        };
        let cfg = parse("backend = \"postgres\"\nurl = \"${DATABASE_URL}\"\n", &env).unwrap();
        let Backend::Postgres(p) = &cfg.storage.backend else {
            panic!("{:?}", cfg.storage)
        };
        assert_eq!(p.pool_size, DEFAULT_POOL_SIZE);
        let shown = cfg.storage.describe(std::path::Path::new("./data"));
        assert_eq!(
            shown,
            "postgres postgres://relay:***@db.internal:5433/queue (pool 16)"
        );
        assert!(
            !format!("{cfg:?}").contains("hunter2"),
            "Debug hides it too"
        );
    }

    #[test]
    fn the_default_is_the_embedded_store() {
        let cfg = Config::from_toml_str(BASE, &none).unwrap();
        assert!(matches!(cfg.storage.backend, Backend::Embedded));
        assert_eq!(cfg.storage.lease, None);
        let cfg = parse("backend = \"sled\"\nlease = \"30s\"\n", &none).unwrap();
        assert!(matches!(cfg.storage.backend, Backend::Embedded));
        assert_eq!(cfg.storage.lease, Some(Duration::from_secs(30)));
    }

    #[test]
    fn every_problem_is_named_and_no_password_is_repeated() {
        let cases: &[(&str, &str)] = &[
            ("backend = \"postgres\"\n", "storage.url: is required"),
            (
                "backend = \"postgres\"\nurl = \"mysql://u:hunter2@h/db\"\n",
                "storage.url: scheme `mysql` is not postgres",
            ),
            (
                "backend = \"postgres\"\nurl = \"postgres://u:hunter2@h\"\n",
                "storage.url: names no database",
            ),
            (
                "backend = \"postgres\"\nurl = \"postgres://u:hunter2@h/db?sslmode=sometimes\"\n",
                "storage.url: sslmode must be one of",
            ),
            (
                "backend = \"postgres\"\nurl = \"postgres://u:hunter2@h/db?bogus=1\"\n",
                "storage.url: not a valid PostgreSQL URL",
            ),
            (
                "backend = \"postgres\"\nurl = \"postgres://u:hunter2@h/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem\"\n",
                "storage.url: sslrootcert /nonexistent/ca.pem: ",
            ),
            (
                "backend = \"postgres\"\nurl = \"postgres://h/db\"\npool_size = 0\n",
                "storage.pool_size: 0 is out of range",
            ),
            (
                "backend = \"postgres\"\nurl = \"${DATABASE_URL}\"\n",
                "storage.url: environment variable DATABASE_URL is not set",
            ),
            (
                "url = \"postgres://u:hunter2@h/db\"\n",
                "storage.url: only for backend = \"postgres\"",
            ),
            ("backend = \"mysql\"\n", "storage.backend: `mysql` is not"),
            ("lease = \"10ms\"\n", "storage.lease: must be at least 1s"),
            ("shards = 3\n", "storage.shards: unknown key"),
        ];
        for (text, want) in cases {
            let problems = parse(text, &none).expect_err(text);
            assert!(
                problems.iter().any(|p| p.starts_with(want)),
                "{text}: {problems:?}"
            );
            assert_eq!(problems.len(), 1, "{text}: {problems:?}");
            assert!(
                !problems.iter().any(|p| p.contains("hunter2")),
                "{problems:?}"
            );
        }
    }

    #[test]
    fn masked_urls_hide_passwords_in_parameters_too() {
        assert_eq!(
            masked_url("postgres://u@h/db?password=hunter2&sslmode=require"),
            "postgres://u@h/db?password=***&sslmode=require"
        );
        assert_eq!(masked_url("postgres://h/db"), "postgres://h/db");
        assert_eq!(masked_url("::"), "(not a URL)");
    }
}
