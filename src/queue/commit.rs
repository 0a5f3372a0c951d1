//! Group commit: one committer thread turns many concurrent accepts into one
//! durable write (for the embedded store: one `writev` and one `fdatasync`
//! of the log), then answers each request.
//!
//! While one sync runs, the next requests queue up, so the batch grows with
//! load by itself: no timer, no tuning. The committer is a plain thread
//! because the sync blocks.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use super::{Accept, AcceptOutcome, Store, StoreError};

/// Accepts waiting at most; past this, ingest answers 503 rather than queue
/// without bound.
const QUEUE: usize = 16 * 1024;
/// Most accepts in one write.
const MAX_BATCH: usize = 4096;
/// Most body bytes in one write.
const MAX_BATCH_BYTES: usize = 64 << 20;

struct Pending {
    accept: Accept,
    reply: oneshot::Sender<Result<AcceptOutcome, StoreError>>,
}

/// Called after each successful write with the lanes that got new work and the
/// number of accepts in the batch.
pub type OnCommit = Box<dyn Fn(&[&str], usize) + Send>;

/// How long ingest waits for its commit before answering 503. A write that
/// takes longer is stuck (a disk that stopped answering), and the sender
/// should retry later.
pub const COMMIT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// The handle ingest uses. Dropping every clone stops the committer after it
/// has written what it holds.
#[derive(Clone)]
pub struct Committer {
    tx: SyncSender<Pending>,
    healthy: Arc<AtomicBool>,
    closing: Arc<AtomicBool>,
}

impl Committer {
    /// Starts the committer thread over `store`. `reserve`: free disk below
    /// which writes are refused (the index, sled, must never meet a full disk:
    /// it hangs or stays failed after one ENOSPC; DESIGN.md).
    pub fn start(
        store: Arc<dyn Store>,
        clock: fn() -> u64,
        reserve: u64,
        on_commit: OnCommit,
    ) -> (Committer, JoinHandle<()>) {
        let (tx, rx) = sync_channel(QUEUE);
        let healthy = Arc::new(AtomicBool::new(true));
        let closing = Arc::new(AtomicBool::new(false));
        let (h, c) = (healthy.clone(), closing.clone());
        let thread = std::thread::Builder::new()
            .name("shoprelay-commit".into())
            .spawn(move || run(rx, store, clock, reserve, on_commit, h, c))
            .expect("spawning the committer thread at start-up");
        (
            Committer {
                tx,
                healthy,
                closing,
            },
            thread,
        )
    }

    /// Stores `accept` durably; resolves only after the sync that covers it.
    pub async fn accept(&self, accept: Accept) -> Result<AcceptOutcome, StoreError> {
        if self.closing.load(Ordering::SeqCst) {
            return Err(StoreError::Closed);
        }
        let (reply, rx) = oneshot::channel();
        match self.tx.try_send(Pending { accept, reply }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(StoreError::Overloaded),
            Err(TrySendError::Disconnected(_)) => return Err(StoreError::Closed),
        }
        match tokio::time::timeout(COMMIT_DEADLINE, rx).await {
            Ok(answer) => answer.unwrap_or(Err(StoreError::Closed)),
            Err(_) => {
                self.healthy.store(false, Ordering::Relaxed);
                Err(StoreError::Stalled(COMMIT_DEADLINE))
            }
        }
    }

    /// Stops the committer once it has written everything already queued.
    pub fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
    }

    /// False after a failed write, until a write succeeds again.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }
}

fn run(
    rx: Receiver<Pending>,
    store: Arc<dyn Store>,
    clock: fn() -> u64,
    reserve: u64,
    on_commit: OnCommit,
    healthy: Arc<AtomicBool>,
    closing: Arc<AtomicBool>,
) {
    loop {
        let first = match rx.recv_timeout(std::time::Duration::from_millis(50)) {
            Ok(p) => p,
            Err(RecvTimeoutError::Timeout) if closing.load(Ordering::SeqCst) => break,
            Err(RecvTimeoutError::Timeout) => {
                // Idle: a backend that can tell (a database's probe) says
                // whether it answers, so health follows it with no traffic
                // (and recovers once it is back, with no write to prove it).
                if let Some(up) = store.reachable() {
                    healthy.store(up, Ordering::Relaxed);
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let mut bytes = first.accept.webhook.body().len();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(p) => {
                    bytes += p.accept.webhook.body().len();
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        let (accepts, replies): (Vec<_>, Vec<_>) =
            batch.into_iter().map(|p| (p.accept, p.reply)).unzip();
        let needed = reserve.saturating_add(2 * bytes as u64);
        let result = match store.free_bytes() {
            Some(free) if free < needed => {
                // No room to write; what was accepted before needs none (and
                // answering it is no sign that the disk has room again).
                if let Ok(ids) = store.accepted(&accepts) {
                    if ids.iter().all(Option::is_some) {
                        for (reply, id) in replies.into_iter().zip(ids.into_iter().flatten()) {
                            let _ = reply.send(Ok(AcceptOutcome::Duplicate(id)));
                        }
                        continue;
                    }
                }
                Err(StoreError::DiskFull { free, reserve })
            }
            _ => store.accept_batch(&accepts, clock()),
        };
        match result {
            Ok(outcomes) => {
                healthy.store(true, Ordering::Relaxed);
                let mut lanes: Vec<&str> = accepts
                    .iter()
                    .zip(&outcomes)
                    .filter(|(_, o)| matches!(o, AcceptOutcome::Queued(_)))
                    .flat_map(|(a, _)| a.deliveries.iter().map(|d| d.lane.as_str()))
                    .collect();
                lanes.sort_unstable();
                lanes.dedup();
                on_commit(&lanes, accepts.len());
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                healthy.store(false, Ordering::Relaxed);
                tracing::error!(error = %e, count = accepts.len(), "storage write failed; answering 503");
                for reply in replies {
                    let _ = reply.send(Err(StoreError::Backend(e.to_string())));
                }
                if matches!(e, StoreError::DiskFull { .. }) {
                    // Nothing was written; check again soon rather than spin.
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
            }
        }
    }
}
