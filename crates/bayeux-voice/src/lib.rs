//! # bayeux-voice
//!
//! An emulation of the Genesys Web Services (GWS) v2 voice API — calls and call recording —
//! whose notifications travel through a [`bayeux_core::Engine`] to the owning user's Bayeux
//! sessions only.
//!
//! What it does:
//! - REST handlers under `/api/v2` ([`VoiceApi::handle`], or [`VoiceApi`] as a
//!   [`tower::Service`]): `me`, devices, `Dial`, call operations (answer, hold, retrieve,
//!   hang up, DTMF, mute, disposition, the four recording operations, user data, transfers and
//!   conferences), device-level `StopCallRecording`, agent state and do-not-disturb, and an
//!   optional test-control API ([`VoiceConfig::test_control`]); with
//!   Basic authentication, an HTTP-only session cookie, an `Origin` check, CORS, body limits and
//!   a body-read timeout (the Bayeux endpoint's rules), JSON-only state changes, GWS's optional
//!   CSRF token ([`VoiceConfig::enable_csrf_protection`]) and feature gating (`api-voice`,
//!   `api-voice-recording`); the crate's README tabulates these request rules;
//! - the call model: parties of each call (users' legs and external numbers), one table of
//!   operation × leg state → next state, notification and effect ([`model::RULES`]), and
//!   capabilities derived from it ([`model::capabilities`]), so a listed operation succeeds;
//! - one `CallStateChangeMessage` per affected user and state change, on `/v2/me/calls`, through
//!   [`bayeux_core::Engine::deliver_to_principal`] (never a broadcast);
//! - the Bayeux side of security: [`VoiceSecurityPolicy`] (authenticated handshakes on the
//!   notifications endpoint, no client publishing to `/v2/**`, subscriptions below `/v2` only to
//!   `/v2/me/calls` and `/v2/me/devices`) and [`VoiceAuthenticator`] for the transport;
//! - a [`Telephony`] seam with a built-in simulator whose far ends answer outbound calls after a
//!   delay.
//!
//! What it does not do: listen on sockets, serve the Bayeux endpoint (that is
//! `bayeux-transport`), or persistence.
//!
//! Choices where GWS is silent (the contract, with them marked, is `docs/voice-api.md` at the
//! repository's root):
//! - `userData` belongs to the call: a user-data operation notifies every party; the recording
//!   keys `GSIP_RECORD` / `GSIP_REC_FN` belong to the recording user's leg and show only in
//!   that user's view; `AttachUserData` and `UpdateUserData` both add or overwrite keys;
//!   deleting an absent key is accepted (and notified).
//! - `SendDtmf` (also spelled `SendDTMF`) takes GWS's `digits` (`0-9`, `*`, `#`) and publishes
//!   `DtmfSent` to the requester only. `capabilities` lists exactly the operations that would
//!   succeed now ([`model::capabilities`]); transfer and conference operations are not
//!   implemented yet, so they are not listed, and invoking them answers statusCode 2.
//! - Released calls leave `GET /me/calls` at once but stay readable (and refuse operations with
//!   statusCode 2) until more than `max_released_calls_per_user` newer ones push them out (then
//!   404/6). At most `max_calls_per_user` live calls per user (statusCode 2 beyond).
//! - Device-level `StopCallRecording` with nothing recorded is accepted and publishes nothing.
//! - Unknown paths under `/api/v2` answer 404/6, wrong methods 405/2, bodies over the limit
//!   413/1, bodies that stall 408/1, POSTs that are not `application/json` 415/1; `GET /api/v2/devices/{id}` (where `deviceUri` points) serves the user's own device.
//! - Agent state (`POST /api/v2/me/channels/voice`: `Ready`, `NotReady`, `AfterCallWork`,
//!   `AuxWork`) and do-not-disturb (`DoNotDisturbOn` / `DoNotDisturbOff` on the device) show in
//!   the device object and publish one `DeviceStateChangeMessage` on `/v2/me/devices` to that
//!   user only, even when nothing changed; they do not change call routing.
//!
//! Wiring, in a host:
//! ```
//! use std::sync::Arc;
//! use bayeux_core::{Engine, EngineConfig};
//! use bayeux_voice::{VoiceApi, VoiceConfig};
//!
//! let engine = Engine::new(EngineConfig::default());
//! let voice = VoiceApi::new(VoiceConfig::default(), engine.clone()).unwrap();
//! engine.set_security_policy(Arc::new(voice.security_policy()));
//! // The transport endpoint of the notifications: path, authenticator, allowed origins.
//! let endpoint = voice.notifications_endpoint();
//! assert_eq!(endpoint.path, voice.notifications_path());
//! assert!(voice.matches("/api/v2/me/calls"));
//! assert!(!voice.matches(voice.notifications_path()));
//! ```

mod agent;
mod api;
mod assets;
mod auth;
pub mod config;
mod directory;
mod error;
pub mod model;
mod policy;
mod switch;
mod telephony;
mod util;

pub use api::VoiceApi;
pub use assets::{NOTIFICATION_SCHEMAS, OPENAPI, json_schema};
pub use auth::VoiceAuthenticator;
pub use config::{ConfigError, FEATURE_RECORDING, FEATURE_VOICE, UserConfig, VoiceConfig};
pub use error::VoiceError;
pub use model::{CallState, CallType, LegState, Mute, NotificationType, Operation, RecordingState};
pub use policy::{ACCESS_DENIED, PUBLISH_DENIED, SUBSCRIBE_DENIED, VoiceSecurityPolicy};
pub use switch::{CALLS_CHANNEL, DEVICES_CHANNEL};
pub use telephony::{CallControl, OutboundCall, SimulatedTelephony, Telephony};

/// The `Authorization` header value for Basic credentials, e.g. for clients and tests.
pub fn basic_authorization(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}
