//! The seam to a telephony source, and the built-in simulator.
//!
//! The emulation keeps the call model and the users' legs itself; what it cannot know is what
//! the far end of an outbound call does, or when a call arrives from outside. A [`Telephony`]
//! implementation supplies that through a [`CallControl`] handle.

use std::sync::{Arc, Weak};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::error::VoiceError;

/// An outbound call a user placed to a number that belongs to no configured user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundCall {
    /// The call id (also its `callUuid`).
    pub call_id: String,
    /// The calling user's name.
    pub user: String,
    /// The calling user's DN.
    pub from: String,
    /// The dialed number.
    pub destination: String,
}

/// A telephony source: learns of outbound calls and reports far-end events through
/// [`CallControl`], at any time and from any thread (never synchronously required).
pub trait Telephony: Send + Sync + 'static {
    /// A user placed an outbound call; the far end rings. Report its answer with
    /// [`CallControl::far_end_answered`] or its refusal with [`CallControl::far_end_released`].
    fn outbound_call(&self, call: &OutboundCall, control: CallControl);

    /// Every leg of the call is released (by a user's Hangup or by the far end). The default
    /// does nothing.
    fn call_released(&self, _call_id: &str) {}
}

/// The built-in telephony: the far end of every outbound call answers after a fixed delay and
/// never hangs up by itself; no inbound calls arrive unless a host makes them with
/// [`CallControl::inbound_call`].
///
/// The delay runs on the current tokio runtime when there is one, on a short-lived thread
/// otherwise.
#[derive(Debug, Clone)]
pub struct SimulatedTelephony {
    answer_delay: Duration,
}

impl SimulatedTelephony {
    /// A simulator whose far ends answer after `answer_delay`.
    pub fn new(answer_delay: Duration) -> SimulatedTelephony {
        SimulatedTelephony { answer_delay }
    }

    /// The answer delay.
    pub fn answer_delay(&self) -> Duration {
        self.answer_delay
    }
}

impl Telephony for SimulatedTelephony {
    fn outbound_call(&self, call: &OutboundCall, control: CallControl) {
        let delay = self.answer_delay;
        let id = call.call_id.clone();
        // The caller may have hung up meanwhile: answering a released call is refused, which is
        // exactly what should happen, so the result is ignored.
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = control.far_end_answered(&id);
                });
            }
            Err(_) => {
                std::thread::spawn(move || {
                    std::thread::sleep(delay);
                    let _ = control.far_end_answered(&id);
                });
            }
        }
    }
}

/// A handle through which a telephony source (or a test, or a host) drives calls from the
/// network side. Cheap to clone; it does not keep the voice service alive, and once the service
/// is dropped every method fails with [`VoiceError::Internal`].
#[derive(Clone)]
pub struct CallControl {
    pub(crate) calls: Weak<dyn NetworkSide>,
}

/// What the network side may do to calls: implemented by the voice service's switch. (A trait
/// here, so that this module, the seam, does not depend on the switch that depends on it.)
pub(crate) trait NetworkSide: Send + Sync {
    fn far_end_answered(&self, call_id: &str) -> Result<(), VoiceError>;
    fn far_end_released(&self, call_id: &str) -> Result<(), VoiceError>;
    fn inbound_call(
        &self,
        user: &str,
        from: &str,
        user_data: Option<Map<String, Value>>,
    ) -> Result<String, VoiceError>;
}

impl std::fmt::Debug for CallControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallControl")
            .field("alive", &(self.calls.strong_count() > 0))
            .finish()
    }
}

impl CallControl {
    fn switch(&self) -> Result<Arc<dyn NetworkSide>, VoiceError> {
        self.calls
            .upgrade()
            .ok_or_else(|| VoiceError::Internal("voice service stopped".into()))
    }

    /// The far end of an outbound call (a Dial or a consultation to an outside number)
    /// answered: every `Dialing` leg of the call becomes `Established`. Fails with statusCode 2
    /// when no outside party of the call is still alerting (e.g. the caller hung up), 6 when the
    /// call does not exist.
    pub fn far_end_answered(&self, call_id: &str) -> Result<(), VoiceError> {
        self.switch()?.far_end_answered(call_id)
    }

    /// The network released the call: every leg not yet released is released.
    pub fn far_end_released(&self, call_id: &str) -> Result<(), VoiceError> {
        self.switch()?.far_end_released(call_id)
    }

    /// A call from `from` arrives at `user`'s device: a `Ringing` `Inbound` leg, announced by a
    /// `StatusChange` notification. Returns the call id.
    pub fn inbound_call(
        &self,
        user: &str,
        from: &str,
        user_data: Option<Map<String, Value>>,
    ) -> Result<String, VoiceError> {
        self.switch()?.inbound_call(user, from, user_data)
    }
}
