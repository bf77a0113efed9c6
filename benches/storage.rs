//! Segment store: append throughput (no fsync: that is the syncer's, and
//! the disk's, cost) and recovery speed.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use warren::message::Message;
use warren::storage::QueueStore;

fn msg(size: usize) -> Message {
    let mut m = Message::assemble(b"", b"bench-queue", b"\x10\x00\x02", &vec![7u8; size]);
    m.persistent = true;
    m
}

fn append(c: &mut Criterion) {
    let mut g = c.benchmark_group("segment_append");
    for size in [16usize, 1024] {
        let m = msg(size);
        let batch = 100;
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_with_input(BenchmarkId::new("batch_of_100", size), &size, |b, _| {
            let dir = tempfile::tempdir().unwrap();
            let (mut store, _) =
                QueueStore::open(warren::storage::RealDisk::shared(), dir.path(), 1, 64 << 20).unwrap();
            let mut out = Vec::with_capacity(batch);
            let mut n = 0u64;
            b.iter(|| {
                out.clear();
                store
                    .append_batch((0..batch).map(|_| m.clone()), n, &mut out)
                    .unwrap();
                // Ack as we go so the store recycles segments instead of
                // filling the disk.
                for (loc, _) in &out {
                    store.remove(*loc);
                }
                n += 1;
                if n.is_multiple_of(64) {
                    store.flush().unwrap();
                }
            });
        });
    }
    g.finish();
}

fn recover(c: &mut Criterion) {
    let mut g = c.benchmark_group("segment_recovery");
    g.sample_size(10);
    let n = 100_000u64;
    g.throughput(Throughput::Elements(n));
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut store, _) =
            QueueStore::open(warren::storage::RealDisk::shared(), dir.path(), 1, 8 << 20).unwrap();
        let m = msg(64);
        let mut out = Vec::new();
        for _ in 0..n / 1000 {
            out.clear();
            store
                .append_batch((0..1000).map(|_| m.clone()), 1, &mut out)
                .unwrap();
        }
    }
    g.bench_function("100k_messages_of_64B", |b| {
        b.iter(|| {
            let (_store, rec) =
                QueueStore::open(warren::storage::RealDisk::shared(), dir.path(), 1, 8 << 20).unwrap();
            assert_eq!(rec.len() as u64, n);
        });
    });
    g.finish();
}

criterion_group!(benches, append, recover);
criterion_main!(benches);
