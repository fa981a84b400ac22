//! Local interest: which Redis channels and globs this node needs, reference-counted from the
//! engine's listener events, and the final match of what Redis sends.
//!
//! Events are idempotent per session: the table remembers each session's principal and
//! patterns, so a repeated or late event never drives a count below what the live sessions
//! need, and removing a session releases exactly what it held.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bayeux_core::{ChannelId, ChannelKind, ChannelPattern, Listener, RemoveReason, Session};
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::wire::{Naming, RedisSub};

#[derive(Default)]
struct SessionEntry {
    principal: Option<Arc<str>>,
    patterns: HashSet<ChannelPattern>,
}

#[derive(Default)]
struct State {
    sessions: HashMap<u64, SessionEntry>,
    /// Redis subscriptions needed, with the number of (session, pattern) or session holders.
    counts: HashMap<RedisSub, usize>,
    /// Local broadcast patterns by name (`/a/b`, `/a/*`, ...), for the final match.
    patterns: HashMap<Arc<str>, usize>,
    /// Principals with local sessions.
    principals: HashMap<Arc<str>, usize>,
    /// Redis subscriptions whose need changed since the subscriber last looked.
    dirty: HashSet<RedisSub>,
}

impl State {
    fn inc_sub(&mut self, sub: RedisSub) -> bool {
        let c = self.counts.entry(sub.clone()).or_insert(0);
        *c += 1;
        if *c == 1 {
            self.dirty.insert(sub);
            true
        } else {
            false
        }
    }

    fn dec_sub(&mut self, sub: &RedisSub) -> bool {
        let Some(c) = self.counts.get_mut(sub) else {
            return false;
        };
        *c -= 1;
        if *c == 0 {
            self.counts.remove(sub);
            self.dirty.insert(sub.clone());
            true
        } else {
            false
        }
    }
}

/// Counts one more holder of `key`, keeping the caller's shared name (no copy of it).
fn inc(map: &mut HashMap<Arc<str>, usize>, key: &Arc<str>) {
    match map.get_mut(key) {
        Some(c) => *c += 1,
        None => {
            map.insert(key.clone(), 1);
        }
    }
}

fn dec(map: &mut HashMap<Arc<str>, usize>, key: &str) {
    if let Some(c) = map.get_mut(key) {
        *c -= 1;
        if *c == 0 {
            map.remove(key);
        }
    }
}

/// The interest table. Register it as an engine [`Listener`]; the subscriber task reads the
/// changes with [`Interest::take_changes`] after [`Interest::changed`] fires.
pub struct Interest {
    naming: Naming,
    state: Mutex<State>,
    notify: Notify,
}

impl std::fmt::Debug for Interest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.state.lock();
        f.debug_struct("Interest")
            .field("sessions", &st.sessions.len())
            .field("redis_subscriptions", &st.counts.len())
            .finish()
    }
}

/// One change to apply on the Redis connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The subscription.
    pub sub: RedisSub,
    /// Whether it is needed now.
    pub wanted: bool,
}

impl Interest {
    /// An empty table for `naming`.
    pub fn new(naming: Naming) -> Interest {
        Interest {
            naming,
            state: Mutex::new(State::default()),
            notify: Notify::new(),
        }
    }

    /// Completes when the needed subscriptions changed since the last [`Interest::take_changes`]
    /// (or immediately if a change happened with nobody waiting).
    pub async fn changed(&self) {
        self.notify.notified().await;
    }

    /// Wakes whoever waits on [`Interest::changed`] without a change (resynchronisation).
    pub fn poke(&self) {
        self.notify.notify_one();
    }

    fn changed_if(&self, changed: bool) {
        if changed {
            self.notify.notify_one();
        }
    }

    /// A session appeared: its principal's delivery channel is needed.
    pub fn add_session(&self, key: u64, principal: Option<&str>) {
        let mut st = self.state.lock();
        if st.sessions.contains_key(&key) {
            return;
        }
        let principal: Option<Arc<str>> = principal.map(Arc::from);
        let mut changed = false;
        if let Some(p) = &principal {
            inc(&mut st.principals, p);
            changed = st.inc_sub(self.naming.user_subscription(p));
        }
        st.sessions.insert(
            key,
            SessionEntry {
                principal,
                patterns: HashSet::new(),
            },
        );
        drop(st);
        self.changed_if(changed);
    }

    /// A session went away: everything it held is released.
    pub fn remove_session(&self, key: u64) {
        let mut st = self.state.lock();
        let Some(entry) = st.sessions.remove(&key) else {
            return;
        };
        let mut changed = false;
        if let Some(p) = &entry.principal {
            dec(&mut st.principals, p);
            changed |= st.dec_sub(&self.naming.user_subscription(p));
        }
        for pattern in &entry.patterns {
            changed |= self.release(&mut st, pattern);
        }
        drop(st);
        self.changed_if(changed);
    }

