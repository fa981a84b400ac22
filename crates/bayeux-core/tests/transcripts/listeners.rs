//! Listeners: what an engine listener sees of sessions, subscriptions and publishes.

use crate::common::{Recorder, lp, short_id};
use crate::support::t;
use serde_json::json;

#[test]
fn listeners_see_sessions_subscriptions_and_publishes() {
    let mut t = t();
    let rec = Recorder::new();
    t.engine.add_listener(rec.clone());
    let a = t.handshake(&lp());
    let b = t.handshake(&lp());
    let (sa, sb) = (short_id(&a).to_owned(), short_id(&b).to_owned());
    t.subscribe(&lp(), &a, json!(["/x", "/y/*"]));
    t.subscribe(&lp(), &a, json!("/x"));
    t.send(
        &lp(),
        json!([{"channel": "/meta/unsubscribe", "clientId": a, "subscription": "/x"}]),
    );
    t.publish(&lp(), &b, "/y/z", json!(1));
    t.publish(&lp(), &b, "/nobody", json!(1));
    t.send(
        &lp(),
        json!([{"channel": "/meta/disconnect", "clientId": a}]),
    );
    assert_eq!(
        rec.take(),
        [
            format!("added {sa}"),
            format!("added {sb}"),
            format!("subscribed {sa} /x"),
            format!("subscribed {sa} /y/*"),
            format!("unsubscribed {sa} /x"),
            "published /y/z 1".to_owned(),
            "published /nobody 0".to_owned(),
            format!("unsubscribed {sa} /y/*"),
            format!("removed {sa} Disconnected"),
        ]
    );
    t.advance(10_001);
    t.engine.sweep(t.now());
    assert_eq!(rec.take(), [format!("removed {sb} Expired")]);
}
