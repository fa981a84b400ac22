//! The fuzz targets' properties as bounded property tests under plain `cargo test` (arbitrary +
//! arbtest, about 2 s each), plus every committed fuzz seed replayed as a regression corpus.
//!
//! The checks themselves live once, in `fuzz/src/` (the cargo-fuzz workspace), and are
//! included here by path: the codec round trip, the channel matcher against a naive reference,
//! random engine operation sequences against a model, HTTP request decoding through
//! `BayeuxService::handle`, and voice API operation parsing through `VoiceApi::handle`.
//!
//! A failure prints arbtest's seed; rerun it with `arbtest(..).seed(0x...)`.

#[allow(dead_code)]
#[path = "../../../fuzz/src/channel.rs"]
mod channel;
#[allow(dead_code)]
#[path = "../../../fuzz/src/codec.rs"]
mod codec;
#[allow(dead_code)]
#[path = "../../../fuzz/src/engine.rs"]
mod engine;
#[allow(dead_code)]
#[path = "../../../fuzz/src/http.rs"]
mod http_check;
#[allow(dead_code)]
#[path = "../../../fuzz/src/voice.rs"]
mod voice;
#[allow(dead_code)]
#[path = "../../../fuzz/src/wsframe.rs"]
mod wsframe;

use std::path::PathBuf;

use arbitrary::{Arbitrary, Unstructured};
use arbtest::arbtest;
use serde_json::Value;

/// Time budget of each property, ms.
const BUDGET_MS: u64 = 2000;

/// The committed seeds of a fuzz target, sorted by name.
fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/seeds")
        .join(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.is_file())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).expect("seed"))
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no seeds in {}", dir.display());
    out
}

/// A vector whose length is drawn from the remaining input (`u.arbitrary::<Vec<T>>()` stops at
/// each element with probability 1/2, which keeps generated vectors tiny).
fn vec_of<'a, T: Arbitrary<'a>>(u: &mut Unstructured<'a>, max: usize) -> arbitrary::Result<Vec<T>> {
    let n = u.arbitrary_len::<T>()?.min(max);
    (0..n).map(|_| u.arbitrary()).collect()
}

/// Runs `check` on every seed, naming the seed that fails.
fn replay(target: &str, mut check: impl FnMut(&[u8])) {
    for (name, data) in seeds(target) {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&data)));
        if let Err(e) = r {
            eprintln!("fuzz seed {target}/{name} failed");
            std::panic::resume_unwind(e);
        }
    }
}

#[test]
fn codec_round_trips_structured_batches() {
    arbtest(|u| {
        let batch = codec::BatchInput {
            bare: u.arbitrary()?,
            spacing: u.arbitrary()?,
            ascii: u.arbitrary()?,
            messages: vec_of(u, 50)?,
        };
        codec::check(batch.render().as_bytes());
        Ok(())
    })
    .budget_ms(BUDGET_MS);
}

#[test]
fn codec_never_panics_on_bytes() {
    arbtest(|u| {
        let bytes: &[u8] = u.arbitrary()?;
        codec::check(bytes);
        Ok(())
    })
    .budget_ms(BUDGET_MS / 2);
}

#[test]
fn websocket_frames_parse_as_sent() {
    arbtest(|u| {
        let seq = wsframe::Sequence {
            pieces: vec_of(u, 20)?,
            mask: u.arbitrary()?,
            step: u.arbitrary()?,
        };
        wsframe::check_sequence(&seq);
        Ok(())
    })
    .budget_ms(BUDGET_MS / 2);
    arbtest(|u| {
        let bytes: &[u8] = u.arbitrary()?;
        wsframe::check_raw(bytes);
        Ok(())
    })
    .budget_ms(BUDGET_MS / 2);
    replay("ws_frame", wsframe::check);
}

#[test]
fn codec_seeds() {
    replay("decode_batch", codec::check);
}

