//! The PostgreSQL backend: several relays share one durable queue.
//!
//! ```text
//!  accepts ──► group commit: one statement, one transaction per batch (dedup
//!              keys with ON CONFLICT DO NOTHING, webhooks, deliveries), COMMIT
//!              with synchronous_commit on ──► 200s ──► NOTIFY (at most every
//!              10 ms): other relays' lanes wake
//!                  │
//!  lanes ──► claim: UPDATE … FROM (SELECT … FOR UPDATE SKIP LOCKED) over the
//!            lane's ready deliveries: lease owner + token + end (ready_ms)
//!        ──► outcome: only where owner and token still match (a late one
//!            changes nothing); completions deleted per lane in batches
//! ```
//!
//! The `Store` trait is synchronous (its callers sit on blocking threads: the
//! committer, and `spawn_blocking` in delivery and admin). Each call runs as
//! a task on the store's own small runtime and the caller waits for its
//! answer on a channel, which works from any thread, even an async one.
//!
//! | file | concern |
//! |---|---|
//! | `schema.rs` | migrations, embedded, under an advisory lock |
//! | `accept.rs` | accepts: dedup keys, webhooks, deliveries in one statement |
//! | `claims.rs` | claims with `SKIP LOCKED`, leases, outcomes |
//! | `dead.rs` | dead letters: list, replay, purge |
//! | `identity.rs` | the identity map, one table |
//! | `retention.rs` | lanes, stats, dedup expiry, deleting webhooks nothing needs |
//! | `listen.rs` | LISTEN/NOTIFY wake-ups, the reachability probe |
//! | `tls.rs` | TLS to the database: `sslmode`, `sslrootcert` |
//! | `store.rs` | `Store`: which of the above does each primitive |

mod accept;
mod claims;
mod dead;
mod identity;
mod listen;
mod retention;
pub mod schema;
mod store;
#[cfg(test)]
mod tests;
pub mod tls;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};

use crate::queue::StoreError;

/// The longest one store call may take; past it the caller gets
/// `Stalled` (ingest answers 503, a lane retries).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Connecting, when the URL does not say (`connect_timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Waiting for a free pooled connection.
const POOL_WAIT: Duration = Duration::from_secs(10);

/// The PostgreSQL store.
pub struct PgStore {
    /// The store's own runtime: every query runs on it. `None` only while
    /// being dropped.
    rt: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    pool: Pool,
    /// For the LISTEN connection, which is not pooled.
    pg: tokio_postgres::Config,
    tls: tls::MakeRustlsConnect,
    /// Who holds the leases this relay takes: stable across restarts (host
    /// name and data dir), so a restarted relay takes back what it held.
    owner: Arc<str>,
    /// This process, so that it can skip its own notifications.
    instance: u64,
    /// Set by the probe: false while the database does not answer.
    reachable: Arc<AtomicBool>,
    /// When retention last ran (it runs from `flush`, at most every
    /// `retention::EVERY`).
    last_sweep: std::sync::Mutex<Option<std::time::Instant>>,
    /// When the lane counts were last folded (also from `flush`, at most
    /// every `retention::FOLD_EVERY`).
    last_fold: std::sync::Mutex<Option<std::time::Instant>>,
    /// Accepts' notifications to other relays, gathered (`accept.rs`).
    notices: Arc<accept::Notices>,
}

impl PgStore {
    /// Connects, migrates the schema, and takes back the leases `owner` held
    /// before a restart. `url` is a `postgres://` URL.
    pub fn open(url: &str, pool_size: usize, owner: &str) -> Result<PgStore, StoreError> {
        let (mut pg, tls) = connect_config(url)?;
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(CONNECT_TIMEOUT);
        }
        pg.keepalives_idle(Duration::from_secs(30));
        // The 200 goes out after COMMIT: the commit must be on disk, whatever
        // the server's default (appended, so it wins over the URL's options).
        let options = format!(
            "{} -c synchronous_commit=on",
            pg.get_options().unwrap_or("")
        );
        pg.options(options.trim());
        if pg.get_application_name().is_none() {
            pg.application_name("shoprelay");
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("shoprelay-pg")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Backend(format!("starting the database runtime: {e}")))?;
        let handle = rt.handle().clone();
        let manager = Manager::from_config(
            pg.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = {
            // The pool's timeouts need the runtime they run on.
            let _entered = handle.enter();
            Pool::builder(manager)
                .max_size(pool_size)
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .wait_timeout(Some(POOL_WAIT))
                .create_timeout(Some(
                    pg.get_connect_timeout().copied().unwrap_or(CONNECT_TIMEOUT),
                ))
                .recycle_timeout(Some(CONNECT_TIMEOUT))
                .build()
                .map_err(|e| StoreError::Backend(format!("building the connection pool: {e}")))?
        };
        let store = PgStore {
            rt: Some(rt),
            handle,
            pool,
            pg,
            tls,
            owner: owner.into(),
            instance: rand::random(),
            reachable: Arc::new(AtomicBool::new(true)),
            last_sweep: Default::default(),
            last_fold: Default::default(),
            notices: Default::default(),
        };
        store.call(|pool| async move {
            let mut client = pool.get().await.map_err(pool_err)?;
            schema::migrate(&mut client).await?;
            Ok(())
        })?;
        store.release_own_leases()?;
        listen::start_probe(&store);
        Ok(store)
    }

