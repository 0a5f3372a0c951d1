//! The embedded store: the shared contract, then what is its own (the log,
//! checkpoints, recovery, damage, power cuts).

use std::path::Path;

use super::EmbeddedStore;
use crate::queue::Store;
use crate::queue::contract::store_contract;

fn open(dir: &Path) -> Box<dyn Store> {
    Box::new(EmbeddedStore::open(dir).unwrap())
}

store_contract!(open);
