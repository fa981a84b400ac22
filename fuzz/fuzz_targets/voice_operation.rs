//! Request bodies into the voice API's operation parsing, through `VoiceApi::handle` (POST to
//! `/api/v2/me/calls/{id}` as agent1, on a live call).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| bayeux_fuzz::voice::harness().check(data));
