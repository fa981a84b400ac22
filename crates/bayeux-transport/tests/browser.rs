//! What browsers depend on: the `BAYEUX_BROWSER` cookie (binding and multiple-clients advice),
//! CORS, JSONP callback-polling, request authentication, and what credentialed endpoints refuse
//! to other pages (callback-polling off by default, requests a browser marks cross-site).

mod common;

use std::sync::Arc;
use std::time::Duration;

use bayeux_core::EngineConfig;
use bayeux_transport::auth::Authenticator;
use bayeux_transport::{Endpoint, Origins, TransportConfig};
use common::*;
use http::{Method, StatusCode, header};
use http_body_util::Full;
use serde_json::{Value, json};

async fn server() -> Server {
    Server::start(engine_config(10_000), TransportConfig::default()).await
}

#[tokio::test]
async fn handshake_sets_an_http_only_browser_cookie() {
    bounded(async {
        let s = server().await;
        let mut c = s.client();
        let resp = c
            .post(
                "/cometd/handshake",
                &json!([handshake_msg("1", &["long-polling"])]),
            )
            .await;
        let cookies = resp.set_cookies();
        assert_eq!(cookies.len(), 1, "{cookies:?}");
        let cookie = &cookies[0];
        let (kv, attrs) = cookie.split_once(';').unwrap();
        let (name, value) = kv.split_once('=').unwrap();
        assert_eq!(name, "BAYEUX_BROWSER");
        assert!(
            value.len() >= 16 && value.bytes().all(|b| b.is_ascii_alphanumeric()),
            "{value}"
        );
        let attrs: Vec<&str> = attrs.split(';').map(str::trim).collect();
        assert!(attrs.contains(&"HttpOnly"), "{cookie}");
        assert!(attrs.contains(&"Path=/"), "{cookie}");
        // A request that already carries the cookie gets no new one.
        let resp = c
            .post(
                "/cometd/handshake",
                &json!([handshake_msg("2", &["long-polling"])]),
            )
            .await;
        assert!(resp.set_cookies().is_empty(), "{:?}", resp.set_cookies());
        // Only handshakes mint a cookie.
        let mut other = s.client();
        let resp = other
            .post(
                "/cometd/connect",
                &json!([connect_msg("x", "1", "long-polling")]),
            )
            .await;
        assert!(resp.set_cookies().is_empty());
    })
    .await;
}

#[tokio::test]
async fn client_id_with_another_browsers_cookie_is_session_unknown() {
    bounded(async {
        let s = server().await;
        let mut c = s.client();
        c.handshake().await;
        let mut thief = s.client();
        thief.jar = Jar::with("BAYEUX_BROWSER=0123456789abcdef0123456789abcdef");
        thief.client_id = c.client_id.clone();
        let msgs = thief.try_connect().await;
        let r = &msgs[0];
        assert_eq!(r["successful"], false, "{r}");
        assert_eq!(r["error"], "402::session_unknown");
        assert_eq!(r["advice"]["reconnect"], "handshake");
        let r = thief.subscribe(json!("/a")).await;
        assert_eq!(r["error"], "402::session_unknown", "{r}");
        // The owner is unaffected.
        let msgs = c.connect().await;
        assert_eq!(msgs.last().unwrap()["successful"], true);
    })
    .await;
}

#[tokio::test]
async fn client_id_without_a_cookie_is_accepted() {
    bounded(async {
        let s = server().await;
        let mut c = s.client();
        c.handshake().await;
        assert!(c.jar.get("BAYEUX_BROWSER").is_some());
        let mut cookieless = c.clone();
        cookieless.jar.clear();
        let msgs = cookieless.connect().await;
        assert_eq!(msgs.last().unwrap()["successful"], true, "{msgs:?}");
    })
    .await;
}

#[tokio::test]
async fn strict_browser_refuses_a_client_id_without_its_cookie() {
    bounded(async {
        let s = Server::start(
            EngineConfig {
                strict_browser: true,
                ..engine_config(10_000)
            },
            TransportConfig::default(),
        )
        .await;
        let mut c = s.client();
        c.handshake().await;
        let mut cookieless = c.clone();
        cookieless.jar.clear();
        let msgs = cookieless.try_connect().await;
        let r = &msgs[0];
        assert_eq!(r["error"], "402::session_unknown", "{r}");
        assert_full_advice(r);
        let msgs = c.connect().await;
        assert_eq!(msgs.last().unwrap()["successful"], true);
    })
    .await;
}

