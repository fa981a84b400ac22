//! Introspection for operators: paged listings of the sessions (transport, principal,
//! subscriptions, queue depth) and of the live channels (subscriber counts, settings).
//!
//! Every page is bounded ([`MAX_PAGE`] items, [`MAX_SUBSCRIPTIONS_LISTED`] subscriptions per
//! session) and costs one pass over the table with a heap of the page's size, whatever the
//! number of sessions: listing 100,000 sessions is 200 pages of 500, each a scan without
//! sorting the table. Pages follow a cursor (`next`), so a listing stays consistent while
//! sessions come and go: each item appears at most once.
//!
//! Session ids are bearer credentials of their sessions, so a listing shows only a short prefix
//! (`id_prefix`) and pages by the session's internal sequence number (`key`).
//!
//! ```
//! use bayeux_core::{Engine, EngineConfig};
//!
//! let engine = Engine::new(EngineConfig::default());
//! let a = engine.local_session(Some("alice"), |_| {});
//! a.subscribe("/chat/*").unwrap();
//! let page = engine.sessions_page(None, 10);
//! assert_eq!(page.items[0].principal.as_deref(), Some("alice"));
//! assert_eq!(page.items[0].subscriptions, ["/chat/*"]);
//! assert!(page.next.is_none());
//! let channels = engine.channels_page(None, 10);
//! assert_eq!(channels.items[0].name, "/chat/*");
//! assert_eq!(channels.items[0].subscribers, 1);
//! ```

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use serde::Serialize;

/// The largest page served; larger requests get this many.
pub const MAX_PAGE: usize = 500;

/// Subscriptions listed per session (the count is always complete).
pub const MAX_SUBSCRIPTIONS_LISTED: usize = 32;

/// Length of the session id prefix shown.
pub const ID_PREFIX_LEN: usize = 8;

/// One page of a listing.
#[derive(Debug, Clone, Serialize)]
pub struct Page<T, C> {
    /// The items, in cursor order.
    pub items: Vec<T>,
    /// The cursor of the next page (`after`), when there may be more.
    pub next: Option<C>,
}

/// A session, as listed.
#[derive(Debug, Clone, Serialize)]
pub struct SessionInfo {
    /// The session's internal sequence number: the paging cursor.
    pub key: u64,
    /// The first characters of its id.
    pub id_prefix: String,
    /// `websocket`, `long-polling`, `callback-polling` or `local`.
    pub transport: &'static str,
    /// Its principal (user), if any.
    pub principal: Option<String>,
    /// The endpoint it was created on.
    pub endpoint: Option<String>,
    /// Its subscriptions, sorted, at most [`MAX_SUBSCRIPTIONS_LISTED`].
    pub subscriptions: Vec<String>,
    /// How many subscriptions it has.
    pub subscription_count: usize,
    /// Messages waiting in its queue.
    pub queue_depth: usize,
    /// Messages dropped at its queue bound so far.
    pub dropped: u64,
    /// Whether a `/meta/connect` of it is held now.
    pub held: bool,
}

/// A live channel, as listed.
#[derive(Debug, Clone, Serialize)]
pub struct ChannelInfo {
    /// The channel or pattern.
    pub name: String,
    /// Sessions subscribed to exactly this name.
    pub subscribers: usize,
    /// Its settings.
    pub persistent: bool,
    /// Its messages are lazy.
    pub lazy: bool,
}

/// The `limit` smallest items (by `key`) of `items` whose key is above `after`, sorted, and
/// whether more remained: one pass, memory for `limit + 1` items.
pub(crate) fn smallest<T, K: Ord + Clone>(
    items: impl Iterator<Item = T>,
    key: impl Fn(&T) -> K,
    after: Option<&K>,
    limit: usize,
) -> (Vec<T>, bool) {
    struct ByKey<K, T>(K, T);
    impl<K: Ord, T> PartialEq for ByKey<K, T> {
        fn eq(&self, o: &Self) -> bool {
            self.0 == o.0
        }
    }
    impl<K: Ord, T> Eq for ByKey<K, T> {}
    impl<K: Ord, T> PartialOrd for ByKey<K, T> {
        fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
            Some(self.cmp(o))
        }
    }
    impl<K: Ord, T> Ord for ByKey<K, T> {
        fn cmp(&self, o: &Self) -> Ordering {
            self.0.cmp(&o.0)
        }
    }
    let limit = limit.clamp(1, MAX_PAGE);
    // A max-heap of the `limit + 1` smallest: the extra one tells whether more remain.
    let mut heap: BinaryHeap<ByKey<K, T>> = BinaryHeap::with_capacity(limit + 2);
    for item in items {
        let k = key(&item);
        if after.is_some_and(|a| k <= *a) {
            continue;
        }
        if heap.len() <= limit {
            heap.push(ByKey(k, item));
        } else if heap.peek().is_some_and(|top| k < top.0) {
            heap.pop();
            heap.push(ByKey(k, item));
        }
    }
    let more = heap.len() > limit;
    let mut v: Vec<T> = heap.into_sorted_vec().into_iter().map(|b| b.1).collect();
    v.truncate(limit);
    (v, more)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smallest_pages_through_everything_once_in_order() {
        let items: Vec<u64> = vec![9, 3, 7, 1, 5, 8, 2, 6, 4, 10];
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let (page, more) = smallest(items.iter().copied(), |x| *x, after.as_ref(), 3);
            assert!(page.len() <= 3);
            seen.extend(page.iter().copied());
            after = page.last().copied();
            if !more {
                break;
            }
        }
        assert_eq!(seen, (1..=10).collect::<Vec<_>>());
        let (all, more) = smallest(items.iter().copied(), |x| *x, None, usize::MAX);
        assert_eq!(all.len(), 10);
        assert!(!more);
        let (none, more) = smallest(items.iter().copied(), |x| *x, Some(&10), 3);
        assert!(none.is_empty() && !more);
    }
}
