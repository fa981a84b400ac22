//! Scenario tests written as Bayeux transcripts: JSON batches in, exact JSON replies out, over a
//! fake clock. Each test reads as a conversation between one or more clients and the engine.
//!
//! One module per topic. In the order a client meets them:
//!
//! - [`handshake`], [`connect`], [`subscribe`], [`publish`], [`disconnect`]: one session's life;
//! - [`browsers`]: several clients of one browser;
//! - [`expiry`]: expiry and limits;
//! - [`extensions`] (with `extensions::ack` and `extensions::timesync`);
//! - [`security`]: the security policy;
//! - [`listeners`]: engine listeners;
//! - [`in_process`]: the in-process API;
//! - [`remote_calls`]: remote calls to `/service/**` handlers;
//! - [`channels`]: channel hooks and settings, lazy messages;
//! - [`introspection`]: paged listings of sessions and channels;
//! - [`bad_input`]: what the engine does with requests it cannot use.
//!
//! The harness (`Transcript`, the fake clock, `Recorder`) is `tests/common/mod.rs`, shared with
//! the other test binaries; helpers used by several topics are in [`support`].

#[path = "../common/mod.rs"]
mod common;
mod support;

mod bad_input;
mod browsers;
mod channels;
mod connect;
mod disconnect;
mod expiry;
mod extensions;
mod handshake;
mod in_process;
mod introspection;
mod listeners;
mod publish;
mod remote_calls;
mod security;
mod subscribe;
