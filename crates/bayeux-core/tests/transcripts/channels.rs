//! Channel hooks and settings: initializers, created/removed events, per-channel message and
//! subscription listeners (change or veto, once, before the single serialization), persistent
//! and broadcast-to-publisher settings; and lazy messages on the fake clock over both
//! transports.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use crate::common::{Transcript, lp, ws};
use crate::support::t;
use bayeux_core::{ChannelPattern, EngineConfig, Listener, Raw, Wake};
use serde_json::json;

#[derive(Default)]
struct Channels(Mutex<Vec<String>>);

impl Listener for Channels {
    fn channel_added(&self, c: &ChannelPattern) {
        self.0.lock().unwrap().push(format!("+{c}"));
    }
    fn channel_removed(&self, c: &ChannelPattern) {
        self.0.lock().unwrap().push(format!("-{c}"));
    }
}

impl Channels {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

#[test]
fn channels_live_while_subscribed_unless_persistent_and_initializers_run_first() {
    let mut t = t();
    let events = Arc::new(Channels::default());
    t.engine.add_listener(events.clone());
    t.engine.add_channel_initializer(|name, s| {
        s.persistent = name.as_str().starts_with("/keep/");
    });
    let a = t.session(&lp());
    let b = t.session(&lp());
    t.subscribe(&lp(), &a, json!(["/keep/x", "/drop/x"]));
    t.subscribe(&lp(), &b, json!("/drop/x"));
    assert_eq!(events.take(), ["+/keep/x", "+/drop/x"]);
    assert!(t.engine.channel("/keep/x").unwrap().settings().persistent);
    assert!(!t.engine.channel("/drop/x").unwrap().settings().persistent);
    t.send(
        &lp(),
        json!([{"channel": "/meta/unsubscribe", "clientId": a, "subscription": ["/keep/x", "/drop/x"]}]),
    );
    assert!(events.take().is_empty(), "b still subscribes to /drop/x");
    t.send(
        &lp(),
        json!([{"channel": "/meta/disconnect", "clientId": b}]),
    );
    assert_eq!(events.take(), ["-/drop/x"]);
    assert!(t.engine.channel("/drop/x").is_none());
    assert!(t.engine.channel("/keep/x").is_some());
    // A publish to a channel nobody subscribes to creates nothing.
    let c = t.session(&lp());
    t.publish(&lp(), &c, "/nobody", json!(1));
    assert!(t.engine.channel("/nobody").is_none());
    assert!(t.engine.remove_channel("/keep/x"));
    assert_eq!(events.take(), ["-/keep/x"]);
    // Created by the server: lives without subscribers.
    let h = t.engine.create_channel("/made", |_| {}).unwrap();
    assert_eq!(h.name().as_str(), "/made");
    assert_eq!(events.take(), ["+/made"]);
    assert!(t.engine.create_channel("/bad/**/x", |_| {}).is_err());
}

#[test]
fn a_message_listener_changes_the_data_once_before_the_single_serialization() {
    let mut t = t();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    t.engine
        .create_channel("/chat/*", |_| {})
        .unwrap()
        .add_message_listener(move |from, channel, data: &mut Raw| {
            c.fetch_add(1, Ordering::SeqCst);
            assert!(from.is_some());
            let text = data.parse::<String>().unwrap_or_default();
            *data =
                Raw::from_value(&format!("{}: {}", channel.as_str(), text.to_uppercase())).unwrap();
            true
        });
    let publisher = t.session(&ws());
    let subs: Vec<String> = (0..3).map(|_| t.session(&ws())).collect();
    for s in &subs {
        t.subscribe(&ws(), s, json!("/chat/a"));
    }
    let r = t.publish(&ws(), &publisher, "/chat/a", json!("hi"));
    assert_eq!(r[0]["successful"], true);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "once per message, not per recipient"
    );
    let frames: Vec<_> = subs
        .iter()
        .map(|s| t.engine.session(s).unwrap().take_messages().remove(0))
        .collect();
    assert_eq!(
        frames[0].object(),
        br#"{"channel":"/chat/a","data":"/chat/a: HI"}"#
    );
    for f in &frames {
        // The very same buffer: serialized once for all of them.
        assert_eq!(f.array().as_ptr(), frames[0].array().as_ptr());
    }
}

