//! In-process API: `publish_json`, `deliver`, `deliver_to_principal`, local services and
//! local sessions, beside remote clients.

use std::sync::{Arc, Mutex};

use crate::common::{self, lp, ws};
use crate::support::t;
use bayeux_core::{ChannelId, Error};
use serde_json::{Value, json};

#[test]
fn publish_json_reaches_remote_and_local_subscribers() {
    let mut t = t();
    let cid = t.session(&lp());
    t.subscribe(&lp(), &cid, json!("/news/*"));
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    let local = t.engine.local_session(None, move |d| {
        g.lock().unwrap().push((
            d.channel.to_string(),
            d.data.get().to_owned(),
            d.sender.is_some(),
        ));
    });
    local.subscribe("/news/**").unwrap();
    assert_eq!(
        t.engine
            .publish_json("/news/today", &json!({"h": 1}))
            .unwrap(),
        2
    );
    assert_eq!(t.engine.publish_json("/elsewhere", &1).unwrap(), 0);
    assert!(matches!(
        t.engine.publish_json("/news/*", &1),
        Err(Error::InvalidChannel(_))
    ));
    assert_eq!(
        t.drain(&lp(), &cid),
        [json!({"channel": "/news/today", "data": {"h": 1}})]
    );
    assert_eq!(
        *got.lock().unwrap(),
        [("/news/today".to_owned(), r#"{"h":1}"#.to_owned(), false)]
    );
    // A local session is not reachable with its id from the outside.
    let lid = local.session().id().to_string();
    let r = t.connect(&lp(), &lid);
    assert_eq!(r[0]["error"], "402::session_unknown");
    drop(local);
    assert_eq!(t.engine.publish_json("/news/today", &1).unwrap(), 1);
}

#[test]
fn deliver_reaches_exactly_one_session() {
    let mut t = t();
    let a = t.session(&lp());
    let b = t.session(&lp());
    let ch = ChannelId::parse("/private/note").unwrap();
    let data = serde_json::value::to_raw_value(&json!({"for": "a"})).unwrap();
    t.engine.deliver(&a, &ch, &data).unwrap();
    assert_eq!(
        t.drain(&lp(), &a),
        [json!({"channel": "/private/note", "data": {"for": "a"}})]
    );
    assert!(t.drain(&lp(), &b).is_empty());
    assert_eq!(
        t.engine.deliver(&"f".repeat(40), &ch, &data),
        Err(Error::UnknownSession)
    );
}

#[test]
fn deliver_to_principal_reaches_only_that_principals_sessions() {
    let mut t = t();
    let alice = lp().with_principal("alice");
    let bob = lp().with_principal("bob");
    let a1 = t.session(&alice);
    let a2 = t.session(&ws().with_principal("alice"));
    let b1 = t.session(&bob);
    let anon = t.session(&lp());
    let ch = ChannelId::parse("/v2/me/calls").unwrap();
    let data = serde_json::value::to_raw_value(&json!({"call": 1})).unwrap();
    assert_eq!(t.engine.deliver_to_principal("alice", &ch, &data), 2);
    assert_eq!(t.engine.deliver_to_principal("carol", &ch, &data), 0);
    let want = [json!({"channel": "/v2/me/calls", "data": {"call": 1}})];
    assert_eq!(t.drain(&alice, &a1), want);
    let s2 = t.engine.session(&a2).unwrap();
    let ws_msgs: Vec<Value> = common::parse_all(&s2.take_messages());
    assert_eq!(ws_msgs, want);
    assert!(t.drain(&bob, &b1).is_empty());
    assert!(t.drain(&lp(), &anon).is_empty());
    // Sessions leave the principal's index when they end.
    t.send(
        &alice,
        json!([{"channel": "/meta/disconnect", "clientId": a1}]),
    );
    assert_eq!(t.engine.sessions_of("alice").len(), 1);
    assert_eq!(t.engine.deliver_to_principal("alice", &ch, &data), 1);
}

#[test]
fn a_local_service_answers_a_remote_request_on_its_service_channel() {
    let mut t = t();
    let engine = t.engine.clone();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let service = t.engine.local_session(Some("server"), move |d| {
        let sender = d.sender.expect("a remote sender").to_string();
        s.lock()
            .unwrap()
            .push((sender.clone(), d.id.map(|i| i.as_str().to_owned())));
        engine.deliver(&sender, d.channel, d.data).unwrap();
    });
    service.subscribe("/service/echo").unwrap();
    let cid = t.session(&lp());
    let other = t.session(&lp());
    t.subscribe(&lp(), &other, json!("/**"));
    let r = t.send(
        &lp(),
        json!([{"channel": "/service/echo", "clientId": cid, "id": "12",
                "data": {"ping": true}}]),
    );
    assert_eq!(
        r,
        [json!({"channel": "/service/echo", "id": "12", "successful": true})]
    );
    assert_eq!(
        *seen.lock().unwrap(),
        [(cid.clone(), Some("12".to_owned()))]
    );
    assert_eq!(
        t.drain(&lp(), &cid),
        [json!({"channel": "/service/echo", "data": {"ping": true}})]
    );
    assert!(
        t.drain(&lp(), &other).is_empty(),
        "service traffic is never broadcast"
    );
}

#[test]
fn a_local_session_sees_remote_publishes_with_their_sender() {
    let mut t = t();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let observer = t.engine.local_session(None, move |d| {
        s.lock().unwrap().push((
            d.sender.map(|x| x.to_string()),
            d.id.map(|i| i.as_str().to_owned()),
            d.ext.map(|e| e.get().to_owned()),
        ));
    });
    observer.subscribe("/chat/**").unwrap();
    let cid = t.session(&lp());
    t.send(
        &lp(),
        json!([{"channel": "/chat/a", "clientId": cid, "id": "5", "data": 1, "ext": {"k": 1}}]),
    );
    assert_eq!(
        *seen.lock().unwrap(),
        [(
            Some(cid),
            Some("5".to_owned()),
            Some(r#"{"k":1}"#.to_owned())
        )]
    );
}
