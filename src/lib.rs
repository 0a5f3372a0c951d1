//! shoprelay: a self-hosted webhook relay.
//!
//! # Layout
//!
//! Modules follow the data path; each uses only what comes before it.
//!
//! | stage | module | what it does |
//! |---|---|---|
//! | 1 | [`config`] | relay.toml → validated `Config` |
//! | 2 | [`sources`] | headers + raw bytes → verified [`sources::Webhook`] |
//! | 3 | [`mapping`], [`event`] | webhook → Segment-spec events (pure) |
//! | 5 | [`delivery`] | request bodies, signatures, response classification, retry schedule (pure) |

pub mod config;
pub mod delivery;
pub mod event;
pub mod mapping;
pub mod queue;
pub mod sources;
