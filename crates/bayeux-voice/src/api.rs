//! The REST API under `/api/v2`: routing, origin and CORS, authentication, CSRF tokens, the
//! JSON content type of state-changing requests, body limits and timeout, and the mapping of
//! every outcome to an HTTP status and a GWS `statusCode`.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bayeux_core::Engine;
use bytes::Bytes;
use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ALLOW, CACHE_CONTROL, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE,
    ORIGIN, SET_COOKIE, VARY, WWW_AUTHENTICATE,
};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use serde_json::{Map, Value, json};

use crate::agent::channel_operation;
use crate::assets::{self, STATIC_PREFIX};
use crate::auth::{CSRF_HEADER, Credentials, Gate, VoiceAuthenticator};
use crate::config::{ConfigError, VoiceConfig};
use crate::directory::{Directory, User};
use crate::error::VoiceError;
use crate::model::Operation;
use crate::policy::VoiceSecurityPolicy;
use crate::switch::{FarEnd, OpParams, Switch};
use crate::telephony::{CallControl, SimulatedTelephony, Telephony};

/// The API's mount point.
const API_PREFIX: &str = "/api/v2";
/// Methods offered to CORS preflights.
const METHODS: &str = "GET, POST, OPTIONS";
/// Longest accepted dialed number.
const MAX_NUMBER_LEN: usize = 64;
/// Longest accepted `digits` of `SendDtmf`.
const MAX_DTMF_LEN: usize = 64;
/// How far past the body limit an oversized body is still read (and discarded), as on the
/// Bayeux endpoint: a server that answers 413 without reading the body makes hyper drop the
/// connection, and the client sees a broken pipe instead of the 413.
const DRAIN_FACTOR: usize = 4;
/// The response header that names the request header for the CSRF token (GWS's scheme).
const CSRF_HEADER_NAME: &str = "x-csrf-header";
/// Longest accepted `disposition` and `dispositionKey`.
const MAX_DISPOSITION_LEN: usize = 256;
/// The `userData` key of `SetCallDisposition` when the request names none.
const DEFAULT_DISPOSITION_KEY: &str = "DispositionCode";

/// The routes of the API (paths relative to `/api/v2`, trailing slash ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route<'a> {
    /// `/me`
    Me,
    /// `/me/devices`
    MyDevices,
    /// `/me/devices/{id}`
    MyDevice(&'a str),
    /// `/me/devices/{id}/calls`
    MyDeviceCalls(&'a str),
    /// `/devices/{id}` (where `deviceUri` points)
    Device(&'a str),
    /// `/me/calls`
    Calls,
    /// `/me/calls/{id}`
    Call(&'a str),
    /// `/me/channels/voice`
    VoiceChannel,
    /// `/test/calls` (test control)
    TestCalls,
    /// `/test/calls/{id}` (test control)
    TestCall(&'a str),
    /// `/test/reset` (test control)
    TestReset,
}

impl Route<'_> {
    fn parse(path: &str) -> Option<Route<'_>> {
        let rest = path.strip_prefix(API_PREFIX)?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let segs: Vec<&str> = rest.split('/').skip(1).collect();
        if !rest.starts_with('/') || segs.iter().any(|s| s.is_empty()) {
            return None;
        }
        Some(match segs.as_slice() {
            ["me"] => Route::Me,
            ["me", "devices"] => Route::MyDevices,
            ["me", "devices", id] => Route::MyDevice(id),
            ["me", "devices", id, "calls"] => Route::MyDeviceCalls(id),
            ["devices", id] => Route::Device(id),
            ["me", "calls"] => Route::Calls,
            ["me", "calls", id] => Route::Call(id),
            ["me", "channels", "voice"] => Route::VoiceChannel,
            ["test", "calls"] => Route::TestCalls,
            ["test", "calls", id] => Route::TestCall(id),
            ["test", "reset"] => Route::TestReset,
            _ => return None,
        })
    }

    fn allows(self, method: &Method) -> bool {
        match self {
            Route::MyDevice(_) | Route::Call(_) => method == Method::GET || method == Method::POST,
            Route::MyDeviceCalls(_)
            | Route::VoiceChannel
            | Route::TestCalls
            | Route::TestCall(_)
            | Route::TestReset => method == Method::POST,
            _ => method == Method::GET,
        }
    }

    /// Whether the route belongs to the test-control API.
    fn is_test_control(self) -> bool {
        matches!(
            self,
            Route::TestCalls | Route::TestCall(_) | Route::TestReset
        )
    }

    fn allow_header(self) -> &'static str {
        match self {
            Route::MyDevice(_) | Route::Call(_) => "GET, POST, OPTIONS",
            Route::MyDeviceCalls(_)
            | Route::VoiceChannel
            | Route::TestCalls
            | Route::TestCall(_)
            | Route::TestReset => "POST, OPTIONS",
            _ => "GET, OPTIONS",
        }
    }
}

struct Inner {
    config: Arc<VoiceConfig>,
    gate: Arc<Gate>,
    switch: Arc<Switch>,
}

/// The GWS v2 voice API emulation: REST handlers, the call model behind them, and the
/// notifications they publish through the engine.
///
/// Cheap to clone (all clones share state). Mount it for every path where
/// [`VoiceApi::matches`] is true, either by awaiting [`VoiceApi::handle`] or through its
/// [`tower::Service`] implementation; install [`VoiceApi::security_policy`] on the engine and
/// [`VoiceApi::authenticator`] on the transport's notifications endpoint.
///
/// Notifications are handed to the engine while the call table is locked (that is what keeps
/// each user's notifications in state order), so a local-session callback that receives them
/// must not call back into the voice API synchronously.
#[derive(Clone)]
pub struct VoiceApi {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for VoiceApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VoiceApi")
            .field("users", &self.inner.config.users.len())
            .field("calls", &self.inner.switch.call_count())
            .finish()
    }
}

