//! Routing micro-benchmarks: topic exchanges with 10, 1 000 and 100 000
//! bindings, direct exchanges with 100 000. Setup prints how many
//! destinations a key matches on average and what the tables weigh (a
//! counting allocator measures the heap).
//!
//! Run: `cargo bench --bench topic`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::{Duration, Instant};
use warren::protocol::{FieldTable, ShortStr};
use warren::routing::{Bindings, ExchangeKind};

/// splitmix64: deterministic, dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Routing keys look like `region.service.severity.host`; each level draws
/// from a vocabulary of this size.
const LEVELS: [u64; 4] = [50, 1000, 5, 10_000];

/// Per level, the percentage of binding keys with a literal word, `*` and
/// `#` there: mostly literal, with `*` common for severity and host and `#`
/// mostly at the tail ("everything from this service").
const MIX: [(u64, u64, u64); 4] = [(95, 5, 0), (95, 3, 2), (70, 30, 0), (70, 20, 10)];

fn word(level: usize, i: u64) -> String {
    const SEVERITY: [&str; 5] = ["debug", "info", "warn", "error", "fatal"];
    match level {
        0 => format!("region{i}"),
        1 => format!("svc{i}"),
        2 => SEVERITY[i as usize].to_string(),
        _ => format!("host-{i:05}"),
    }
}

fn routing_key(rng: &mut Rng) -> String {
    (0..4)
        .map(|l| word(l, rng.below(LEVELS[l])))
        .collect::<Vec<_>>()
        .join(".")
}

fn pattern(rng: &mut Rng) -> String {
    let mut words = Vec::new();
    for (l, &(lit, star, _)) in MIX.iter().enumerate() {
        let roll = rng.below(100);
        words.push(if roll < lit {
            word(l, rng.below(LEVELS[l]))
        } else if roll < lit + star {
            "*".to_string()
        } else {
            "#".to_string()
        });
    }
    words.join(".")
}

fn key(s: &str) -> ShortStr {
    ShortStr::new(s.as_bytes().to_vec().into()).unwrap()
}

fn build(kind: ExchangeKind, keys: &[String]) -> Bindings<u32> {
    let before = warren::shard::allocated();
    let start = Instant::now();
    let mut b = Bindings::new(kind);
    let none = FieldTable::new();
    for (i, k) in keys.iter().enumerate() {
        b.bind(&key(k), &none, i as u32);
    }
    let took = start.elapsed();
    let bytes = warren::shard::allocated().saturating_sub(before);
    eprintln!(
        "{} x{}: {} bindings built in {:?} ({:.0} ns each), heap {} KiB = {} B per binding",
        kind.as_str(),
        keys.len(),
        b.len(),
        took,
        took.as_nanos() as f64 / keys.len() as f64,
        bytes / 1024,
        bytes / b.len().max(1) as u64
    );
    b
}

fn topic(c: &mut Criterion) {
    let mut group = c.benchmark_group("topic_route");
    group.measurement_time(Duration::from_secs(4));
    group.throughput(Throughput::Elements(1));
    let mut rng = Rng(42);
    let probes: Vec<String> = (0..4096).map(|_| routing_key(&mut rng)).collect();
    for n in [10usize, 1_000, 100_000] {
        let patterns: Vec<String> = (0..n).map(|_| pattern(&mut rng)).collect();
        let b = build(ExchangeKind::Topic, &patterns);
        let mut out = Vec::new();
        let matched: usize = probes
            .iter()
            .map(|p| {
                out.clear();
                b.route(p.as_bytes(), None, &mut out);
                out.len()
            })
            .sum();
        eprintln!(
            "topic x{n}: a routing key matches {:.1} bindings on average",
            matched as f64 / probes.len() as f64
        );
        let mut i = 0;
        group.bench_with_input(BenchmarkId::from_parameter(n), &b, |bench, b| {
            bench.iter(|| {
                out.clear();
                i = (i + 1) % probes.len();
                b.route(black_box(probes[i].as_bytes()), None, &mut out);
                black_box(out.len())
            })
        });
    }
    group.finish();
}

fn direct(c: &mut Criterion) {
    let mut group = c.benchmark_group("direct_route");
    group.throughput(Throughput::Elements(1));
    let n = 100_000;
    // Names like the server-generated ones RPC clients bind with.
    let names: Vec<String> = (0..n).map(|i| format!("amq.gen-{i:08x}-reply")).collect();
    let b = build(ExchangeKind::Direct, &names);
    let mut rng = Rng(7);
    let hits: Vec<&[u8]> = (0..4096)
        .map(|_| names[rng.below(n as u64) as usize].as_bytes())
        .collect();
    let mut out = Vec::new();
    let mut i = 0;
    group.bench_function(BenchmarkId::new("hit", n), |bench| {
        bench.iter(|| {
            out.clear();
            i = (i + 1) % hits.len();
            b.route(black_box(hits[i]), None, &mut out);
            black_box(out.len())
        })
    });
    group.bench_function(BenchmarkId::new("miss", n), |bench| {
        bench.iter(|| {
            out.clear();
            b.route(black_box(b"amq.gen-nothing-bound-here"), None, &mut out);
            black_box(out.len())
        })
    });
    group.finish();
}

criterion_group!(benches, topic, direct);
criterion_main!(benches);
