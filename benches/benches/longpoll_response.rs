//! Long-poll response assembly: a `/meta/connect` arrives for a session with K queued
//! deliveries; the engine answers at once and the transport joins the reply into one body.
//! Also the held case: a connect is held, a message arrives, the hold is finished.

#![allow(missing_docs)]

mod common;

use std::hint::black_box;
use std::time::Instant;

use bayeux_core::{ChannelId, Limits, RequestContext, TransportKind, decode_batch, join_array};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::value::RawValue;

fn assembly(c: &mut Criterion) {
    let mut g = c.benchmark_group("longpoll_response");
    let engine = common::engine();
    let (id, _session) = common::remote_session(&engine, TransportKind::LongPolling);
    common::subscribe(&engine, TransportKind::LongPolling, &id, "/bench/lp");
    let channel = ChannelId::parse("/bench/lp").unwrap();
    let data = RawValue::from_string(common::DATA.to_owned()).unwrap();
    let ctx = RequestContext::new(TransportKind::LongPolling);
    let connect = format!(
        r#"[{{"id":"7","channel":"/meta/connect","clientId":"{id}","connectionType":"long-polling"}}]"#
    );
    let limits = Limits::default();
    for k in [1usize, 10, 100] {
        g.throughput(Throughput::Elements(k as u64));
        g.bench_with_input(BenchmarkId::new("queued", k), &k, |b, &k| {
            b.iter_batched(
                || {
                    for _ in 0..k {
                        engine.publish(&channel, &data);
                    }
                },
                |()| {
                    let msgs = decode_batch(black_box(connect.as_bytes()), &limits).unwrap();
                    let out = engine.handle_batch(&ctx, msgs, Instant::now());
                    assert!(out.hold.is_none());
                    join_array(&out.replies)
                },
                // Each connect must find exactly its own K messages queued.
                BatchSize::PerIteration,
            )
        });
    }
    g.throughput(Throughput::Elements(1));
    g.bench_function("held_then_woken", |b| {
        b.iter(|| {
            let msgs = decode_batch(black_box(connect.as_bytes()), &limits).unwrap();
            let mut out = engine.handle_batch(&ctx, msgs, Instant::now());
            let hold = out.hold.take().expect("the connect is held");
            engine.publish(&channel, &data);
            let mut replies = out.replies;
            replies.extend(engine.finish_hold(hold, Instant::now()));
            join_array(&replies)
        })
    });
    g.finish();
}

criterion_group!(benches, assembly);
criterion_main!(benches);
