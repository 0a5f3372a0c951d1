//! Layer 5: delivery. [`lane`] runs one task per destination over the durable
//! queue; `drive` takes each claimed delivery through one
//! [`attempt`](mod@attempt) (map, send, decide) and writes the decision to the
//! queue, metrics and log; `mapped` maps each webhook once for all its lanes
//! (with the identity map); [`destination`] holds the HTTP client. The decisions
//! below are pure functions: no I/O, no clock (time comes in as milliseconds
//! since the epoch, randomness as a number in `[0, 1)`), so every one is a
//! table test.
//!
//! | module | decides |
//! |---|---|
//! | [`rules`] | mapped events → what one destination gets (`events`, jq `filter` and `transform`) |
//! | [`format`](mod@format) | events → request bodies and headers (`webhook`, `webhook-batch`, `segment-api`), `X-Signature`, the event filter |
//! | [`pace`] | `rate_limit`: when the next request to a destination may go |
//! | [`classify`] | one HTTP attempt (status + headers + body start, or a transport error) → delivered, retry, or dead letter |
//! | [`retry`] | attempts so far + time → the next due time, or give up |

pub mod attempt;
mod blocking;
pub mod classify;
pub mod destination;
mod drive;
pub mod format;
pub mod lane;
mod mapped;
pub mod pace;
pub mod retry;
pub mod rules;

#[cfg(test)]
mod tests;
