//! Shared test harness: an engine, the voice API, and one capturing local session per user.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bayeux_core::{Engine, EngineConfig, LocalSession};
use bayeux_voice::{UserConfig, VoiceApi, VoiceConfig, basic_authorization};
use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Full};
use parking_lot::Mutex;
use serde_json::{Value, json};

/// The notifications one user received: `(channel, data)`.
#[derive(Clone, Default)]
pub struct Inbox(Arc<Mutex<Vec<(String, Value)>>>);

impl Inbox {
    /// Takes everything received so far.
    pub fn take(&self) -> Vec<Value> {
        self.0
            .lock()
            .drain(..)
            .map(|(c, d)| {
                assert_eq!(c, "/v2/me/calls");
                d
            })
            .collect()
    }

    /// Takes the notifications received on `channel`, leaving the others.
    pub fn take_on(&self, channel: &str) -> Vec<Value> {
        let mut all = self.0.lock();
        let (mine, rest): (Vec<_>, Vec<_>) = all.drain(..).partition(|(c, _)| c == channel);
        *all = rest;
        mine.into_iter().map(|(_, d)| d).collect()
    }

    /// The `i`th notification still waiting, without taking it.
    pub fn peek(&self, i: usize) -> Value {
        self.0.lock()[i].1.clone()
    }

    pub fn len(&self) -> usize {
        self.0.lock().len()
    }

    /// Waits (bounded) until at least `n` notifications arrived.
    pub async fn wait_for(&self, n: usize) {
        for _ in 0..5000 {
            if self.len() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!(
            "timed out waiting for {n} notifications, have {}",
            self.len()
        );
    }
}

pub struct Harness {
    pub engine: Engine,
    pub api: VoiceApi,
    inboxes: HashMap<String, Inbox>,
    _sessions: Vec<LocalSession>,
}

/// The demo users plus `extra` users `user{i}` (DN `2{i:04}`, both features).
pub fn config(extra: usize) -> VoiceConfig {
    let mut c = VoiceConfig {
        outbound_answer_delay_ms: 60_000,
        ..VoiceConfig::default()
    };
    for i in 0..extra {
        c.users.push(UserConfig {
            name: format!("user{i}"),
            password: format!("pw{i}"),
            device_id: format!("00000000-0000-4000-8000-{i:012}"),
            dn: format!("2{i:04}"),
            features: vec!["api-voice".into(), "api-voice-recording".into()],
        });
    }
    c
}

impl Harness {
    pub fn new(config: VoiceConfig) -> Harness {
        let engine = Engine::new(EngineConfig::default());
        let api = VoiceApi::new(config.clone(), engine.clone()).unwrap();
        engine.set_security_policy(Arc::new(api.security_policy()));
        let mut inboxes = HashMap::new();
        let mut sessions = Vec::new();
        for u in &config.users {
            let inbox = Inbox::default();
            let i = inbox.clone();
            sessions.push(engine.local_session(Some(&u.name), move |d| {
                let v: Value = serde_json::from_str(d.data.get()).unwrap();
                schema::check_notification(d.channel.as_str(), &v);
                i.0.lock().push((d.channel.as_str().to_owned(), v));
            }));
            inboxes.insert(u.name.clone(), inbox);
        }
        Harness {
            engine,
            api,
            inboxes,
            _sessions: sessions,
        }
    }

    pub fn demo() -> Harness {
        Harness::new(config(0))
    }

    pub fn inbox(&self, user: &str) -> &Inbox {
        &self.inboxes[user]
    }

    /// Drains every inbox (every channel).
    pub fn drain(&self) {
        for i in self.inboxes.values() {
            i.0.lock().clear();
        }
    }

    /// Total notifications waiting in all inboxes.
    pub fn pending(&self) -> usize {
        self.inboxes.values().map(Inbox::len).sum()
    }

