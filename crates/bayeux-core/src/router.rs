//! The router: which sessions are subscribed to which channels and patterns, and fan-out.
//!
//! Subscriptions live in a concurrent map keyed by the subscribed name (concrete channel or
//! pattern). A publish on `/a/b/c` looks up `/a/b/c` and, only when wildcard subscriptions exist,
//! `/a/b/*`, `/a/b/**`, `/a/**` and `/**`. A session matched through several of them receives the
//! message once. Publishing takes only shard read locks.
//!
//! Fan-out (`Router::publish`) serializes a broadcast once, queues the same bytes to every
//! matching remote session, calls the matching local sessions back (after the locks are
//! released), and hands the bytes to the cross-node [`Backplane`]; it reports what the engine
//! needs to count deliveries and apply the overflow policy.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasherDefault;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use dashmap::DashMap;
use parking_lot::RwLock;

use crate::channel::{ChannelId, ChannelKind, ChannelPattern, Wildcard};
use crate::codec::Framed;
use crate::session::{Delivery, Offer, Session};

/// Cross-node fan-out seam: a publish or a per-principal delivery made on this node is offered to
/// the backplane after local delivery, already serialized.
pub trait Backplane: Send + Sync {
    /// A broadcast published on this node.
    fn publish(&self, channel: &ChannelId, message: &Framed);
    /// A delivery to every session of `principal`, made on this node.
    fn deliver_to_principal(&self, principal: &str, message: &Framed);
}

/// What one fan-out did.
#[derive(Debug, Default)]
pub(crate) struct FanOut {
    /// Sessions that got the message: queued (even if an older message was dropped for it) or
    /// called back.
    pub recipients: usize,
    /// Sessions whose queue was full, with what happened there.
    pub overflowed: Vec<(Arc<Session>, Offer)>,
}

/// Hasher for session keys (process-unique counters): the key itself, spread by one multiply.
#[derive(Default)]
struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

#[derive(Default)]
struct Subscribers {
    sessions: RwLock<HashMap<u64, Arc<Session>>>,
}

/// Subscription table and fan-out.
#[derive(Default)]
pub struct Router {
    table: DashMap<Arc<str>, Subscribers>,
    wildcard_entries: AtomicUsize,
    backplane: RwLock<Option<Arc<dyn Backplane>>>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("names", &self.table.len())
            .field("backplane", &self.backplane.read().is_some())
            .finish()
    }
}

impl Router {
    /// Installs the cross-node backplane.
    pub(crate) fn set_backplane(&self, backplane: Arc<dyn Backplane>) {
        *self.backplane.write() = Some(backplane);
    }

    /// The backplane, if one is installed.
    pub(crate) fn backplane(&self) -> Option<Arc<dyn Backplane>> {
        self.backplane.read().clone()
    }

    /// Publishes `delivery` on this node: a broadcast is serialized once ([`Framed`]), fanned
    /// out, and handed to the backplane; a service message reaches local sessions only. `exclude` is a session that must not receive it (the
    /// publisher, when it does not get its own broadcasts).
    ///
    /// A `lazy` message does not wake its recipients' connections (see [`Session`]).
    pub(crate) fn publish(
        &self,
        delivery: &Delivery<'_>,
        exclude: Option<u64>,
        lazy: bool,
    ) -> FanOut {
        if delivery.channel.kind() != ChannelKind::Broadcast {
            return self.fan_out(delivery, None, exclude, lazy);
        }
        let framed = Framed::delivery(delivery.channel.as_str(), delivery.data, delivery.ext);
        let out = self.fan_out(delivery, Some(&framed), exclude, lazy);
        if let Some(bp) = self.backplane() {
            bp.publish(delivery.channel, &framed);
        }
        out
    }

    /// Fans `delivery` out on this node only: `framed` (its serialized form, for broadcasts)
    /// goes into the queue of every matching remote session; matching local sessions are called
    /// back once the router's locks are released.
    pub(crate) fn fan_out(
        &self,
        delivery: &Delivery<'_>,
        framed: Option<&Framed>,
        exclude: Option<u64>,
        lazy: bool,
    ) -> FanOut {
        let mut locals: Vec<Arc<Session>> = Vec::new();
        let mut out = FanOut::default();
        let mut direct = crate::session::DIRECT_WRITES_PER_PUBLISH;
        self.for_each_subscriber(delivery.channel, |s| {
            if Some(s.key()) == exclude {
                return;
            }
            if s.is_local() {
                locals.push(s.clone());
            } else if let Some(framed) = framed {
                let offer = s.offer(framed, lazy, &mut direct);
                out.recipients += usize::from(offer.queued());
                if matches!(offer, Offer::DroppedOldest { .. } | Offer::Refused) {
                    out.overflowed.push((s.clone(), offer));
                }
            }
        });
        for s in &locals {
            if let Some(cb) = s.local_callback() {
                cb(delivery);
                out.recipients += 1;
            }
        }
        out
    }

