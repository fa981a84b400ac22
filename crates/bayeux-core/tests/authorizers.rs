//! Authorizers, checked against a naive reference: over random channels, patterns, authorizer
//! sets and existing subscriptions, every subscribe and publish of a remote client succeeds or
//! fails exactly as the reference says (CometD's rule: no authorizer grants; a deny wins; else a
//! grant is needed). The reference finds the authorizers of a target by brute force (the
//! patterns that match every channel the target matches, over a finite universe of channels,
//! with its own matcher), not with the engine's list of covering wildcards.
//!
//! Plus transcript tests of the asynchronous security policy.

#[path = "common/mod.rs"]
mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};

use bayeux_core::{
    AsyncSecurityPolicy, Authorization, Authorizer, ChannelId, ChannelPattern, Decision,
    DecisionFuture, EngineConfig, GrantAuthorizer, Message, Operation, RequestContext, Session,
    decode_batch,
};
use common::{Transcript, lp, parse_all};
use proptest::prelude::*;
use serde_json::{Value, json};

const SEGMENTS: [&str; 3] = ["a", "b", "c"];

/// One authorizer: its answer to each operation.
#[derive(Debug, Clone)]
struct Fixed {
    create: Authorization,
    subscribe: Authorization,
    publish: Authorization,
}

impl Authorizer for Fixed {
    fn authorize(
        &self,
        op: Operation,
        _: &ChannelPattern,
        _: &Session,
        _: &Message,
    ) -> Authorization {
        match op {
            Operation::Create => self.create.clone(),
            Operation::Subscribe => self.subscribe.clone(),
            Operation::Publish => self.publish.clone(),
        }
    }
}

fn answer() -> impl Strategy<Value = Authorization> {
    prop_oneof![
        Just(Authorization::Grant),
        Just(Authorization::Ignore),
        // One reason for every denial, so the expected error string does not depend on which
        // denying authorizer is asked first.
        Just(Authorization::Deny("no".into())),
    ]
}

fn fixed() -> impl Strategy<Value = Fixed> {
    (answer(), answer(), answer()).prop_map(|(create, subscribe, publish)| Fixed {
        create,
        subscribe,
        publish,
    })
}

fn channel() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(&SEGMENTS[..]), 1..=3)
        .prop_map(|segs| format!("/{}", segs.join("/")))
}

fn pattern() -> impl Strategy<Value = String> {
    (channel(), 0..3u8).prop_map(|(c, w)| match w {
        0 => c,
        1 => format!("{}/*", c.rsplit_once('/').map_or("", |(p, _)| p)),
        _ => format!("{}/**", c.rsplit_once('/').map_or("", |(p, _)| p)),
    })
}

#[derive(Debug, Clone)]
enum Op {
    Subscribe(String),
    Publish(String),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        pattern().prop_map(Op::Subscribe),
        channel().prop_map(Op::Publish)
    ]
}

/// The reference matcher, segment by segment.
fn naive_matches(pattern: &str, channel: &str) -> bool {
    let p: Vec<&str> = pattern.split('/').skip(1).collect();
    let c: Vec<&str> = channel.split('/').skip(1).collect();
    match p.last() {
        Some(&"**") => c.len() > p.len() - 1 && p[..p.len() - 1] == c[..p.len() - 1],
        Some(&"*") => c.len() == p.len() && p[..p.len() - 1] == c[..p.len() - 1],
        _ => p == c,
    }
}

/// Every concrete channel of up to 4 segments over the segments used, plus one unused.
fn universe() -> Vec<String> {
    let segs = ["a", "b", "c", "z"];
    let mut out: Vec<String> = vec![String::new()];
    let mut all = Vec::new();
    for _ in 0..4 {
        out = out
            .iter()
            .flat_map(|p| segs.iter().map(move |s| format!("{p}/{s}")))
            .collect();
        all.extend(out.iter().cloned());
    }
    all
}

/// Whether the authorizers on `on` apply to `target`: the same name, or a pattern matching every
/// channel of the universe that `target` matches.
fn applies(on: &str, target: &str, universe: &[String]) -> bool {
    on == target
        || (on.ends_with('*')
            && universe
                .iter()
                .filter(|c| naive_matches(target, c))
                .all(|c| naive_matches(on, c)))
}