    /// Only creates or upgrades the schema (`shoprelay migrate`).
    pub fn migrate_only(url: &str) -> Result<schema::Migrated, StoreError> {
        let (mut pg, tls) = connect_config(url)?;
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(CONNECT_TIMEOUT);
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StoreError::Backend(format!("starting the database runtime: {e}")))?;
        rt.block_on(async move {
            let (mut client, conn) = pg.connect(tls).await.map_err(pg_err)?;
            let conn = tokio::spawn(conn);
            let out = schema::migrate(&mut client).await;
            drop(client);
            let _ = conn.await;
            out
        })
    }

    /// Runs `f` with the pool on the store's runtime and waits for it, at
    /// most [`CALL_TIMEOUT`].
    fn call<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Pool) -> Fut,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let fut = f(self.pool.clone());
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let out = match tokio::time::timeout(CALL_TIMEOUT, fut).await {
                Ok(out) => out,
                Err(_) => Err(StoreError::Stalled(CALL_TIMEOUT)),
            };
            let _ = tx.send(out);
        });
        rx.recv().unwrap_or(Err(StoreError::Closed))
    }

    /// What this relay held before it restarted is due again at once (a
    /// lease does not outlive the process that took it).
    fn release_own_leases(&self) -> Result<(), StoreError> {
        let owner = self.owner.clone();
        self.call(|pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            c.execute(
                "UPDATE shoprelay_deliveries
                    SET ready_ms = due_ms, lease_owner = NULL, lease_token = NULL
                  WHERE lease_owner = $1 AND dead_at_ms IS NULL",
                &[&&*owner],
            )
            .await
            .map_err(pg_err)?;
            Ok(())
        })
    }

    /// False while the database does not answer the probe.
    pub fn is_reachable(&self) -> bool {
        self.reachable.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which is refused inside async code
        // (where the relay drops its store): let its threads go instead.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// The URL as tokio-postgres's config (`ssl_mode` from `sslmode`) and the
/// TLS connector its `sslmode` and `sslrootcert` ask for.
fn connect_config(
    url: &str,
) -> Result<(tokio_postgres::Config, tls::MakeRustlsConnect), StoreError> {
    let target = crate::config::pg_url::parse(url).map_err(StoreError::Backend)?;
    let connector = target.connector().map_err(StoreError::Backend)?;
    Ok((target.pg, connector))
}

/// The lease owner of a relay: its host name and data dir, so a restarted
/// relay recognises its own leases and two relays never share one.
pub fn default_owner(data_dir: &std::path::Path) -> String {
    let host = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    let dir = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    format!("{host}:{}", dir.display())
}

/// A PostgreSQL error on one line (a server error may carry DETAIL and HINT lines).
fn one_line(e: &dyn std::fmt::Display) -> String {
    e.to_string()
        .split('\n')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Rows one retention statement deletes at most, so that no expiry or sweep
/// holds its locks for long.
const DELETE_BATCH: i64 = 5000;

impl PgStore {
    /// Deletes, a batch per statement, the rows `sql` selects as older than
    /// `before_ms` (`$1`, `LIMIT $2`): expired dedup keys, identities.
    fn delete_before(&self, sql: &'static str, before_ms: u64) -> Result<usize, StoreError> {
        self.call(move |pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            let n = delete_in_batches(&c, sql, &[&to_i64(before_ms), &DELETE_BATCH]).await?;
            Ok(usize::try_from(n).unwrap_or(usize::MAX))
        })
    }
}

/// Runs `sql`, a `DELETE` of at most [`DELETE_BATCH`] rows (passed among
/// `params`), until a run deletes fewer; returns how many were deleted.
async fn delete_in_batches(
    c: &tokio_postgres::Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<u64, StoreError> {
    let mut total = 0;
    loop {
        let n = c.execute(sql, params).await.map_err(pg_err)?;
        total += n;
        if n < DELETE_BATCH as u64 {
            return Ok(total);
        }
    }
}

fn pg_err(e: tokio_postgres::Error) -> StoreError {
    let detail = match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => {
            // tokio-postgres shows the cause (refused, timed out, …) only as the source.
            let mut s = one_line(&e);
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                s.push_str(": ");
                s.push_str(&one_line(c));
                cause = c.source();
            }
            s
        }
    };
    StoreError::Backend(format!("database: {detail}"))
}

fn pool_err(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => pg_err(e),
        other => StoreError::Backend(format!("database: {}", one_line(&other))),
    }
}

/// Row values are i64 in the database, u64 in the store's types.
fn to_u64(v: i64) -> u64 {
    v.max(0) as u64
}

fn to_i64(v: u64) -> i64 {
    v.min(i64::MAX as u64) as i64
}