#[tokio::test]
async fn second_session_of_a_browser_gets_multiple_clients_advice() {
    bounded(async {
        let s = server().await;
        let mut a = s.client();
        a.handshake_and_connect().await;
        let mut b = s.client();
        b.jar = a.jar.clone();
        b.handshake_and_connect().await;
        assert_ne!(a.client_id, b.client_id);
        let held_a = a.spawn_connect();
        // Held (the browser's slot taken) before the second tab connects: they use two
        // connections, with no order between them otherwise.
        held_connects(s.engine(), 1).await;
        assert!(!held_a.is_finished(), "the first tab's connect is held");
        let t = std::time::Instant::now();
        let msgs = step("second tab's connect", b.connect()).await;
        assert!(t.elapsed() < PROMPT, "{:?}", t.elapsed());
        let r = msgs.last().unwrap();
        assert_eq!(r["successful"], true, "{r}");
        assert_eq!(r["advice"]["multiple-clients"], true, "{r}");
        assert_eq!(r["advice"]["reconnect"], "retry", "{r}");
        assert_eq!(r["advice"]["interval"], 2000, "{r}");
        assert!(!held_a.is_finished(), "the first tab keeps its long poll");
        // A different browser is not limited.
        let mut other = s.client();
        other.handshake_and_connect().await;
        let held_other = other.spawn_connect();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!held_other.is_finished());
        held_a.abort();
        held_other.abort();
    })
    .await;
}

#[tokio::test]
async fn preflight_on_a_sub_path_allows_the_origin_with_credentials() {
    bounded(async {
        let s = server().await;
        let req = empty(Method::OPTIONS, s.addr, "/cometd/handshake")
            .header(header::ORIGIN, "http://app.example:8000")
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "content-type")
            .body(Full::default())
            .unwrap();
        let resp = send(s.addr, req).await;
        assert_eq!(resp.status, StatusCode::NO_CONTENT);
        assert_eq!(
            resp.header("access-control-allow-origin"),
            Some("http://app.example:8000")
        );
        assert_eq!(
            resp.header("access-control-allow-credentials"),
            Some("true")
        );
        assert!(
            resp.header("access-control-allow-methods")
                .unwrap()
                .contains("POST")
        );
        assert!(
            resp.header("access-control-allow-headers")
                .unwrap()
                .to_ascii_lowercase()
                .contains("content-type")
        );
        // The actual cross-origin request is answered with the same headers.
        let mut c = s.client().with_header("origin", "http://app.example:8000");
        let resp = c
            .post(
                "/cometd/handshake",
                &json!([handshake_msg("1", &["long-polling"])]),
            )
            .await;
        assert_eq!(resp.status, StatusCode::OK);
        assert_eq!(
            resp.header("access-control-allow-origin"),
            Some("http://app.example:8000")
        );
        assert_eq!(
            resp.header("access-control-allow-credentials"),
            Some("true")
        );
        // No Origin, no CORS headers.
        let mut plain = s.client();
        let resp = plain
            .post(
                "/cometd/handshake",
                &json!([handshake_msg("1", &["long-polling"])]),
            )
            .await;
        assert!(resp.header("access-control-allow-origin").is_none());
    })
    .await;
}

#[tokio::test]
async fn origin_list_refuses_foreign_origins() {
    bounded(async {
        let mut ep = Endpoint::new("/cometd");
        ep.origins = Origins::List(vec!["https://good.example".into()]);
        let s = Server::start(
            engine_config(10_000),
            TransportConfig {
                endpoints: vec![ep],
                ..TransportConfig::default()
            },
        )
        .await;
        let preflight = |origin: &'static str| {
            empty(Method::OPTIONS, s.addr, "/cometd/connect")
                .header(header::ORIGIN, origin)
                .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
                .body(Full::default())
                .unwrap()
        };
        let resp = send(s.addr, preflight("https://evil.example")).await;
        assert_eq!(resp.status, StatusCode::FORBIDDEN);
        assert!(resp.header("access-control-allow-origin").is_none());
        let resp = send(s.addr, preflight("https://good.example")).await;
        assert_eq!(resp.status, StatusCode::NO_CONTENT);
        assert_eq!(
            resp.header("access-control-allow-origin"),
            Some("https://good.example")
        );

        let mut evil = s.client().with_header("origin", "https://evil.example");
        let resp = evil
            .post(
                "/cometd/handshake",
                &json!([handshake_msg("1", &["long-polling"])]),
            )
            .await;
        assert_eq!(resp.status, StatusCode::FORBIDDEN);
        assert_eq!(
            s.engine().session_count(),
            0,
            "no session for a foreign origin"
        );
        let mut good = s.client().with_header("origin", "https://good.example");
        assert_eq!(good.handshake().await["successful"], true);
    })
    .await;
}

