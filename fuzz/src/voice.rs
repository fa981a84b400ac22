//! The voice API's request parsing, through the public `VoiceApi::handle` (its body parser is
//! private): POSTs to `/api/v2/me/calls/{id}` (and the device paths) with Basic authentication
//! for agent1, on one current-thread runtime.
//!
//! Input form: an optional first line naming the path, with `CALLID` and `DEVICEID`
//! placeholders (e.g. `/api/v2/me/calls/CALLID`), then the body. Without such a line the whole
//! input is the body of a POST to `/api/v2/me/calls/CALLID`. Each input first makes a real call
//! so that `CALLID` names it: by the input's length, an answered outbound call, a dialing one, an
//! internal call to agent2, or a ringing inbound call. The far end is driven synchronously
//! through `CallControl` (no timers), and afterwards every call is hung up. Properties: no panic, never a 5xx, every answer is a JSON object with a numeric
//! `statusCode` matching the HTTP status, every notification is a JSON object on
//! `/v2/me/calls`, and the number of live calls stays bounded.

use std::sync::{Arc, Mutex, OnceLock};

use bayeux_core::{Engine, EngineConfig, LocalSession};
use bayeux_voice::{
    CallControl, OutboundCall, Telephony, VoiceApi, VoiceConfig, basic_authorization,
};
use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

const DEVICE: &str = "631608b3-ceb1-472b-ba05-2ae39555b0d1";

/// A telephony source that only remembers the outbound calls; the harness answers them.
#[derive(Default, Clone)]
struct Manual {
    dialed: Arc<Mutex<Vec<(String, CallControl)>>>,
}

impl Telephony for Manual {
    fn outbound_call(&self, call: &OutboundCall, control: CallControl) {
        self.dialed
            .lock()
            .unwrap()
            .push((call.call_id.clone(), control));
    }
}

/// The runtime, the API and agent1's notification inbox, shared by every input.
pub struct Harness {
    rt: tokio::runtime::Runtime,
    api: VoiceApi,
    telephony: Manual,
    auth: String,
    inbox: Arc<Mutex<Vec<(String, Value)>>>,
    _listener: LocalSession,
}

/// The shared harness, created on first use.
pub fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let engine = Engine::new(EngineConfig::default());
        let telephony = Manual::default();
        let api = VoiceApi::with_telephony(
            VoiceConfig::default(),
            engine.clone(),
            Arc::new(telephony.clone()),
        )
        .expect("default voice config");
        let inbox = Arc::new(Mutex::new(Vec::new()));
        let sink = inbox.clone();
        let listener = engine.local_session(Some("agent1"), move |d| {
            let v: Value = serde_json::from_str(d.data.get()).expect("notification is JSON");
            sink.lock()
                .unwrap()
                .push((d.channel.as_str().to_owned(), v));
        });
        Harness {
            rt,
            api,
            telephony,
            auth: basic_authorization("agent1", "password"),
            inbox,
            _listener: listener,
        }
    })
}

struct Answer {
    status: StatusCode,
    body: Value,
}

impl Harness {
    fn request(&self, method: Method, path: &str, body: Vec<u8>) -> Option<Answer> {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, self.auth.as_str())
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .ok()?;
        Some(self.rt.block_on(async {
            let resp = self.api.handle(req).await;
            let status = resp.status();
            let bytes = resp.into_body().collect().await.expect("Full").to_bytes();
            let body = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!(
                    "{status} body is not JSON ({e}): {:?}",
                    String::from_utf8_lossy(&bytes)
                )
            });
            Answer { status, body }
        }))
    }

    fn live_calls(&self) -> Vec<String> {
        let a = self
            .request(Method::GET, "/api/v2/me/calls", Vec::new())
            .expect("a valid request");
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        a.body["calls"]
            .as_array()
            .expect("calls")
            .iter()
            .map(|c| c["id"].as_str().expect("call id").to_owned())
            .collect()
    }

    /// Runs one input. Panics when a property fails.
    pub fn check(&self, input: &[u8]) {
        let (path, body) = match input.iter().position(|&b| b == b'\n') {
            Some(i) if input.starts_with(b"/api/v2") => (
                String::from_utf8_lossy(&input[..i]).into_owned(),
                &input[i + 1..],
            ),
            _ => ("/api/v2/me/calls/CALLID".to_owned(), input),
        };
        let control = self.api.call_control();
        // Outbound calls the previous input dialed itself are forgotten (and hung up by now).
        self.telephony.dialed.lock().unwrap().clear();
        let call = match input.len() % 4 {
            3 => control
                .inbound_call("agent1", "5550000", None)
                .expect("inbound call"),
            kind => {
                let number = if kind == 2 { "15001" } else { "5551234" };
                let dial = json!({"operationName": "Dial", "destination": {"phoneNumber": number}});
                let a = self
                    .request(
                        Method::POST,
                        &format!("/api/v2/me/devices/{DEVICE}/calls"),
                        dial.to_string().into_bytes(),
                    )
                    .expect("a valid request");
                assert_eq!(a.status, StatusCode::OK, "dial: {}", a.body);
                let dialed = std::mem::take(&mut *self.telephony.dialed.lock().unwrap());
                if kind == 0 {
                    for (id, c) in &dialed {
                        c.far_end_answered(id).expect("far end answers");
                    }
                }
                self.live_calls().last().cloned().expect("the dialed call")
            }
        };
        let path = path.replace("CALLID", &call).replace("DEVICEID", DEVICE);
        if let Some(a) = self.request(Method::POST, &path, body.to_vec()) {
            check_answer(&a);
        }
        for id in self.live_calls() {
            let hangup = json!({"operationName": "Hangup"}).to_string().into_bytes();
            let a = self
                .request(Method::POST, &format!("/api/v2/me/calls/{id}"), hangup)
                .expect("a valid request");
            check_answer(&a);
        }
        assert!(self.live_calls().is_empty(), "calls left after hanging up");
        for (channel, data) in self.inbox.lock().unwrap().drain(..) {
            assert_eq!(channel, "/v2/me/calls");
            assert!(data.is_object(), "notification {data}");
        }
    }
}

fn check_answer(a: &Answer) {
    let s = a.status.as_u16();
    assert!(
        matches!(s, 200 | 400 | 404 | 405 | 413),
        "unexpected status {s}: {}",
        a.body
    );
    let code = a.body["statusCode"]
        .as_u64()
        .unwrap_or_else(|| panic!("no statusCode: {}", a.body));
    let want: &[u64] = match s {
        200 => &[0],
        400 => &[1, 2],
        404 => &[6],
        405 => &[2],
        _ => &[1],
    };
    assert!(
        want.contains(&code),
        "HTTP {s} with statusCode {code}: {}",
        a.body
    );
}
