//! Subscribe and unsubscribe: string and array forms, wildcards, refused and meta
//! subscriptions, service channels and the per-session subscription bound.

use crate::common::{Transcript, lp};
use crate::support::{retry_advice, t};
use bayeux_core::EngineConfig;
use serde_json::json;

#[test]
fn subscribe_and_unsubscribe_echo_string_and_array_forms() {
    let mut t = t();
    let cid = t.session(&lp());
    let r = t.send(
        &lp(),
        json!([{"channel": "/meta/subscribe", "clientId": cid, "subscription": "/a", "id": "1"},
               {"channel": "/meta/subscribe", "clientId": cid,
                "subscription": ["/b", "/c/*"], "id": "2"}]),
    );
    assert_eq!(
        r,
        [
            json!({"channel": "/meta/subscribe", "id": "1", "successful": true,
                   "subscription": "/a"}),
            json!({"channel": "/meta/subscribe", "id": "2", "successful": true,
                   "subscription": ["/b", "/c/*"]})
        ]
    );
    let s = t.engine.session(&cid).unwrap();
    let subs: Vec<String> = s.subscriptions().iter().map(|p| p.to_string()).collect();
    assert_eq!(subs, ["/a", "/b", "/c/*"]);

    let r = t.send(
        &lp(),
        json!([{"channel": "/meta/unsubscribe", "clientId": cid, "subscription": "/a", "id": "3"},
               {"channel": "/meta/unsubscribe", "clientId": cid,
                "subscription": ["/b", "/c/*"], "id": "4"}]),
    );
    assert_eq!(
        r,
        [
            json!({"channel": "/meta/unsubscribe", "id": "3", "successful": true,
                   "subscription": "/a"}),
            json!({"channel": "/meta/unsubscribe", "id": "4", "successful": true,
                   "subscription": ["/b", "/c/*"]})
        ]
    );
    assert!(s.subscriptions().is_empty());
    assert_eq!(t.engine.channel_count(), 0);
    t.engine.publish_json("/a", &1).unwrap();
    t.engine.publish_json("/c/d", &1).unwrap();
    assert!(t.drain(&lp(), &cid).is_empty());
}

#[test]
fn wildcard_subscriptions_match_one_or_many_segments() {
    let mut t = t();
    let one = t.session(&lp());
    let deep = t.session(&lp());
    t.subscribe(&lp(), &one, json!("/a/*"));
    t.subscribe(&lp(), &deep, json!("/a/**"));
    for ch in ["/a", "/a/b", "/a/b/c", "/ab/c"] {
        t.engine.publish_json(ch, &ch).unwrap();
    }
    assert_eq!(
        t.drain(&lp(), &one),
        [json!({"channel": "/a/b", "data": "/a/b"})]
    );
    assert_eq!(
        t.drain(&lp(), &deep),
        [
            json!({"channel": "/a/b", "data": "/a/b"}),
            json!({"channel": "/a/b/c", "data": "/a/b/c"})
        ]
    );
}

#[test]
fn invalid_and_missing_subscriptions_are_refused() {
    let mut t = t();
    let cid = t.session(&lp());
    for bad in [
        json!("/a/*/b"),
        json!("nope"),
        json!("/a//b"),
        json!(["/ok", "/**/x"]),
    ] {
        let r = t.send(
            &lp(),
            json!([{"channel": "/meta/subscribe", "clientId": cid, "subscription": bad,
                    "id": "5"}]),
        );
        assert_eq!(
            r,
            [
                json!({"channel": "/meta/subscribe", "id": "5", "successful": false,
                     "error": "403::subscription_invalid", "subscription": bad,
                     "advice": retry_advice()})
            ]
        );
    }
    // A refused array subscribes none of its names.
    assert!(t.engine.session(&cid).unwrap().subscriptions().is_empty());

    for (channel, sub) in [
        ("/meta/subscribe", None),
        ("/meta/subscribe", Some(json!([]))),
        ("/meta/unsubscribe", None),
    ] {
        let mut msg = json!({"channel": channel, "clientId": cid, "id": "6"});
        if let Some(s) = &sub {
            msg["subscription"] = s.clone();
        }
        let r = t.send(&lp(), json!([msg]));
        assert_eq!(r[0]["successful"], false);
        assert_eq!(
            r[0]["error"], "403::subscription_missing",
            "{channel} {sub:?}"
        );
        assert_eq!(r[0]["channel"], channel);
        assert_eq!(r[0]["id"], "6");
    }
    let r = t.send(
        &lp(),
        json!([{"channel": "/meta/unsubscribe", "clientId": cid, "subscription": "/a/*/b"}]),
    );
    assert_eq!(r[0]["error"], "403::subscription_invalid");
}

#[test]
fn subscribing_to_meta_channels_is_denied() {
    let mut t = t();
    let cid = t.session(&lp());
    for sub in [
        json!("/meta/**"),
        json!("/meta/connect"),
        json!(["/ok", "/meta/*"]),
    ] {
        let r = t.send(
            &lp(),
            json!([{"channel": "/meta/subscribe", "clientId": cid, "subscription": sub,
                    "id": "1"}]),
        );
        assert_eq!(r[0]["successful"], false);
        assert_eq!(
            r[0]["error"],
            "403:denied_by_security_policy:subscribe_denied"
        );
        assert_eq!(r[0]["subscription"], sub);
    }
    assert!(t.engine.session(&cid).unwrap().subscriptions().is_empty());
}

#[test]
fn service_subscriptions_are_accepted_but_never_broadcast() {
    let mut t = t();
    let cid = t.session(&lp());
    let r = t.send(
        &lp(),
        json!([{"channel": "/meta/subscribe", "clientId": cid,
                "subscription": ["/service/**", "/service/echo"], "id": "1"}]),
    );
    assert_eq!(r[0]["successful"], true);
    assert_eq!(
        r[0]["subscription"],
        json!(["/service/**", "/service/echo"])
    );
    assert!(t.engine.session(&cid).unwrap().subscriptions().is_empty());
    // Not even a `/**` subscriber sees service traffic.
    t.subscribe(&lp(), &cid, json!("/**"));
    let other = t.session(&lp());
    let r = t.publish(&lp(), &other, "/service/echo", json!("x"));
    assert_eq!(r[0]["successful"], true);
    t.engine.publish_json("/service/echo", &"y").unwrap();
    assert!(t.drain(&lp(), &cid).is_empty());
}

#[test]
fn max_subscriptions_bounds_each_session() {
    let mut t = Transcript::new(EngineConfig {
        max_subscriptions: 2,
        ..EngineConfig::default()
    });
    let cid = t.session(&lp());
    t.subscribe(&lp(), &cid, json!(["/a", "/b"]));
    let r = t.send(
        &lp(),
        json!([{"channel": "/meta/subscribe", "clientId": cid, "subscription": "/c", "id": "1"}]),
    );
    assert_eq!(r[0]["successful"], false);
    assert_eq!(r[0]["error"], "403:too_many_subscriptions:subscribe_denied");
    assert_eq!(r[0]["subscription"], "/c");
    // Re-subscribing to an existing name is not a new subscription.
    t.subscribe(&lp(), &cid, json!("/a"));
    assert_eq!(t.engine.session(&cid).unwrap().subscriptions().len(), 2);
    // Other sessions have their own bound.
    let other = t.session(&lp());
    t.subscribe(&lp(), &other, json!(["/c", "/d"]));
}
