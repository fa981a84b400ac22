//! Channel matching with 100,000 subscriptions: the router lookup a publish does, with and
//! without wildcard subscriptions in the table, and the name parsing around it.

#![allow(missing_docs)]

mod common;

use std::hint::black_box;

use bayeux_core::{ChannelId, ChannelPattern, LocalSession, Router};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const SUBSCRIPTIONS: usize = 100_000;

/// Which wildcard subscriptions sit in the table beside the 100,000 exact ones.
#[derive(Clone, Copy)]
enum Wildcards {
    /// None: the router skips the ancestor lookups.
    None,
    /// 1,000 sessions on `/rooms/{j}/*`: the ancestors of a `/users/...` channel are looked up
    /// and not found.
    NotMatching,
    /// As `NotMatching`, plus 100 sessions on `/users/**`: every publish also reaches those 100,
    /// and the results are de-duplicated.
    Matching,
}

/// 100,000 sessions each subscribed to its own channel `/users/{i}/notifications`, plus the
/// wildcard subscriptions of `wildcards`.
fn table(wildcards: Wildcards) -> (Router, Vec<LocalSession>) {
    let engine = common::engine();
    let router = Router::default();
    let mut keep = Vec::with_capacity(SUBSCRIPTIONS + 1100);
    for i in 0..SUBSCRIPTIONS {
        let s = engine.local_session(None, |_| {});
        let p = ChannelPattern::parse(&format!("/users/{i}/notifications")).unwrap();
        router.subscribe(&p, s.session());
        keep.push(s);
    }
    if !matches!(wildcards, Wildcards::None) {
        for j in 0..1000 {
            let s = engine.local_session(None, |_| {});
            router.subscribe(
                &ChannelPattern::parse(&format!("/rooms/{j}/*")).unwrap(),
                s.session(),
            );
            keep.push(s);
        }
    }
    if matches!(wildcards, Wildcards::Matching) {
        for _ in 0..100 {
            let s = engine.local_session(None, |_| {});
            router.subscribe(&ChannelPattern::parse("/users/**").unwrap(), s.session());
            keep.push(s);
        }
    }
    (router, keep)
}

fn channels(n: usize) -> Vec<ChannelId> {
    // A fixed pseudo-random walk over the table, so lookups miss the CPU cache as in production.
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ChannelId::parse(&format!(
                "/users/{}/notifications",
                x % SUBSCRIPTIONS as u64
            ))
            .unwrap()
        })
        .collect()
}

fn lookup(c: &mut Criterion) {
    let probes = channels(4096);
    let mut g = c.benchmark_group("channel_match/100k");
    g.throughput(Throughput::Elements(1));
    for (wildcards, name) in [
        (Wildcards::None, "exact_only"),
        (Wildcards::NotMatching, "with_wildcards_not_matching"),
        (Wildcards::Matching, "with_deep_wildcard_matching_100_more"),
    ] {
        let (router, _keep) = table(wildcards);
        let mut i = 0usize;
        g.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 1) % probes.len();
                let mut n = 0usize;
                router.for_each_subscriber(black_box(&probes[i]), |_| n += 1);
                n
            })
        });
    }
    g.finish();
}

fn names(c: &mut Criterion) {
    let mut g = c.benchmark_group("channel_match/names");
    g.throughput(Throughput::Elements(1));
    g.bench_function("channel_id_parse", |b| {
        b.iter(|| ChannelId::parse(black_box("/users/12345/notifications")).unwrap())
    });
    let ch = ChannelId::parse("/users/12345/notifications").unwrap();
    g.bench_function("wildcard_ancestors", |b| {
        b.iter(|| black_box(&ch).wildcard_ancestors().count())
    });
    let deep = ChannelPattern::parse("/users/**").unwrap();
    g.bench_function("pattern_matches", |b| {
        b.iter(|| black_box(&deep).matches(black_box(&ch)))
    });
    g.finish();
}

criterion_group!(benches, lookup, names);
criterion_main!(benches);
