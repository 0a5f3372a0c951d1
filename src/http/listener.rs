//! Serving a listener: the accept loop, the connection cap, and each
//! connection on hyper's HTTP/1.1 server with the clock of [`super::conn`].
//!
//! HTTP/1.1 only, by decision. Shopify and convertedin post HTTP/1.1, and
//! with one request per connection at a time, the connection cap bounds the
//! requests in progress. HTTP/2 with prior knowledge (h2c), which warp's
//! `serve` answers, let 4 connections × 200 streams hold 850 MB of stalled
//! bodies through 4 sockets. A client that tries h2c gets an HTTP/1.1 error.
//!
//! warp 0.4's `serve` has no header timeout, no connection cap and no way to
//! set either, so warp's filter runs here as a service (`warp::service`).
//!
//! The cap: at most `max` connections are open. When one more arrives, the
//! connection that has waited longest for its client (idle, in a request
//! head, or in a body; at least [`EVICT_AFTER`]) is closed to make room;
//! until one qualifies, the newcomer waits, and the ones behind it wait in
//! the kernel's accept queue. Descriptors used: at most `max` + 1.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::conn::{ConnWatch, Guarded, Phase, Timeouts, Tracked};
use super::refusals::RefusalLog;
use crate::shutdown::Shutdown;

/// A connection waiting this long for its client may be closed for a new one.
pub const EVICT_AFTER: Duration = Duration::from_secs(1);
/// hyper's read buffer per connection, which bounds a request head: real
/// webhook heads are 1–2 KB. (hyper's default is 400 KB a connection.)
pub const MAX_HEAD_BYTES: usize = 16 << 10;
/// The admin listener's own cap: it never competes with ingest for descriptors.
pub const ADMIN_MAX_CONNECTIONS: usize = 64;

/// Bounds of one listener.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    pub timeouts: Timeouts,
    pub max_connections: usize,
}

/// The default cap: min(10,000, RLIMIT_NOFILE / 2), so the admin listener,
/// the storage files and the destinations' connections keep descriptors.
pub fn default_max_connections() -> usize {
    let soft = nofile_limit().unwrap_or(u64::MAX);
    (soft / 2).clamp(1, 10_000) as usize
}

/// The soft limit on open files; `None` when unlimited.
pub fn nofile_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

/// Open connections of one listener, for the cap and the gauge.
#[derive(Default)]
pub struct Open {
    conns: Mutex<Conns>,
}

#[derive(Default)]
struct Conns {
    next_id: u64,
    by_id: BTreeMap<u64, Arc<ConnWatch>>,
}

impl Open {
    /// How many are open now (`shoprelay_ingest_connections`).
    pub fn count(&self) -> usize {
        self.lock().by_id.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Conns> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn add(&self, w: Arc<ConnWatch>) -> u64 {
        let mut c = self.lock();
        let id = c.next_id;
        c.next_id += 1;
        c.by_id.insert(id, w);
        id
    }

    fn remove(&self, id: u64) {
        self.lock().by_id.remove(&id);
    }

    /// Closes the connection that has waited longest for its client, if it
    /// has waited [`EVICT_AFTER`]; otherwise says when to look again.
    fn evict_one(&self, now: Instant) -> Instant {
        let c = self.lock();
        let oldest = c
            .by_id
            .values()
            .filter(|w| !w.is_killed())
            .filter_map(|w| match w.phase() {
                (Phase::Busy, _) => None,
                (_, since) => Some((since, w)),
            })
            .min_by_key(|(since, _)| *since);
        match oldest {
            Some((since, w)) if since + EVICT_AFTER <= now => {
                w.kill();
                now + EVICT_AFTER
            }
            Some((since, _)) => since + EVICT_AFTER,
            None => now + EVICT_AFTER,
        }
    }
}

/// Serves `service` (warp's filter as a service) on `listener` until `stop`,
/// then lets every open connection finish its request and returns.
pub async fn serve<S>(
    listener: TcpListener,
    service: S,
    bounds: Bounds,
    open: Arc<Open>,
    mut stop: Shutdown,
) where
    S: tower_service::Service<
            http::Request<hyper::body::Incoming>,
            Response = warp::reply::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let max = bounds.max_connections.max(1);
    let slots = Arc::new(Semaphore::new(max));
    let log = RefusalLog::default();
    let mut http = hyper::server::conn::http1::Builder::new();
    // No hyper timer: the connection's clock (conn.rs) times heads and idling.
    http.keep_alive(true)
        .header_read_timeout(None)
        .max_buf_size(MAX_HEAD_BYTES);
    loop {
        let stream = tokio::select! {
            _ = stop.recv() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    if !is_connection_error(&e) {
                        if let Some(n) = log.admit("accept_error", Instant::now()) {
                            tracing::warn!(error = %e, suppressed = n, "accepting a connection failed");
                        }
                        // Out of descriptors, say: accepting again at once would spin.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    continue;
                }
            },
        };
        let Some(permit) = slot(&slots, &open, &mut stop).await else {
            break;
        };
        let _ = stream.set_nodelay(true);
        let watch = ConnWatch::new(bounds.timeouts);
        let id = open.add(watch.clone());
        let io = hyper_util::rt::TokioIo::new(Guarded::new(stream, watch.clone()));
        let svc = Tracked {
            inner: service.clone(),
            watch: watch.clone(),
        };
        let conn = http.serve_connection(io, svc);
        let (open, stop) = (open.clone(), stop.clone());
        tokio::spawn(drive(conn, watch, permit, move || open.remove(id), stop));
    }
    drop(listener);
    // Every connection holds a slot until it is done: wait for all of them.
    let _ = slots.acquire_many(max as u32).await;
}

