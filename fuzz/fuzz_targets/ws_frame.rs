//! Client WebSocket frames through the server's frame parser: raw bytes, and valid fragmented
//! sequences that must come out as the messages that went in.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| bayeux_fuzz::wsframe::check(data));
