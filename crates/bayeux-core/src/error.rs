//! The crate's error type, and the one place where Bayeux error strings are produced.

use std::fmt;

/// Errors of the core crate.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The request body is not valid JSON, or not a Bayeux message or array of messages.
    Malformed(String),
    /// The request body is larger than [`crate::Limits::max_bytes`].
    TooLarge {
        /// The configured limit, in bytes.
        limit: usize,
    },
    /// The batch holds more messages than [`crate::Limits::max_messages`].
    TooManyMessages {
        /// The configured limit.
        limit: usize,
    },
    /// JSON nesting deeper than [`crate::Limits::max_depth`].
    TooDeep {
        /// The configured limit.
        limit: usize,
    },
    /// A channel name or pattern that is not valid (the name is truncated).
    InvalidChannel(String),
    /// The session does not exist (never did, expired, or was disconnected).
    UnknownSession,
    /// The session's outbound queue is full and its policy refuses the message.
    QueueFull,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Malformed(m) => write!(f, "malformed Bayeux message: {m}"),
            Error::TooLarge { limit } => write!(f, "message larger than {limit} bytes"),
            Error::TooManyMessages { limit } => write!(f, "more than {limit} messages in a batch"),
            Error::TooDeep { limit } => write!(f, "JSON nested deeper than {limit} levels"),
            Error::InvalidChannel(c) => write!(f, "invalid channel {c:?}"),
            Error::UnknownSession => f.write_str("unknown session"),
            Error::QueueFull => f.write_str("session queue full"),
        }
    }
}

impl std::error::Error for Error {}

impl Error {
    /// The Bayeux `error` string for a whole request that could not be decoded, for transports
    /// that answer such requests with a Bayeux body (HTTP 400).
    pub fn bayeux_error(&self) -> String {
        match self {
            Error::Malformed(_) => "400::message_invalid".into(),
            Error::TooLarge { .. } => "413::message_too_large".into(),
            Error::TooManyMessages { .. } => "413::batch_too_large".into(),
            Error::TooDeep { .. } => "400::message_too_deep".into(),
            Error::InvalidChannel(_) => Failure::ChannelInvalid.error_string(),
            Error::UnknownSession => Failure::SessionUnknown.error_string(),
            Error::QueueFull => "503::queue_full".into(),
        }
    }
}

/// Why a single Bayeux message failed; turned into the CometD error string and advice in one
/// place ([`Failure::error_string`], [`Failure::reconnect`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Failure {
    /// `402::session_unknown`: unknown, expired or foreign session.
    SessionUnknown,
    /// `403:<reason>:handshake_denied`: the security policy refused the handshake.
    HandshakeDenied(String),
    /// `401::<message>`: the handshake carried no acceptable credentials.
    Unauthorized(String),
    /// `400::channel_missing`.
    ChannelMissing,
    /// `405::channel_invalid`.
    ChannelInvalid,
    /// `405::message_id_invalid`.
    MessageIdInvalid,
    /// `403::subscription_missing`.
    SubscriptionMissing,
    /// `403::subscription_invalid`.
    SubscriptionInvalid,
    /// `403:<reason>:subscribe_denied`.
    SubscribeDenied(String),
    /// `403:<reason>:publish_denied`.
    PublishDenied(String),
    /// `403:<reason>:create_denied`: an authorizer refused to bring the channel into existence.
    CreateDenied(String),
    /// `403::<message>`: refused by the security policy in the application's own words.
    Forbidden(String),
    /// `404::message_deleted`: an extension dropped the message.
    MessageDeleted,
    /// `400::version_unsupported`: the client's minimum version is above ours.
    VersionUnsupported,
    /// `400::connection_type_unsupported`: no common connection type.
    ConnectionTypeUnsupported,
    /// `503::too_many_sessions`: the session limit is reached.
    TooManySessions,
    /// `400::data_missing`: a publish without `data`.
    DataMissing,
    /// `400::remote_call_id_missing`: a message to a remote-call channel without an `id`, to
    /// which no answer could be matched.
    RemoteCallIdMissing,
    /// `503::too_many_remote_calls`: the caller (or the whole engine) has as many remote calls
    /// waiting for an answer as allowed.
    TooManyRemoteCalls,
    /// `408::remote_call_timeout`: the handler did not answer within its timeout.
    RemoteCallTimeout,
    /// `500::remote_call_unanswered`: the handler dropped its responder without answering.
    RemoteCallUnanswered,
}

impl Failure {
    /// The CometD error string, `code:args:message`.
    pub fn error_string(&self) -> String {
        match self {
            Failure::SessionUnknown => "402::session_unknown".into(),
            Failure::HandshakeDenied(r) => format!("403:{r}:handshake_denied"),
            Failure::Unauthorized(m) => format!("401::{m}"),
            Failure::ChannelMissing => "400::channel_missing".into(),
            Failure::ChannelInvalid => "405::channel_invalid".into(),
            Failure::MessageIdInvalid => "405::message_id_invalid".into(),
            Failure::SubscriptionMissing => "403::subscription_missing".into(),
            Failure::SubscriptionInvalid => "403::subscription_invalid".into(),
            Failure::SubscribeDenied(r) => format!("403:{r}:subscribe_denied"),
            Failure::PublishDenied(r) => format!("403:{r}:publish_denied"),
            Failure::CreateDenied(r) => format!("403:{r}:create_denied"),
            Failure::Forbidden(m) => format!("403::{m}"),
            Failure::MessageDeleted => "404::message_deleted".into(),
            Failure::VersionUnsupported => "400::version_unsupported".into(),
            Failure::ConnectionTypeUnsupported => "400::connection_type_unsupported".into(),
            Failure::TooManySessions => "503::too_many_sessions".into(),
            Failure::DataMissing => "400::data_missing".into(),
            Failure::RemoteCallIdMissing => "400::remote_call_id_missing".into(),
            Failure::TooManyRemoteCalls => "503::too_many_remote_calls".into(),
            Failure::RemoteCallTimeout => "408::remote_call_timeout".into(),
            Failure::RemoteCallUnanswered => "500::remote_call_unanswered".into(),
        }
    }

    /// The `reconnect` advice that goes with this failure.
    pub fn reconnect(&self) -> Reconnect {
        match self {
            Failure::SessionUnknown => Reconnect::Handshake,
            // A refused or unsupported handshake will not succeed by retrying.
            Failure::HandshakeDenied(_)
            | Failure::Unauthorized(_)
            | Failure::VersionUnsupported
            | Failure::ConnectionTypeUnsupported => Reconnect::None,
            // Try again later: sessions may be freed.
            Failure::TooManySessions => Reconnect::Handshake,
            _ => Reconnect::Retry,
        }
    }
}

/// The `advice.reconnect` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconnect {
    /// Reconnect with `/meta/connect` after `interval`.
    Retry,
    /// Handshake again.
    Handshake,
    /// Stop.
    None,
}

impl Reconnect {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            Reconnect::Retry => "retry",
            Reconnect::Handshake => "handshake",
            Reconnect::None => "none",
        }
    }
}
