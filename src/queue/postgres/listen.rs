//! Across relays: LISTEN/NOTIFY wakes this relay's lanes when another relay
//! accepts or replays work for them (lanes also look by themselves at their
//! next due time, at least every 30 s: polling is only the safety net), and a
//! probe tells whether the database answers, for `/healthz`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use tokio_postgres::AsyncMessage;

use super::PgStore;
use super::accept::CHANNEL;

/// How often the probe asks the database.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// A probe not answered in this long counts as unreachable.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// Between two attempts to (re)connect the LISTEN connection.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// Wakes a lane by name.
pub type Wake = Arc<dyn Fn(&str) + Send + Sync>;

pub(super) fn start_probe(store: &PgStore) {
    let (pool, reachable) = (store.pool.clone(), store.reachable.clone());
    store.handle.spawn(async move {
        loop {
            let ok = tokio::time::timeout(PROBE_TIMEOUT, async {
                let c = pool.get().await.ok()?;
                c.simple_query("SELECT 1").await.ok()
            })
            .await
            .ok()
            .flatten()
            .is_some();
            if reachable.swap(ok, Ordering::Relaxed) != ok {
                if ok {
                    tracing::info!("database answers again");
                } else {
                    tracing::error!("database does not answer; ingest answers 503 until it does");
                }
            }
            tokio::time::sleep(PROBE_EVERY).await;
        }
    });
}

impl PgStore {
    /// Wakes lanes with `wake` when another relay has work for them. On each
    /// (re)connection every lane with work is woken too: notifications sent
    /// while this one was not listening are gone.
    pub fn listen(&self, wake: Wake) {
        let (pg, tls, pool, me) = (
            self.pg.clone(),
            self.tls.clone(),
            self.pool.clone(),
            self.instance,
        );
        self.handle.spawn(async move {
            let mut failing = false;
            loop {
                match listen_once(&pg, &tls, &pool, me, &wake).await {
                    Ok(()) => failing = false,
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!(error = %e, "lost the notification connection; lanes rely on their own timers until it is back");
                    }
                    Err(_) => {}
                }
                tokio::time::sleep(RECONNECT_AFTER).await;
            }
        });
    }
}

async fn listen_once(
    pg: &tokio_postgres::Config,
    tls: &super::tls::MakeRustlsConnect,
    pool: &deadpool_postgres::Pool,
    me: u64,
    wake: &Wake,
) -> Result<(), String> {
    let (client, mut conn) = pg.connect(tls.clone()).await.map_err(|e| e.to_string())?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(m) = messages.next().await {
            match m {
                Ok(AsyncMessage::Notification(n)) => {
                    if tx.send(n.payload().to_string()).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN {CHANNEL}"))
        .await
        .map_err(|e| e.to_string())?;
    // Whatever was notified before this point was missed: look at every lane.
    if let Ok(c) = pool.get().await {
        if let Ok(rows) = c.query(super::retention::LANES, &[]).await {
            for r in rows {
                wake(r.get::<_, &str>(0));
            }
        }
    }
    let mine = format!("{me:016x} ");
    while let Some(payload) = rx.recv().await {
        if let Some(lane) = payload.split_once(' ').map(|(_, l)| l) {
            if !payload.starts_with(&mine) {
                wake(lane);
            }
        }
    }
    driver.abort();
    Err("the connection closed".into())
}