/// Regression (found by the `decode_batch` target): a bare object is a batch of one, so its
/// nesting must be judged as if inside the batch array; otherwise a bare object at the depth
/// limit decodes but its re-encoded array form does not.
#[test]
fn bare_object_at_depth_limit_round_trips() {
    let depth = bayeux_core::Limits::default().max_depth;
    let data = format!("{}1{}", "[".repeat(depth - 1), "]".repeat(depth - 1));
    codec::check(format!(r#"{{"channel":"/a","data":{data}}}"#).as_bytes());
}

#[test]
fn channel_matcher_agrees_with_reference() {
    arbtest(|u| {
        let input = channel::ChannelInput {
            names: vec_of(u, 16)?,
        };
        channel::check(&input);
        Ok(())
    })
    .budget_ms(BUDGET_MS);
}

#[test]
fn channel_seeds() {
    replay("channel", channel::check_text);
}

/// Regression (found by the `channel` target): normalising a name is idempotent, so the
/// normalised text of a channel (what the router keys on and the backplane carries) parses
/// back to the same channel. `"/ /"` used to become `"/ "`, which is not a valid name.
#[test]
fn channel_normalisation_is_idempotent() {
    channel::check_names(&[
        "/ /".into(),
        "/a/b /".into(),
        "/a/ /".into(),
        " /a/b/ ".into(),
    ]);
}

fn add(total: &mut engine::Coverage, c: engine::Coverage) {
    total.deliveries += c.deliveries;
    total.holds += c.holds;
    total.expired += c.expired;
    total.drops += c.drops;
}

#[test]
fn engine_operations_agree_with_model() {
    let mut total = engine::Coverage::default();
    arbtest(|u| {
        let scenario = engine::Scenario::generate(u)?;
        add(&mut total, engine::run(&scenario));
        Ok(())
    })
    .size_min(1 << 10)
    .size_max(1 << 16)
    .budget_ms(BUDGET_MS);
    // Sanity: the generated scenarios reach the deep states.
    assert!(total.deliveries > 0 && total.holds > 0, "{total:?}");
}

#[test]
fn engine_seeds() {
    let mut total = engine::Coverage::default();
    replay("engine_ops", |data| {
        if let Ok(s) = engine::Scenario::from_bytes(data) {
            add(&mut total, engine::run(&s));
        }
    });
    // The committed corpus must keep reaching the deep states, or it has gone stale.
    assert!(total.deliveries > 0 && total.holds > 0, "{total:?}");
    assert!(total.expired > 0 && total.drops > 0, "{total:?}");
}

#[test]
fn http_requests_decode_without_surprises() {
    let h = http_check::harness();
    replay("http_request", |data| h.check_raw(data));
    arbtest(|u| {
        let input: http_check::HttpInput = u.arbitrary()?;
        h.check(&input);
        Ok(())
    })
    .budget_ms(BUDGET_MS);
}

#[test]
fn voice_operations_parse_without_surprises() {
    const OPS: [&str; 14] = [
        "Answer",
        "Hold",
        "Retrieve",
        "Hangup",
        "SendDtmf",
        "StartCallRecording",
        "StopCallRecording",
        "PauseCallRecording",
        "ResumeCallRecording",
        "AttachUserData",
        "UpdateUserData",
        "DeleteUserDataPair",
        "DeleteUserData",
        "InitiateTransfer",
    ];
    let h = voice::harness();
    replay("voice_operation", |data| h.check(data));
    arbtest(|u| {
        // An object with a plausible operationName and arbitrary parameters.
        let mut obj = serde_json::Map::new();
        if let Some(i) = u.arbitrary::<Option<u8>>()? {
            obj.insert("operationName".into(), OPS[i as usize % OPS.len()].into());
        }
        for key in ["userData", "key", "digits"] {
            if let Some(v) = u.arbitrary::<Option<codec::JsonIn>>()? {
                obj.insert(key.into(), to_value(&v));
            }
        }
        h.check(Value::Object(obj).to_string().as_bytes());
        Ok(())
    })
    .budget_ms(BUDGET_MS);
}

fn to_value(v: &codec::JsonIn) -> Value {
    use codec::JsonIn as J;
    match v {
        J::Null => Value::Null,
        J::Bool(b) => (*b).into(),
        J::Int(i) => (*i).into(),
        J::Big(u) => (*u).into(),
        J::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Into::into),
        J::Str(s) => s.clone().into(),
        J::Arr(a) => a.iter().map(to_value).collect(),
        J::Obj(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), to_value(v))).collect()),
    }
}

