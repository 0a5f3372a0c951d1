//! Shared test harness: start a relay, sign webhooks, run receivers.

pub mod cli;
pub mod proc;
pub mod raw;
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

/// Sends `request` and parses the answer as JSON, within [`LIMIT`].
pub async fn send_json(what: &str, request: reqwest::RequestBuilder) -> serde_json::Value {
    within(what, async {
        request.send().await.unwrap().json().await.unwrap()
    })
    .await
}

/// GET `url` and parse the answer as JSON.
pub async fn get_json(url: impl AsRef<str>) -> serde_json::Value {
    let url = url.as_ref();
    send_json(url, client().get(url)).await
}

/// GET `url` as text.
pub async fn get_text(url: impl AsRef<str>) -> String {
    let url = url.as_ref();
    within(url, async {
        client()
            .get(url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    })
    .await
}

/// Re-runs the async `check` (with a short pause) until it yields a value, within [`LIMIT`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    within(what, async {
        loop {
            if let Some(v) = check().await {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// A test that cannot run here (a tool or a privilege it needs is missing)
/// says so and returns; under CI (`CI` set) that is a failure, so no test
/// passes in CI by not running.
pub fn skip(why: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "{why}: CI must provide it"
    );
    eprintln!("skipped: {why}");
}
