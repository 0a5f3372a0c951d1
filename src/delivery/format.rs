//! Events → HTTP requests, for the three destination formats of CONTRACT.md.
//!
//! Input events are already-serialized JSON strings that are exactly what
//! JavaScript's `JSON.stringify(JSON.parse(s))` yields (the mapping guarantees it).
//! That is what lets a receiver following Segment's documented check — HMAC-SHA1 over
//! `JSON.stringify(req.body)` (or `req.body[0]` for a batch) — verify our signature:
//! we sign bytes that re-serialise to themselves.
//!
//! | format | one request | `X-Signature` (with `shared_secret`) |
//! |---|---|---|
//! | `webhook` | one event | hex HMAC-SHA1 of the body |
//! | `webhook-batch` | `[e1,e2,..]`, up to `batch_size` events | hex HMAC-SHA1 of the request's first event |
//! | `segment-api` | `{"batch":[..],"sentAt":".."}`, up to `batch_size` events and 500 KB | none; `Authorization: Basic base64(write_key:)` |
//!
//! Headers, in order: `Content-Type`, `User-Agent`, the configured headers (which may
//! replace the first two), then `X-Signature`/`Authorization`, which nothing replaces.

use base64::Engine;
use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use http::header::{self, HeaderName, HeaderValue};
use sha1::Sha1;

use crate::config::{DestinationConfig, Format};
use crate::timefmt::iso8601_ms;

/// Segment's limit for one event. Its docs say "32KB"; its Python library reads that
/// as 32 × 1024 bytes, and so do we.
pub const SEGMENT_MAX_EVENT_BYTES: usize = 32 * 1024;
/// Segment's limit for one batch request ("500KB"), read as the stricter 500,000 bytes
/// of the whole body: splitting a little early costs nothing.
pub const SEGMENT_MAX_BATCH_BYTES: usize = 500_000;
/// `User-Agent` of every request.
pub const USER_AGENT: &str = concat!("shoprelay/", env!("CARGO_PKG_VERSION"));

/// Why events cannot become requests. None of these is fixed by retrying.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// One event is over Segment's per-event limit: dead-letter that event.
    #[error("event {index} is {size} bytes; Segment accepts at most {limit} bytes per event")]
    EventTooLarge {
        /// Its position in the `events` passed in.
        index: usize,
        size: usize,
        limit: usize,
    },
    /// A configured header cannot be sent (config validation normally catches this).
    #[error("header `{name}` is not a valid header name or value")]
    BadHeader { name: String },
    /// `segment-api` without a `write_key` (config validation normally catches this).
    #[error("format \"segment-api\" needs a write_key")]
    BadWriteKey,
    /// The signing key could not be used (HMAC takes any length, so not expected).
    #[error("shared_secret cannot be used as an HMAC-SHA1 key")]
    BadSharedSecret,
}

/// One HTTP request, ready to POST.
#[derive(Clone, Debug)]
pub struct Prepared {
    /// The exact bytes that were signed.
    pub body: Bytes,
    /// All request headers; values from secrets are marked sensitive (hidden in Debug).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// How many of the input events this request carries, in order: the caller adds
    /// it to `events_done` once the request is delivered.
    pub events: usize,
}

/// A destination's format, headers and keys, built once at start-up.
#[derive(Clone)]
pub struct Encoder {
    format: Format,
    batch_size: usize,
    headers: Vec<(HeaderName, HeaderValue)>,
    signer: Option<Hmac<Sha1>>,
    authorization: Option<HeaderValue>,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder")
            .field("format", &self.format.as_str())
            .field("batch_size", &self.batch_size)
            .field(
                "headers",
                &self.headers.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field("signed", &self.signer.is_some())
            .finish()
    }
}

