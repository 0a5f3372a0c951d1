//! One integration binary: real relays on 127.0.0.1:0 with temp data dirs,
//! real HTTP, real local receivers.

mod common;

mod admin;
mod check;
mod cli;
mod crash;
mod crash_campaign;
mod dead_letters;
mod delivery;
mod examples;
mod fsync_audit;
mod full_disk;
mod hostile;
mod identity;
mod ingest;
mod logs;
mod metrics;
mod node_receiver;
mod postgres;
mod preview;
mod rules;