    pub fn password(user: &str) -> String {
        match user.strip_prefix("user") {
            Some(i) => format!("pw{i}"),
            None => "password".into(),
        }
    }

    pub async fn get(&self, user: &str, path: &str) -> Resp {
        send(
            &self.api,
            req("GET", path).auth(user, &Self::password(user)),
            None,
        )
        .await
    }

    pub async fn post(&self, user: &str, path: &str, body: Value) -> Resp {
        send(
            &self.api,
            req("POST", path).auth(user, &Self::password(user)).json(),
            Some(body.to_string()),
        )
        .await
    }

    pub async fn op(&self, user: &str, call: &str, body: Value) -> Resp {
        self.post(user, &format!("/api/v2/me/calls/{call}"), body)
            .await
    }

    pub async fn dial(&self, user: &str, to: &str) -> Resp {
        let device = self.device_of(user);
        self.post(
            user,
            &format!("/api/v2/me/devices/{device}/calls"),
            json!({"operationName": "Dial", "destination": {"phoneNumber": to}}),
        )
        .await
    }

    /// Dials and returns the new call's id (from the caller's notification).
    /// Earlier notifications of the caller are discarded; the callee's stay.
    pub async fn dial_id(&self, user: &str, to: &str) -> String {
        self.inbox(user).take();
        let r = self.dial(user, to).await;
        assert_eq!(r.status, 200, "{}", r.json);
        let n = self.inbox(user).take();
        assert_eq!(n.len(), 1, "{n:?}");
        n[0]["call"]["id"].as_str().unwrap().to_owned()
    }

    pub fn device_of(&self, user: &str) -> String {
        self.api
            .config()
            .users
            .iter()
            .find(|u| u.name == user)
            .unwrap()
            .device_id
            .clone()
    }

    pub async fn call(&self, user: &str, id: &str) -> Value {
        let r = self.get(user, &format!("/api/v2/me/calls/{id}")).await;
        assert_eq!(r.status, 200, "{}", r.json);
        r.json["call"].clone()
    }
}

pub struct Req {
    builder: http::request::Builder,
}

pub fn req(method: &str, path: &str) -> Req {
    Req {
        builder: Request::builder().method(method).uri(path),
    }
}

impl Req {
    pub fn auth(self, user: &str, password: &str) -> Req {
        self.header("authorization", &basic_authorization(user, password))
    }

    /// `Content-Type: application/json`, which state-changing requests need.
    pub fn json(self) -> Req {
        self.header("content-type", "application/json")
    }

    pub fn header(self, k: &str, v: &str) -> Req {
        Req {
            builder: self.builder.header(k, v),
        }
    }
}

pub struct Resp {
    pub status: u16,
    pub json: Value,
    pub headers: HeaderMap,
}

impl Resp {
    pub fn code(&self) -> i64 {
        self.json["statusCode"].as_i64().unwrap_or(-1)
    }

    /// Asserts HTTP status and statusCode.
    #[track_caller]
    pub fn expect(&self, http: u16, code: i64) {
        assert_eq!((self.status, self.code()), (http, code), "{}", self.json);
        if code != 0 {
            let o = self.json.as_object().unwrap();
            assert_eq!(
                o.len(),
                2,
                "an error carries statusCode and statusMessage only: {o:?}"
            );
            assert!(o["statusMessage"].is_string());
        }
    }
}

pub async fn send(api: &VoiceApi, r: Req, body: Option<String>) -> Resp {
    send_body(api, r, Full::new(Bytes::from(body.unwrap_or_default()))).await
}

/// Sends a request with any body (e.g. one that stalls or streams).
pub async fn send_body<B>(api: &VoiceApi, r: Req, body: B) -> Resp
where
    B: http_body::Body<Data = Bytes>,
{
    let request = r.builder.body(body).unwrap();
    let (method, path) = (request.method().clone(), request.uri().path().to_owned());
    let resp = api.handle(request).await;
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    let json = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    if !json.is_null() && !path.starts_with("/voice/") {
        schema::check_response(method.as_str(), &path, parts.status.as_u16(), &json);
    }
    Resp {
        status: parts.status.as_u16(),
        json,
        headers: parts.headers,
    }
}

/// `(notificationType, call.state, call.recordingState)` of a notification.
pub fn summary(n: &Value) -> (String, String, String) {
    let s = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    (
        s(&n["notificationType"]),
        s(&n["call"]["state"]),
        s(&n["call"]["recordingState"]),
    )
}

/// Every REST answer and every notification the tests see is validated against the checked-in
/// OpenAPI document (`openapi/voice-api.json`) with the `jsonschema` crate, so the document
/// cannot drift from the code.
pub mod schema {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, OnceLock};