    /// A session subscribed to `pattern`. Meta and service patterns are not tracked.
    pub fn add_pattern(&self, key: u64, pattern: &ChannelPattern) {
        let Some(sub) = self.naming.subscription(pattern) else {
            return;
        };
        let mut st = self.state.lock();
        // Only sessions announced by `add_session` (and not yet removed) hold interest: a late
        // event about a session already gone must not bring it back.
        let Some(entry) = st.sessions.get_mut(&key) else {
            return;
        };
        if !entry.patterns.insert(pattern.clone()) {
            return;
        }
        inc(&mut st.patterns, pattern.shared_name());
        let changed = st.inc_sub(sub);
        drop(st);
        self.changed_if(changed);
    }

    /// A session unsubscribed from `pattern`.
    pub fn remove_pattern(&self, key: u64, pattern: &ChannelPattern) {
        let mut st = self.state.lock();
        let held = st
            .sessions
            .get_mut(&key)
            .is_some_and(|e| e.patterns.remove(pattern));
        if !held {
            return;
        }
        let changed = self.release(&mut st, pattern);
        drop(st);
        self.changed_if(changed);
    }

    fn release(&self, st: &mut State, pattern: &ChannelPattern) -> bool {
        let Some(sub) = self.naming.subscription(pattern) else {
            return false;
        };
        dec(&mut st.patterns, pattern.as_str());
        st.dec_sub(&sub)
    }

    /// Whether a local session's subscription matches a broadcast on `channel` (the final
    /// match: Redis globs are wider than Bayeux patterns).
    pub fn wants_broadcast(&self, channel: &ChannelId) -> bool {
        if channel.kind() != ChannelKind::Broadcast {
            return false;
        }
        let st = self.state.lock();
        if st.patterns.is_empty() {
            return false;
        }
        st.patterns.contains_key(channel.as_str())
            || channel
                .wildcard_ancestors()
                .any(|a| st.patterns.contains_key(a.as_str()))
    }

    /// Whether `principal` has local sessions.
    pub fn wants_user(&self, principal: &str) -> bool {
        self.state.lock().principals.contains_key(principal)
    }

    /// The subscriptions whose need changed since the last call, with whether each is needed
    /// now.
    pub fn take_changes(&self) -> Vec<Change> {
        let mut st = self.state.lock();
        let dirty = std::mem::take(&mut st.dirty);
        let mut out: Vec<Change> = dirty
            .into_iter()
            .map(|sub| Change {
                wanted: st.counts.contains_key(&sub),
                sub,
            })
            .collect();
        out.sort_by(|a, b| a.sub.cmp(&b.sub));
        out
    }

    /// Marks subscriptions as changed again (their application failed; retry later).
    pub fn requeue(&self, subs: impl IntoIterator<Item = RedisSub>) {
        self.state.lock().dirty.extend(subs);
    }

    /// Every subscription needed now.
    pub fn wanted(&self) -> Vec<RedisSub> {
        let mut v: Vec<RedisSub> = self.state.lock().counts.keys().cloned().collect();
        v.sort();
        v
    }

    /// Number of Redis subscriptions needed now.
    pub fn len(&self) -> usize {
        self.state.lock().counts.len()
    }

    /// Whether no Redis subscription is needed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Listener for Interest {
    fn session_added(&self, session: &Arc<Session>) {
        if !session.is_closed() {
            self.add_session(session.key(), session.principal());
        }
    }

    fn session_removed(&self, session: &Arc<Session>, _reason: RemoveReason) {
        self.remove_session(session.key());
    }

    fn subscribed(&self, session: &Arc<Session>, pattern: &ChannelPattern) {
        if !session.is_closed() {
            self.add_pattern(session.key(), pattern);
        }
    }