fn jsonp_path(path: &str, callback: Option<&str>, messages: &Value) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    if let Some(cb) = callback {
        q.append_pair("jsonp", cb);
    }
    q.append_pair("message", &messages.to_string());
    format!("{path}?{}", q.finish())
}

/// Sends a JSONP GET; returns the response and the JSON inside `callback(...);`.
async fn jsonp(
    s: &Server,
    cookie: Option<&str>,
    callback: Option<&str>,
    messages: &Value,
) -> (Resp, Vec<Value>) {
    let mut req = empty(
        Method::GET,
        s.addr,
        &jsonp_path("/cometd/handshake", callback, messages),
    );
    if let Some(c) = cookie {
        req = req.header(header::COOKIE, c);
    }
    let resp = send(s.addr, req.body(Full::default()).unwrap()).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    let text = resp.text();
    let name = callback.unwrap_or("jsonpcallback");
    let inner = text
        .strip_prefix(&format!("{name}("))
        .and_then(|t| t.strip_suffix(");"))
        .unwrap_or_else(|| panic!("not a call of {name}: {text}"));
    let msgs: Vec<Value> = serde_json::from_str(inner).expect("JSON array inside the call");
    (resp, msgs)
}

#[tokio::test]
async fn jsonp_get_is_answered_with_a_callback_call() {
    bounded(async {
        let s = server().await;
        let (resp, msgs) = jsonp(
            &s,
            None,
            Some("cb"),
            &json!([handshake_msg("1", &["callback-polling"])]),
        )
        .await;
        assert!(
            resp.header("content-type")
                .unwrap()
                .starts_with("text/javascript")
        );
        assert!(resp.text().starts_with("cb([{"), "{}", resp.text());
        let hs = find(&msgs, "/meta/handshake");
        assert_eq!(hs["successful"], true);
        assert_eq!(hs["id"], "1");
        let id = hs["clientId"].as_str().unwrap().to_owned();
        let cookie = resp.set_cookies()[0].split(';').next().unwrap().to_owned();
        // Connect and subscribe in one JSONP request; the default callback name.
        let (_, msgs) = jsonp(
            &s,
            Some(&cookie),
            None,
            &json!([
                connect_msg(&id, "2", "callback-polling"),
                subscribe_msg(&id, "3", "/j"),
            ]),
        )
        .await;
        assert_eq!(find(&msgs, "/meta/connect")["successful"], true);
        assert_eq!(find(&msgs, "/meta/subscribe")["successful"], true);
        // A held JSONP connect is woken by a publish.
        let s2 = s.addr;
        let cookie2 = cookie.clone();
        let id2 = id.clone();
        let held = tokio::spawn(async move {
            let req = empty(
                Method::GET,
                s2,
                &jsonp_path(
                    "/cometd/connect",
                    Some("_cb.x$1"),
                    &json!([connect_msg(&id2, "4", "callback-polling")]),
                ),
            )
            .header(header::COOKIE, cookie2)
            .body(Full::default())
            .unwrap();
            send(s2, req).await
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!held.is_finished());
        s.engine().publish_json("/j", &json!("p")).unwrap();
        let resp = step("held jsonp connect", held).await.unwrap();
        let text = resp.text();
        assert!(text.starts_with("_cb.x$1(["), "{text}");
        assert!(text.contains(r#""data":"p""#), "{text}");
    })
    .await;
}

#[tokio::test]
async fn invalid_jsonp_callback_names_are_refused() {
    bounded(async {
        let s = server().await;
        let messages = json!([handshake_msg("1", &["callback-polling"])]);
        for cb in ["alert(1)", "a-b", "1abc", "x;alert(1)//", "<script>", ""] {
            let req = empty(
                Method::GET,
                s.addr,
                &jsonp_path("/cometd", Some(cb), &messages),
            )
            .body(Full::default())
            .unwrap();
            let resp = send(s.addr, req).await;
            assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{cb:?}");
            assert!(
                !resp.text().contains("alert"),
                "{cb:?} reflected: {}",
                resp.text()
            );
        }
        assert_eq!(s.engine().session_count(), 0);
    })
    .await;
}

#[tokio::test]
async fn jsonp_without_a_message_is_a_bayeux_error() {
    bounded(async {
        let s = server().await;
        for q in ["/cometd?jsonp=cb", "/cometd?jsonp=cb&message=nope"] {
            let req = empty(Method::GET, s.addr, q).body(Full::default()).unwrap();
            let resp = send(s.addr, req).await;
            assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{q}");
            let msgs = resp.messages();
            assert_eq!(msgs[0]["successful"], false, "{q}");
            assert!(
                msgs[0]["error"].as_str().unwrap().starts_with("400:"),
                "{q}"
            );
        }
    })
    .await;
}

/// Maps header `x-user` to the principal.
struct HeaderAuth;

impl Authenticator for HeaderAuth {
    fn authenticate(&self, parts: &http::request::Parts) -> Option<Arc<str>> {
        parts
            .headers
            .get("x-user")
            .and_then(|v| v.to_str().ok())
            .map(Arc::from)
    }
}

async fn auth_server() -> Server {
    let mut ep = Endpoint::new("/cometd");
    ep.authenticator = Some(Arc::new(HeaderAuth));
    Server::start(
        engine_config(10_000),
        TransportConfig {
            endpoints: vec![ep],
            ..TransportConfig::default()
        },
    )
    .await
}

#[tokio::test]
async fn authenticator_binds_the_session_to_its_principal() {
    bounded(async {
        let s = auth_server().await;
        let mut alice = s.client().with_header("x-user", "alice");
        alice.handshake_and_connect().await;
        let session = s.engine().session(alice.id()).expect("session");
        assert_eq!(session.principal(), Some("alice"));
        assert_eq!(s.engine().sessions_of("alice").len(), 1);
        assert!(s.engine().sessions_of("bob").is_empty());

        // Same clientId and cookie, another user: refused.
        let mut bob = alice.clone();
        bob.headers = vec![("x-user".into(), "bob".into())];
        let msgs = bob.try_connect().await;
        let r = &msgs[0];
        assert_eq!(r["successful"], false, "{r}");
        assert_eq!(r["error"], "402::session_unknown");
        assert_eq!(r["advice"]["reconnect"], "handshake");
        // Same clientId without credentials: refused too.
        let mut anon = alice.clone();
        anon.headers.clear();
        let r = anon.subscribe(json!("/a")).await;
        assert_eq!(r["error"], "402::session_unknown", "{r}");
        // Alice herself still works.
        let r = alice.subscribe(json!("/a")).await;
        assert_eq!(r["successful"], true, "{r}");
    })
    .await;
}

#[tokio::test]
async fn authenticator_applies_to_the_websocket_upgrade() {
    bounded(async {
        let s = auth_server().await;
        let mut ws = ws_connect_with(s.addr, "/cometd", &[("x-user", "carol")]).await;
        let id = ws_handshake(&mut ws).await;
        assert_eq!(s.engine().session(&id).unwrap().principal(), Some("carol"));
        // The session cannot be used over HTTP as someone else.
        let mut mallory = s.client().with_header("x-user", "mallory");
        mallory.client_id = Some(id.clone());
        let r = mallory.subscribe(json!("/a")).await;
        assert_eq!(r["error"], "402::session_unknown", "{r}");
        // ...but can as carol (no cookie: WebSocket sessions are not browser-bound here).
        let mut carol = s.client().with_header("x-user", "carol");
        carol.client_id = Some(id);
        assert_eq!(carol.subscribe(json!("/a")).await["successful"], true);
    })
    .await;
}

/// A credentialed endpoint (the `x-user` authenticator) at `/cometd`, allowing
/// `https://good.example` only, with callback-polling as given.
async fn credentialed_server(callback_polling: Option<bool>) -> Server {
    let mut ep = Endpoint::new("/cometd");
    ep.authenticator = Some(Arc::new(HeaderAuth));
    ep.origins = Origins::List(vec!["https://good.example".into()]);
    ep.callback_polling = callback_polling;
    Server::start(
        engine_config(10_000),
        TransportConfig {
            endpoints: vec![ep],
            // The exhaustive test below creates a few hundred sessions over one connection.
            max_sessions_per_connection: 10_000,
            ..TransportConfig::default()
        },
    )
    .await
}

/// A JSONP handshake GET with the credentials and the given extra headers.
async fn jsonp_handshake(s: &Server, headers: &[(&str, &str)]) -> Resp {
    let messages = json!([handshake_msg("1", &["callback-polling"])]);
    let mut req = empty(
        Method::GET,
        s.addr,
        &jsonp_path("/cometd/handshake", Some("cb"), &messages),
    )
    .header("x-user", "alice");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(s.addr, req.body(Full::default()).unwrap()).await
}

/// A long-polling handshake POST with the credentials and the given extra headers.
async fn post_handshake(s: &Server, headers: &[(&str, &str)]) -> Resp {
    let mut req = post(
        s.addr,
        "/cometd/handshake",
        json!([handshake_msg("1", &["long-polling"])]).to_string(),
    );
    req.headers_mut()
        .insert("x-user", http::HeaderValue::from_static("alice"));
    for (k, v) in headers {
        req.headers_mut().append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            http::HeaderValue::from_str(v).unwrap(),
        );
    }
    send(s.addr, req).await
}

fn cross_site_refused(s: &Server) -> u64 {
    s.svc
        .metrics()
        .cross_site_refused
        .load(std::sync::atomic::Ordering::Relaxed)
}

/// The fetch metadata of a `<script src>` load by a page of `site` (relative to the endpoint).
fn script_from(site: &'static str) -> [(&'static str, &'static str); 3] {
    [
        ("sec-fetch-site", site),
        ("sec-fetch-mode", "no-cors"),
        ("sec-fetch-dest", "script"),
    ]
}

#[tokio::test]
async fn callback_polling_is_off_on_credentialed_endpoints_unless_turned_on() {
    bounded(async {
        // Default on a credentialed endpoint: off, even for a client without fetch metadata.
        let s = credentialed_server(None).await;
        let resp = jsonp_handshake(&s, &[]).await;
        assert_eq!(resp.status, StatusCode::FORBIDDEN, "{}", resp.text());
        assert!(resp.text().contains("callback-polling"), "{}", resp.text());
        assert_eq!(s.engine().session_count(), 0);
        // Long-polling on it still works.
        assert_eq!(post_handshake(&s, &[]).await.status, StatusCode::OK);
        assert_eq!(s.engine().session_count(), 1);

        // Turned on: a client without fetch metadata gets its session, bound to its principal.
        let on = credentialed_server(Some(true)).await;
        let resp = jsonp_handshake(&on, &[]).await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
        assert!(
            resp.text().starts_with("cb([{") && resp.text().contains(r#""successful":true"#),
            "{}",
            resp.text()
        );
        let id = on.engine().sessions_of("alice");
        assert_eq!(id.len(), 1);
        // ...and so does a page of the endpoint's own origin.
        let resp = jsonp_handshake(&on, &script_from("same-origin")).await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());

        // Turned off on an anonymous endpoint.
        let mut ep = Endpoint::new("/cometd");
        ep.callback_polling = Some(false);
        let off = Server::start(
            engine_config(10_000),
            TransportConfig {
                endpoints: vec![ep],
                ..TransportConfig::default()
            },
        )
        .await;
        let resp = jsonp_handshake(&off, &[]).await;
        assert_eq!(resp.status, StatusCode::FORBIDDEN, "{}", resp.text());
    })
    .await;
}

#[tokio::test]
async fn script_loads_from_other_pages_are_refused_on_credentialed_endpoints() {
    bounded(async {
        // Callback-polling turned on: the refusal comes from the fetch metadata alone.
        let s = credentialed_server(Some(true)).await;
        for site in ["same-site", "cross-site"] {
            let resp = jsonp_handshake(&s, &script_from(site)).await;
            assert_eq!(
                resp.status,
                StatusCode::FORBIDDEN,
                "{site}: {}",
                resp.text()
            );
            assert!(resp.text().contains("cross-site"), "{}", resp.text());
            assert!(resp.header("access-control-allow-origin").is_none());
        }
        // `<script crossorigin>` from an allowed origin is a script load all the same.
        let mut with_origin = script_from("same-site").to_vec();
        with_origin.push(("origin", "https://good.example"));
        let resp = jsonp_handshake(&s, &with_origin).await;
        assert_eq!(resp.status, StatusCode::FORBIDDEN);
        assert_eq!(s.engine().session_count(), 0);
        assert_eq!(cross_site_refused(&s), 3);
        assert!(
            s.svc
                .render_metrics()
                .contains("bayeux_cross_site_refused_total 3")
        );

        // The same script loads on an anonymous endpoint are served: no credentials to steal.
        let anon = server().await;
        let resp = jsonp_handshake(&anon, &script_from("cross-site")).await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
        assert_eq!(cross_site_refused(&anon), 0);
    })
    .await;
}

#[tokio::test]
async fn requests_marked_cross_site_need_an_allowed_origin_on_credentialed_endpoints() {
    bounded(async {
        let s = credentialed_server(None).await;
        // Marked as another page's, without an Origin (a navigation, a no-cors fetch), or with
        // the opaque `null` origin (which this origin list refuses before the cross-site rule
        // counts it), or with an unknown marking: refused.
        for headers in [
            vec![("sec-fetch-site", "cross-site")],
            vec![
                ("sec-fetch-site", "same-site"),
                ("sec-fetch-mode", "navigate"),
            ],
            vec![("sec-fetch-site", "cross-site"), ("origin", "null")],
            vec![("sec-fetch-site", "bogus")],
        ] {
            let resp = post_handshake(&s, &headers).await;
            assert_eq!(resp.status, StatusCode::FORBIDDEN, "{headers:?}");
        }
        // A foreign Origin is refused by the origin list, whatever the metadata says.
        let resp = post_handshake(
            &s,
            &[
                ("sec-fetch-site", "same-origin"),
                ("origin", "https://evil.example"),
            ],
        )
        .await;
        assert_eq!(resp.status, StatusCode::FORBIDDEN);
        assert_eq!(s.engine().session_count(), 0);
        assert_eq!(cross_site_refused(&s), 3);

        // What keeps working: CORS from an allowed origin (cross-site or same-site), the
        // endpoint's own pages, what the user typed, and clients without fetch metadata.
        for headers in [
            vec![
                ("sec-fetch-site", "cross-site"),
                ("sec-fetch-mode", "cors"),
                ("origin", "https://good.example"),
            ],
            vec![
                ("sec-fetch-site", "same-site"),
                ("sec-fetch-mode", "cors"),
                ("origin", "https://good.example"),
            ],
            vec![
                ("sec-fetch-site", "same-origin"),
                ("sec-fetch-mode", "cors"),
            ],
            vec![("sec-fetch-site", "none")],
            vec![],
        ] {
            let resp = post_handshake(&s, &headers).await;
            assert_eq!(resp.status, StatusCode::OK, "{headers:?}: {}", resp.text());
            assert_eq!(resp.messages()[0]["successful"], true, "{headers:?}");
        }
        assert_eq!(s.engine().sessions_of("alice").len(), 5);
        // A CORS preflight from an allowed origin is answered too.
        let req = empty(Method::OPTIONS, s.addr, "/cometd/handshake")
            .header(header::ORIGIN, "https://good.example")
            .header("sec-fetch-site", "cross-site")
            .header("sec-fetch-mode", "cors")
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .body(Full::default())
            .unwrap();
        assert_eq!(send(s.addr, req).await.status, StatusCode::NO_CONTENT);
        assert_eq!(cross_site_refused(&s), 3);
    })
    .await;
}

#[tokio::test]
async fn websocket_upgrades_marked_cross_site_need_an_allowed_origin() {
    bounded(async {
        let s = credentialed_server(None).await;
        let upgrade = |extra: &[(&'static str, &'static str)]| {
            let mut req = empty(Method::GET, s.addr, "/cometd")
                .header(header::CONNECTION, "Upgrade")
                .header(header::UPGRADE, "websocket")
                .header(header::SEC_WEBSOCKET_VERSION, "13")
                .header(header::SEC_WEBSOCKET_KEY, "dGhlIHNhbXBsZSBub25jZQ==")
                .header("x-user", "alice");
            for (k, v) in extra {
                req = req.header(*k, *v);
            }
            req.body(Full::default()).unwrap()
        };
        let refused = send(
            s.addr,
            upgrade(&[
                ("sec-fetch-site", "cross-site"),
                ("sec-fetch-mode", "websocket"),
            ]),
        )
        .await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
        // A browser's upgrade names its page's origin: allowed, it opens.
        let mut ws = ws_connect_with(
            s.addr,
            "/cometd",
            &[
                ("x-user", "alice"),
                ("origin", "https://good.example"),
                ("sec-fetch-site", "cross-site"),
                ("sec-fetch-mode", "websocket"),
            ],
        )
        .await;
        let id = ws_handshake(&mut ws).await;
        assert_eq!(s.engine().session(&id).unwrap().principal(), Some("alice"));
    })
    .await;
}

/// Every combination of fetch metadata and `Origin` a browser (or a forger) may send, on a
/// credentialed endpoint with callback-polling turned on, over JSONP and long-polling: no
/// answer is a server error, and a session is created exactly when an independent statement
/// of the rule says the request may read the endpoint.
#[tokio::test]
async fn every_fetch_metadata_combination_follows_the_rule() {
    bounded(async {
        let s = credentialed_server(Some(true)).await;
        let mut http = Http::connect(s.addr).await.unwrap().reconnecting();
        let sites = [
            None,
            Some("same-origin"),
            Some("none"),
            Some("same-site"),
            Some("cross-site"),
            Some("bogus"),
        ];
        let dests = [None, Some("script"), Some("empty"), Some("document")];
        let modes = [None, Some("no-cors"), Some("cors"), Some("navigate")];
        let origins = [
            None,
            Some("https://good.example"),
            Some("https://evil.example"),
            Some("null"),
        ];
        let hs = json!([handshake_msg("1", &["callback-polling", "long-polling"])]);
        let jsonp_target = jsonp_path("/cometd/handshake", Some("cb"), &hs);
        let mut sessions = 0;
        for site in sites {
            for dest in dests {
                for mode in modes {
                    for origin in origins {
                        for jsonp in [true, false] {
                            let mut headers = vec![("x-user", "alice")];
                            for (name, value) in [
                                ("sec-fetch-site", site),
                                ("sec-fetch-dest", dest),
                                ("sec-fetch-mode", mode),
                                ("origin", origin),
                            ] {
                                if let Some(v) = value {
                                    headers.push((name, v));
                                }
                            }
                            let resp = if jsonp {
                                http.request(Method::GET, &jsonp_target, &headers, Vec::new())
                                    .await
                            } else {
                                headers.push(("content-type", "application/json"));
                                http.request(
                                    Method::POST,
                                    "/cometd/handshake",
                                    &headers,
                                    hs.to_string(),
                                )
                                .await
                            }
                            .unwrap();
                            let case = format!("{headers:?} jsonp={jsonp}");
                            let own = matches!(site, None | Some("same-origin") | Some("none"));
                            let allowed_origin = origin.is_none_or(|o| o == "https://good.example");
                            let may_read = allowed_origin
                                && (own || origin.is_some_and(|o| o != "null"))
                                && (own || dest != Some("script"));
                            let ok = resp.status == StatusCode::OK;
                            assert!(
                                ok || resp.status == StatusCode::FORBIDDEN,
                                "{case}: {}",
                                resp.status
                            );
                            assert_eq!(ok, may_read, "{case}: {}", resp.text());
                            if ok {
                                sessions += 1;
                                assert!(resp.text().contains(r#""successful":true"#), "{case}");
                            }
                            assert_eq!(s.engine().sessions_of("alice").len(), sessions, "{case}");
                        }
                    }
                }
            }
        }
        assert!(sessions > 0);
    })
    .await;
}
