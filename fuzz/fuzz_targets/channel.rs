//! Channel names and patterns, one per line: parsing never panics, normalisation is consistent
//! and the matcher agrees with a naive segment-by-segment reference.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| bayeux_fuzz::channel::check_text(data));
