//! Stage 1: relay.toml → validated [`Config`].

mod mapping;

pub use mapping::{MappingConfig, Naming, UserIdRule};
