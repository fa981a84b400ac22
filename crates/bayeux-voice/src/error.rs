//! The crate's error type, and the one place where it becomes an HTTP status and a GWS
//! `statusCode`.

use std::fmt;

use http::StatusCode;

/// Why a request or a call-control action failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum VoiceError {
    /// The body is not JSON, or `operationName` or a required parameter is missing or
    /// malformed: HTTP 400, statusCode 1.
    BadRequest(String),
    /// The body is larger than the configured limit: HTTP 413, statusCode 1.
    TooLarge,
    /// The body did not arrive within the configured time: HTTP 408, statusCode 1.
    BodyTimeout,
    /// A state-changing request whose `Content-Type` is not `application/json`: HTTP 415,
    /// statusCode 1. (A cross-site HTML form can only send form or plain-text bodies, and a
    /// script needs a CORS preflight to send JSON.)
    UnsupportedMediaType,
    /// CSRF protection is on and a state-changing request lacks its session's
    /// `X-CSRF-TOKEN`: HTTP 403, statusCode 3, GWS's message.
    CsrfTokenInvalid,
    /// Unknown operation, an operation not valid in the current state, or a missing feature:
    /// HTTP 400, statusCode 2.
    InvalidOperation(String),
    /// The method is not served on this path: HTTP 405, statusCode 2.
    MethodNotAllowed,
    /// The call, device or resource does not exist or is not the user's: HTTP 404,
    /// statusCode 6.
    NotFound(String),
    /// Missing or wrong credentials: HTTP 401, statusCode 20.
    Unauthenticated,
    /// The `Origin` is not allowed: HTTP 403, statusCode 3.
    OriginNotAllowed,
    /// Something failed inside: HTTP 500, statusCode 4.
    Internal(String),
}

impl VoiceError {
    /// The GWS `statusCode`.
    pub fn status_code(&self) -> u32 {
        match self {
            VoiceError::BadRequest(_)
            | VoiceError::TooLarge
            | VoiceError::BodyTimeout
            | VoiceError::UnsupportedMediaType => 1,
            VoiceError::InvalidOperation(_) | VoiceError::MethodNotAllowed => 2,
            VoiceError::OriginNotAllowed | VoiceError::CsrfTokenInvalid => 3,
            VoiceError::Internal(_) => 4,
            VoiceError::NotFound(_) => 6,
            VoiceError::Unauthenticated => 20,
        }
    }

    /// The HTTP status.
    pub fn http_status(&self) -> StatusCode {
        match self {
            VoiceError::BadRequest(_) | VoiceError::InvalidOperation(_) => StatusCode::BAD_REQUEST,
            VoiceError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            VoiceError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            VoiceError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            VoiceError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            VoiceError::OriginNotAllowed | VoiceError::CsrfTokenInvalid => StatusCode::FORBIDDEN,
            VoiceError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            VoiceError::NotFound(_) => StatusCode::NOT_FOUND,
            VoiceError::Unauthenticated => StatusCode::UNAUTHORIZED,
        }
    }

    /// The `statusMessage`.
    pub fn status_message(&self) -> &str {
        match self {
            VoiceError::BadRequest(m)
            | VoiceError::InvalidOperation(m)
            | VoiceError::NotFound(m)
            | VoiceError::Internal(m) => m,
            VoiceError::TooLarge => "Request body too large",
            VoiceError::BodyTimeout => "Request body timed out",
            VoiceError::UnsupportedMediaType => "Content-Type must be application/json",
            VoiceError::CsrfTokenInvalid => "Missing or invalid Csrf token",
            VoiceError::MethodNotAllowed => "Method not allowed",
            VoiceError::Unauthenticated => "Access denied",
            VoiceError::OriginNotAllowed => "Origin not allowed",
        }
    }

    /// The JSON answer: `{"statusCode":N,"statusMessage":"..."}`.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({
            "statusCode": self.status_code(),
            "statusMessage": self.status_message(),
        })
    }

    pub(crate) fn invalid_state(op: &str) -> VoiceError {
        VoiceError::InvalidOperation(format!("{op} is not valid in the current state"))
    }

    pub(crate) fn call_not_found() -> VoiceError {
        VoiceError::NotFound("Call not found".into())
    }

    pub(crate) fn device_not_found() -> VoiceError {
        VoiceError::NotFound("Device not found".into())
    }
}

impl fmt::Display for VoiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "statusCode {}: {}",
            self.status_code(),
            self.status_message()
        )
    }
}

impl std::error::Error for VoiceError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_table() {
        let table = [
            (VoiceError::BadRequest("x".into()), 400, 1),
            (VoiceError::TooLarge, 413, 1),
            (VoiceError::BodyTimeout, 408, 1),
            (VoiceError::UnsupportedMediaType, 415, 1),
            (VoiceError::CsrfTokenInvalid, 403, 3),
            (VoiceError::InvalidOperation("x".into()), 400, 2),
            (VoiceError::MethodNotAllowed, 405, 2),
            (VoiceError::NotFound("x".into()), 404, 6),
            (VoiceError::Unauthenticated, 401, 20),
            (VoiceError::OriginNotAllowed, 403, 3),
            (VoiceError::Internal("x".into()), 500, 4),
        ];
        for (e, http, code) in table {
            assert_eq!(e.http_status().as_u16(), http, "{e}");
            assert_eq!(e.status_code(), code, "{e}");
            assert_eq!(e.body()["statusCode"], code);
            assert_eq!(e.body().as_object().unwrap().len(), 2);
        }
        assert_eq!(
            VoiceError::Unauthenticated.body()["statusMessage"],
            "Access denied"
        );
        assert_eq!(
            VoiceError::OriginNotAllowed.body()["statusMessage"],
            "Origin not allowed"
        );
    }
}