    /// Adds `session` to `pattern`. Returns false if it was already subscribed.
    pub fn subscribe(&self, pattern: &ChannelPattern, session: &Arc<Session>) -> bool {
        let entry = self
            .table
            .entry(pattern.shared_name().clone())
            .or_insert_with(|| {
                if pattern.wildcard() != Wildcard::None {
                    self.wildcard_entries.fetch_add(1, Ordering::Relaxed);
                }
                Subscribers::default()
            });
        let previous = entry
            .sessions
            .write()
            .insert(session.key(), session.clone());
        previous.is_none()
    }

    /// Removes `session` from `pattern`; drops the entry when it becomes empty. Returns whether
    /// the session was subscribed.
    pub fn unsubscribe(&self, pattern: &ChannelPattern, key: u64) -> bool {
        self.unsubscribe_reporting(pattern, key).0
    }

    /// As [`Router::unsubscribe`]; also reports whether the entry went away with it (the last
    /// subscriber of that name left).
    pub(crate) fn unsubscribe_reporting(&self, pattern: &ChannelPattern, key: u64) -> (bool, bool) {
        let name = pattern.as_str();
        let removed = match self.table.get(name) {
            Some(entry) => entry.sessions.write().remove(&key).is_some(),
            None => return (false, false),
        };
        let gone = self
            .table
            .remove_if(name, |_, s| s.sessions.read().is_empty())
            .is_some();
        if gone && pattern.wildcard() != Wildcard::None {
            self.wildcard_entries.fetch_sub(1, Ordering::Relaxed);
        }
        (removed, gone)
    }

    /// Sessions subscribed to exactly `name` (a channel or a pattern).
    pub fn subscribers_of(&self, name: &str) -> usize {
        self.table.get(name).map_or(0, |e| e.sessions.read().len())
    }

    /// Whether some session is subscribed to exactly `name` (a channel or a pattern).
    pub fn has_entry(&self, name: &str) -> bool {
        self.table.contains_key(name)
    }

    /// Number of distinct subscribed names (channels and patterns).
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether no subscription exists.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Calls `f` once for every session subscribed to `channel` directly or through a pattern.
    /// `f` runs under shard read locks: it must not subscribe or unsubscribe.
    pub fn for_each_subscriber(&self, channel: &ChannelId, mut f: impl FnMut(&Arc<Session>)) {
        let exact = self.table.get(channel.as_str());
        if self.wildcard_entries.load(Ordering::Relaxed) == 0 {
            if let Some(e) = exact {
                for s in e.sessions.read().values() {
                    f(s);
                }
            }
            return;
        }
        let mut entries = Vec::with_capacity(5);
        if let Some(e) = exact {
            entries.push(e);
        }
        // The ancestor names (`/a/b/c` -> `/a/b/*`, `/a/b/**`, `/a/**`, `/**`) are built in one
        // reused buffer: `wildcard_ancestors()` allocates a `String` per name on every publish.
        let s = channel.as_str();
        let mut key = String::with_capacity(s.len() + 3);
        key.push_str(&s[..s.rfind('/').unwrap_or(0)]);
        key.push_str("/*");
        if let Some(e) = self.table.get(key.as_str()) {
            entries.push(e);
        }
        for (i, _) in s.rmatch_indices('/') {
            key.clear();
            key.push_str(&s[..i]);
            key.push_str("/**");
            if let Some(e) = self.table.get(key.as_str()) {
                entries.push(e);
            }
        }
        match entries.len() {
            0 => {}
            1 => {
                for s in entries[0].sessions.read().values() {
                    f(s);
                }
            }
            _ => {
                // Session keys are small unique integers: no need for SipHash here.
                let mut seen: HashSet<u64, BuildHasherDefault<KeyHasher>> = HashSet::default();
                for e in &entries {
                    for (k, s) in e.sessions.read().iter() {
                        if seen.insert(*k) {
                            f(s);
                        }
                    }
                }
            }
        }
    }

