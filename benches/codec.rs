//! The frame codec on the hot path: splitting frames off a read buffer and
//! parsing publishes (what a connection does per incoming message), and
//! writing deliveries (per outgoing message).

use bytes::BytesMut;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use warren::protocol::methods::BasicPublish;
use warren::protocol::*;

/// `n` publishes (method, header and body frames) as a client sends them.
fn publishes(n: usize, size: usize) -> BytesMut {
    let mut props = BytesMut::new();
    BasicProperties {
        delivery_mode: Some(2),
        content_type: Some(ShortStr::from("application/octet-stream")),
        ..Default::default()
    }
    .encode(&mut props);
    let body = vec![0x5au8; size];
    let publish = Method::BasicPublish(BasicPublish {
        ticket: 0,
        exchange: ShortStr::from("amq.direct"),
        routing_key: ShortStr::from("orders.created.eu"),
        mandatory: false,
        immediate: false,
    });
    let mut out = BytesMut::new();
    for _ in 0..n {
        write_method_frame(&mut out, 1, &publish);
        write_content(&mut out, 1, 60, &props, &body, 131_072);
    }
    out
}

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame_decode");
    for size in [16usize, 1024] {
        let n = 1000;
        let input = publishes(n, size);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("publish_3_frames", size), &input, |b, input| {
            b.iter(|| {
                let mut buf = input.clone();
                let mut bytes = 0usize;
                while let Some(f) = decode_frame(&mut buf, 131_072).unwrap() {
                    match f.kind {
                        FRAME_METHOD => {
                            let p = parse_basic_publish(&f.payload).unwrap();
                            bytes += p.routing_key.len();
                        }
                        FRAME_HEADER => {
                            let h = ContentHeader::decode(f.payload).unwrap();
                            bytes += h.body_size as usize;
                        }
                        _ => bytes += f.payload.len(),
                    }
                }
                bytes
            });
        });
    }
    g.finish();
}

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame_encode");
    let mut props = BytesMut::new();
    BasicProperties {
        delivery_mode: Some(1),
        ..Default::default()
    }
    .encode(&mut props);
    for size in [16usize, 1024] {
        let body = vec![1u8; size];
        let n = 1000u64;
        g.throughput(Throughput::Elements(n));
        g.bench_with_input(BenchmarkId::new("deliver_3_frames", size), &body, |b, body| {
            let mut out = BytesMut::with_capacity(4 << 20);
            b.iter(|| {
                out.clear();
                for tag in 0..n {
                    write_basic_deliver(
                        &mut out,
                        1,
                        b"amq.ctag-0123456789",
                        tag + 1,
                        false,
                        b"amq.direct",
                        b"orders.created.eu",
                    );
                    write_content(&mut out, 1, 60, &props, body, 131_072);
                }
                out.len()
            });
        });
    }
    g.finish();
}

criterion_group!(benches, decode, encode);
criterion_main!(benches);
