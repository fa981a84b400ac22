//! Transports (work in progress).
pub mod auth;