    /// Number of distinct sessions that a publish on `channel` reaches.
    pub fn count_subscribers(&self, channel: &ChannelId) -> usize {
        let mut n = 0;
        self.for_each_subscriber(channel, |_| n += 1);
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{OverflowPolicy, Owner, Timing, TransportKind};
    use proptest::prelude::*;
    use std::time::Instant;

    fn session() -> Arc<Session> {
        Arc::new(Session::new(
            Owner::default(),
            TransportKind::WebSocket,
            None,
            10,
            OverflowPolicy::DropOldest,
            &Timing::of(&crate::EngineConfig::default()),
            Some(Instant::now()),
        ))
    }

    fn p(s: &str) -> ChannelPattern {
        ChannelPattern::parse(s).unwrap()
    }
    fn c(s: &str) -> ChannelId {
        ChannelId::parse(s).unwrap()
    }

    #[test]
    fn a_session_matched_twice_is_reached_once() {
        let r = Router::default();
        let s = session();
        for pat in ["/a/b", "/a/*", "/a/**", "/**"] {
            assert!(r.subscribe(&p(pat), &s));
        }
        assert!(!r.subscribe(&p("/a/b"), &s));
        assert_eq!(r.count_subscribers(&c("/a/b")), 1);
        assert_eq!(r.count_subscribers(&c("/a/b/c")), 1);
        assert_eq!(r.count_subscribers(&c("/x")), 1);
    }

    #[test]
    fn unsubscribe_removes_empty_entries() {
        let r = Router::default();
        let s = session();
        r.subscribe(&p("/a/*"), &s);
        assert_eq!(r.len(), 1);
        assert!(r.unsubscribe(&p("/a/*"), s.key()));
        assert!(!r.unsubscribe(&p("/a/*"), s.key()));
        assert!(r.is_empty());
        assert_eq!(r.count_subscribers(&c("/a/b")), 0);
    }

    fn segment() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_owned()),
            Just("b".to_owned()),
            Just("c".to_owned())
        ]
    }

    fn channel_strategy() -> impl Strategy<Value = String> {
        prop::collection::vec(segment(), 1..4).prop_map(|v| format!("/{}", v.join("/")))
    }

    fn pattern_strategy() -> impl Strategy<Value = String> {
        (
            prop::collection::vec(segment(), 0..3),
            prop_oneof![Just(""), Just("*"), Just("**")],
        )
            .prop_filter_map("non-empty", |(v, w)| {
                let mut segs = v;
                if !w.is_empty() {
                    segs.push(w.to_owned());
                }
                (!segs.is_empty()).then(|| format!("/{}", segs.join("/")))
            })
    }

    /// Naive reference: segment-by-segment comparison.
    fn naive(pattern: &str, channel: &str) -> bool {
        let ps: Vec<&str> = pattern[1..].split('/').collect();
        let cs: Vec<&str> = channel[1..].split('/').collect();
        match ps.last() {
            Some(&"**") => cs.len() >= ps.len() && ps[..ps.len() - 1] == cs[..ps.len() - 1],
            Some(&"*") => cs.len() == ps.len() && ps[..ps.len() - 1] == cs[..ps.len() - 1],
            _ => ps == cs,
        }
    }

    proptest! {
        #[test]
        fn matcher_agrees_with_naive(pat in pattern_strategy(), ch in channel_strategy()) {
            let want = naive(&pat, &ch);
            prop_assert_eq!(p(&pat).matches(&c(&ch)), want);
        }

        #[test]
        fn router_agrees_with_matcher(pats in prop::collection::vec(pattern_strategy(), 1..8), ch in channel_strategy()) {
            let r = Router::default();
            let sessions: Vec<_> = pats.iter().map(|_| session()).collect();
            for (pat, s) in pats.iter().zip(&sessions) {
                r.subscribe(&p(pat), s);
            }
            let mut got = Vec::new();
            r.for_each_subscriber(&c(&ch), |s| got.push(s.key()));
            got.sort();
            let mut want: Vec<u64> = pats.iter().zip(&sessions)
                .filter(|(pat, _)| naive(pat, &ch)).map(|(_, s)| s.key()).collect();
            want.sort();
            prop_assert_eq!(got, want);
        }
    }
}
