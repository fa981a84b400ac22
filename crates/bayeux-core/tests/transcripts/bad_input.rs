//! Bad input: undecodable requests and their Bayeux error strings, a bare object and an empty
//! batch, and failed messages that must leave other sessions untouched.

use std::task::Poll;

use crate::common::{Transcript, lp};
use crate::support::{retry_advice, t};
use bayeux_core::{EngineConfig, Error, Limits, Wake};
use serde_json::json;

#[test]
fn undecodable_requests_are_errors_with_bayeux_error_strings() {
    let mut t = Transcript::new(EngineConfig {
        limits: Limits {
            max_bytes: 4096,
            max_messages: 3,
            max_depth: 6,
        },
        ..EngineConfig::default()
    });
    let malformed: &[&[u8]] = &[
        b"",
        b"   ",
        b"{",
        b"[{]",
        b"[{\"channel\":\"/a\",}]",
        b"nope",
        b"5",
        b"\"/meta/handshake\"",
        b"null",
        b"true",
        b"[1]",
        b"[[]]",
        br#"[["/meta/handshake"]]"#,
        b"[null]",
        b"[\"x\"]",
        b"[{}] []",
        b"\xff\xfe[]",
        br#"[{"channel":5}]"#,
        br#"[{"clientId":[]}]"#,
        br#"[{"clientId":7}]"#,
        br#"[{"id":{}}]"#,
        br#"[{"id":true}]"#,
        br#"[{"subscription":5}]"#,
        br#"[{"subscription":[5]}]"#,
        br#"[{"supportedConnectionTypes":"long-polling"}]"#,
        br#"[{"advice":"x"}]"#,
        br#"[{"advice":{"timeout":"5"}}]"#,
        br#"[{"version":1}]"#,
        br#"[{"connectionType":["long-polling"]}]"#,
        br#"[{"channel":"/a","channel":"/b"}]"#,
        br#"[{"data":}]"#,
    ];
    let accepted: Vec<String> = malformed
        .iter()
        .filter(|bad| t.send_bytes(&lp(), bad).is_ok())
        .map(|bad| String::from_utf8_lossy(bad).into_owned())
        .collect();
    assert!(
        accepted.is_empty(),
        "decoded although malformed: {accepted:?}"
    );
    for bad in malformed {
        let e = t.send_bytes(&lp(), bad).unwrap_err();
        assert!(
            matches!(e, Error::Malformed(_)),
            "{:?} -> {e:?}",
            String::from_utf8_lossy(bad)
        );
        assert_eq!(e.bayeux_error(), "400::message_invalid");
        assert!(!e.to_string().is_empty());
    }
    let big = format!(r#"[{{"channel":"/a","data":"{}"}}]"#, "x".repeat(5000));
    let e = t.send_bytes(&lp(), big.as_bytes()).unwrap_err();
    assert_eq!(e, Error::TooLarge { limit: 4096 });
    assert_eq!(e.bayeux_error(), "413::message_too_large");

    let many = json!([{"channel": "/a"}, {"channel": "/a"}, {"channel": "/a"}, {"channel": "/a"}]);
    let e = t
        .send_bytes(&lp(), many.to_string().as_bytes())
        .unwrap_err();
    assert_eq!(e, Error::TooManyMessages { limit: 3 });
    assert_eq!(e.bayeux_error(), "413::batch_too_large");

    let deep = br#"[{"channel":"/a","data":[[[[[1]]]]]}]"#;
    let e = t.send_bytes(&lp(), deep).unwrap_err();
    assert_eq!(e, Error::TooDeep { limit: 6 });
    assert_eq!(e.bayeux_error(), "400::message_too_deep");
    let just_deep_enough = br#"[{"channel":"/a","data":[[[[1]]]]}]"#;
    assert!(t.send_bytes(&lp(), just_deep_enough).is_ok());

    assert_eq!(
        Error::InvalidChannel("x".into()).bayeux_error(),
        "405::channel_invalid"
    );
    assert_eq!(Error::UnknownSession.bayeux_error(), "402::session_unknown");
    assert_eq!(Error::QueueFull.bayeux_error(), "503::queue_full");
    // Nothing above touched the engine.
    assert_eq!(t.engine.session_count(), 0);
    assert_eq!(
        t.engine
            .stats()
            .messages_in
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[test]
fn a_bare_object_and_an_empty_batch_are_accepted() {
    let mut t = t();
    let r = t
        .send_bytes(
            &lp(),
            br#"{"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["long-polling"],"id":"1"}"#,
        )
        .unwrap();
    assert_eq!(r[0]["successful"], true);
    assert!(t.send_bytes(&lp(), b"[]").unwrap().is_empty());
    // An object with no channel is answered, not dropped.
    let r = t.send_bytes(&lp(), b"{}").unwrap();
    assert_eq!(
        r,
        [
            json!({"channel": null, "successful": false, "error": "400::channel_missing",
                 "advice": retry_advice()})
        ]
    );
}

#[test]
fn failed_messages_leave_other_sessions_untouched() {
    let mut t = t();
    let victim_ctx = lp().with_principal("victim");
    let victim = t.session(&victim_ctx);
    t.subscribe(&victim_ctx, &victim, json!(["/room", "/other/*"]));
    assert!(t.connect(&victim_ctx, &victim).is_empty());
    let attacker_ctx = lp().with_principal("mallory");
    let attacker = t.session(&attacker_ctx);
    let victim_session = t.engine.session(&victim).unwrap();
    let subs_before = victim_session.subscriptions();

    let r = t.send(
        &attacker_ctx,
        json!([
            {"channel": "/meta/unsubscribe", "clientId": victim, "subscription": "/room"},
            {"channel": "/meta/subscribe", "clientId": victim, "subscription": "/trap"},
            {"channel": "/meta/connect", "clientId": victim, "connectionType": "long-polling"},
            {"channel": "/meta/disconnect", "clientId": victim},
            {"channel": "/room", "clientId": victim, "data": "spoofed"},
            {"channel": "/room/*", "clientId": attacker, "data": 1},
            {"channel": "/room", "clientId": attacker},
            {"channel": "/room", "clientId": attacker, "data": 1, "id": "bad id"},
            {"channel": "/meta/subscribe", "clientId": attacker, "subscription": "/room/**/x"},
            {"clientId": attacker, "data": 1},
            {"channel": "/room", "clientId": attacker, "data": "ok", "id": "last"},
        ]),
    );
    assert_eq!(r.len(), 11);
    for reply in &r[..10] {
        assert_eq!(reply["successful"], false, "{reply}");
    }
    assert_eq!(
        r[10],
        json!({"channel": "/room", "id": "last", "successful": true})
    );
    // The victim's session, subscriptions and held connect are as they were; it received the
    // one valid publish and nothing else.
    assert!(t.engine.session(&victim).is_some());
    assert_eq!(victim_session.subscriptions(), subs_before);
    assert_eq!(t.held(), 1);
    assert_eq!(t.poll_last(), Poll::Ready(Wake::Messages));
    let r = t.finish_hold();
    assert_eq!(r.len(), 2);
    assert_eq!(r[0], json!({"channel": "/room", "data": "ok"}));
    assert_eq!(r[1]["successful"], true);
}