/// The model itself, on one scripted scenario: a subscriber gets a publish in its connect
/// reply, a held connect wakes and carries the next one, an idle session expires.
#[test]
fn engine_model_smoke() {
    use engine::{AdviceIn, ConfigIn, Name, Op, Scenario};
    let known = |name: &str| {
        Name::Known(
            ["/a", "/a/b", "/a/b/c", "/b", "/a/c", "/a/*"]
                .iter()
                .position(|n| *n == name)
                .unwrap() as u8,
        )
    };
    let scenario = Scenario {
        config: ConfigIn {
            max_queue: 3,
            disconnect_on_overflow: engine::Rare(false),
            broadcast_to_publisher: true,
            max_subscriptions: 3,
            max_sessions: 3,
            timeout: 2,
            max_interval: 1,
            interval: 0,
            local_session: true,
        },
        ops: vec![
            Op::Handshake {
                websocket: false,
                advice: AdviceIn::None,
            },
            Op::Handshake {
                websocket: true,
                advice: AdviceIn::None,
            },
            Op::Subscribe {
                s: 0,
                names: vec![known("/a/*")],
                array: false,
            },
            Op::Subscribe {
                s: 1,
                names: vec![known("/a/b"), known("/a/*")],
                array: true,
            },
            Op::LocalSubscribe {
                pattern: known("/a/*"),
            },
            Op::Publish {
                s: 1,
                channel: known("/a/b"),
                no_data: engine::Rare(false),
            },
            Op::ServerPublish {
                channel: known("/a/c"),
            },
            Op::Connect {
                s: 0,
                advice: AdviceIn::Immediate,
                bad_type: engine::Rare(false),
            },
            Op::Take { s: 1 },
            Op::Connect {
                s: 0,
                advice: AdviceIn::None,
                bad_type: engine::Rare(false),
            },
            Op::Deliver {
                s: 0,
                channel: known("/b"),
            },
            Op::FinishHold { s: 0, h: 0 },
            Op::Advance { steps: 50 },
            Op::Sweep,
            Op::Advance { steps: 25 },
            Op::Sweep,
            Op::Connect {
                s: 0,
                advice: AdviceIn::None,
                bad_type: engine::Rare(false),
            },
        ],
    };
    let c = engine::run(&scenario);
    assert_eq!(c.deliveries, 5, "{c:?}");
    assert_eq!(c.holds, 1, "{c:?}");
    assert_eq!(c.expired, 2, "{c:?}");
}

/// Regression (found by `codec_round_trips_structured_batches`): client advice numbers survive
/// decode -> encode -> decode exactly. serde_json's default float parser is not correctly
/// rounded, so without its `float_roundtrip` feature this value changes in the last digit.
#[test]
fn advice_numbers_round_trip_exactly() {
    codec::check(br#"[{"channel":"/meta/connect","advice":{"interval":-7.353939208333317e-34}}]"#);
}

/// Regression (found by the `http_request` target): a lone surrogate escape in a publish's
/// `data` must be refused at decoding; relayed verbatim, it made every subscriber's connect
/// reply unparseable for strict JSON parsers (serde_json, and so the Redis backplane's peers).
#[test]
fn lone_surrogates_are_not_relayed() {
    codec::check(br#"[{"channel":"/chat/a","data":{"ch\ud800at":"x"}}]"#);
    codec::check(br#"[{"channel":"/chat/a","data":"\udc00","ext":{"a":"\ud83d\ude00"}}]"#);
}
