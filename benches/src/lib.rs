//! # bayeux-benches
//!
//! The load generator behind `bayeux-bench`, usable as a library (the smoke test runs its
//! scenarios in-process). It speaks Bayeux itself, over WebSocket or long-polling, to any server
//! URL, so the same code measures this project's server and any other Bayeux server.
//!
//! Scenarios ([`scenario`]): `fanout` (S subscribers on one channel, P publishers), `channels`
//! (one channel per session), `churn` (handshake + subscribe + disconnect cycles) and `idle`
//! (memory per idle session). Each returns a [`report::RunReport`]: deliveries/s, expected
//! against delivered, lost, duplicated and reordered messages, latency percentiles from an HDR
//! histogram, the server's CPU seconds and peak RSS (from `/proc`, given its PID), deliveries per
//! server CPU-second, and the generator's own CPU use.
//!
//! Deliveries are never parsed as JSON: [`scan`] finds the sequence number, timestamp and
//! publisher in the bytes.
//!
//! What it does not do: TLS, HTTP/2, the ack extension, or anything but benchmark traffic.
//!
//! A payload as publishers send it, and a delivery of it found again without parsing:
//!
//! ```
//! use bayeux_benches::scan::{payload, scan};
//!
//! let mut data = String::new();
//! payload(&mut data, 7, 1_000, 2, "");
//! let frame = format!(r#"[{{"channel":"/bench","data":{data}}}]"#);
//! let mut seen = Vec::new();
//! let info = scan(frame.as_bytes(), |s| seen.push((s.publisher, s.seq, s.ts)));
//! assert_eq!(info.deliveries, 1);
//! assert_eq!(seen, [(2, 7, 1_000)]);
//! ```

pub mod clock;
pub mod conn;
pub mod plot;
pub mod procfs;
pub mod report;
pub mod scan;
pub mod scenario;
pub mod server;
pub mod track;

pub use conn::{Target, Transport};
pub use report::RunReport;
pub use scenario::{
    ChurnConfig, Env, IdleConfig, Mode, PubSubConfig, run_churn, run_idle, run_pubsub,
};
