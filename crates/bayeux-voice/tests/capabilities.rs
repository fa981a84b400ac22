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
/// GWS operation names that are not implemented: never listed, always 400/2.
const NOT_IMPLEMENTED: [&str; 4] = [
    "SingleStepTransfer",
    "InitiateConference",
    "SwapCalls",
    "Frobnicate",
];

#[derive(Debug, Clone)]
enum Step {
    /// `USERS[from]` dials `NUMBERS[to]`.
    Dial { from: usize, to: usize },
    /// An external caller rings `USERS[to]` (the network side).
    Inbound { to: usize },
    /// The far end of a known call (counted from the newest) answers (refused unless an outbound leg is dialing).
    FarEndAnswer { call: usize },
    /// `USERS[user]` sends an operation on a known call (counted from the newest): with `listed`, the `op`th of the
    /// leg's capabilities (so the walk goes deep into the state space), else the `op`th of
    /// `Operation::ALL` then `NOT_IMPLEMENTED`.
    Op {
        user: usize,
        call: usize,
        op: usize,
        listed: bool,
    },
}

fn step() -> impl Strategy<Value = Step> {
    let ops = Operation::ALL.len() + NOT_IMPLEMENTED.len();
    prop_oneof![
        1 => (0..USERS.len(), 0..NUMBERS.len()).prop_map(|(from, to)| Step::Dial { from, to }),
        1 => (0..USERS.len()).prop_map(|to| Step::Inbound { to }),
        1 => (0..4usize).prop_map(|call| Step::FarEndAnswer { call }),
        8 => (0..USERS.len(), 0..4usize, 0..ops, any::<bool>())
            .prop_map(|(user, call, op, listed)| Step::Op { user, call, op, listed }),
    ]
}

fn body(name: &str) -> Value {
    let mut b = json!({"operationName": name});
    match Operation::from_name(name) {
        Some(Operation::AttachUserData | Operation::UpdateUserData) => {
            b["userData"] = json!({"k": "v"})
        }
        Some(Operation::DeleteUserDataPair) => b["key"] = json!("k"),
        Some(Operation::SendDtmf) => b["digits"] = json!("12*#"),
        Some(Operation::SetCallDisposition) => b["disposition"] = json!("Done"),
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

/// Every user's view of every known call (`None` where the user has no leg).
async fn snapshot(h: &Harness, calls: &[String]) -> Vec<Option<Value>> {
    let mut out = Vec::new();
    for id in calls {
        for u in USERS {
            let r = h.get(u, &format!("/api/v2/me/calls/{id}")).await;
            out.push((r.status == 200).then(|| without_duration(r.json["call"].clone())));
        }
    }
    out
}

/// The `i`th known call counting from the newest (so small indices stay on recent calls).
fn newest(calls: &[String], i: usize) -> Option<&String> {
    if calls.is_empty() {
        return None;
    }
    calls.get(calls.len() - 1 - i % calls.len())
}

async fn run(steps: Vec<Step>) -> (usize, usize) {
    let h = Harness::demo();
    let control = h.api.call_control();
    let mut calls: Vec<String> = Vec::new();
    let (mut accepted, mut refused) = (0, 0);
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
                if let Some(id) = newest(&calls, call) {
                    let _ = control.far_end_answered(id);
                }
            }
            Step::Op {
                user,
                call,
                op,
                listed,
            } => {
                let Some(id) = newest(&calls, call).cloned() else {
                    continue;
                };
                let user = USERS[user];
                h.drain();
                let view = h.get(user, &format!("/api/v2/me/calls/{id}")).await;
                let listed_names: Vec<String> = view.json["call"]["capabilities"]
                    .as_array()
                    .map(|a| a.iter().map(|v| v.as_str().unwrap().to_owned()).collect())
                    .unwrap_or_default();
                let name: &str = if listed && !listed_names.is_empty() {
                    &listed_names[op % listed_names.len()]
                } else {
                    Operation::ALL
                        .get(op)
                        .map(|o| o.name())
                        .unwrap_or_else(|| NOT_IMPLEMENTED[op - Operation::ALL.len()])
                };
                let before = snapshot(&h, &calls).await;
                let r: Resp = h.op(user, &id, body(name)).await;
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
                        accepted += 1;
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
    let mut steps = Vec::new();
    for round in 0..40usize {
        // Never the caller's own number.
        steps.push(Step::Dial {
            from: round % 3,
            to: (round % 3 + 1 + (round / 3) % 3) % 4,
        });
        steps.push(Step::FarEndAnswer { call: 0 });
        for i in 0..8usize {
            steps.push(Step::Op {
                user: (round + i) % 3,
                call: i % 2,
                op: (round * 5 + i * 7) % (Operation::ALL.len() + NOT_IMPLEMENTED.len()),
                listed: i % 3 != 2,
            });
        }
    }
    let (accepted, refused) = rt.block_on(run(steps));
    assert!(
        accepted >= 20 && refused >= 20,
        "{accepted} accepted, {refused} refused"
    );
}
