//! Disconnect, unknown sessions and bindings: a disconnect releases the held connect, an
//! unknown or missing clientId is `402` everywhere, and a session is bound to its principal and
//! its browser.

use std::task::Poll;

use crate::common::{Transcript, lp};
use crate::support::{handshake_advice, none_advice, t};
use bayeux_core::{EngineConfig, Wake};
use serde_json::json;

#[test]
fn disconnect_releases_the_held_connect_and_forgets_the_session() {
    let mut t = t();
    let cid = t.session(&lp());
    t.subscribe(&lp(), &cid, json!("/chat"));
    assert!(
        t.connect_with(&lp(), &cid, json!({"id": "held"}))
            .is_empty()
    );
    assert_eq!(t.poll_last(), Poll::Pending);

    let r = t.send(
        &lp(),
        json!([{"channel": "/meta/disconnect", "clientId": cid, "id": "9"}]),
    );
    assert_eq!(
        r,
        [json!({"channel": "/meta/disconnect", "id": "9", "successful": true})]
    );
    assert_eq!(t.poll_last(), Poll::Ready(Wake::Closed));
    // The client asked to stop: its pending connect succeeds and says so (as CometD does).
    let r = t.finish_hold();
    assert_eq!(
        r,
        [
            json!({"channel": "/meta/connect", "id": "held", "successful": true,
                 "advice": none_advice()})
        ]
    );
    assert_eq!(t.engine.session_count(), 0);
    assert_eq!(t.engine.channel_count(), 0);

    for (msg, channel) in [
        (
            json!({"channel": "/meta/connect", "connectionType": "long-polling"}),
            "/meta/connect",
        ),
        (
            json!({"channel": "/meta/subscribe", "subscription": "/a"}),
            "/meta/subscribe",
        ),
        (json!({"channel": "/chat", "data": 1}), "/chat"),
        (json!({"channel": "/meta/disconnect"}), "/meta/disconnect"),
    ] {
        let mut msg = msg;
        msg["clientId"] = json!(cid);
        msg["id"] = json!("10");
        let r = t.send(&lp(), json!([msg]));
        assert_eq!(r.len(), 1);
        assert_eq!(r[0]["channel"], channel);
        assert_eq!(r[0]["id"], "10");
        assert_eq!(r[0]["successful"], false);
        assert_eq!(r[0]["error"], "402::session_unknown");
        assert_eq!(r[0]["advice"], handshake_advice());
    }
}

#[test]
fn unknown_or_missing_client_id_is_402_on_every_channel() {
    let mut t = t();
    let bogus = "0".repeat(40);
    let messages = [
        json!({"channel": "/meta/connect", "connectionType": "long-polling"}),
        json!({"channel": "/meta/subscribe", "subscription": "/a"}),
        json!({"channel": "/meta/unsubscribe", "subscription": "/a"}),
        json!({"channel": "/meta/disconnect"}),
        json!({"channel": "/a/b", "data": {}}),
        json!({"channel": "/service/x", "data": {}}),
    ];
    for base in &messages {
        for cid in [Some(bogus.as_str()), None] {
            let mut msg = base.clone();
            msg["id"] = json!("3");
            if let Some(c) = cid {
                msg["clientId"] = json!(c);
            }
            let r = t.send(&lp(), json!([msg]));
            assert_eq!(r.len(), 1, "{msg}");
            assert_eq!(r[0]["channel"], base["channel"]);
            assert_eq!(r[0]["id"], "3");
            assert_eq!(r[0]["successful"], false, "{msg}");
            assert_eq!(r[0]["error"], "402::session_unknown", "{msg}");
            assert_eq!(r[0]["advice"], handshake_advice());
            if base["channel"] == "/meta/subscribe" || base["channel"] == "/meta/unsubscribe" {
                assert_eq!(r[0]["subscription"], "/a");
            }
        }
    }
    assert_eq!(t.held(), 0);
}

#[test]
fn a_session_is_bound_to_its_principal() {
    let mut t = t();
    let alice = lp().with_principal("alice");
    let cid = t.session(&alice);
    let bob = lp().with_principal("bob");
    for ctx in [&bob, &lp()] {
        let r = t.send(
            ctx,
            json!([{"channel": "/meta/subscribe", "clientId": cid, "subscription": "/a"},
                   {"channel": "/meta/connect", "clientId": cid, "connectionType": "long-polling"},
                   {"channel": "/a", "clientId": cid, "data": 1},
                   {"channel": "/meta/disconnect", "clientId": cid}]),
        );
        assert_eq!(r.len(), 4);
        for reply in &r {
            assert_eq!(reply["error"], "402::session_unknown", "{reply}");
        }
    }
    assert_eq!(t.held(), 0);
    let s = t.engine.session(&cid).unwrap();
    assert!(s.subscriptions().is_empty());
    assert_eq!(s.principal(), Some("alice"));
    t.subscribe(&alice, &cid, json!("/a"));
    assert_eq!(t.engine.sessions_of("alice").len(), 1);
    assert!(t.engine.sessions_of("bob").is_empty());
}

#[test]
fn a_session_is_bound_to_its_browser() {
    let mut t = t();
    let b1 = lp().with_browser("b1");
    let cid = t.session(&b1);
    let r = t.send(
        &lp().with_browser("b2"),
        json!([{"channel": "/meta/subscribe", "clientId": cid, "subscription": "/a"}]),
    );
    assert_eq!(r[0]["error"], "402::session_unknown");
    // A request without a browser id (e.g. a non-browser client) is accepted.
    t.subscribe(&lp(), &cid, json!("/a"));
    t.subscribe(&b1, &cid, json!("/b"));

    let mut strict = Transcript::new(EngineConfig {
        strict_browser: true,
        ..EngineConfig::default()
    });
    let cid = strict.session(&b1);
    let r = strict.send(
        &lp(),
        json!([{"channel": "/meta/subscribe", "clientId": cid, "subscription": "/a"}]),
    );
    assert_eq!(r[0]["error"], "402::session_unknown");
    strict.subscribe(&b1, &cid, json!("/a"));
    // A session created without a browser id accepts any.
    let plain = strict.session(&lp());
    strict.subscribe(&lp().with_browser("b9"), &plain, json!("/a"));
}