type Reply = Result<(StatusCode, Value), VoiceError>;

fn ok(field: Option<(&str, Value)>) -> Reply {
    let mut body = Map::new();
    body.insert("statusCode".into(), Value::from(0));
    if let Some((k, v)) = field {
        body.insert(k.into(), v);
    }
    Ok((StatusCode::OK, Value::Object(body)))
}

fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let bytes = serde_json::to_vec(body)
        .unwrap_or_else(|_| br#"{"statusCode":4,"statusMessage":"Internal error"}"#.to_vec());
    let mut r = Response::new(Full::new(Bytes::from(bytes)));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn error_response(e: &VoiceError) -> Response<Full<Bytes>> {
    let mut r = json_response(e.http_status(), &e.body());
    if *e == VoiceError::Unauthenticated {
        r.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"GWS\""),
        );
    }
    r
}

/// Why a body was not read.
#[derive(Debug)]
struct BodyRefused {
    error: VoiceError,
    /// Whether the connection should close after the answer: the rest of the body is still
    /// on it (stalled, or too large to drain).
    close: bool,
}

impl BodyRefused {
    fn new(error: VoiceError, close: bool) -> BodyRefused {
        BodyRefused { error, close }
    }
}

/// Reads the whole body within `timeout`, refusing more than `limit` bytes: the same rules as
/// the Bayeux endpoint's reader. A body larger than the limit is read and discarded up to
/// [`DRAIN_FACTOR`] times the limit (413, connection kept); past that, or when the declared
/// length already goes past it, 413 at once and the connection is closed. A body still
/// incomplete after `timeout` is 408 and the connection is closed.
async fn read_body<B>(
    body: B,
    declared: Option<u64>,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, BodyRefused>
where
    B: Body<Data = Bytes>,
{
    let drain_limit = limit.saturating_mul(DRAIN_FACTOR);
    let hinted = body.size_hint().exact();
    if declared.max(hinted).is_some_and(|n| n > drain_limit as u64) {
        return Err(BodyRefused::new(VoiceError::TooLarge, true));
    }
    let read = async move {
        let mut body = std::pin::pin!(body);
        let mut buf: Vec<u8> = Vec::new();
        let mut seen = 0usize;
        while let Some(frame) = body.as_mut().frame().await {
            let Ok(frame) = frame else {
                let e = VoiceError::BadRequest("Cannot read the request body".into());
                return Err(BodyRefused::new(e, true));
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            seen = seen.saturating_add(data.len());
            if seen > drain_limit {
                return Err(BodyRefused::new(VoiceError::TooLarge, true));
            } else if seen > limit {
                // Past the limit: keep reading so the client gets the 413, keep nothing.
                buf = Vec::new();
            } else {
                buf.extend_from_slice(&data);
            }
        }
        if seen > limit {
            Err(BodyRefused::new(VoiceError::TooLarge, false))
        } else {
            Ok(Bytes::from(buf))
        }
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(r) => r,
        Err(_) => Err(BodyRefused::new(VoiceError::BodyTimeout, true)),
    }
}

/// Whether the request declares a JSON body: one `Content-Type` whose media type is
/// `application/json` (any case, parameters such as `charset` allowed). An HTML form can only
/// send `application/x-www-form-urlencoded`, `multipart/form-data` or `text/plain`, and a
/// cross-site script cannot send `application/json` without a CORS preflight, which the
/// origin rule answers; so requiring it keeps forged state changes out.
fn declares_json(headers: &http::HeaderMap) -> bool {
    let mut values = headers.get_all(CONTENT_TYPE).iter();
    let (Some(v), None) = (values.next(), values.next()) else {
        return false;
    };
    v.to_str()
        .ok()
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
}

/// Whether `method` may change state (everything but the safe methods); the API serves POST.
fn state_changing(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The JSON object of a POST body and its `operationName`.
fn parse_operation(body: &[u8]) -> Result<(String, Map<String, Value>), VoiceError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|_| VoiceError::BadRequest("Body is not valid JSON".into()))?;
    let Value::Object(map) = value else {
        return Err(VoiceError::BadRequest("Body must be a JSON object".into()));
    };
    match map.get("operationName") {
        Some(Value::String(name)) => Ok((name.clone(), map)),
        Some(_) => Err(VoiceError::BadRequest(
            "operationName must be a string".into(),
        )),
        None => Err(VoiceError::BadRequest("operationName missing".into())),
    }
}

fn unknown_operation(_name: &str) -> VoiceError {
    VoiceError::InvalidOperation("Unknown operation".into())
}

/// `destination.phoneNumber`: required, printable ASCII without spaces, at most
/// [`MAX_NUMBER_LEN`] bytes.
fn destination(body: &Map<String, Value>) -> Result<String, VoiceError> {
    let destination = match body.get("destination") {
        Some(Value::Object(d)) => required_str(d, "phoneNumber", MAX_NUMBER_LEN)?,
        _ => return Err(VoiceError::BadRequest("destination missing".into())),
    };
    if !destination.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(VoiceError::BadRequest("phoneNumber is not a number".into()));
    }
    Ok(destination)
}

