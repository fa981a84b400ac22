//! Codec hot paths: decoding typical inbound batches and encoding replies and deliveries (the
//! connect reply with its advice is measured through the engine in `longpoll_response`).

#![allow(missing_docs)]

mod common;

use std::hint::black_box;

use bayeux_core::{Framed, Limits, MessageId, Reply, decode_batch, encode_batch};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::value::RawValue;

use common::{CLIENT_ID, DATA};

fn publish_batch(n: usize) -> String {
    let msgs: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"id":"{i}","channel":"/chat/room1","clientId":"{CLIENT_ID}","data":{DATA}}}"#
            )
        })
        .collect();
    format!("[{}]", msgs.join(","))
}

fn decode(c: &mut Criterion) {
    let limits = Limits::default();
    let mut g = c.benchmark_group("codec/decode");
    let connect = format!(
        r#"[{{"id":"17","channel":"/meta/connect","clientId":"{CLIENT_ID}","connectionType":"websocket","advice":{{"timeout":0}}}}]"#
    );
    g.throughput(Throughput::Elements(1));
    g.bench_function("connect", |b| {
        b.iter(|| decode_batch(black_box(connect.as_bytes()), &limits).unwrap())
    });
    let handshake = r#"[{"id":"1","channel":"/meta/handshake","version":"1.0","minimumVersion":"1.0","supportedConnectionTypes":["websocket","long-polling","callback-polling"],"advice":{"timeout":60000,"interval":0},"ext":{"ack":true}}]"#;
    g.bench_function("handshake", |b| {
        b.iter(|| decode_batch(black_box(handshake.as_bytes()), &limits).unwrap())
    });
    for n in [1usize, 20] {
        let body = publish_batch(n);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("publish_batch_{n}"), |b| {
            b.iter(|| decode_batch(black_box(body.as_bytes()), &limits).unwrap())
        });
    }
    g.finish();
}

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec/encode");
    g.throughput(Throughput::Elements(1));
    let data = RawValue::from_string(DATA.to_owned()).unwrap();
    g.bench_function("delivery", |b| {
        b.iter(|| Framed::delivery(black_box("/chat/room1"), black_box(&data), None))
    });
    let publish = Reply::new(
        Some("/chat/room1"),
        Some(MessageId::Text("43".into())),
        true,
    );
    g.bench_function("publish_reply", |b| b.iter(|| black_box(&publish).encode()));
    let msgs = decode_batch(publish_batch(20).as_bytes(), &Limits::default()).unwrap();
    g.throughput(Throughput::Elements(20));
    g.bench_function("batch_20", |b| b.iter(|| encode_batch(black_box(&msgs))));
    g.finish();
}

criterion_group!(benches, decode, encode);
criterion_main!(benches);
