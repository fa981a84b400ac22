//! Publish: the publish reply and the delivery, data relayed byte for byte, one copy per
//! session, refusals and their error strings, `broadcastToPublisher` and `ext` on deliveries.

use crate::common::{Transcript, lp};
use crate::support::{retry_advice, t};
use bayeux_core::{EngineConfig, Limits, decode_batch};
use serde_json::{Value, json};

#[test]
fn publish_reply_has_no_data_and_the_delivery_has_no_id_or_client_id() {
    let mut t = t();
    let publisher = t.session(&lp());
    let sub = t.session(&lp());
    t.subscribe(&lp(), &sub, json!("/chat"));
    let r = t.send(
        &lp(),
        json!([{"channel": "/chat", "clientId": publisher, "id": "77",
                "data": {"msg": "hi", "big": 12345678901234567890u64}}]),
    );
    assert_eq!(
        r,
        [json!({"channel": "/chat", "id": "77", "successful": true})]
    );
    assert_eq!(
        t.drain(&lp(), &sub),
        [json!({"channel": "/chat", "data": {"msg": "hi", "big": 12345678901234567890u64}})]
    );
}

#[test]
fn publish_data_is_relayed_byte_for_byte() {
    let mut t = t();
    let cid = t.session(&lp());
    t.subscribe(&lp(), &cid, json!("/raw"));
    let body = format!(
        r#"[{{"channel":"/raw","clientId":"{cid}","data":{{"n":1.50,"big":123456789012345678901234567890,"s":"\u00e9"}}}}]"#
    );
    t.send_bytes(&lp(), body.as_bytes()).unwrap();
    let connect =
        format!(r#"[{{"channel":"/meta/connect","clientId":"{cid}","advice":{{"timeout":0}}}}]"#);
    let batch = decode_batch(connect.as_bytes(), &Limits::default()).unwrap();
    let out = t.engine.handle_batch(&lp(), batch, t.now());
    let body = bayeux_core::join_array(&out.replies);
    let body = std::str::from_utf8(&body).unwrap();
    assert!(
        body.starts_with(
            r#"[{"channel":"/raw","data":{"n":1.50,"big":123456789012345678901234567890,"s":"\u00e9"}},{"channel":"/meta/connect","#
        ),
        "{body}"
    );
}

#[test]
fn a_session_matched_by_two_patterns_gets_one_copy() {
    let mut t = t();
    let cid = t.session(&lp());
    t.subscribe(&lp(), &cid, json!(["/a/b", "/a/*", "/a/**", "/**"]));
    t.engine.publish_json("/a/b", &1).unwrap();
    assert_eq!(
        t.drain(&lp(), &cid),
        [json!({"channel": "/a/b", "data": 1})]
    );
}

#[test]
fn publish_refusals_carry_the_cometd_error_strings() {
    let mut t = t();
    let cid = t.session(&lp());
    t.subscribe(&lp(), &cid, json!("/**"));
    let cases = [
        (
            json!({"channel": "/a/*", "clientId": cid, "data": 1, "id": "1"}),
            json!({"channel": "/a/*", "id": "1", "successful": false,
                   "error": "405::channel_invalid", "advice": retry_advice()}),
        ),
        (
            json!({"channel": "/a/**", "clientId": cid, "data": 1, "id": "2"}),
            json!({"channel": "/a/**", "id": "2", "successful": false,
                   "error": "405::channel_invalid", "advice": retry_advice()}),
        ),
        (
            json!({"channel": "/meta/foo", "clientId": cid, "data": 1, "id": "3"}),
            json!({"channel": "/meta/foo", "id": "3", "successful": false,
                   "error": "403:denied_by_security_policy:publish_denied",
                   "advice": retry_advice()}),
        ),
        (
            json!({"channel": "/a", "clientId": cid, "id": "4"}),
            json!({"channel": "/a", "id": "4", "successful": false,
                   "error": "400::data_missing", "advice": retry_advice()}),
        ),
        (
            json!({"clientId": cid, "data": 1, "id": "5"}),
            json!({"channel": null, "id": "5", "successful": false,
                   "error": "400::channel_missing", "advice": retry_advice()}),
        ),
        (
            json!({"channel": "/a", "clientId": cid, "data": 1, "id": "a-b"}),
            json!({"channel": "/a", "id": "a-b", "successful": false,
                   "error": "405::message_id_invalid", "advice": retry_advice()}),
        ),
        (
            json!({"channel": "no-slash", "clientId": cid, "data": 1}),
            json!({"channel": "no-slash", "successful": false,
                   "error": "405::channel_invalid", "advice": retry_advice()}),
        ),
    ];
    for (msg, want) in cases {
        let r = t.send(&lp(), json!([msg]));
        assert_eq!(r, [want], "{msg}");
    }
    assert!(
        t.drain(&lp(), &cid).is_empty(),
        "no refused publish was delivered"
    );
}

#[test]
fn message_ids_must_be_alphanumeric_on_meta_channels_too() {
    let mut t = t();
    let r = t.send(
        &lp(),
        json!([{"channel": "/meta/handshake", "version": "1.0", "id": "1.5",
                "supportedConnectionTypes": ["long-polling"]}]),
    );
    assert_eq!(r[0]["error"], "405::message_id_invalid");
    assert_eq!(r[0]["id"], "1.5");
    let long = "a".repeat(65);
    let r = t.send(
        &lp(),
        json!([{"channel": "/meta/handshake", "version": "1.0", "id": long,
                "supportedConnectionTypes": ["long-polling"]}]),
    );
    assert_eq!(r[0]["error"], "405::message_id_invalid");
    assert_eq!(t.engine.session_count(), 0);
}

#[test]
fn data_null_is_a_valid_publish() {
    let mut t = t();
    let cid = t.session(&lp());
    t.subscribe(&lp(), &cid, json!("/n"));
    let r = t.publish(&lp(), &cid, "/n", Value::Null);
    assert_eq!(r[0]["successful"], true);
    assert_eq!(
        t.drain(&lp(), &cid),
        [json!({"channel": "/n", "data": null})]
    );
}

#[test]
fn publisher_gets_its_own_broadcast_only_with_broadcast_to_publisher() {
    for (flag, own) in [(true, 1), (false, 0)] {
        let mut t = Transcript::new(EngineConfig {
            broadcast_to_publisher: flag,
            ..EngineConfig::default()
        });
        let publisher = t.session(&lp());
        let other = t.session(&lp());
        t.subscribe(&lp(), &publisher, json!("/chat"));
        t.subscribe(&lp(), &other, json!("/chat"));
        let r = t.publish(&lp(), &publisher, "/chat", json!("m"));
        assert_eq!(r[0]["successful"], true);
        assert_eq!(
            t.drain(&lp(), &publisher).len(),
            own,
            "broadcast_to_publisher={flag}"
        );
        assert_eq!(
            t.drain(&lp(), &other),
            [json!({"channel": "/chat", "data": "m"})]
        );
    }
}

#[test]
fn publish_ext_travels_with_the_delivery() {
    let mut t = t();
    let cid = t.session(&lp());
    t.subscribe(&lp(), &cid, json!("/e"));
    t.send(
        &lp(),
        json!([{"channel": "/e", "clientId": cid, "data": 1, "ext": {"tag": "x"}}]),
    );
    assert_eq!(
        t.drain(&lp(), &cid),
        [json!({"channel": "/e", "data": 1, "ext": {"tag": "x"}})]
    );
}
