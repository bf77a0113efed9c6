//! A cross-shard hop: two pinned glommio executors joined by the same
//! bounded SPSC mesh the shards use. Measures a round trip (the latency a
//! message pays when its queue lives on another shard, there and back)
//! and one-way throughput of batches (how deliveries and publishes travel).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use glommio::channels::channel_mesh::MeshBuilder;
use glommio::{LocalExecutorBuilder, Placement};
use std::sync::mpsc;
use std::time::{Duration, Instant};

enum Job {
    PingPong(u64),
    Stream { batches: u64, batch: usize },
    Stop,
}

/// Starts the two executors; returns the job channel and the timing answers.
fn spawn() -> (
    mpsc::Sender<Job>,
    mpsc::Receiver<Duration>,
    Vec<std::thread::JoinHandle<()>>,
) {
    let mesh: MeshBuilder<Vec<u64>, _> = MeshBuilder::full(2, 1024);
    let (job_tx, job_rx) = mpsc::channel::<Job>();
    let (done_tx, done_rx) = mpsc::channel::<Duration>();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let m1 = mesh.clone();
    let echo = LocalExecutorBuilder::new(Placement::Fixed(1 % cpus))
        .spawn(move || async move {
            let (senders, receivers) = m1.join().await.unwrap();
            // Peer ids follow the order of joining: the other one is 1 - ours.
            let peer = 1 - senders.peer_id();
            while let Ok(Some(batch)) = receivers.recv_from(peer).await {
                // An empty batch, or the end marker, asks for an echo.
                if (batch.is_empty() || batch[0] == u64::MAX) && senders.send_to(peer, batch).await.is_err() {
                    break;
                }
            }
        })
        .unwrap();
    let driver = LocalExecutorBuilder::new(Placement::Fixed(0))
        .spawn(move || async move {
            let (senders, receivers) = mesh.join().await.unwrap();
            let peer = 1 - senders.peer_id();
            loop {
                // Blocking here is fine: nothing else runs on this executor.
                match job_rx.recv() {
                    Ok(Job::PingPong(n)) => {
                        let t = Instant::now();
                        for _ in 0..n {
                            senders.send_to(peer, Vec::new()).await.unwrap();
                            receivers.recv_from(peer).await.unwrap();
                        }
                        done_tx.send(t.elapsed()).unwrap();
                    }
                    Ok(Job::Stream { batches, batch }) => {
                        let t = Instant::now();
                        for i in 0..batches {
                            let v: Vec<u64> = (0..batch as u64).map(|x| x + i + 1).collect();
                            senders.send_to(peer, v).await.unwrap();
                        }
                        senders.send_to(peer, vec![u64::MAX]).await.unwrap();
                        receivers.recv_from(peer).await.unwrap();
                        done_tx.send(t.elapsed()).unwrap();
                    }
                    Ok(Job::Stop) | Err(_) => break,
                }
            }
            senders.close();
        })
        .unwrap();
    let threads = vec![
        std::thread::spawn(move || {
            let _ = echo.join();
        }),
        std::thread::spawn(move || {
            let _ = driver.join();
        }),
    ];
    (job_tx, done_rx, threads)
}

fn ring(c: &mut Criterion) {
    let (jobs, done, threads) = spawn();
    let mut g = c.benchmark_group("cross_shard_ring");
    g.throughput(Throughput::Elements(1));
    g.bench_function("round_trip", |b| {
        b.iter_custom(|iters| {
            jobs.send(Job::PingPong(iters)).unwrap();
            done.recv().unwrap()
        })
    });
    let batch = 64;
    g.throughput(Throughput::Elements(batch as u64));
    g.bench_function("one_way_batch_of_64", |b| {
        b.iter_custom(|iters| {
            jobs.send(Job::Stream {
                batches: iters,
                batch,
            })
            .unwrap();
            done.recv().unwrap()
        })
    });
    g.finish();
    jobs.send(Job::Stop).unwrap();
    for t in threads {
        let _ = t.join();
    }
}

criterion_group!(benches, ring);
criterion_main!(benches);