/// An optional call reference (`consultCallUri`, `otherCallUri`): a URI or a path whose last
/// segment is the call id.
fn call_reference(body: &Map<String, Value>, key: &str) -> Result<Option<String>, VoiceError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            let id = s
                .trim_end_matches('/')
                .rsplit('/')
                .next()
                .unwrap_or_default();
            if id.is_empty() {
                Err(VoiceError::BadRequest(format!("{key} names no call")))
            } else {
                Ok(Some(id.to_owned()))
            }
        }
        Some(_) => Err(VoiceError::BadRequest(format!("{key} must be a string"))),
    }
}

/// `userData`: absent is `None` unless `required`; present must be an object.
fn user_data(
    body: &mut Map<String, Value>,
    required: bool,
) -> Result<Option<Map<String, Value>>, VoiceError> {
    match body.remove("userData") {
        Some(Value::Object(m)) => Ok(Some(m)),
        None | Some(Value::Null) if !required => Ok(None),
        None | Some(Value::Null) => Err(VoiceError::BadRequest("userData missing".into())),
        Some(_) => Err(VoiceError::BadRequest("userData must be an object".into())),
    }
}

fn required_str(body: &Map<String, Value>, key: &str, max: usize) -> Result<String, VoiceError> {
    match body.get(key) {
        Some(Value::String(s)) if !s.is_empty() && s.len() <= max => Ok(s.clone()),
        Some(Value::String(s)) if !s.is_empty() => {
            Err(VoiceError::BadRequest(format!("{key} too long")))
        }
        _ => Err(VoiceError::BadRequest(format!("{key} missing"))),
    }
}

impl VoiceApi {
    /// The API with the built-in [`SimulatedTelephony`] (outbound calls answered after
    /// [`VoiceConfig::outbound_answer_delay_ms`]). Logs a warning when the configuration uses
    /// the demo credentials.
    pub fn new(config: VoiceConfig, engine: Engine) -> Result<VoiceApi, ConfigError> {
        let delay = Duration::from_millis(config.outbound_answer_delay_ms);
        VoiceApi::with_telephony(config, engine, Arc::new(SimulatedTelephony::new(delay)))
    }

