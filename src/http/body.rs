//! Reading a request body whose signature is not verified yet: capped by
//! `max_body_bytes`, whole within `body_read_timeout`, and held inside the
//! unverified body budget ([`super::budget`]) until it is verified.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures_util::{Stream, StreamExt};
use warp::http::StatusCode;

use super::budget::{BodyBudget, Held};

/// A chunked body is read into blocks, each reserved as it is allocated and
/// never grown: the first of this size (most webhooks fit), the rest of
/// [`CHUNKED_BLOCK`]; a body of more than one block is joined once at the end
/// (reserved too, while both exist). A buffer that doubled as it grew left
/// every size it passed through to the allocator: 128 stalled chunked 1 MiB
/// bodies peaked at +27-34 MiB over a 16 MiB budget with glibc's malloc and
/// up to +47 MiB with mimalloc (tests/it/hostile/bodies.rs).
const FIRST_CHUNKED_BLOCK: usize = 16 << 10;
const CHUNKED_BLOCK: usize = 64 << 10;

/// Why a body was not read.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadError {
    /// Over `max_body_bytes` (413).
    TooLarge,
    /// The connection failed mid-body (400).
    Io,
    /// The budget has no room for it (503, `Retry-After`).
    NoRoom,
    /// Evicted from the budget for a newer request after stalling (503).
    Evicted,
    /// Not whole within the body read timeout (408).
    TimedOut,
}

impl ReadError {
    /// The refusal: its reason (the metric label), status and message.
    pub fn answer(&self) -> (&'static str, StatusCode, &'static str) {
        match self {
            ReadError::TooLarge => (
                "too_large",
                StatusCode::PAYLOAD_TOO_LARGE,
                "body is larger than max_body_bytes",
            ),
            ReadError::Io => (
                "body_read",
                StatusCode::BAD_REQUEST,
                "could not read the request body",
            ),
            ReadError::TimedOut => (
                "body_timeout",
                StatusCode::REQUEST_TIMEOUT,
                "the request body did not arrive within body_read_timeout",
            ),
            ReadError::NoRoom => ("body_budget", StatusCode::SERVICE_UNAVAILABLE, BUSY),
            ReadError::Evicted => ("body_evicted", StatusCode::SERVICE_UNAVAILABLE, BUSY),
        }
    }
}

const BUSY: &str = "too many request bodies in progress; retry later";

/// What bodies are read within.
pub struct BodyLimits {
    /// `max_body_bytes`.
    pub max_bytes: u64,
    /// `body_read_timeout`, from the end of the request head.
    pub timeout: Duration,
    /// `unverified_body_budget`, shared by every connection.
    pub budget: Arc<BodyBudget>,
}

