//! A host server that mounts the voice API and the Bayeux transport on one port, with its own
//! telephony instead of the built-in simulator.
//!
//! ```text
//! cargo run -p bayeux-voice --example host_server            # a free port
//! cargo run -p bayeux-voice --example host_server -- 8080    # a given port
//! ```
//!
//! It shows:
//! - one hyper service routing the host's own paths (`/`, `/healthz`), the Bayeux endpoints
//!   (`/cometd` and the voice notifications endpoint `/api/v2/notifications`, which requires the
//!   voice users' credentials) and the REST API under `/api/v2`; served by
//!   [`bayeux_transport::serve`], which takes any hyper service (it adds the connection limit,
//!   header timeouts and graceful shutdown);
//! - the wiring a host must do: [`VoiceApi::security_policy`] on the engine,
//!   [`VoiceApi::authenticator`] and [`VoiceApi::allowed_origins`] on the notifications
//!   endpoint, and `public_base_url` set to the address actually listened on;
//! - a [`Telephony`] of the host's own ([`VoiceApi::with_telephony`]): it logs every outbound
//!   call (a number that is no configured user's DN) and answers it through [`CallControl`]
//!   after half a second, except numbers starting with `9`, which are busy (released by the far
//!   end); it logs released calls too;
//! - server-side observation of the notifications: a local session per voice user receives the
//!   `CallStateChangeMessage`s that the API delivers to that user (`deliver_to_principal`).
//!
//! It prints its address and a curl session to try (the demo users `agent1`, `agent2` and
//! `agent3`, password `password`). Ctrl-C stops it gracefully.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bayeux_core::{AckExtension, Engine, EngineConfig, LocalSession, TimesyncExtension};
use bayeux_transport::{BayeuxService, Body, TransportConfig, serve};
use bayeux_voice::{CallControl, OutboundCall, Telephony, VoiceApi, VoiceConfig};
use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use serde_json::Value;
use tokio::net::TcpListener;

/// The host's telephony: where a real host would place the call on its network, this one logs
/// it and plays the far end.
struct HostTelephony {
    runtime: tokio::runtime::Handle,
    answer_after: Duration,
}

impl Telephony for HostTelephony {
    fn outbound_call(&self, call: &OutboundCall, control: CallControl) {
        println!(
            "[telephony] {} (DN {}) dials {}: call {}",
            call.user, call.from, call.destination, call.call_id
        );
        let busy = call.destination.starts_with('9');
        let id = call.call_id.clone();
        let delay = self.answer_after;
        // Never answer from inside this hook: the far end answers later, from a task.
        self.runtime.spawn(async move {
            tokio::time::sleep(delay).await;
            let (what, result) = if busy {
                ("busy, released", control.far_end_released(&id))
            } else {
                ("answered", control.far_end_answered(&id))
            };
            match result {
                Ok(()) => println!("[telephony] call {id}: far end {what}"),
                // E.g. the caller hung up while it rang.
                Err(e) => println!("[telephony] call {id}: too late ({e})"),
            }
        });
    }

    fn call_released(&self, call_id: &str) {
        println!("[telephony] call {call_id} released");
    }
}

/// Everything the router needs.
struct Host {
    bayeux: BayeuxService,
    voice: VoiceApi,
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    r
}

