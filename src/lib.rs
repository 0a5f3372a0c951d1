//! shoprelay: a self-hosted webhook relay.
//!
//! Shopify and convertedin webhooks come in, are verified and stored durably
//! before the 200, and go out as Segment-spec calls to up to five
//! destinations per source, retried for hours, kept as dead letters after.
//!
//! # Layers
//!
//! The table is the import layering, not the order data flows in: a module
//! uses only modules in rows above it, never one below. (A webhook goes
//! sources → queue → delivery, and delivery calls mapping when it sends;
//! mapping sits above the queue because the queue stores what mapping
//! learns, through mapping's types.)
//!
//! | layer | module | what it does |
//! |---|---|---|
//! | 0 | [`timefmt`], [`metrics`], [`shutdown`] | time as text, counters, the stop signal: used by any layer |
//! | 1 | [`config`] | relay.toml → validated `Config`, including the kinds of source ([`config::SourceKind`]) and which lanes each source feeds and how each runs ([`config::Routing`]) |
//! | 2 | [`sources`] | headers + raw bytes → verified [`sources::Webhook`] |
//! | 3 | [`event`], [`mapping`] | webhook → Segment-spec events (pure; the identity map through a trait) |
//! | 4 | [`queue`] | `Store` trait, embedded backend (log + sled index), PostgreSQL backend, group commit |
//! | 5 | [`delivery`] | lanes, formats, signing, retry schedule |
//! | 6 | [`http`] | ingest and admin listeners |
//!
//! [`run`] wires them together; `main.rs` only parses the command line.

pub mod config;
pub mod delivery;
pub mod event;
pub mod http;
pub mod mapping;
pub mod metrics;
pub mod queue;
pub mod shutdown;
pub mod sources;
pub mod timefmt;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use warp::Filter;

use config::Config;
use http::admin::{Admin, Wake};
use http::body::BodyLimits;
use http::budget::BodyBudget;
use http::conn::Timeouts;
use http::ingest::Ingest;
use http::listener::{ADMIN_MAX_CONNECTIONS, Bounds, Open};
use metrics::Metrics;
use queue::Store;
use queue::commit::Committer;
use queue::embedded::EmbeddedStore;

/// The two bound listeners (bound by the caller, so tests can use port 0).
pub struct Listeners {
    /// Public: webhook ingest.
    pub ingest: tokio::net::TcpListener,
    /// Private: metrics, health, dead letters.
    pub admin: tokio::net::TcpListener,
}

/// The relay could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot open the database in {dir}: {error}")]
    Storage {
        dir: String,
        error: queue::StoreError,
    },
    #[error("cannot use PostgreSQL at {url}: {error}")]
    Database {
        /// The URL, password masked.
        url: String,
        error: queue::StoreError,
    },
    #[error(transparent)]
    Destination(#[from] delivery::destination::BuildError),
}