    fn unsubscribed(&self, session: &Arc<Session>, pattern: &ChannelPattern) {
        self.remove_pattern(session.key(), pattern);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pat(s: &str) -> ChannelPattern {
        ChannelPattern::parse(s).unwrap()
    }
    fn ch(s: &str) -> ChannelId {
        ChannelId::parse(s).unwrap()
    }
    fn interest() -> Interest {
        Interest::new(Naming::new("bayeux"))
    }
    fn chan(s: &str) -> RedisSub {
        RedisSub::Channel(s.into())
    }
    fn glob(s: &str) -> RedisSub {
        RedisSub::Pattern(s.into())
    }

    #[test]
    fn first_holder_subscribes_and_last_holder_unsubscribes() {
        let i = interest();
        i.add_session(1, None);
        i.add_session(2, None);
        i.add_pattern(1, &pat("/a"));
        i.add_pattern(2, &pat("/a"));
        assert_eq!(
            i.take_changes(),
            vec![Change {
                sub: chan("bayeux:c:/a"),
                wanted: true
            }]
        );
        i.remove_pattern(1, &pat("/a"));
        assert!(i.take_changes().is_empty(), "session 2 still holds /a");
        assert!(i.wants_broadcast(&ch("/a")));
        i.remove_pattern(2, &pat("/a"));
        assert_eq!(
            i.take_changes(),
            vec![Change {
                sub: chan("bayeux:c:/a"),
                wanted: false
            }]
        );
        assert!(!i.wants_broadcast(&ch("/a")));
        assert!(i.is_empty());
    }

    #[test]
    fn events_are_idempotent_per_session() {
        let i = interest();
        i.add_session(1, Some("u"));
        i.add_session(1, Some("u"));
        i.add_pattern(1, &pat("/a"));
        i.add_pattern(1, &pat("/a"));
        i.add_session(2, None);
        i.add_pattern(2, &pat("/a"));
        // Session 1 unsubscribes twice: session 2's need survives.
        i.remove_pattern(1, &pat("/a"));
        i.remove_pattern(1, &pat("/a"));
        i.remove_pattern(3, &pat("/a"));
        assert_eq!(i.wanted(), vec![chan("bayeux:c:/a"), chan("bayeux:u:u")]);
        i.remove_session(1);
        i.remove_session(1);
        assert_eq!(i.wanted(), vec![chan("bayeux:c:/a")]);
    }

    #[test]
    fn a_late_subscription_event_of_a_removed_session_holds_nothing() {
        let i = interest();
        i.add_session(1, Some("u"));
        i.remove_session(1);
        // A subscribe that raced the removal reports after it: it must not recreate the entry.
        i.add_pattern(1, &pat("/a"));
        i.add_pattern(7, &pat("/b"));
        assert!(i.is_empty(), "{:?}", i.wanted());
        assert!(!i.wants_broadcast(&ch("/a")));
    }

    #[test]
    fn removing_a_session_releases_everything_it_held() {
        let i = interest();
        i.add_session(1, Some("agent1"));
        i.add_pattern(1, &pat("/a/*"));
        i.add_pattern(1, &pat("/a/**"));
        i.add_pattern(1, &pat("/b"));
        assert_eq!(
            i.wanted(),
            vec![
                chan("bayeux:c:/b"),
                chan("bayeux:u:agent1"),
                glob("bayeux:c:/a/*")
            ]
        );
        assert!(i.wants_user("agent1"));
        i.take_changes();
        i.remove_session(1);
        assert!(i.is_empty());
        assert!(!i.wants_user("agent1"));
        assert_eq!(i.take_changes().iter().filter(|c| !c.wanted).count(), 3);
    }

    #[test]
    fn one_glob_serves_both_wildcards_and_our_matcher_decides() {
        let i = interest();
        i.add_session(1, None);
        i.add_session(2, None);
        i.add_pattern(1, &pat("/a/*"));
        i.add_pattern(2, &pat("/a/**"));
        assert_eq!(i.wanted(), vec![glob("bayeux:c:/a/*")]);
        assert!(i.wants_broadcast(&ch("/a/b")));
        assert!(i.wants_broadcast(&ch("/a/b/c")));
        i.remove_pattern(2, &pat("/a/**"));
        // The glob is still needed for /a/*, but /a/b/c no longer matches anything local.
        assert_eq!(i.wanted(), vec![glob("bayeux:c:/a/*")]);
        assert!(i.wants_broadcast(&ch("/a/b")));
        assert!(!i.wants_broadcast(&ch("/a/b/c")));
        assert!(!i.wants_broadcast(&ch("/ab")));
    }

    #[test]
    fn meta_and_service_subscriptions_never_cross_nodes() {
        let i = interest();
        i.add_session(1, None);
        i.add_pattern(1, &pat("/service/echo"));
        i.add_pattern(1, &pat("/meta/**"));
        assert!(i.is_empty());
        i.remove_session(1);
        assert!(i.take_changes().is_empty());
        i.add_session(2, None);
        i.add_pattern(2, &pat("/**"));
        assert!(!i.wants_broadcast(&ch("/service/x")));
        assert!(i.wants_broadcast(&ch("/x/y")));
    }

    #[test]
    fn a_change_that_is_undone_before_the_subscriber_looks_is_reported_as_the_final_state() {
        let i = interest();
        i.add_session(1, None);
        i.add_pattern(1, &pat("/a"));
        i.remove_pattern(1, &pat("/a"));
        assert_eq!(
            i.take_changes(),
            vec![Change {
                sub: chan("bayeux:c:/a"),
                wanted: false
            }]
        );
        i.requeue([chan("bayeux:c:/x")]);
        assert_eq!(
            i.take_changes(),
            vec![Change {
                sub: chan("bayeux:c:/x"),
                wanted: false
            }]
        );
    }

    #[tokio::test]
    async fn changes_wake_the_subscriber() {
        let i = Arc::new(interest());
        let j = i.clone();
        let waiter = tokio::spawn(async move { j.changed().await });
        tokio::task::yield_now().await;
        i.add_session(1, Some("u"));
        tokio::time::timeout(std::time::Duration::from_secs(1), waiter)
            .await
            .unwrap()
            .unwrap();
    }
}
