//! The one rule of capabilities, checked by walking random operation sequences through the
//! REST API: every operation a leg lists in `capabilities`, sent with valid parameters, answers
//! statusCode 0; every call operation it does not list answers HTTP 400 / statusCode 2, changes
//! nothing and publishes nothing; a call that is not the user's answers 404/6 (400/2 for an
//! unknown operation or one the user's features exclude).

mod common;

use bayeux_voice::Operation;
use common::{Harness, Resp};
use proptest::prelude::*;
use serde_json::{Value, json};

const USERS: [&str; 3] = ["agent1", "agent2", "agent3"];
/// Dial destinations: the three agents and an outbound number.
const NUMBERS: [&str; 4] = ["15000", "15001", "15002", "5550100"];
/// Operation names that are not emulated: never listed, always 400/2.
const NOT_IMPLEMENTED: [&str; 4] = [
    "ClearCall",
    "Reject",
    "StartContactCenterSession",
    "Frobnicate",
];
/// Destinations of transfers and conferences: the agents and external numbers.
const DESTINATIONS: [&str; 6] = ["15000", "15001", "15002", "5550100", "5550101", "5550102"];

#[derive(Debug, Clone)]
enum Step {
    /// `USERS[from]` dials `NUMBERS[to]`.
    Dial { from: usize, to: usize },
    /// An external caller rings `USERS[to]` (the network side).
    Inbound { to: usize },
    /// An alerting far end answers: the first one from the `call`th newest known call on.
    FarEndAnswer { call: usize },
    /// `USERS[user]` sends an operation on a known call (counted from the newest): with `listed`, the `op`th of the
    /// leg's capabilities (so the walk goes deep into the state space), else the `op`th of
    /// `Operation::ALL` then `NOT_IMPLEMENTED`.
    Op {
        user: usize,
        call: usize,
        op: usize,
        listed: bool,
        /// Which listed operation (independent of `op`).
        pick: usize,
    },
}

fn step() -> impl Strategy<Value = Step> {
    let ops = Operation::ALL.len() + NOT_IMPLEMENTED.len();
    prop_oneof![
        1 => (0..USERS.len(), 0..NUMBERS.len()).prop_map(|(from, to)| Step::Dial { from, to }),
        1 => (0..USERS.len()).prop_map(|to| Step::Inbound { to }),
        1 => (0..4usize).prop_map(|call| Step::FarEndAnswer { call }),
        8 => (0..USERS.len(), 0..4usize, 0..ops, any::<bool>(), 0..1000usize)
            .prop_map(|(user, call, op, listed, pick)| Step::Op { user, call, op, listed, pick }),
    ]
}

/// A request with valid parameters for `name` on the leg `view` of `user` (a destination that
/// is neither the user's number nor a party of the call; a participant that is one).
fn body(name: &str, user: &str, view: &Value, pick: usize) -> Value {
    let mut b = json!({"operationName": name});
    let parties: Vec<&str> = view["participants"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p["phoneNumber"].as_str()).collect())
        .unwrap_or_default();
    let own = match user {
        "agent1" => "15000",
        "agent2" => "15001",
        _ => "15002",
    };
    match Operation::from_name(name) {
        Some(Operation::AttachUserData | Operation::UpdateUserData) => {
            b["userData"] = json!({"k": "v"})
        }
        Some(Operation::DeleteUserDataPair) => b["key"] = json!("k"),
        Some(Operation::SendDtmf) => b["digits"] = json!("12*#"),
        Some(Operation::SetCallDisposition) => b["disposition"] = json!("Done"),
        Some(
            Operation::SingleStepTransfer
            | Operation::SingleStepConference
            | Operation::InitiateTransfer
            | Operation::InitiateConference,
        ) => {
            let free: Vec<&str> = DESTINATIONS
                .into_iter()
                .filter(|d| *d != own && !parties.contains(d))
                .collect();
            // Every listed destination taken: any other outside number will do.
            let d = free
                .get(pick % free.len().max(1))
                .map_or_else(|| format!("5559{:03}", parties.len()), |d| d.to_string());
            b["destination"] = json!({"phoneNumber": d});
            b["userData"] = json!({"via": name});
        }
        Some(Operation::RemoveParticipantFromConference) if !parties.is_empty() => {
            b["participant"] = json!(parties[pick % parties.len()]);
        }
        Some(Operation::RemoveParticipantFromConference) => b["participant"] = json!("5550999"),
        _ => {}
    }
    b
}

