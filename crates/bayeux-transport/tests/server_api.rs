//! The server-side API through a real server: an asynchronous security policy waits without
//! blocking the runtime, and remote-call answers reach a long-polling caller in its connect.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bayeux_core::{
    AsyncSecurityPolicy, ChannelId, Decision, DecisionFuture, Engine, Message, Session,
};
use bayeux_transport::TransportConfig;
use common::*;
use serde_json::json;
use tokio::sync::Notify;

/// Publishes to `/slow` wait until `open` is notified; `/closed` is refused.
struct Gate {
    open: Arc<Notify>,
}

impl AsyncSecurityPolicy for Gate {
    fn can_publish(&self, _: &Arc<Session>, channel: &ChannelId, _: &Message) -> DecisionFuture {
        let open = self.open.clone();
        let channel = channel.clone();
        Box::pin(async move {
            match channel.as_str() {
                "/slow" => {
                    open.notified().await;
                    Decision::Allow
                }
                "/closed" => Decision::Deny("closed".into()),
                _ => Decision::Allow,
            }
        })
    }
}

// A single-threaded runtime: a policy that blocked its thread would stall every other request.
#[tokio::test(flavor = "current_thread")]
async fn an_async_policy_waits_without_blocking_other_requests() {
    bounded(async {
        let engine = Engine::new(engine_config(10_000));
        let open = Arc::new(Notify::new());
        engine.set_async_security_policy(Arc::new(Gate { open: open.clone() }));
        let s = Server::with_engine(engine, TransportConfig::default()).await;
        let mut a = s.client();
        a.handshake_and_connect().await;
        let mut b = s.client();
        b.handshake_and_connect().await;
        let slow = tokio::spawn(async move { a.publish("/slow", json!(1)).await });
        // While `a`'s check waits, `b` is served, allowed and refused as the policy says.
        let r = step(
            "publish while another check waits",
            b.publish("/fast", json!(2)),
        )
        .await;
        assert_eq!(r["successful"], true, "{r}");
        let r = step("refused publish", b.publish("/closed", json!(3))).await;
        assert_eq!(r["error"], "403:closed:publish_denied", "{r}");
        assert!(!slow.is_finished());
        open.notify_one();
        let r = step("the waiting publish", slow).await.expect("task");
        assert_eq!(r["successful"], true, "{r}");
    })
    .await;
}

#[tokio::test]
async fn a_remote_call_answered_later_reaches_the_held_long_poll() {
    bounded(async {
        let engine = Engine::new(engine_config(10_000));
        engine
            .on_remote_call("/service/later", Duration::from_secs(5), |call, r| {
                let data = call.data().to_owned();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    r.success(&data);
                });
            })
            .unwrap();
        let s = Server::with_engine(engine, TransportConfig::default()).await;
        let mut c = s.client();
        c.handshake_and_connect().await;
        let held = c.spawn_connect();
        held_connects(s.engine(), 1).await;
        let r = c.publish("/service/later", json!({"q": 1})).await;
        assert_eq!(r["successful"], true, "{r}");
        assert!(
            r.get("data").is_none(),
            "the publish reply carries no data: {r}"
        );
        let id = r["id"].clone();
        let answer = step("held connect", held).await.expect("task");
        let call = answer
            .iter()
            .find(|m| m["channel"] == "/service/later")
            .unwrap_or_else(|| panic!("no answer in {answer:?}"));
        assert_eq!(
            *call,
            json!({"channel": "/service/later", "id": id, "successful": true, "data": {"q": 1}})
        );
    })
    .await;
}

async fn get(addr: std::net::SocketAddr, path: &str, token: Option<&str>) -> Resp {
    let mut b = empty(http::Method::GET, addr, path);
    if let Some(t) = token {
        b = b.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    send(addr, b.body(http_body_util::Full::default()).unwrap()).await
}

#[tokio::test]
async fn introspection_is_off_by_default() {
    bounded(async {
        let s = Server::start(engine_config(10_000), TransportConfig::default()).await;
        let r = get(s.addr, "/admin/bayeux/sessions", None).await;
        assert_eq!(r.status, http::StatusCode::NOT_FOUND);
    })
    .await;
}

#[tokio::test]
async fn introspection_lists_sessions_and_channels_in_pages_behind_its_token() {
    bounded(async {
        let config = TransportConfig {
            introspection: Some(bayeux_transport::Introspection {
                path: "/admin/bayeux".into(),
                token: Some("s3cret".into()),
            }),
            ..TransportConfig::default()
        };
        let s = Server::start(engine_config(10_000), config).await;
        let mut clients = Vec::new();
        for _ in 0..3 {
            let mut c = s.client();
            c.handshake_and_connect().await;
            c.subscribe(json!("/room/1")).await;
            clients.push(c);
        }
        let r = get(s.addr, "/admin/bayeux/sessions", None).await;
        assert_eq!(r.status, http::StatusCode::UNAUTHORIZED);
        let r = get(s.addr, "/admin/bayeux/sessions", Some("wrong")).await;
        assert_eq!(r.status, http::StatusCode::UNAUTHORIZED);
        let r = get(s.addr, "/admin/bayeux/sessions?limit=2", Some("s3cret")).await;
        assert_eq!(r.status, http::StatusCode::OK, "{}", r.text());
        let page: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(page["items"].as_array().unwrap().len(), 2);
        assert_eq!(page["items"][0]["transport"], "long-polling");
        assert_eq!(page["items"][0]["subscriptions"], json!(["/room/1"]));
        let next = page["next"].as_u64().expect("a next cursor");
        let r = get(
            s.addr,
            &format!("/admin/bayeux/sessions?limit=2&after={next}"),
            Some("s3cret"),
        )
        .await;
        let page: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(page["items"].as_array().unwrap().len(), 1);
        assert!(page["next"].is_null());
        let r = get(s.addr, "/admin/bayeux/channels", Some("s3cret")).await;
        let page: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            page["items"],
            json!([{"name": "/room/1", "subscribers": 3, "persistent": false, "lazy": false}])
        );
        for bad in [
            "/admin/bayeux/sessions?after=x",
            "/admin/bayeux/sessions?limit=0",
            "/admin/bayeux/sessions?what=1",
        ] {
            let r = get(s.addr, bad, Some("s3cret")).await;
            assert_eq!(r.status, http::StatusCode::BAD_REQUEST, "{bad}");
        }
        let r = get(s.addr, "/admin/bayeux/other", Some("s3cret")).await;
        assert_eq!(r.status, http::StatusCode::NOT_FOUND);
        // The Bayeux endpoint is unaffected.
        let mut c = s.client();
        assert_eq!(c.handshake().await["successful"], true);
    })
    .await;
}
