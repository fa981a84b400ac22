//! Multiple clients of one browser: when a second long poll of one browser gets the
//! `multiple-clients` advice, its interval, and the cases it does not apply to.

use std::task::Poll;

use crate::common::{Transcript, lp, ws};
use crate::support::{retry_advice, t};
use bayeux_core::{EngineConfig, Wake};
use serde_json::json;

#[test]
fn a_second_long_poll_of_one_browser_gets_multiple_clients_advice() {
    let mut t = t();
    let browser = lp().with_browser("b1");
    let s1 = t.session(&browser);
    let s2 = t.session(&browser);
    assert!(t.connect(&browser, &s1).is_empty());
    assert_eq!(t.held(), 1);
    let r = t.connect_with(&browser, &s2, json!({"id": "m"}));
    assert_eq!(t.held(), 1, "the second session's connect is not held");
    assert_eq!(
        r,
        [
            json!({"channel": "/meta/connect", "id": "m", "successful": true,
                 "advice": {"reconnect": "retry", "interval": 2000, "timeout": 30000,
                            "multiple-clients": true}})
        ]
    );
    assert_eq!(
        t.poll_hold(0),
        Poll::Pending,
        "the first session is unaffected"
    );
    // Once the first long poll is answered, the slot is free again.
    t.advance(30_000);
    let r = t.finish_hold();
    assert_eq!(r[0]["advice"], retry_advice());
    assert!(t.connect(&browser, &s2).is_empty());
    assert_eq!(t.held(), 1);
    // ... and now s1 is the extra one.
    let r = t.connect(&browser, &s1);
    assert_eq!(r[0]["advice"]["multiple-clients"], true);
}

#[test]
fn multiple_clients_interval_follows_the_configuration() {
    let mut t = Transcript::new(EngineConfig {
        multi_session_interval_ms: 4500,
        ..EngineConfig::default()
    });
    let browser = lp().with_browser("b1");
    let s1 = t.session(&browser);
    let s2 = t.session(&browser);
    assert!(t.connect(&browser, &s1).is_empty());
    let r = t.connect(&browser, &s2);
    assert_eq!(r[0]["advice"]["interval"], 4500);
    assert_eq!(r[0]["advice"]["multiple-clients"], true);
}

#[test]
fn multiple_clients_does_not_apply_to_http2_websocket_or_other_browsers() {
    let mut t = t();
    let browser = lp().with_browser("b1");
    let s1 = t.session(&browser);
    assert!(t.connect(&browser, &s1).is_empty());

    let mut h2 = lp().with_browser("b1");
    h2.http2 = true;
    let s2 = t.session(&h2);
    assert!(
        t.connect(&h2, &s2).is_empty(),
        "HTTP/2 long polls are exempt"
    );

    let wsb = ws().with_browser("b1");
    let s3 = t.session(&wsb);
    assert!(t.connect(&wsb, &s3).is_empty(), "WebSocket is exempt");

    let other = lp().with_browser("b2");
    let s4 = t.session(&other);
    assert!(
        t.connect(&other, &s4).is_empty(),
        "another browser has its own slot"
    );
    assert_eq!(t.held(), 4);

    let mut unlimited = Transcript::new(EngineConfig {
        max_sessions_per_browser: 0,
        ..EngineConfig::default()
    });
    let a = unlimited.session(&browser);
    let b = unlimited.session(&browser);
    assert!(unlimited.connect(&browser, &a).is_empty());
    assert!(unlimited.connect(&browser, &b).is_empty());
}

/// A client whose long poll was cut (page reload, network blip) reconnects while the server
/// still holds the old request. That is the same session replacing its own connect, not a second
/// client of the browser: the new connect must be held, not told `multiple-clients`.
#[test]
fn a_session_superseding_its_own_held_connect_is_not_a_multiple_clients_case() {
    let mut t = t();
    let browser = lp().with_browser("b1");
    let s = t.session(&browser);
    assert!(
        t.connect_with(&browser, &s, json!({"id": "old"}))
            .is_empty()
    );
    let r = t.connect_with(&browser, &s, json!({"id": "new"}));
    assert!(
        r.is_empty(),
        "the reconnect of the same session was answered at once: {r:?}"
    );
    assert_eq!(t.held(), 2);
    assert_eq!(t.poll_hold(0), Poll::Ready(Wake::Superseded));
}
