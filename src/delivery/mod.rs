//! Stage 5: delivery. [`lane`] runs one task per destination over the durable
//! queue; [`worker`] takes one delivery through one attempt; `apply` writes
//! what the attempt decided (and batches completions); [`destination`] holds
//! the HTTP client. The decisions are pure functions: no I/O, no clock
//! (time comes in as milliseconds since the epoch, randomness as a number in
//! `[0, 1)`), so every one is a table test.
//!
//! | module | decides |
//! |---|---|
//! | [`format`](mod@format) | events → request bodies and headers (`webhook`, `webhook-batch`, `segment-api`), `X-Signature`, the event filter |
//! | [`classify`] | one HTTP attempt (status + headers + body start, or a transport error) → delivered, retry, or dead letter |
//! | [`retry`] | attempts so far + time → the next due time, or give up |

mod apply;
mod blocking;
pub mod classify;
pub mod destination;
pub mod format;
pub mod lane;
pub mod retry;
pub mod worker;

#[cfg(test)]
mod tests;
