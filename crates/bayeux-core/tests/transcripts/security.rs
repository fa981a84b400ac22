//! Security policy: a policy refusing handshakes, subscribes and publishes, and the errors
//! and advice the client gets.

use std::sync::Arc;

use crate::common::lp;
use crate::support::{none_advice, retry_advice, t};
use bayeux_core::{ChannelId, Decision, Message, RequestContext, SecurityPolicy, Session};
use serde_json::json;

struct Policy;

impl SecurityPolicy for Policy {
    fn can_handshake(&self, ctx: &RequestContext, message: &Message) -> Decision {
        match ctx.principal.as_deref() {
            Some("banned") => Decision::Deny("banned_user".into()),
            Some(_) => Decision::Allow,
            None if message.ext_field("token").is_some() => Decision::Allow,
            None => Decision::Unauthenticated("authentication_required".into()),
        }
    }
    fn can_subscribe(
        &self,
        session: &Session,
        pattern: &bayeux_core::ChannelPattern,
        _m: &Message,
    ) -> Decision {
        if pattern.as_str().starts_with("/secret") && session.principal() != Some("admin") {
            Decision::Deny("forbidden".into())
        } else {
            Decision::Allow
        }
    }
    fn can_publish(&self, session: &Session, channel: &ChannelId, _m: &Message) -> Decision {
        if channel.as_str().starts_with("/readonly") && session.principal() != Some("admin") {
            Decision::Deny("read_only".into())
        } else {
            Decision::Allow
        }
    }
}

#[test]
fn security_policy_refuses_handshakes() {
    let mut t = t();
    t.engine.set_security_policy(Arc::new(Policy));
    let hs = json!([{"channel": "/meta/handshake", "version": "1.0", "id": "1",
                     "supportedConnectionTypes": ["long-polling"]}]);
    let r = t.send(&lp().with_principal("banned"), hs.clone());
    assert_eq!(
        r,
        [
            json!({"channel": "/meta/handshake", "id": "1", "successful": false,
                 "error": "403:banned_user:handshake_denied", "advice": none_advice()})
        ]
    );
    let r = t.send(&lp(), hs.clone());
    assert_eq!(
        r,
        [
            json!({"channel": "/meta/handshake", "id": "1", "successful": false,
                 "error": "401::authentication_required", "advice": none_advice()})
        ]
    );
    assert_eq!(t.engine.session_count(), 0);
    let r = t.send(
        &lp(),
        json!([{"channel": "/meta/handshake", "version": "1.0",
                "supportedConnectionTypes": ["long-polling"], "ext": {"token": "t"}}]),
    );
    assert_eq!(r[0]["successful"], true);
    let r = t.send(&lp().with_principal("alice"), hs);
    assert_eq!(r[0]["successful"], true);
}

#[test]
fn security_policy_refuses_subscribes_and_publishes() {
    let mut t = t();
    t.engine.set_security_policy(Arc::new(Policy));
    let alice = lp().with_principal("alice");
    let admin = lp().with_principal("admin");
    let a = t.session(&alice);
    let root = t.session(&admin);

    let r = t.send(
        &alice,
        json!([{"channel": "/meta/subscribe", "clientId": a,
                "subscription": ["/public", "/secret/**"], "id": "1"}]),
    );
    assert_eq!(
        r,
        [
            json!({"channel": "/meta/subscribe", "id": "1", "successful": false,
                 "error": "403:forbidden:subscribe_denied",
                 "subscription": ["/public", "/secret/**"], "advice": retry_advice()})
        ]
    );
    assert!(t.engine.session(&a).unwrap().subscriptions().is_empty());
    t.subscribe(&admin, &root, json!(["/secret/**", "/readonly"]));
    t.subscribe(&alice, &a, json!("/readonly"));

    let r = t.publish(&alice, &a, "/readonly", json!("x"));
    assert_eq!(
        r,
        [
            json!({"channel": "/readonly", "id": r[0]["id"], "successful": false,
                 "error": "403:read_only:publish_denied", "advice": retry_advice()})
        ]
    );
    assert!(t.drain(&admin, &root).is_empty());
    let r = t.publish(&admin, &root, "/readonly", json!("y"));
    assert_eq!(r[0]["successful"], true);
    assert_eq!(
        t.drain(&alice, &a),
        [json!({"channel": "/readonly", "data": "y"})]
    );
}