fn reference(
    authorizers: &[(String, Fixed)],
    op: Operation,
    target: &str,
    universe: &[String],
) -> Result<(), String> {
    let answers: Vec<Authorization> = authorizers
        .iter()
        .filter(|(on, _)| applies(on, target, universe))
        .map(|(_, f)| match op {
            Operation::Create => f.create.clone(),
            Operation::Subscribe => f.subscribe.clone(),
            Operation::Publish => f.publish.clone(),
        })
        .collect();
    if answers.is_empty() {
        return Ok(());
    }
    if let Some(Authorization::Deny(r)) =
        answers.iter().find(|a| matches!(a, Authorization::Deny(_)))
    {
        return Err(r.clone());
    }
    if answers.contains(&Authorization::Grant) {
        Ok(())
    } else {
        Err("denied_by_not_granting".into())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn authorizer_decisions_equal_the_naive_reference(
        authorizers in prop::collection::vec((pattern(), fixed()), 0..6),
        existing in prop::collection::vec(pattern(), 0..4),
        ops in prop::collection::vec(op(), 1..8),
    ) {
        let universe = universe();
        let mut t = Transcript::new(EngineConfig::default());
        // Subscriptions made before the authorizers exist: those names need no `Create`.
        let other = t.session(&lp());
        let mut entries: HashSet<String> = HashSet::new();
        for p in &existing {
            t.subscribe(&lp(), &other, json!(p));
            entries.insert(p.clone());
        }
        for (on, f) in &authorizers {
            t.engine.add_authorizer(on, Arc::new(f.clone())).unwrap();
        }
        let me = t.session(&lp());
        for op in &ops {
            let (got, expected) = match op {
                Op::Subscribe(p) => {
                    let id = t.id();
                    let r = t.send(&lp(), json!([{"channel": "/meta/subscribe", "clientId": me,
                                                   "id": id, "subscription": p}]));
                    let mut expected = Ok(());
                    if !entries.contains(p) {
                        expected = reference(&authorizers, Operation::Create, p, &universe)
                            .map_err(|r| format!("403:{r}:create_denied"));
                    }
                    if expected.is_ok() {
                        expected = reference(&authorizers, Operation::Subscribe, p, &universe)
                            .map_err(|r| format!("403:{r}:subscribe_denied"));
                    }
                    if expected.is_ok() {
                        entries.insert(p.clone());
                    }
                    (r, expected)
                }
                Op::Publish(c) => {
                    let r = t.publish(&lp(), &me, c, json!(1));
                    let mut expected = Ok(());
                    if !entries.contains(c) {
                        expected = reference(&authorizers, Operation::Create, c, &universe)
                            .map_err(|r| format!("403:{r}:create_denied"));
                    }
                    if expected.is_ok() {
                        expected = reference(&authorizers, Operation::Publish, c, &universe)
                            .map_err(|r| format!("403:{r}:publish_denied"));
                    }
                    (r, expected)
                }
            };
            prop_assert_eq!(got.len(), 1, "{:?}", got);
            let got = match got[0]["successful"].as_bool() {
                Some(true) => Ok(()),
                _ => Err(got[0]["error"].as_str().unwrap_or_default().to_owned()),
            };
            prop_assert_eq!(got, expected, "op {:?} with authorizers {:?}, entries {:?}", op, authorizers, entries);
        }
    }
}

#[test]
fn covering_wildcards_of_channels_and_patterns() {
    use bayeux_core::authz::covering_wildcards;
    let cover = |s: &str| covering_wildcards(&ChannelPattern::parse(s).unwrap());
    assert_eq!(cover("/a/b/c"), ["/a/b/*", "/a/b/**", "/a/**", "/**"]);
    assert_eq!(cover("/a/b/*"), ["/a/b/**", "/a/**", "/**"]);
    assert_eq!(cover("/a/b/**"), ["/a/**", "/**"]);
    assert_eq!(cover("/a"), ["/*", "/**"]);
    assert_eq!(cover("/*"), ["/**"]);
    assert!(cover("/**").is_empty());
}

#[test]
fn a_grant_on_a_wildcard_lets_only_its_operations_through() {
    let mut t = Transcript::new(EngineConfig::default());
    t.engine
        .add_authorizer(
            "/news/**",
            Arc::new(GrantAuthorizer::new(&[
                Operation::Create,
                Operation::Subscribe,
            ])),
        )
        .unwrap();
    let me = t.session(&lp());
    t.subscribe(&lp(), &me, json!("/news/today"));
    let r = t.publish(&lp(), &me, "/news/today", json!(1));
    assert_eq!(r[0]["error"], "403:denied_by_not_granting:publish_denied");
    // Channels no authorizer covers are free.
    let r = t.publish(&lp(), &me, "/chat/x", json!(1));
    assert_eq!(r[0]["successful"], true);
    let g: Arc<dyn Authorizer> = Arc::new(GrantAuthorizer::all());
    t.engine.add_authorizer("/news/today", g.clone()).unwrap();
    let r = t.publish(&lp(), &me, "/news/today", json!(1));
    assert_eq!(r[0]["successful"], true);
    assert!(t.engine.remove_authorizer("/news/today", &g));
    assert!(!t.engine.remove_authorizer("/news/today", &g));
    let r = t.publish(&lp(), &me, "/news/today", json!(1));
    assert_eq!(r[0]["successful"], false);
    assert!(t.engine.add_authorizer("news", g).is_err());
}

/// An asynchronous policy whose publish decisions are pending once before they are ready
/// (denying `/secret`), and that counts its calls.
struct Gate {
    calls: AtomicUsize,
}

impl AsyncSecurityPolicy for Gate {
    fn can_publish(&self, _: &Arc<Session>, channel: &ChannelId, _: &Message) -> DecisionFuture {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let allowed = channel.as_str() != "/secret";
        let mut polled = false;
        // Pending once (as a real lookup would be), then ready.
        Box::pin(std::future::poll_fn(move |cx| {
            if !polled {
                polled = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            Poll::Ready(if allowed {
                Decision::Allow
            } else {
                Decision::Deny("secret".into())
            })
        }))
    }
}

/// Polls a future to completion on this thread (the futures here wake themselves).
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..100 {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
    panic!("future not ready after 100 polls");
}

fn batch(t: &Transcript, v: Value) -> Vec<Message> {
    decode_batch(&serde_json::to_vec(&v).unwrap(), &t.engine.config().limits).unwrap()
}

#[test]
fn the_async_policy_decides_publishes_and_a_batch_it_did_not_see_fails_closed() {
    let mut t = Transcript::new(EngineConfig::default());
    let gate = Arc::new(Gate {
        calls: AtomicUsize::new(0),
    });
    let ctx: RequestContext = lp();
    let me = t.session(&ctx);
    t.engine.set_async_security_policy(gate.clone());
    // A handshake goes through it too (the default: allowed)...
    let hs = json!([{"channel": "/meta/handshake", "version": "1.0", "id": "h"}]);
    let authorized = block_on(t.engine.authorize(&ctx, batch(&t, hs.clone())));
    let out = t.engine.handle_authorized(&ctx, authorized, t.now());
    assert_eq!(parse_all(&out.replies)[0]["successful"], true);
    // ...and is refused when handled without it.
    let r = t.send(&ctx, hs);
    assert_eq!(
        r[0]["error"],
        "403:async_policy_not_consulted:handshake_denied"
    );
    let b = batch(
        &t,
        json!([{"channel": "/chat", "clientId": me, "id": "a", "data": 1},
               {"channel": "/secret", "clientId": me, "id": "b", "data": 1}]),
    );
    let authorized = block_on(t.engine.authorize(&ctx, b));
    assert_eq!(gate.calls.load(Ordering::SeqCst), 2);
    let out = t.engine.handle_authorized(&ctx, authorized, t.now());
    let r = parse_all(&out.replies);
    assert_eq!(r[0]["successful"], true, "{r:?}");
    assert_eq!(r[1]["error"], "403:secret:publish_denied");
    // Handled without the policy: refused, never let through.
    let r = t.publish(&ctx, &me, "/chat", json!(1));
    assert_eq!(
        r[0]["error"],
        "403:async_policy_not_consulted:publish_denied"
    );
    // Connects are not its business.
    let r = t.connect_with(&ctx, &me, json!({"advice": {"timeout": 0}}));
    assert_eq!(r[0]["successful"], true);
}
