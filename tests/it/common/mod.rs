//! Shared test harness: start a relay, sign webhooks, run receivers.

#![allow(dead_code)]

pub mod cli;
pub mod receiver;
pub mod relay;
pub mod sign;

use std::time::Duration;

/// Every await in the tests has a limit; a hung relay fails, it does not hang CI.
pub const LIMIT: Duration = Duration::from_secs(30);

/// Awaits `f` within [`LIMIT`], naming what was awaited on failure.
pub async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(LIMIT, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {LIMIT:?} waiting for {what}"),
    }
}

/// Polls `cond` (with a short async pause) until it holds, within [`LIMIT`].
pub async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    within(what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(LIMIT)
        .build()
        .unwrap()
}
