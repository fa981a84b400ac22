//! Arbitrary bytes into `decode_batch`: no panic; what decodes round-trips through
//! `encode_batch`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| bayeux_fuzz::codec::check(data));