    /// The API with a host's own telephony source.
    pub fn with_telephony(
        config: VoiceConfig,
        engine: Engine,
        telephony: Arc<dyn Telephony>,
    ) -> Result<VoiceApi, ConfigError> {
        config.validate()?;
        if config.uses_demo_credentials() {
            tracing::warn!(
                "voice API: running with the embedded demo users and their well-known password; \
                 configure your own users"
            );
        }
        let config = Arc::new(config);
        let directory = Arc::new(Directory::new(&config.users));
        let gate = Arc::new(Gate::new(&config, directory.clone()));
        let switch = Switch::new(config.clone(), directory, engine, telephony);
        Ok(VoiceApi {
            inner: Arc::new(Inner {
                config,
                gate,
                switch,
            }),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &VoiceConfig {
        &self.inner.config
    }

    /// Whether `path` belongs to this API: `/api/v2` and below, except the notifications
    /// endpoint and its sub-paths (those belong to the Bayeux transport), and the static files
    /// under `/voice/` (the OpenAPI document, the notification schemas, the agent page).
    pub fn matches(&self, path: &str) -> bool {
        let below = |mount: &str| {
            path.strip_prefix(mount)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        };
        (below(API_PREFIX) && !below(self.notifications_path())) || below(STATIC_PREFIX)
    }

    /// The path of the Bayeux notifications endpoint (default `/api/v2/notifications`).
    pub fn notifications_path(&self) -> &str {
        match self.inner.config.notifications_path.trim_end_matches('/') {
            "" => "/",
            p => p,
        }
    }

    /// The origins allowed to use the API and the notifications endpoint from a browser
    /// (`scheme://host[:port]`); a `"*"` entry means any. The transport's endpoint should be
    /// configured with the same list.
    pub fn allowed_origins(&self) -> &[String] {
        self.inner.gate.origins()
    }

    /// The security policy to install on the engine
    /// ([`bayeux_core::Engine::set_security_policy`]).
    pub fn security_policy(&self) -> VoiceSecurityPolicy {
        VoiceSecurityPolicy::new(self.notifications_path())
    }

    /// The authenticator for the notifications endpoint (Basic credentials or this API's
    /// session cookie). It may be installed on other endpoints too.
    pub fn authenticator(&self) -> VoiceAuthenticator {
        VoiceAuthenticator {
            gate: self.inner.gate.clone(),
        }
    }

    /// The transport endpoint for the notifications: mounted at [`VoiceApi::notifications_path`],
    /// sessions authenticated by [`VoiceApi::authenticator`], browsers limited to
    /// [`VoiceApi::allowed_origins`]. Add it to the transport configuration's `endpoints`.
    pub fn notifications_endpoint(&self) -> bayeux_transport::Endpoint {
        let mut e = bayeux_transport::Endpoint::new(self.notifications_path());
        e.authenticator = Some(std::sync::Arc::new(self.authenticator()));
        e.origins = if self.allowed_origins().iter().any(|o| o == "*") {
            bayeux_transport::Origins::Any
        } else {
            bayeux_transport::Origins::List(self.allowed_origins().to_vec())
        };
        e
    }

    /// A handle to drive calls from the network side (far-end answer and release, inbound
    /// calls).
    pub fn call_control(&self) -> CallControl {
        self.inner.switch.control()
    }

    /// Handles one request under `/api/v2`. Never fails: every outcome is a JSON answer with a
    /// `statusCode`.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Full<Bytes>>
    where
        B: Body<Data = Bytes>,
    {
        let (parts, body) = req.into_parts();
        if parts.uri.path() == STATIC_PREFIX {
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::PERMANENT_REDIRECT;
            r.headers_mut()
                .insert(http::header::LOCATION, HeaderValue::from_static("/voice/"));
            return r;
        }
        if parts.uri.path().starts_with("/voice/") {
            return serve_static(&parts);
        }
        let gate = &self.inner.gate;
        // A refused origin gets no CORS headers: the foreign page cannot even read the refusal.
        if !gate.request_origin_ok(&parts.headers) {
            return error_response(&VoiceError::OriginNotAllowed);
        }
        let origin = parts.headers.get(ORIGIN).cloned();
        let csrf_on = self.inner.config.enable_csrf_protection;
        let mut response = if parts.method == Method::OPTIONS {
            preflight(&parts.headers, origin.is_some(), csrf_on)
        } else {
            match gate.authenticate(&parts.headers) {
                None => error_response(&VoiceError::Unauthenticated),
                Some(creds) => {
                    let mut close = false;
                    // GWS checks the token before the request reaches its handler, so a forged
                    // request learns nothing about paths or bodies either.
                    let reply = if csrf_on
                        && state_changing(&parts.method)
                        && !gate.csrf_ok(&creds, &parts.headers)
                    {
                        Err(VoiceError::CsrfTokenInvalid)
                    } else {
                        self.dispatch(&parts, body, creds.user(), &mut close).await
                    };
                    let mut r = match reply {
                        Ok((status, v)) => json_response(status, &v),
                        Err(e) => {
                            let mut r = error_response(&e);
                            if let (VoiceError::MethodNotAllowed, Some(route)) =
                                (&e, Route::parse(parts.uri.path()))
                            {
                                r.headers_mut()
                                    .insert(ALLOW, HeaderValue::from_static(route.allow_header()));
                            }
                            r
                        }
                    };
                    if close {
                        r.headers_mut()
                            .insert(CONNECTION, HeaderValue::from_static("close"));
                    }
                    // Basic credentials without the user's session cookie start a session; its
                    // CSRF token is the one to hand out.
                    let csrf = match &creds {
                        Credentials::Basic { user, csrf: None } => {
                            let (cookie, csrf) = gate.set_cookie(user);
                            if let Ok(v) = HeaderValue::from_str(&cookie) {
                                r.headers_mut().insert(SET_COOKIE, v);
                            }
                            csrf
                        }
                        Credentials::Basic { csrf: Some(c), .. }
                        | Credentials::Cookie { csrf: c, .. } => c.clone(),
                    };
                    if csrf_on && let Ok(v) = HeaderValue::from_str(&csrf) {
                        let h = r.headers_mut();
                        h.insert(CSRF_HEADER_NAME, HeaderValue::from_static("X-CSRF-TOKEN"));
                        h.insert(CSRF_HEADER, v);
                    }
                    r
                }
            }
        };
        if let Some(o) = origin {
            let h = response.headers_mut();
            h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, o);
            h.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
            h.append(VARY, HeaderValue::from_static("Origin"));
            if csrf_on {
                // A page's script can read only the response headers CORS exposes.
                h.insert(
                    ACCESS_CONTROL_EXPOSE_HEADERS,
                    HeaderValue::from_static("X-CSRF-HEADER, X-CSRF-TOKEN"),
                );
            }
        }
        response
    }

    /// Serves one authenticated request; sets `close` when the connection should not be
    /// reused (a body left unread).
    async fn dispatch<B>(
        &self,
        parts: &http::request::Parts,
        body: B,
        user: &Arc<User>,
        close: &mut bool,
    ) -> Reply
    where
        B: Body<Data = Bytes>,
    {
        let route = Route::parse(parts.uri.path())
            .filter(|r| self.inner.config.test_control || !r.is_test_control())
            .ok_or_else(|| VoiceError::NotFound("Resource not found".into()))?;
        if !route.allows(&parts.method) {
            return Err(VoiceError::MethodNotAllowed);
        }
        let switch = &self.inner.switch;
        if parts.method == Method::GET {
            return match route {
                Route::Me => ok(Some(("user", switch.user_json(user)))),
                Route::MyDevices => ok(Some(("devices", json!([switch.device_json(user)])))),
                Route::MyDevice(id) | Route::Device(id) if user.owns_device(id) => {
                    ok(Some(("device", switch.device_json(user))))
                }
                Route::MyDevice(_) | Route::Device(_) => Err(VoiceError::device_not_found()),
                Route::Calls => ok(Some(("calls", Value::Array(switch.calls_json(user)?)))),
                Route::Call(id) => ok(Some(("call", switch.call_json(user, id)?))),
                _ => Err(VoiceError::MethodNotAllowed),
            };
        }
        if !declares_json(&parts.headers) {
            return Err(VoiceError::UnsupportedMediaType);
        }
        let config = &self.inner.config;
        let declared = parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let timeout = Duration::from_millis(config.body_read_timeout_ms);
        let body = read_body(body, declared, config.max_body_bytes, timeout)
            .await
            .map_err(|refused| {
                *close = refused.close;
                refused.error
            })?;
        if route == Route::TestReset {
            // No body, or an empty object.
            if !body.is_empty() && serde_json::from_slice::<Map<String, Value>>(&body).is_err() {
                return Err(VoiceError::BadRequest(
                    "Body must be empty or a JSON object".into(),
                ));
            }
            switch.reset();
            return ok(None);
        }
        if route == Route::TestCalls {
            let body: Value = serde_json::from_slice(&body)
                .map_err(|_| VoiceError::BadRequest("Body is not valid JSON".into()))?;
            let Value::Object(mut body) = body else {
                return Err(VoiceError::BadRequest("Body must be a JSON object".into()));
            };
            let from = required_str(&body, "from", MAX_NUMBER_LEN)?;
            let to = required_str(&body, "to", MAX_NUMBER_LEN)?;
            if !from.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(VoiceError::BadRequest("from is not a number".into()));
            }
            let data = user_data(&mut body, false)?;
            let id = switch.test_inbound_call(&from, &to, data)?;
            return ok(Some(("id", Value::from(id))));
        }
        let (name, mut body) = parse_operation(&body)?;
        match route {
            Route::TestCall(id) => {
                let what = match name.as_str() {
                    "FarEndAnswer" => FarEnd::Answer,
                    "FarEndBusy" => FarEnd::Busy,
                    "FarEndRelease" => FarEnd::Release,
                    _ => return Err(unknown_operation(&name)),
                };
                switch.far_end(id, what)?;
                ok(None)
            }
            Route::MyDeviceCalls(device) => {
                if name != "Dial" {
                    return Err(unknown_operation(&name));
                }
                Switch::check_features(user, None)?;
                let destination = destination(&body)?;
                let data = user_data(&mut body, false)?;
                switch.dial(user, device, &destination, data)?;
                ok(None)
            }
            Route::MyDevice(device) => {
                match name.as_str() {
                    "StopCallRecording" => switch.stop_device_recording(user, device)?,
                    "DoNotDisturbOn" => switch.set_do_not_disturb(user, device, true)?,
                    "DoNotDisturbOff" => switch.set_do_not_disturb(user, device, false)?,
                    _ => return Err(unknown_operation(&name)),
                }
                ok(None)
            }
            Route::VoiceChannel => {
                let mode = channel_operation(&name, &body)?;
                switch.set_agent_mode(user, mode)?;
                ok(None)
            }
            Route::Call(id) => {
                let op = Operation::from_name(&name).ok_or_else(|| unknown_operation(&name))?;
                Switch::check_features(user, Some(op))?;
                let mut params = OpParams::default();
                match op {
                    Operation::AttachUserData | Operation::UpdateUserData => {
                        params.user_data = user_data(&mut body, true)?;
                    }
                    Operation::DeleteUserDataPair => {
                        params.key = Some(required_str(&body, "key", usize::MAX)?);
                    }
                    Operation::SingleStepTransfer
                    | Operation::SingleStepConference
                    | Operation::InitiateTransfer
                    | Operation::InitiateConference => {
                        // `location` is accepted and ignored.
                        params.destination = Some(destination(&body)?);
                        params.user_data = user_data(&mut body, false)?;
                    }
                    Operation::CompleteTransfer | Operation::CompleteConference => {
                        params.other_call = call_reference(&body, "consultCallUri")?;
                    }
                    Operation::SwapCalls => {
                        params.other_call = call_reference(&body, "otherCallUri")?;
                    }
                    Operation::RemoveParticipantFromConference => {
                        params.participant =
                            Some(required_str(&body, "participant", MAX_NUMBER_LEN)?);
                    }
                    Operation::SetCallDisposition => {
                        let value = required_str(&body, "disposition", MAX_DISPOSITION_LEN)?;
                        let key = match body.get("dispositionKey") {
                            None | Some(Value::Null) => DEFAULT_DISPOSITION_KEY.to_owned(),
                            Some(_) => required_str(&body, "dispositionKey", MAX_DISPOSITION_LEN)?,
                        };
                        params.disposition = Some((key, value));
                    }
                    Operation::SendDtmf => {
                        let digits = required_str(&body, "digits", MAX_DTMF_LEN)?;
                        if !digits
                            .bytes()
                            .all(|b| b.is_ascii_digit() || b == b'*' || b == b'#')
                        {
                            return Err(VoiceError::BadRequest(
                                "digits may hold only 0-9, * and #".into(),
                            ));
                        }
                    }
                    _ => {}
                }
                switch.call_operation(user, id, op, params)?;
                ok(None)
            }
            _ => Err(VoiceError::MethodNotAllowed),
        }
    }

    #[cfg(test)]
    pub(crate) fn switch(&self) -> &Arc<Switch> {
        &self.inner.switch
    }
}

/// A static file under `/voice/`: public (no credentials, like any web page), GET and HEAD
/// only, cacheable for a short while.
fn serve_static(parts: &http::request::Parts) -> Response<Full<Bytes>> {
    if parts.method != Method::GET && parts.method != Method::HEAD {
        let mut r = error_response(&VoiceError::MethodNotAllowed);
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let Some((content_type, bytes)) = assets::static_file(parts.uri.path()) else {
        return error_response(&VoiceError::NotFound("Resource not found".into()));
    };
    let len = bytes.len();
    let body = if parts.method == Method::HEAD {
        Bytes::new()
    } else {
        Bytes::from(bytes)
    };
    let mut r = Response::new(Full::new(body));
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("max-age=60"));
    // The page loads only its own scripts and talks only to its own origin; the CometD client
    // runs its timers in a worker made from a blob.
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'self'; style-src 'self' 'unsafe-inline'; worker-src 'self' blob:; frame-ancestors 'none'",
        ),
    );
    h.insert(CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// The answer to `OPTIONS` (unauthenticated, as browsers send preflights without
/// credentials); the caller adds the CORS origin headers.
fn preflight(headers: &http::HeaderMap, cors: bool, csrf: bool) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::NO_CONTENT;
    let h = r.headers_mut();
    h.insert(ALLOW, HeaderValue::from_static(METHODS));
    if cors {
        h.insert(
            ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(METHODS),
        );
        let requested = headers
            .get(ACCESS_CONTROL_REQUEST_HEADERS)
            .cloned()
            .unwrap_or(HeaderValue::from_static(if csrf {
                "Authorization, Content-Type, X-CSRF-TOKEN"
            } else {
                "Authorization, Content-Type"
            }));
        h.insert(ACCESS_CONTROL_ALLOW_HEADERS, requested);
        h.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    }
    r
}

