//! One integration binary: real relays on 127.0.0.1:0 with temp data dirs,
//! real HTTP, real local receivers.

mod common;

mod check;
mod crash;
mod crash_campaign;
mod delivery;
mod full_disk;
mod hostile;
mod ingest;