impl Host {
    async fn route(&self, req: Request<Incoming>) -> Response<Body> {
        match req.uri().path() {
            "/" => text(
                StatusCode::OK,
                "a host app: voice API under /api/v2, notifications at /api/v2/notifications\n",
            ),
            "/healthz" => text(StatusCode::OK, "ok\n"),
            // The notifications endpoint lies under /api/v2 but is not the voice API's:
            // `VoiceApi::matches` leaves it out, and Bayeux is asked first anyway.
            p if self.bayeux.matches(p) => self.bayeux.handle(req).await,
            // Boxed: the voice future is large.
            p if self.voice.matches(p) => Box::pin(self.voice.handle(req)).await,
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }
}

/// Logs the notifications the API delivers to `user`, from the server side.
fn observe(engine: &Engine, user: &str) -> LocalSession {
    let who = user.to_owned();
    engine.local_session(Some(user), move |d| {
        let n: Value = serde_json::from_str(d.data.get()).unwrap_or_default();
        // Printing only: a callback must not call back into the voice API synchronously.
        println!(
            "[notify {who}] {} {}: {} {}{}",
            d.channel.as_str(),
            n["notificationType"].as_str().unwrap_or("?"),
            n["call"]["id"].as_str().unwrap_or("?"),
            n["call"]["state"].as_str().unwrap_or("?"),
            n["call"]["recordingState"]
                .as_str()
                .map(|r| format!(", recording {r}"))
                .unwrap_or_default(),
        );
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = match std::env::args().nth(1) {
        Some(p) => p.parse().map_err(|e| format!("bad port {p:?}: {e}"))?,
        None => 0,
    };
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;

    let engine = Engine::new(EngineConfig::default());
    engine.add_extension(Arc::new(AckExtension));
    engine.add_extension(Arc::new(TimesyncExtension::new(bayeux_transport::epoch_ms)));

    // The demo users; `uri` and `deviceUri` in answers point at this server.
    let config = VoiceConfig {
        public_base_url: format!("http://{addr}"),
        ..VoiceConfig::default()
    };
    let users: Vec<String> = config.users.iter().map(|u| u.name.clone()).collect();
    let telephony = Arc::new(HostTelephony {
        runtime: tokio::runtime::Handle::current(),
        answer_after: Duration::from_millis(500),
    });
    let voice = VoiceApi::with_telephony(config, engine.clone(), telephony)?;
    engine.set_security_policy(Arc::new(voice.security_policy()));

    let mut transport = TransportConfig::default(); // keeps the anonymous /cometd endpoint
    transport.endpoints.push(voice.notifications_endpoint());
    let (bayeux, shutdown) = BayeuxService::new(engine.clone(), transport);

    let _observers: Vec<LocalSession> = users.iter().map(|u| observe(&engine, u)).collect();

    let host = Arc::new(Host {
        bayeux: bayeux.clone(),
        voice,
    });
    let service = service_fn(move |req| {
        let host = host.clone();
        async move { Ok::<_, Infallible>(host.route(req).await) }
    });

    print_try_it(&format!("http://{addr}"));

    let stop = async move {
        let _ = tokio::signal::ctrl_c().await;
        println!("shutting down");
        // Held connects are answered and WebSockets closed before the accept loop stops.
        shutdown.shutdown();
    };
    serve(listener, bayeux, service, stop, Duration::from_secs(5)).await?;
    Ok(())
}

fn print_try_it(base: &str) {
    println!("listening on {base}");
    println!(
        r#"
Try it (agent1's Bayeux session, an outbound call answered by this host's telephony, a
recording, then a call to agent2 answered by agent2):

A="-u agent1:password"; B="-u agent2:password"; S={base}
CID=$(curl -s $A $S/api/v2/notifications -d '[{{"channel":"/meta/handshake","version":"1.0",
  "supportedConnectionTypes":["long-polling"],"id":"1"}}]' | sed 's/.*"clientId":"\([0-9a-f]*\)".*/\1/')
curl -s $A $S/api/v2/notifications -d "[{{\"channel\":\"/meta/subscribe\",\"clientId\":\"$CID\",\"subscription\":\"/v2/me/calls\"}},
  {{\"channel\":\"/meta/connect\",\"clientId\":\"$CID\",\"connectionType\":\"long-polling\"}}]"; echo
poll() {{ curl -s $A $S/api/v2/notifications -d "[{{\"channel\":\"/meta/connect\",\"clientId\":\"$CID\",\"connectionType\":\"long-polling\"}}]"; echo; }}
DEV=$(curl -s $A $S/api/v2/me/devices | sed 's/.*"id":"\([0-9a-f-]*\)".*/\1/')
curl -s $A $S/api/v2/me/devices/$DEV/calls -H 'content-type: application/json' \
  -d '{{"operationName":"Dial","destination":{{"phoneNumber":"5550100"}}}}'; echo   # {{"statusCode":0}}
poll                                    # StatusChange, Dialing
poll                                    # StatusChange, Established (the host telephony answered)
CALL=$(curl -s $A $S/api/v2/me/calls | sed 's/.*"id":"\([A-Z0-9]\{{32\}}\)".*/\1/')
curl -s $A $S/api/v2/me/calls/$CALL -H 'content-type: application/json' -d '{{"operationName":"StartCallRecording"}}'; echo
poll                                    # CallRecordingStateChange, recordingState Recording
curl -s $A $S/api/v2/me/calls/$CALL -H 'content-type: application/json' -d '{{"operationName":"Hangup"}}'; echo
poll                                    # StatusChange, Released
# a busy number (starts with 9): the far end releases it
curl -s $A $S/api/v2/me/devices/$DEV/calls -H 'content-type: application/json' \
  -d '{{"operationName":"Dial","destination":{{"phoneNumber":"9000"}}}}'; echo
# an internal call, answered by agent2 (no telephony involved)
curl -s $A $S/api/v2/me/devices/$DEV/calls -H 'content-type: application/json' \
  -d '{{"operationName":"Dial","destination":{{"phoneNumber":"15001"}}}}'; echo
CALL=$(curl -s $B $S/api/v2/me/calls | sed 's/.*"id":"\([A-Z0-9]\{{32\}}\)".*/\1/')
curl -s $B $S/api/v2/me/calls/$CALL -H 'content-type: application/json' -d '{{"operationName":"Answer"}}'; echo
"#
    );
}