impl Encoder {
    /// Checks and converts everything that does not change per request.
    pub fn new(dest: &DestinationConfig) -> Result<Encoder, FormatError> {
        let mut headers = vec![
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::USER_AGENT, HeaderValue::from_static(USER_AGENT)),
        ];
        for (name, value) in &dest.headers {
            let bad = || FormatError::BadHeader { name: name.clone() };
            let n = HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad())?;
            let mut v = HeaderValue::from_str(value.expose()).map_err(|_| bad())?;
            v.set_sensitive(true);
            set(&mut headers, n, v);
        }
        let signer = match (&dest.shared_secret, dest.format) {
            (Some(s), Format::Webhook | Format::WebhookBatch) => {
                Some(keyed(s.expose().as_bytes())?)
            }
            _ => None,
        };
        let authorization = match dest.format {
            Format::SegmentApi => {
                let key = dest.write_key.as_ref().ok_or(FormatError::BadWriteKey)?;
                let basic =
                    base64::engine::general_purpose::STANDARD.encode(format!("{}:", key.expose()));
                let mut v = HeaderValue::from_str(&format!("Basic {basic}"))
                    .map_err(|_| FormatError::BadWriteKey)?;
                v.set_sensitive(true);
                Some(v)
            }
            _ => None,
        };
        Ok(Encoder {
            format: dest.format,
            batch_size: dest.batch_size.max(1),
            headers,
            signer,
            authorization,
        })
    }

    /// The requests that carry `events`, in order. Empty input gives no request.
    /// For `segment-api`, an event over [`SEGMENT_MAX_EVENT_BYTES`] fails the whole
    /// call (nothing partial), naming the first such event's index.
    pub fn prepare<S: AsRef<str>>(
        &self,
        events: &[S],
        now_ms: u64,
    ) -> Result<Vec<Prepared>, FormatError> {
        let events: Vec<&str> = events.iter().map(AsRef::as_ref).collect();
        match self.format {
            Format::Webhook => Ok(events
                .iter()
                .map(|e| self.request(Bytes::copy_from_slice(e.as_bytes()), e, 1))
                .collect()),
            Format::WebhookBatch => Ok(events
                .chunks(self.batch_size)
                .map(|chunk| self.request(json_array(chunk, "[", "]"), first(chunk), chunk.len()))
                .collect()),
            Format::SegmentApi => self.segment_batches(&events, now_ms),
        }
    }

    fn segment_batches(&self, events: &[&str], now_ms: u64) -> Result<Vec<Prepared>, FormatError> {
        if let Some((index, e)) = events
            .iter()
            .enumerate()
            .find(|(_, e)| e.len() > SEGMENT_MAX_EVENT_BYTES)
        {
            return Err(FormatError::EventTooLarge {
                index,
                size: e.len(),
                limit: SEGMENT_MAX_EVENT_BYTES,
            });
        }
        const PREFIX: &str = r#"{"batch":["#;
        let suffix = format!(r#"],"sentAt":"{}"}}"#, iso8601_ms(now_ms));
        let mut out = Vec::new();
        let mut start = 0;
        let mut size = PREFIX.len() + suffix.len();
        for (i, e) in events.iter().enumerate() {
            let comma = usize::from(i > start);
            let full = i - start == self.batch_size;
            // One event always fits an empty batch: 32 KiB is far below 500 KB.
            if full || (i > start && size + comma + e.len() > SEGMENT_MAX_BATCH_BYTES) {
                out.push(self.segment_request(&events[start..i], PREFIX, &suffix));
                start = i;
                size = PREFIX.len() + suffix.len();
            }
            size += usize::from(i > start) + e.len();
        }
        if start < events.len() {
            out.push(self.segment_request(&events[start..], PREFIX, &suffix));
        }
        Ok(out)
    }

    fn segment_request(&self, chunk: &[&str], prefix: &str, suffix: &str) -> Prepared {
        self.request(json_array(chunk, prefix, suffix), first(chunk), chunk.len())
    }

    /// Adds the per-request headers. `signed` is what `X-Signature` covers.
    fn request(&self, body: Bytes, signed: &str, events: usize) -> Prepared {
        let mut headers = self.headers.clone();
        if let Some(mac) = &self.signer {
            let sig = hex_mac(mac.clone(), signed.as_bytes());
            // Hex digits are always a valid header value.
            if let Ok(v) = HeaderValue::from_str(&sig) {
                set(&mut headers, HeaderName::from_static("x-signature"), v);
            }
        }
        if let Some(auth) = &self.authorization {
            set(&mut headers, header::AUTHORIZATION, auth.clone());
        }
        Prepared {
            body,
            headers,
            events,
        }
    }
}

/// Whether a destination's `events` filter lets an event through: no filter passes
/// everything; otherwise an entry must equal the call type (`track`, `identify`,
/// `delete`) or the event's name. Exact and case-sensitive, like Segment's names.
pub fn event_passes_filter(filter: Option<&[String]>, call: &str, name: Option<&str>) -> bool {
    filter.is_none_or(|f| f.iter().any(|e| e == call || Some(e.as_str()) == name))
}

fn keyed(secret: &[u8]) -> Result<Hmac<Sha1>, FormatError> {
    Hmac::<Sha1>::new_from_slice(secret).map_err(|_| FormatError::BadSharedSecret)
}

fn hex_mac(mut mac: Hmac<Sha1>, data: &[u8]) -> String {
    mac.update(data);
    hex::encode(mac.finalize().into_bytes())
}

/// `prefix e1,e2,.. suffix`, compact: the events are already canonical JSON.
fn json_array(events: &[&str], prefix: &str, suffix: &str) -> Bytes {
    let len = prefix.len() + suffix.len() + events.iter().map(|e| e.len() + 1).sum::<usize>();
    let mut body = Vec::with_capacity(len);
    body.extend_from_slice(prefix.as_bytes());
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(e.as_bytes());
    }
    body.extend_from_slice(suffix.as_bytes());
    Bytes::from(body)
}

/// What a batch's `X-Signature` covers; batches are never empty, "" keeps it panic-free.
fn first<'a>(chunk: &[&'a str]) -> &'a str {
    chunk.first().copied().unwrap_or_default()
}

/// Sets a header, replacing any earlier one of the same name.
fn set(headers: &mut Vec<(HeaderName, HeaderValue)>, name: HeaderName, value: HeaderValue) {
    headers.retain(|(n, _)| *n != name);
    headers.push((name, value));
}

#[cfg(test)]
pub(super) mod tests;