/// Runs the relay until `shutdown` resolves, then stops accepting, lets
/// in-flight requests finish, writes what is queued, flushes and returns.
pub async fn run(
    cfg: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let (store, postgres) = open_store(&cfg).await?;
    let metrics = Arc::new(Metrics::default());
    // Which lanes each source feeds and how each lane runs, for ingest and delivery.
    let routing = config::Routing::new(&cfg);
    let clock: fn() -> u64 = timefmt::now_ms;
    let (trigger, stop) = shutdown::channel();
    tokio::spawn(async move {
        shutdown.await;
        trigger.fire();
    });

    let engine = delivery::lane::Engine::start(
        &cfg,
        &routing,
        store.clone(),
        metrics.clone(),
        clock,
        stop.clone(),
    )?;
    let wake: Wake = engine.waker();
    if let Some(pg) = &postgres {
        // Another relay's accepts and replays wake this relay's lanes.
        pg.listen(wake.clone());
    }

    let on_commit = {
        let (wake, metrics) = (wake.clone(), metrics.clone());
        Box::new(move |lanes: &[&str], n: usize| {
            metrics.observe(crate::metrics::names::COMMIT_BATCH_SIZE, &[], n as f64);
            for lane in lanes {
                wake(lane);
            }
        })
    };
    let (committer, commit_thread) =
        Committer::start(store.clone(), clock, cfg.server.min_free_bytes, on_commit);

    let limits = cfg.server.limits;
    let max_connections = limits
        .max_connections
        .unwrap_or_else(http::listener::default_max_connections);
    warn_if_short_of_descriptors(max_connections);
    let budget = BodyBudget::new(limits.unverified_body_budget);
    let open_ingest = Arc::new(Open::default());
    let ingest = Arc::new(Ingest {
        routes: Ingest::routes(&cfg, &routing),
        committer: committer.clone(),
        bodies: BodyLimits {
            max_bytes: cfg.server.max_body_bytes,
            timeout: limits.body_read_timeout,
            budget: budget.clone(),
        },
        named_topics: cfg.mapping.events.keys().cloned().collect(),
        metrics: metrics.clone(),
        refusals: Default::default(),
        clock,
    });
    let admin = Arc::new(Admin {
        store: store.clone(),
        metrics: metrics.clone(),
        committer: committer.clone(),
        token: cfg.server.admin_token.clone(),
        wake: wake.clone(),
        clock,
        ingest_connections: open_ingest.clone(),
        body_budget: budget,
    });
    let public = http::ingest::Public {
        ingest,
        rest: warp::service(http::health::route(committer.clone()).recover(http::not_found)),
    };
    let private = http::admin::routes(admin).recover(http::not_found);
    let timeouts = Timeouts {
        header_read: limits.header_read_timeout,
        idle: limits.idle_timeout,
    };
    let serve_public = http::listener::serve(
        listeners.ingest,
        public,
        Bounds {
            timeouts,
            max_connections,
        },
        open_ingest,
        stop.clone(),
    );
    let serve_admin = http::listener::serve(
        listeners.admin,
        warp::service(private),
        Bounds {
            timeouts,
            max_connections: ADMIN_MAX_CONNECTIONS,
        },
        Arc::new(Open::default()),
        stop.clone(),
    );
    let expiry = tokio::spawn(expire_dedup(
        store.clone(),
        cfg.server.dedup_window,
        cfg.mapping.identity_retention,
        stop.clone(),
    ));
    let checkpoints = tokio::spawn(checkpoints(store.clone(), stop.clone()));

    tracing::info!(
        sources = cfg.sources.len(),
        destinations = cfg.destinations.len(),
        max_connections,
        "relay running"
    );
    tokio::join!(serve_public, serve_admin, engine.join());
    tracing::info!("listeners closed, lanes stopped; writing what is queued");
    committer.close();
    drop(committer);
    let _ = tokio::task::spawn_blocking(move || commit_thread.join()).await;
    let _ = expiry.await;
    let _ = checkpoints.await;
    let s = store.clone();
    match tokio::task::spawn_blocking(move || s.flush()).await {
        Ok(Ok(())) => tracing::info!("checkpoint written; bye"),
        Ok(Err(e)) => tracing::error!(error = %e, "final flush failed"),
        Err(_) => tracing::error!("final flush panicked"),
    }
    Ok(())
}

