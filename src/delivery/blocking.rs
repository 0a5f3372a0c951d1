//! Delivery's one door to blocking work: every queue read and write of a lane
//! and of its deliveries goes through [`blocking`], so waiting on the disk never
//! stalls the async workers that carry the HTTP sends. Below both the lane and
//! the code that writes outcomes, so each imports it without importing the other.

/// Runs `f` on tokio's blocking pool; `None` when it panicked (or the runtime is
/// shutting down), which callers report and leave to the lease.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    tokio::task::spawn_blocking(f).await.ok()
}