/// Reads the body, reserving its bytes before they arrive: the declared
/// Content-Length at once, a chunked body block by block as it arrives. The [`Held`]
/// share is to be dropped once the body is verified (or refused).
pub async fn read<S, B, E>(
    mut body: S,
    declared: Option<u64>,
    limits: &BodyLimits,
) -> Result<(Bytes, Held), ReadError>
where
    S: Stream<Item = Result<B, E>> + Send + Unpin,
    B: Buf,
{
    let limit = limits.max_bytes;
    let reading = async {
        let first = declared.unwrap_or(0).min(limit);
        let held = limits
            .budget
            .reserve(first)
            .await
            .ok_or(ReadError::NoRoom)?;
        // Declared: one buffer of that size. Chunked: blocks as bytes come.
        let mut blocks: Vec<Vec<u8>> = Vec::new();
        if declared.is_some() {
            blocks.push(Vec::with_capacity(first as usize));
        }
        let mut len = 0u64;
        loop {
            let chunk = tokio::select! {
                biased;
                _ = held.evicted() => return Err(ReadError::Evicted),
                chunk = body.next() => chunk,
            };
            let Some(chunk) = chunk else { break };
            let mut chunk = chunk.map_err(|_| ReadError::Io)?;
            if len + chunk.remaining() as u64 > limit {
                return Err(ReadError::TooLarge);
            }
            while chunk.has_remaining() {
                let full = blocks.last().is_none_or(|b| b.len() == b.capacity());
                if full {
                    // A declared length that was short, or the next block
                    // of a chunked body: never past the limit.
                    let size = if blocks.is_empty() {
                        FIRST_CHUNKED_BLOCK
                    } else {
                        CHUNKED_BLOCK
                    } as u64;
                    let size = size.min(limit - len).max(1);
                    if !held.grow(size).await {
                        return Err(ReadError::NoRoom);
                    }
                    blocks.push(Vec::with_capacity(size as usize));
                }
                let Some(block) = blocks.last_mut() else {
                    return Err(ReadError::Io);
                };
                let c = chunk.chunk();
                let n = c.len().min(block.capacity() - block.len());
                block.extend_from_slice(&c[..n]);
                chunk.advance(n);
                len += n as u64;
            }
        }
        let body = match blocks.len() {
            0 => Vec::new(),
            1 => blocks.pop().unwrap_or_default(),
            _ => {
                // Joined once; both count until the blocks are freed.
                if !held.grow(len).await {
                    return Err(ReadError::NoRoom);
                }
                let blocks_bytes: u64 = blocks.iter().map(|b| b.capacity() as u64).sum();
                let mut joined = Vec::with_capacity(len as usize);
                for b in blocks.drain(..) {
                    joined.extend_from_slice(&b);
                }
                held.release(blocks_bytes);
                joined
            }
        };
        Ok((Bytes::from(body), held))
    };
    tokio::time::timeout(limits.timeout, reading)
        .await
        .map_err(|_| ReadError::TimedOut)?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_bytes: u64, budget: u64) -> BodyLimits {
        BodyLimits {
            max_bytes,
            timeout: Duration::from_secs(5),
            // Nothing becomes evictable within a test.
            budget: BodyBudget::with_eviction_age(budget, Duration::from_secs(60)),
        }
    }

    fn chunks(n: usize, size: usize) -> impl Stream<Item = Result<Bytes, warp::Error>> + Unpin {
        futures_util::stream::iter((0..n).map(move |_| Ok(Bytes::from(vec![b'x'; size]))))
    }

    #[tokio::test]
    async fn a_declared_body_holds_exactly_its_length_until_dropped() {
        let l = limits(1 << 20, 1 << 20);
        let (body, held) = read(chunks(4, 1000), Some(4000), &l).await.unwrap();
        assert_eq!(body.len(), 4000);
        assert_eq!(l.budget.held(), 4000);
        drop(held);
        assert_eq!(l.budget.held(), 0);
    }

    #[tokio::test]
    async fn a_chunked_body_reserves_as_it_grows_and_stops_at_the_cap() {
        let l = limits(100_000, 1 << 20);
        let (body, held) = read(chunks(30, 1000), None, &l).await.unwrap();
        assert_eq!(body.len(), 30_000);
        assert_eq!(
            l.budget.held(),
            30_000,
            "two blocks joined: exactly the body"
        );
        drop(held);
        let (body, held) = read(chunks(5, 1000), None, &l).await.unwrap();
        assert_eq!(body.len(), 5_000);
        assert_eq!(l.budget.held(), 16 << 10, "one block, kept as it is");
        drop(held);
        let err = read(chunks(101, 1000), None, &l).await.err();
        assert_eq!(err, Some(ReadError::TooLarge));
        assert_eq!(l.budget.held(), 0);
    }

    #[tokio::test]
    async fn no_room_before_or_while_reading() {
        let l = limits(1 << 20, 64 << 10);
        let _other = l.budget.reserve(60 << 10).await.unwrap();
        let err = read(chunks(1, 10), Some(10 << 10), &l).await.err();
        assert_eq!(err, Some(ReadError::NoRoom), "declared: refused up front");
        let err = read(chunks(10, 1000), None, &l).await.err();
        assert_eq!(err, Some(ReadError::NoRoom), "chunked: refused on growth");
        assert_eq!(l.budget.held(), 60 << 10);
    }

    #[tokio::test]
    async fn a_stalled_body_times_out() {
        let l = BodyLimits {
            timeout: Duration::from_millis(50),
            ..limits(1 << 20, 1 << 20)
        };
        let stalled = futures_util::stream::pending::<Result<Bytes, warp::Error>>();
        let err = read(stalled, Some(10), &l).await.err();
        assert_eq!(err, Some(ReadError::TimedOut));
        assert_eq!(l.budget.held(), 0);
    }
}
