//! Helpers shared by the transcript modules: a default engine's transcript, a long-polling-only
//! configuration, and the advice replies carry.

use bayeux_core::{EngineConfig, TransportKind};
use serde_json::{Value, json};

use crate::common::Transcript;

pub fn t() -> Transcript {
    Transcript::new(EngineConfig::default())
}

pub fn lp_only() -> EngineConfig {
    EngineConfig {
        transports: vec![TransportKind::LongPolling],
        ..EngineConfig::default()
    }
}

/// The advice every reply of a default engine carries for a live session.
pub fn retry_advice() -> Value {
    json!({"reconnect": "retry", "interval": 0, "timeout": 30000})
}

/// The advice of `402::session_unknown`.
pub fn handshake_advice() -> Value {
    json!({"reconnect": "handshake", "interval": 0, "timeout": 30000})
}

pub fn none_advice() -> Value {
    json!({"reconnect": "none", "interval": 0, "timeout": 30000})
}