    use bayeux_voice::{NOTIFICATION_SCHEMAS, OPENAPI, json_schema};
    use serde_json::Value;

    fn doc() -> &'static Value {
        static DOC: OnceLock<Value> = OnceLock::new();
        DOC.get_or_init(|| serde_json::from_str(OPENAPI).expect("the OpenAPI document parses"))
    }

    fn validator(name: &str) -> Arc<jsonschema::Validator> {
        static CACHE: OnceLock<Mutex<HashMap<String, Arc<jsonschema::Validator>>>> =
            OnceLock::new();
        let cache = CACHE.get_or_init(Default::default);
        if let Some(v) = cache.lock().unwrap().get(name) {
            return v.clone();
        }
        let schema = json_schema(name).unwrap_or_else(|| panic!("no schema {name}"));
        let v = Arc::new(
            jsonschema::draft202012::new(&schema)
                .unwrap_or_else(|e| panic!("schema {name} does not compile: {e}")),
        );
        cache.lock().unwrap().insert(name.to_owned(), v.clone());
        v
    }

    /// Asserts that `value` is valid against the document's schema `name`.
    #[track_caller]
    pub fn check(name: &str, value: &Value) {
        let v = validator(name);
        let errors: Vec<String> = v
            .iter_errors(value)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "not a valid {name}: {errors:?}\n{value}");
    }

    /// The schema of a response, from the document's paths: the path template that matches,
    /// the method, the status (else `default`).
    fn response_schema(method: &str, path: &str, status: u16) -> Option<String> {
        let segs: Vec<&str> = path.trim_end_matches('/').split('/').collect();
        let paths = doc()["paths"].as_object()?;
        let (_, item) = paths.iter().find(|(template, _)| {
            let t: Vec<&str> = template.split('/').collect();
            t.len() == segs.len()
                && t.iter()
                    .zip(&segs)
                    .all(|(t, s)| t == s || (t.starts_with('{') && !s.is_empty()))
        })?;
        let op = item.get(method.to_ascii_lowercase())?;
        let responses = &op["responses"];
        let r = responses
            .get(status.to_string())
            .unwrap_or(&responses["default"]);
        let reference = r["content"]["application/json"]["schema"]["$ref"].as_str()?;
        Some(reference.rsplit('/').next()?.to_owned())
    }

    /// Asserts that a REST answer is valid: against the documented schema of its route, method
    /// and status; an answer on an undocumented route or method must be an error.
    #[track_caller]
    pub fn check_response(method: &str, path: &str, status: u16, json: &Value) {
        match response_schema(method, path, status) {
            Some(name) => check(&name, json),
            None => {
                assert_ne!(
                    status, 200,
                    "{method} {path} answered 200 but is not documented"
                );
                check("Error", json);
            }
        }
    }

    /// Asserts that a notification's `data` is valid against its channel's schema.
    #[track_caller]
    pub fn check_notification(channel: &str, data: &Value) {
        let (name, _) = NOTIFICATION_SCHEMAS
            .iter()
            .find(|(_, c)| *c == channel)
            .unwrap_or_else(|| panic!("no schema for notifications on {channel}"));
        check(name, data);
    }
}