/// A slot for one more connection: free, or made by closing the connection
/// that has waited longest for its client. `None` on shutdown.
async fn slot(
    slots: &Arc<Semaphore>,
    open: &Open,
    stop: &mut Shutdown,
) -> Option<OwnedSemaphorePermit> {
    loop {
        if let Ok(p) = slots.clone().try_acquire_owned() {
            return Some(p);
        }
        let look_again = open.evict_one(Instant::now());
        tokio::select! {
            p = slots.clone().acquire_owned() => return p.ok(),
            _ = tokio::time::sleep_until(look_again) => {}
            _ = stop.recv() => return None,
        }
    }
}

async fn drive<C>(
    conn: hyper::server::conn::http1::Connection<hyper_util::rt::TokioIo<Guarded>, C>,
    watch: Arc<ConnWatch>,
    permit: OwnedSemaphorePermit,
    done: impl FnOnce(),
    mut stop: Shutdown,
) where
    C: hyper::service::HttpService<hyper::body::Incoming>,
    C::ResBody: 'static,
    <C::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    tokio::pin!(conn);
    let ended = tokio::select! {
        r = conn.as_mut() => Some(r),
        _ = watch.killed() => None,
        _ = stop.recv() => {
            // Finish the request under way (its body timeout bounds it), then close.
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                r = conn.as_mut() => Some(r),
                _ = watch.killed() => None,
            }
        }
    };
    // Timeouts, resets and malformed requests are the client's business:
    // logged at debug only, so they cannot flood the log.
    if let Some(Err(e)) = ended {
        tracing::debug!(error = %e, "connection ended");
    }
    done();
    drop(permit);
}

fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch(open: &Open, phase: Phase) -> Arc<ConnWatch> {
        let w = ConnWatch::new(Timeouts {
            header_read: Duration::from_secs(10),
            idle: Duration::from_secs(75),
        });
        w.set(phase);
        open.add(w.clone());
        w
    }

    #[test]
    fn the_connection_waiting_longest_for_its_client_goes_first() {
        let open = Open::default();
        let busy = watch(&open, Phase::Busy);
        let head = watch(&open, Phase::Head);
        let idle = watch(&open, Phase::Idle);
        let body = watch(&open, Phase::Body);
        let started = head.phase().1;

        // Nobody has waited a second yet: look again when the oldest has.
        assert_eq!(open.evict_one(started), started + EVICT_AFTER);
        assert!(!head.is_killed());

        let later = started + Duration::from_secs(5);
        for expected in [&head, &idle, &body] {
            open.evict_one(later);
            assert!(expected.is_killed());
        }
        open.evict_one(later);
        assert!(!busy.is_killed(), "a connection the relay works on stays");
        assert_eq!(open.count(), 4, "killed ones leave when their task ends");
    }
}