fn without_duration(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("duration");
    }
    v
}

/// Every user's view of the six newest known calls (`None` where the user has no leg).
async fn snapshot(h: &Harness, calls: &[String]) -> Vec<Option<Value>> {
    let mut out = Vec::new();
    // The recent calls (older ones are over, or untouched by the walk's recent steps).
    for id in calls.iter().rev().take(6) {
        for u in USERS {
            let r = h.get(u, &format!("/api/v2/me/calls/{id}")).await;
            out.push((r.status == 200).then(|| without_duration(r.json["call"].clone())));
        }
    }
    out
}

/// Whether some user still has a live leg in call `id`.
async fn live(h: &Harness, id: &str) -> bool {
    for u in USERS {
        let v = h.get(u, &format!("/api/v2/me/calls/{id}")).await;
        if v.status == 200 && v.json["call"]["state"] != "Released" {
            return true;
        }
    }
    false
}

/// The `i`th known call counting from the newest (so small indices stay on recent calls).
fn newest(calls: &[String], i: usize) -> Option<&String> {
    if calls.is_empty() {
        return None;
    }
    calls.get(calls.len() - 1 - i % calls.len())
}

async fn run(steps: Vec<Step>) -> (std::collections::BTreeMap<String, usize>, usize) {
    let mut config = common::config(0);
    // Far more than a walk can reach: a refusal for lack of room would not be the rule's.
    config.max_calls_per_user = 1000;
    let h = Harness::new(config);
    let control = h.api.call_control();
    let mut calls: Vec<String> = Vec::new();
    let (mut accepted, mut refused) = (std::collections::BTreeMap::new(), 0);
    for step in steps {
        match step {
            Step::Dial { from, to } => {
                let user = USERS[from];
                h.drain();
                let r = h.dial(user, NUMBERS[to]).await;
                if r.status == 200 {
                    let n = h.inbox(user).take();
                    calls.push(n[0]["call"]["id"].as_str().unwrap().to_owned());
                } else {
                    // Own number or too many calls.
                    r.expect(400, 2);
                    assert_eq!(h.pending(), 0);
                }
            }
            Step::Inbound { to } => {
                if let Ok(id) = control.inbound_call(USERS[to], "5550199", None) {
                    calls.push(id);
                }
            }
            Step::FarEndAnswer { call } => {
                // The newest alerting far end from the `call`th newest call on answers.
                for i in call..calls.len() {
                    if let Some(id) = newest(&calls, i)
                        && control.far_end_answered(id).is_ok()
                    {
                        break;
                    }
                }
            }
            Step::Op {
                user,
                call,
                op,
                listed,
                pick,
            } => {
                // Calls nobody is on any more leave the walk, so it stays on live ones.
                while let Some(id) = newest(&calls, call).cloned() {
                    if live(&h, &id).await {
                        break;
                    }
                    calls.retain(|c| *c != id);
                }
                let Some(id) = newest(&calls, call).cloned() else {
                    continue;
                };
                h.drain();
                // Listed operations go to a user on the call (the first from `user` on);
                // the others to anyone.
                let mut user = USERS[user];
                let mut view = h.get(user, &format!("/api/v2/me/calls/{id}")).await;
                if listed {
                    for u in USERS
                        .iter()
                        .cycle()
                        .skip(USERS.iter().position(|u| *u == user).unwrap())
                        .take(3)
                    {
                        let v = h.get(u, &format!("/api/v2/me/calls/{id}")).await;
                        if v.status == 200 && v.json["call"]["state"] != "Released" {
                            (user, view) = (u, v);
                            break;
                        }
                    }
                }
                let listed_names: Vec<String> = view.json["call"]["capabilities"]
                    .as_array()
                    .map(|a| a.iter().map(|v| v.as_str().unwrap().to_owned()).collect())
                    .unwrap_or_default();
                let name: &str = if listed && !listed_names.is_empty() {
                    // Favour the operations that move the call on (user data and Hangup less
                    // often), so the walk goes deep: pairs, conferences, recording.
                    let movers: Vec<&String> = listed_names
                        .iter()
                        .filter(|n| {
                            let ud = Operation::from_name(n).is_some_and(|o| o.is_user_data());
                            (!ud || op % 5 == 0) && (*n != "Hangup" || op % 4 == 0)
                        })
                        .collect();
                    if movers.is_empty() {
                        &listed_names[pick % listed_names.len()]
                    } else {
                        movers[pick % movers.len()]
                    }
                } else {
                    Operation::ALL
                        .get(op)
                        .map(|o| o.name())
                        .unwrap_or_else(|| NOT_IMPLEMENTED[op - Operation::ALL.len()])
                };
                let before = snapshot(&h, &calls).await;
                let r: Resp = h
                    .op(user, &id, body(name, user, &view.json["call"], op))
                    .await;
                if view.status == 404 {
                    // What the request says is checked first: an unknown operation, or one the
                    // user's features exclude, is 400/2 whatever the call; else the call is
                    // not found.
                    let known = Operation::from_name(name)
                        .is_some_and(|o| !o.is_recording() || user != "agent3");
                    if known {
                        r.expect(404, 6);
                    } else {
                        r.expect(400, 2);
                    }
                    refused += 1;
                } else {
                    let caps = view.json["call"]["capabilities"]
                        .as_array()
                        .unwrap()
                        .clone();
                    if caps.contains(&json!(name)) {
                        assert_eq!(
                            (r.status, r.code()),
                            (200, 0),
                            "{user} {name} listed in {caps:?} but refused: {}",
                            r.json
                        );
                        *accepted.entry(name.to_owned()).or_insert(0) += 1;
                        // Learn the calls it made (consultation calls).
                        for u in USERS {
                            for n in h.inbox(u).take() {
                                let new = n["call"]["id"].as_str().unwrap().to_owned();
                                if !calls.contains(&new) {
                                    calls.push(new);
                                }
                            }
                        }
                        continue;
                    }
                    assert_eq!(
                        (r.status, r.code()),
                        (400, 2),
                        "{user} {name} not listed in {caps:?} but answered {}",
                        r.json
                    );
                    refused += 1;
                }
                assert_eq!(h.pending(), 0, "a refused operation published");
                assert_eq!(
                    snapshot(&h, &calls).await,
                    before,
                    "a refused operation changed state"
                );
            }
        }
    }
    (accepted, refused)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 48,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn listed_operations_succeed_and_unlisted_ones_are_refused(steps in proptest::collection::vec(step(), 1..48)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        rt.block_on(run(steps));
    }
}

/// The walk reaches both outcomes often: a check of the generator, so the property above is not
/// vacuous.
#[test]
fn the_walk_exercises_both_outcomes() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    // A fixed pseudo-random walk (xorshift), mostly listed operations on recent calls.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = |n: usize| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % n as u64) as usize
    };
    let ops = Operation::ALL.len() + NOT_IMPLEMENTED.len();
    let steps: Vec<Step> = (0..3000)
        .map(|_| match next(20) {
            0 => Step::Dial {
                from: next(3),
                to: next(4),
            },
            1 => Step::Inbound { to: next(3) },
            2..=4 => Step::FarEndAnswer { call: next(2) },
            _ => Step::Op {
                user: next(3),
                call: next(3),
                op: next(ops),
                listed: next(5) != 0,
                pick: next(1000),
            },
        })
        .collect();
    let (accepted, refused) = rt.block_on(run(steps));
    let missing: Vec<&str> = Operation::ALL
        .iter()
        .map(|o| o.name())
        .filter(|n| !accepted.contains_key(*n))
        .collect();
    eprintln!("accepted {accepted:?}, refused {refused}, never accepted {missing:?}");
    assert!(refused >= 20, "{refused} refused");
    assert!(missing.is_empty(), "never accepted: {missing:?}");
}
