//! WebSocket frame building on the server side: the queued deliveries of one session (framed
//! one-element arrays, as the engine queues them) joined into one JSON array — a lone delivery is
//! sent as is — checked as UTF-8 text and written as one unmasked frame, as the transport's
//! writer does for each socket.

#![allow(missing_docs)]

mod common;

use std::hint::black_box;

use bayeux_core::{Framed, join_array};
use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{Frame, Utf8Bytes};

fn frames(c: &mut Criterion) {
    let mut g = c.benchmark_group("ws_frame");
    let data = RawValue::from_string(common::DATA.to_owned()).unwrap();
    let delivery = Framed::delivery("/chat/room1", &data, None);
    let mut out = Vec::with_capacity(1 << 16);
    for k in [1usize, 10, 100] {
        let queued: Vec<Framed> = (0..k).map(|_| delivery.clone()).collect();
        g.throughput(Throughput::Elements(k as u64));
        g.bench_with_input(BenchmarkId::new("join_validate_format", k), &k, |b, _| {
            b.iter(|| {
                let body = join_array(black_box(&queued));
                let text = Utf8Bytes::try_from(body).unwrap();
                out.clear();
                Frame::message(Bytes::from(text), OpCode::Data(Data::Text), true)
                    .format(&mut out)
                    .unwrap();
                out.len()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, frames);
criterion_main!(benches);
