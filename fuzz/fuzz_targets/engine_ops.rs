//! Random operation sequences over a few sessions and a fake clock, checked against a model.
#![no_main]

use bayeux_fuzz::engine::{Scenario, run};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = Scenario::from_bytes(data) {
        run(&s);
    }
});