#[test]
fn a_vetoing_message_listener_stops_the_message_and_tells_the_publisher() {
    let mut t = t();
    t.engine
        .create_channel("/chat/a", |_| {})
        .unwrap()
        .add_message_listener(|_, _, data: &mut Raw| !data.get().contains("spam"));
    let sub = t.session(&lp());
    t.subscribe(&lp(), &sub, json!("/chat/a"));
    let publisher = t.session(&lp());
    let r = t.publish(&lp(), &publisher, "/chat/a", json!("spam!"));
    assert_eq!(r[0]["successful"], false);
    assert_eq!(r[0]["error"], "404::message_deleted");
    assert_eq!(t.engine.publish_json("/chat/a", &"spam").unwrap(), 0);
    assert_eq!(t.engine.publish_json("/chat/a", &"ham").unwrap(), 1);
    assert_eq!(
        t.drain(&lp(), &sub),
        [json!({"channel": "/chat/a", "data": "ham"})]
    );
}

#[test]
fn subscription_listeners_and_broadcast_to_publisher_per_channel() {
    let mut t = t();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let room = t
        .engine
        .create_channel("/room", |s| s.broadcast_to_publisher = Some(false))
        .unwrap();
    room.add_subscription_listener(move |_, p, on| {
        s2.lock()
            .unwrap()
            .push(format!("{}{p}", if on { "+" } else { "-" }));
    });
    let a = t.session(&lp());
    t.subscribe(&lp(), &a, json!("/room"));
    t.subscribe(&lp(), &a, json!("/other"));
    let r = t.publish(&lp(), &a, "/room", json!(1));
    assert_eq!(r[0]["successful"], true);
    assert!(t.drain(&lp(), &a).is_empty(), "not to its own publisher");
    let b = t.session(&lp());
    t.subscribe(&lp(), &b, json!("/room"));
    t.publish(&lp(), &b, "/room", json!(2));
    assert_eq!(t.drain(&lp(), &a), [json!({"channel": "/room", "data": 2})]);
    t.send(
        &lp(),
        json!([{"channel": "/meta/disconnect", "clientId": a}]),
    );
    assert_eq!(*seen.lock().unwrap(), ["+/room", "+/room", "-/room"]);
}

fn lazy_engine() -> Transcript {
    let t = Transcript::new(EngineConfig {
        max_lazy_ms: 1000,
        ..EngineConfig::default()
    });
    t.engine.add_channel_initializer(|name, s| {
        s.lazy = name.as_str().starts_with("/lazy/");
    });
    t
}

#[test]
fn lazy_messages_wait_for_a_non_lazy_one_over_long_polling() {
    let mut t = lazy_engine();
    let c = t.session(&lp());
    t.subscribe(&lp(), &c, json!(["/lazy/a", "/now"]));
    t.connect(&lp(), &c);
    assert_eq!(t.held(), 1);
    t.engine.publish_json("/lazy/a", &1).unwrap();
    t.engine.publish_json("/lazy/a", &2).unwrap();
    assert_eq!(
        t.poll_last(),
        Poll::Pending,
        "lazy messages do not wake the connect"
    );
    t.engine.publish_json("/now", &3).unwrap();
    assert_eq!(t.poll_last(), Poll::Ready(Wake::Messages));
    let r = t.finish_hold();
    let data: Vec<_> = r[..3].iter().map(|m| m["data"].clone()).collect();
    assert_eq!(
        data,
        [json!(1), json!(2), json!(3)],
        "in order, all together"
    );
    // A connect arriving with only lazy messages waiting is held too; its end takes them.
    t.engine.publish_json("/lazy/a", &4).unwrap();
    t.connect(&lp(), &c);
    assert_eq!(t.poll_last(), Poll::Pending);
    t.advance(30_000);
    let r = t.finish_hold();
    assert_eq!(r[0], json!({"channel": "/lazy/a", "data": 4}));
}

