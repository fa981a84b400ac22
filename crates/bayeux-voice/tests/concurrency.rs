//! 50+ users drive full call cycles at the same time; each receives exactly its own
//! notifications, in order.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bayeux_voice::VoiceConfig;
use common::{Harness, summary};
use serde_json::json;

const USERS: usize = 56;

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn fifty_users_each_get_exactly_their_own_notifications_in_order() {
    let config = VoiceConfig {
        outbound_answer_delay_ms: 20,
        ..common::config(USERS)
    };
    let h = Arc::new(Harness::new(config));
    let mut tasks = Vec::new();
    for i in 0..USERS {
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            let user = format!("user{i}");
            let dn = format!("2{i:04}");
            let inbox = h.inbox(&user).clone();
            // An outbound number no user has.
            h.dial(&user, &format!("9{i:04}")).await.expect(200, 0);
            inbox.wait_for(2).await; // Dialing, then the far end's answer
            let id = inbox.peek(0)["call"]["id"].as_str().unwrap().to_owned();
            for op in [
                json!({"operationName":"StartCallRecording"}),
                json!({"operationName":"PauseCallRecording"}),
                json!({"operationName":"ResumeCallRecording"}),
                json!({"operationName":"StopCallRecording"}),
                json!({"operationName":"AttachUserData","userData":{"who":user}}),
                json!({"operationName":"Hold"}),
                json!({"operationName":"Retrieve"}),
                json!({"operationName":"Hangup"}),
            ] {
                h.op(&user, &id, op).await.expect(200, 0);
                tokio::task::yield_now().await;
            }
            (user, dn, id)
        }));
    }
    let mut done = Vec::new();
    for t in tasks {
        done.push(
            tokio::time::timeout(Duration::from_secs(60), t)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    let s = |a: &str, b: &str, c: &str| (a.to_owned(), b.to_owned(), c.to_owned());
    let expected = [
        s("StatusChange", "Dialing", "Stopped"),
        s("StatusChange", "Established", "Stopped"),
        s("CallRecordingStateChange", "Established", "Recording"),
        s("CallRecordingStateChange", "Established", "Paused"),
        s("CallRecordingStateChange", "Established", "Recording"),
        s("CallRecordingStateChange", "Established", "Stopped"),
        s("AttachedDataChanged", "Established", "Stopped"),
        s("StatusChange", "Held", "Stopped"),
        s("StatusChange", "Established", "Stopped"),
        s("StatusChange", "Released", "Stopped"),
    ];
    for (user, dn, id) in &done {
        let got = h.inbox(user).take();
        let kinds: Vec<_> = got.iter().map(summary).collect();
        assert_eq!(kinds, expected, "{user}");
        for n in &got {
            assert_eq!(n["phoneNumber"], dn.as_str(), "{user}");
            assert_eq!(n["call"]["id"], id.as_str(), "{user}");
        }
        assert_eq!(got[6]["call"]["userData"]["who"], user.as_str());
    }
    for demo in ["agent1", "agent2", "agent3"] {
        assert_eq!(h.inbox(demo).len(), 0);
    }
}
