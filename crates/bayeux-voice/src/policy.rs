//! The Bayeux security policy of the voice emulation.

use bayeux_core::{
    ChannelId, ChannelPattern, Decision, Message, RequestContext, SecurityPolicy, Session,
};

use crate::switch::{CALLS_CHANNEL, DEVICES_CHANNEL};

/// The error text of a refused publish: the engine reports it as `403::Publish denied`, the
/// contract's wording.
pub const PUBLISH_DENIED: &str = "Publish denied";
/// The error text of a refused subscription (`403::Subscribe denied`).
pub const SUBSCRIBE_DENIED: &str = "Subscribe denied";
/// The message of a refused handshake (`401::Access denied`).
pub const ACCESS_DENIED: &str = "Access denied";

/// Security rules for the `/v2/**` channels and the notifications endpoint:
///
/// - a handshake on the notifications endpoint needs an authenticated principal (else
///   `401::Access denied`, no session); other endpoints keep their own rules (anonymous
///   handshakes allowed);
/// - clients may never publish to `/v2` or below;
/// - below `/v2`, a session may subscribe only to `/v2/me/calls` and `/v2/me/devices`, and
///   only when it is authenticated (wildcards such as `/v2/**` are refused).
#[derive(Debug, Clone)]
pub struct VoiceSecurityPolicy {
    notifications_path: String,
}

impl VoiceSecurityPolicy {
    /// The policy for a notifications endpoint mounted at `notifications_path`.
    pub fn new(notifications_path: &str) -> VoiceSecurityPolicy {
        VoiceSecurityPolicy {
            notifications_path: normalize(notifications_path).to_owned(),
        }
    }
}

fn normalize(path: &str) -> &str {
    match path.trim_end_matches('/') {
        "" => "/",
        p => p,
    }
}

fn under_v2(name: &str) -> bool {
    name == "/v2" || name.starts_with("/v2/")
}

impl SecurityPolicy for VoiceSecurityPolicy {
    fn can_handshake(&self, ctx: &RequestContext, _message: &Message) -> Decision {
        let on_notifications = ctx
            .endpoint
            .as_deref()
            .is_some_and(|e| normalize(e) == self.notifications_path);
        if on_notifications && ctx.principal.is_none() {
            Decision::Unauthenticated(ACCESS_DENIED.into())
        } else {
            Decision::Allow
        }
    }

    fn can_subscribe(
        &self,
        session: &Session,
        pattern: &ChannelPattern,
        _message: &Message,
    ) -> Decision {
        let name = pattern.as_str();
        if !under_v2(name) {
            return Decision::Allow;
        }
        if (name == CALLS_CHANNEL || name == DEVICES_CHANNEL) && session.principal().is_some() {
            Decision::Allow
        } else {
            Decision::Forbidden(SUBSCRIBE_DENIED.into())
        }
    }

    fn can_publish(&self, _session: &Session, channel: &ChannelId, _message: &Message) -> Decision {
        if under_v2(channel.as_str()) {
            Decision::Forbidden(PUBLISH_DENIED.into())
        } else {
            Decision::Allow
        }
    }
}
