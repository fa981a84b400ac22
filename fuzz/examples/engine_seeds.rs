//! Regenerates `seeds/engine_ops/`: draws random inputs (a fixed-seed PRNG, so the output is
//! reproducible), decodes them as the fuzz target does, runs them, and keeps the ones that reach
//! the deepest states (deliveries, held connects, expiry, drops). Coverage-guided fuzzing alone
//! rarely strings together handshake, subscribe, publish and connect on the same session.
//!
//!     cargo run --release --example engine_seeds   (from fuzz/)

use bayeux_fuzz::engine::{Coverage, Scenario, run};

fn main() {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut best: Vec<(u64, Vec<u8>, Coverage)> = Vec::new();
    for _ in 0..20_000 {
        let len = 1024 + (next() % 4096) as usize;
        let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let Ok(s) = Scenario::from_bytes(&data) else {
            continue;
        };
        let c = run(&s);
        if c.deliveries == 0 || c.holds == 0 {
            continue;
        }
        let score = c.deliveries * 4 + c.holds * 3 + c.expired * 2 + c.drops;
        best.push((score, data, c));
    }
    best.sort_by_key(|b| std::cmp::Reverse(b.0));
    best.truncate(48);
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/seeds/engine_ops");
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("seed dir");
    let mut total = Coverage::default();
    for (i, (_, data, c)) in best.iter().enumerate() {
        std::fs::write(format!("{dir}/ops-{i:02}"), data).expect("write seed");
        total.deliveries += c.deliveries;
        total.holds += c.holds;
        total.expired += c.expired;
        total.drops += c.drops;
    }
    println!("{} seeds: {total:?}", best.len());
}