impl<B> tower::Service<Request<B>> for VoiceApi
where
    B: Body<Data = Bytes> + Send + 'static,
{
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let api = self.clone();
        Box::pin(async move { Ok(api.handle(req).await) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(Route::parse("/api/v2/me"), Some(Route::Me));
        assert_eq!(Route::parse("/api/v2/me/"), Some(Route::Me));
        assert_eq!(Route::parse("/api/v2/me/devices"), Some(Route::MyDevices));
        assert_eq!(
            Route::parse("/api/v2/me/devices/x"),
            Some(Route::MyDevice("x"))
        );
        assert_eq!(
            Route::parse("/api/v2/me/devices/x/calls"),
            Some(Route::MyDeviceCalls("x"))
        );
        assert_eq!(Route::parse("/api/v2/devices/x"), Some(Route::Device("x")));
        assert_eq!(Route::parse("/api/v2/me/calls"), Some(Route::Calls));
        assert_eq!(
            Route::parse("/api/v2/me/calls/ABC"),
            Some(Route::Call("ABC"))
        );
        for bad in [
            "/api/v2",
            "/api/v2/",
            "/api/v2/me//calls",
            "/api/v2/mex",
            "/api/v2/me/calls/a/b",
            "/api/v3/me",
        ] {
            assert_eq!(Route::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn matches_excludes_the_notifications_endpoint() {
        let api = VoiceApi::new(VoiceConfig::default(), Engine::new(Default::default())).unwrap();
        assert!(api.matches("/api/v2/me"));
        assert!(api.matches("/api/v2"));
        assert!(api.matches("/api/v2/unknown"));
        assert!(!api.matches("/api/v2/notifications"));
        assert!(!api.matches("/api/v2/notifications/handshake"));
        assert!(!api.matches("/api/v20"));
        assert!(!api.matches("/cometd"));
        assert!(api.matches("/voice/openapi.json"));
        assert!(!api.matches("/voicex"));
        assert!(api.switch().call_count() == 0);
    }
}
