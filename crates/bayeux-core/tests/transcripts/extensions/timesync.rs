//! The timesync extension: `tc`, `ts`, `p` and `a` in replies, and the hold of a connect
//! counted as processing time.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::common::{keys, lp};
use crate::support::t;
use bayeux_core::TimesyncExtension;
use serde_json::json;

fn epoch_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[test]
fn timesync_replies_carry_tc_ts_p_and_a() {
    let mut t = t();
    t.engine
        .add_extension(Arc::new(TimesyncExtension::new(epoch_ms)));
    let tc = epoch_ms() - 1000;
    let before = epoch_ms();
    let r = t.send(
        &lp(),
        json!([{"channel": "/meta/handshake", "version": "1.0",
                "supportedConnectionTypes": ["long-polling"],
                "ext": {"timesync": {"tc": tc, "l": 40, "o": 300}}}]),
    );
    let after = epoch_ms();
    let ts = &r[0]["ext"]["timesync"];
    assert_eq!(keys(ts), ["a", "p", "tc", "ts"]);
    assert_eq!(ts["tc"], tc);
    let server = ts["ts"].as_i64().unwrap();
    assert!(
        (before..=after).contains(&server),
        "{before} {server} {after}"
    );
    let p = ts["p"].as_i64().unwrap();
    assert!((0..=after - before).contains(&p), "{p}");
    assert_eq!(ts["a"].as_i64().unwrap(), tc + 300 + 40 - server);

    // On connect too.
    let cid = r[0]["clientId"].as_str().unwrap().to_owned();
    let r = t.connect_with(
        &lp(),
        &cid,
        json!({"ext": {"timesync": {"tc": tc, "l": 0, "o": 0}}}),
    );
    assert_eq!(r[0]["ext"]["timesync"]["tc"], tc);
    // Not on other channels, nor without a timesync request.
    let r = t.send(
        &lp(),
        json!([{"channel": "/meta/subscribe", "clientId": cid, "subscription": "/a",
                "ext": {"timesync": {"tc": tc, "l": 0, "o": 0}}}]),
    );
    assert!(r[0].get("ext").is_none());
    let r = t.connect_with(&lp(), &cid, json!({"advice": {"timeout": 0}}));
    assert!(r[0].get("ext").is_none());
}

/// The JS client computes `lag = (now - tc - p) / 2` and `offset = ts - tc - lag`. For a held
/// connect, `ts` must be the server time when the request arrived and `p` the time the server
/// kept it; otherwise half the hold time is counted as clock offset.
#[test]
fn timesync_on_a_held_connect_reports_the_hold_as_processing_time() {
    let mut t = t();
    t.engine
        .add_extension(Arc::new(TimesyncExtension::new(epoch_ms)));
    let cid = t.session(&lp());
    let tc = epoch_ms();
    let r = t.connect_with(
        &lp(),
        &cid,
        json!({"ext": {"timesync": {"tc": tc, "l": 0, "o": 0}}}),
    );
    assert!(r.is_empty());
    let received = epoch_ms();
    std::thread::sleep(Duration::from_millis(150));
    let r = t.finish_hold();
    let ts = &r[0]["ext"]["timesync"];
    let server = ts["ts"].as_i64().unwrap();
    let p = ts["p"].as_i64().unwrap();
    assert!(
        server <= received && p >= 100,
        "ts={server} (request arrived by {received}), p={p}: the hold is counted as clock offset"
    );
}

/// Every number in `ext.timesync` comes from the client: extreme values saturate instead of
/// overflowing (which would panic in a debug build and wrap in a release one).
#[test]
fn timesync_arithmetic_saturates_on_extreme_client_values() {
    fn fixed_clock() -> i64 {
        1_000
    }
    let mut t = t();
    t.engine
        .add_extension(Arc::new(TimesyncExtension::new(fixed_clock)));
    for (tc, l, o) in [
        (i64::MAX, i64::MAX, i64::MAX),
        (i64::MIN, i64::MIN, i64::MIN),
        (i64::MAX, 0, i64::MIN),
    ] {
        let r = t.send(
            &lp(),
            json!([{"channel": "/meta/handshake", "version": "1.0",
                    "supportedConnectionTypes": ["long-polling"],
                    "ext": {"timesync": {"tc": tc, "l": l, "o": o}}}]),
        );
        assert_eq!(r[0]["successful"], true, "{r:?}");
        let ts = &r[0]["ext"]["timesync"];
        assert_eq!(ts["ts"], 1_000);
        assert_eq!(ts["p"], 0);
        let want = tc.saturating_add(o).saturating_add(l).saturating_sub(1_000);
        assert_eq!(ts["a"].as_i64(), Some(want));
    }
}
