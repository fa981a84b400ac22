//! The checks behind the fuzz targets, kept in a library so that the same properties also run
//! as bounded property tests under `cargo test` (crates/bayeux-server/tests/properties_fuzzlike.rs
//! includes these modules by path).

pub mod channel;
pub mod codec;
pub mod engine;
pub mod http;
pub mod voice;
pub mod wsframe;