#[test]
fn lazy_messages_wait_at_most_max_lazy_on_the_fake_clock() {
    let mut t = lazy_engine();
    let c = t.session(&lp());
    t.subscribe(&lp(), &c, json!("/lazy/a"));
    t.connect(&lp(), &c);
    t.engine.publish_json("/lazy/a", &1).unwrap();
    // The first sweep that sees them starts their clock.
    t.engine.sweep(t.now());
    assert_eq!(t.poll_last(), Poll::Pending);
    t.advance(999);
    t.engine.sweep(t.now());
    assert_eq!(t.poll_last(), Poll::Pending);
    t.advance(1);
    t.engine.sweep(t.now());
    assert_eq!(t.poll_last(), Poll::Ready(Wake::Messages));
    assert_eq!(t.finish_hold()[0]["data"], 1);
}

#[test]
fn lazy_messages_over_websocket_wait_for_the_writer_to_be_woken() {
    let mut t = lazy_engine();
    let c = t.session(&ws());
    t.subscribe(&ws(), &c, json!(["/lazy/a", "/now"]));
    let s = t.engine.session(&c).unwrap();
    let mut cx = Context::from_waker(Waker::noop());
    t.engine.publish_json("/lazy/a", &1).unwrap();
    assert_eq!(s.poll_messages(&mut cx), Poll::Pending);
    assert_eq!(s.queue_len(), 1);
    t.engine.publish_json("/now", &2).unwrap();
    assert_eq!(s.poll_messages(&mut cx), Poll::Ready(Wake::Messages));
    assert_eq!(s.take_messages().len(), 2);
    // And after max_lazy, on the sweeper's clock.
    t.engine.publish_json("/lazy/a", &3).unwrap();
    t.engine.sweep(t.now());
    t.advance(1000);
    t.engine.sweep(t.now());
    assert_eq!(s.poll_messages(&mut cx), Poll::Ready(Wake::Messages));
    assert_eq!(s.take_messages().len(), 1);
    assert_eq!(s.poll_messages(&mut cx), Poll::Pending);
}

#[test]
fn a_recipient_hook_is_the_opt_in_to_per_recipient_copies() {
    use bayeux_core::Recipient;
    let mut t = t();
    let subs: Vec<String> = (0..3).map(|_| t.session(&ws())).collect();
    for s in &subs {
        t.subscribe(&ws(), s, json!("/feed/a"));
    }
    let (first, second) = (subs[0].clone(), subs[1].clone());
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    t.engine
        .create_channel("/feed/*", |_| {})
        .unwrap()
        .add_recipient_hook(move |session, _, data| {
            c.fetch_add(1, Ordering::SeqCst);
            if session.id().as_str() == first {
                Recipient::Replace(
                    Raw::from_json(&format!("{{\"for_you\":{}}}", data.get())).unwrap(),
                )
            } else if session.id().as_str() == second {
                Recipient::Skip
            } else {
                Recipient::Same
            }
        });
    assert_eq!(t.engine.publish_json("/feed/a", &7).unwrap(), 2);
    assert_eq!(calls.load(Ordering::SeqCst), 3, "once per recipient");
    let got: Vec<Vec<bayeux_core::Framed>> = subs
        .iter()
        .map(|s| t.engine.session(s).unwrap().take_messages())
        .collect();
    assert_eq!(
        got[0][0].object(),
        br#"{"channel":"/feed/a","data":{"for_you":7}}"#
    );
    assert!(got[1].is_empty());
    assert_eq!(got[2][0].object(), br#"{"channel":"/feed/a","data":7}"#);
    // Channels without hooks keep the shared path.
    t.subscribe(&ws(), &subs[1], json!("/other"));
    assert_eq!(t.engine.publish_json("/other", &1).unwrap(), 1);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}
