//! Stage 5: delivery — the pure core the destination lanes call.
//!
//! Nothing here does I/O or reads the clock: time comes in as milliseconds since
//! the epoch, randomness as a number in `[0, 1)`, so every decision is a table test.
//!
//! | module | decides |
//! |---|---|
//! | [`format`](mod@format) | events → request bodies and headers (`webhook`, `webhook-batch`, `segment-api`), `X-Signature`, the event filter |
//! | [`classify`] | one HTTP attempt (status + headers + body start, or a transport error) → delivered, retry, or dead letter |
//! | [`retry`] | attempts so far + time → the next due time, or give up |

pub mod classify;
pub mod format;
pub mod retry;
mod time;

#[cfg(test)]
mod tests;