/// Opens the configured backend (off the async workers: opening may wait
/// for the data dir's lock, or for the database). The PostgreSQL store is
/// also returned as itself, for its notifications.
async fn open_store(
    cfg: &Config,
) -> Result<(Arc<dyn Store>, Option<Arc<queue::postgres::PgStore>>), RunError> {
    let panicked = |e: tokio::task::JoinError| {
        queue::StoreError::Backend(format!("opening storage panicked: {e}"))
    };
    match &cfg.storage.backend {
        config::Backend::Embedded => {
            let dir = cfg.server.data_dir.clone();
            let opening = dir.clone();
            let embedded = tokio::task::spawn_blocking(move || EmbeddedStore::open(&opening))
                .await
                .map_err(panicked)
                .and_then(|r| r)
                .map_err(|error| RunError::Storage {
                    dir: dir.display().to_string(),
                    error,
                })?;
            embedded.keep_free(cfg.server.min_free_bytes);
            Ok((Arc::new(embedded), None))
        }
        config::Backend::Postgres(p) => {
            let (url, size) = (p.url.clone(), p.pool_size);
            let owner = queue::postgres::default_owner(&cfg.server.data_dir);
            let pg = tokio::task::spawn_blocking(move || {
                queue::postgres::PgStore::open(url.expose(), size, &owner)
            })
            .await
            .map_err(panicked)
            .and_then(|r| r)
            .map_err(|error| RunError::Database {
                url: config::masked_url(p.url.expose()),
                error,
            })?;
            let pg = Arc::new(pg);
            Ok((pg.clone(), Some(pg)))
        }
    }
}

/// A configured `max_connections` the open-file limit cannot hold: past the
/// limit, accepting fails for both listeners (measured: 20,000 idle
/// connections kept ingest and the admin `/healthz` from answering for 45 s).
fn warn_if_short_of_descriptors(max_connections: usize) {
    let Some(limit) = http::listener::nofile_limit() else {
        return;
    };
    // Room for the admin listener, storage files and destination connections.
    let needed = (max_connections + ADMIN_MAX_CONNECTIONS) as u64 + 256;
    if needed > limit {
        tracing::warn!(
            max_connections,
            open_file_limit = limit,
            "server.max_connections and the admin listener could use more descriptors than the open-file limit (ulimit -n) leaves: raise the limit or lower max_connections"
        );
    }
}

/// Checkpoints: the index made durable, lane cursors recorded, log segments
/// every lane has passed deleted. After a crash, what lanes delivered since
/// the last one is sent again (same messageId), so this bounds that window.
async fn checkpoints(store: Arc<dyn Store>, mut stop: shutdown::Shutdown) {
    loop {
        tokio::select! {
            _ = stop.recv() => return,
            _ = tokio::time::sleep(CHECKPOINT_EVERY) => {}
        }
        let s = store.clone();
        match tokio::task::spawn_blocking(move || s.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "checkpoint failed; will retry"),
            Err(_) => tracing::error!("checkpoint panicked"),
        }
    }
}

/// How often a checkpoint is written: what lanes delivered in this long
/// before a crash is sent again (crash campaign, 20 rounds: 15,467 repeats at
/// 250 ms, 38,642 at 1 s, for the same ingest, which did not change).
pub const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// Forgets dedup ids older than the window and identity-map entries not seen
/// within their retention, hourly.
async fn expire_dedup(
    store: Arc<dyn Store>,
    window: Duration,
    retention: Duration,
    mut stop: shutdown::Shutdown,
) {
    loop {
        let s = store.clone();
        let now = timefmt::now_ms();
        let before = now.saturating_sub(window.as_millis() as u64);
        match tokio::task::spawn_blocking(move || s.expire_dedup(before)).await {
            Ok(Ok(n)) if n > 0 => tracing::info!(count = n, "expired dedup ids"),
            Ok(Err(e)) => tracing::warn!(error = %e, "dedup expiry failed; will retry"),
            _ => {}
        }
        let s = store.clone();
        let before = now.saturating_sub(retention.as_millis() as u64);
        match tokio::task::spawn_blocking(move || s.identity_expire(before)).await {
            Ok(Ok(n)) if n > 0 => tracing::info!(count = n, "expired identity-map entries"),
            Ok(Err(e)) => tracing::warn!(error = %e, "identity-map expiry failed; will retry"),
            _ => {}
        }
        tokio::select! {
            _ = stop.recv() => return,
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
        }
    }
}
