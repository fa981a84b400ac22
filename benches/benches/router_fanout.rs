//! Router fan-out to N sessions: one publish serialized once and queued to N remote sessions,
//! then taken from their queues as the WebSocket writers do; and the same through the full
//! inbound path (decode + handle_batch of a client's publish); and the cost of the opt-in
//! per-recipient hook (a hook that keeps every copy, and one that changes every copy, which
//! serializes once per recipient).

#![allow(missing_docs)]

mod common;

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use bayeux_core::{ChannelId, Limits, RequestContext, Session, TransportKind, decode_batch};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::value::RawValue;

const CHANNEL: &str = "/bench/fanout";

fn subscribers(engine: &bayeux_core::Engine, n: usize) -> Vec<Arc<Session>> {
    (0..n)
        .map(|_| {
            let (id, s) = common::remote_session(engine, TransportKind::WebSocket);
            common::subscribe(engine, TransportKind::WebSocket, &id, CHANNEL);
            s
        })
        .collect()
}

fn fanout(c: &mut Criterion) {
    let mut g = c.benchmark_group("router_fanout");
    let channel = ChannelId::parse(CHANNEL).unwrap();
    let data = RawValue::from_string(common::DATA.to_owned()).unwrap();
    for n in [10usize, 100, 1_000, 10_000] {
        let engine = common::engine();
        let subs = subscribers(&engine, n);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("publish_and_drain", n), &n, |b, _| {
            b.iter(|| {
                let reached = engine.publish(black_box(&channel), black_box(&data));
                for s in &subs {
                    black_box(s.take_messages());
                }
                reached
            })
        });
        for (case, replace) in [
            ("recipient_hook_same", false),
            ("recipient_hook_replace", true),
        ] {
            let hooked = common::engine();
            let hooked_subs = subscribers(&hooked, n);
            hooked
                .create_channel(CHANNEL, |_| {})
                .unwrap()
                .add_recipient_hook(move |_, _, data| {
                    if replace {
                        bayeux_core::Recipient::Replace(bayeux_core::Raw(data.to_owned()))
                    } else {
                        bayeux_core::Recipient::Same
                    }
                });
            g.bench_with_input(BenchmarkId::new(case, n), &n, |b, _| {
                b.iter(|| {
                    let reached = hooked.publish(black_box(&channel), black_box(&data));
                    for s in &hooked_subs {
                        black_box(s.take_messages());
                    }
                    reached
                })
            });
        }
        // A client's publish: decode, validate, route, reply.
        let (pub_id, _publisher) = common::remote_session(&engine, TransportKind::WebSocket);
        let body = format!(
            r#"[{{"id":"9","channel":"{CHANNEL}","clientId":"{pub_id}","data":{}}}]"#,
            common::DATA
        );
        let ctx = RequestContext::new(TransportKind::WebSocket);
        let limits = Limits::default();
        g.bench_with_input(
            BenchmarkId::new("client_publish_and_drain", n),
            &n,
            |b, _| {
                b.iter(|| {
                    let msgs = decode_batch(black_box(body.as_bytes()), &limits).unwrap();
                    let out = engine.handle_batch(&ctx, msgs, Instant::now());
                    for s in &subs {
                        black_box(s.take_messages());
                    }
                    out.replies
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
