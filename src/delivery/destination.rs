//! A destination at run time: its config, its rules, its rate limit, its
//! encoder and one HTTP client, all built once at start-up.

use std::time::Duration;

use crate::config::DestinationConfig;

use super::classify::{self, Outcome};
use super::format::{Encoder, FormatError, Prepared};
use super::pace::Pacer;
use super::rules::Rules;

/// How much of an error response is read: enough for the dead letter's excerpt,
/// never a whole HTML error page.
const BODY_START: usize = 1024;

/// One `[destinations.NAME]`, ready to send.
pub struct Destination {
    /// The table name, used in metrics, logs and dead letters.
    pub name: String,
    /// The validated config.
    pub cfg: DestinationConfig,
    /// Bodies, headers, signatures.
    pub encoder: Encoder,
    /// `events`, `filter` and `transform`.
    pub rules: Rules,
    /// `rate_limit`, shared by the lane's concurrent requests.
    pub pacer: Option<Pacer>,
    /// No redirects (a followed 302 turns the POST into a GET and would count
    /// as delivered); the destination's timeout on every request.
    client: reqwest::Client,
}

/// A destination could not be built from its config.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("destination {name}: {source}")]
    Format { name: String, source: FormatError },
    #[error("destination {name}: cannot build an HTTP client")]
    Client { name: String },
}

impl Destination {
    pub fn new(name: &str, cfg: &DestinationConfig) -> Result<Destination, BuildError> {
        let encoder = Encoder::new(cfg).map_err(|source| BuildError::Format {
            name: name.to_string(),
            source,
        })?;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(5)))
            .pool_max_idle_per_host(cfg.concurrency.max(1))
            .build()
            .map_err(|_| BuildError::Client {
                name: name.to_string(),
            })?;
        Ok(Destination {
            name: name.to_string(),
            cfg: cfg.clone(),
            encoder,
            rules: Rules::new(name, cfg),
            pacer: cfg.rate_limit.map(Pacer::new),
            client,
        })
    }

    /// Sends one prepared request and classifies the answer.
    pub async fn post(&self, req: &Prepared, now_ms: fn() -> u64) -> Outcome {
        // The request built directly, as `client.post(url).body(..).header(..)`
        // builds it, without the builder's per-header conversions and with
        // the header map allocated once at its size.
        let mut headers = http::HeaderMap::with_capacity(req.headers.len());
        for (name, value) in &req.headers {
            headers.append(name.clone(), value.clone());
        }
        let mut request = reqwest::Request::new(http::Method::POST, self.cfg.url.clone());
        *request.headers_mut() = headers;
        *request.body_mut() = Some(req.body.clone().into());
        let mut resp = match self.client.execute(request).await {
            Ok(r) => r,
            Err(e) => return classify::from_reqwest_error(&e, self.cfg.timeout),
        };
        let status = resp.status().as_u16();
        let mut start = Vec::new();
        if !(200..300).contains(&status) {
            while start.len() < BODY_START {
                match resp.chunk().await {
                    Ok(Some(chunk)) => start.extend_from_slice(&chunk),
                    _ => break,
                }
            }
        }
        classify::classify_response(status, resp.headers(), &start, now_ms())
    }
}
