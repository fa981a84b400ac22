//! Introspection: paged listings of sessions and channels, bounded whatever the table size.

use std::collections::HashSet;

use crate::common::{lp, ws};
use crate::support::t;
use serde_json::json;

#[test]
fn sessions_are_listed_in_bounded_pages_each_once() {
    let mut t = t();
    let mut ids = Vec::new();
    for i in 0..1100 {
        let ctx = if i % 2 == 0 { lp() } else { ws() };
        ids.push(t.handshake(&ctx));
    }
    t.subscribe(&lp(), &ids[0], json!(["/a", "/b/*"]));
    t.publish(&lp(), &ids[0], "/a", json!(1));
    let mut seen = HashSet::new();
    let mut after = None;
    let mut pages = 0;
    loop {
        // Asking for more than the bound gets the bound.
        let page = t.engine.sessions_page(after, 100_000);
        assert!(page.items.len() <= bayeux_core::introspect::MAX_PAGE);
        pages += 1;
        for w in page.items.windows(2) {
            assert!(w[0].key < w[1].key, "in cursor order");
        }
        for s in &page.items {
            assert!(seen.insert(s.key), "listed twice");
            assert_eq!(s.id_prefix.len(), 8);
            assert!(ids.iter().any(|id| id.starts_with(&s.id_prefix)));
        }
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(seen.len(), 1100);
    assert_eq!(pages, 3);
    let first = t.engine.sessions_page(None, 1).items.remove(0);
    assert!(ids[0].starts_with(&first.id_prefix));
    assert_eq!(first.transport, "long-polling");
    assert_eq!(first.subscriptions, ["/a", "/b/*"]);
    assert_eq!(first.subscription_count, 2);
    assert_eq!(first.queue_depth, 1, "its own publish waits in its queue");
    // No session id is shown whole.
    let text = serde_json::to_string(&t.engine.sessions_page(None, 500)).unwrap();
    assert!(ids.iter().all(|id| !text.contains(id.as_str())));
}

#[test]
fn channels_are_listed_with_their_subscriber_counts() {
    let mut t = t();
    let a = t.session(&lp());
    let b = t.session(&lp());
    t.subscribe(&lp(), &a, json!(["/x", "/y/**"]));
    t.subscribe(&lp(), &b, json!("/x"));
    t.engine
        .create_channel("/z", |s| {
            s.persistent = true;
            s.lazy = true;
        })
        .unwrap();
    let p = t.engine.channels_page(None, 2);
    let names: Vec<_> = p
        .items
        .iter()
        .map(|c| (c.name.as_str(), c.subscribers))
        .collect();
    assert_eq!(names, [("/x", 2), ("/y/**", 1)]);
    assert_eq!(p.next.as_deref(), Some("/y/**"));
    let p = t.engine.channels_page(p.next.as_deref(), 2);
    assert_eq!(p.items.len(), 1);
    assert_eq!(p.items[0].name, "/z");
    assert!(p.items[0].persistent && p.items[0].lazy);
    assert_eq!(p.items[0].subscribers, 0);
    assert!(p.next.is_none());
}
