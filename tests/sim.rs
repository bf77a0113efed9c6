//! The deterministic simulation (`warren::sim`), a bounded slice: two
//! thousand seeds, each a whole broker (several shards, crashes, power loss,
//! failed syncs, disconnects) under a workload of AMQP clients, checked
//! against the guarantees. `SIM_SEEDS=N` runs more; `warren-sim --minutes M`
//! runs for as long as asked (see the README). A failure prints its seed,
//! the command that replays it, and the events before it.

fn seeds() -> u64 {
    std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000)
}

#[test]
fn seeds_hold_every_guarantee() {
    let n = seeds();
    let threads = std::thread::available_parallelism().map_or(2, |p| p.get()).min(4) as u64;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            std::thread::spawn(move || {
                let mut seed = 1 + t;
                let mut passed = 0;
                while seed <= n {
                    warren::sim::run_seed(seed)?;
                    passed += 1;
                    seed += threads;
                }
                Ok::<u64, warren::sim::Failure>(passed)
            })
        })
        .collect();
    let mut passed = 0;
    for h in handles {
        match h.join().expect("a simulation thread panicked") {
            Ok(n) => passed += n,
            Err(f) => panic!("{f}"),
        }
    }
    assert_eq!(passed, n);
}

/// The same seed gives the same run, event for event: what makes a failing
/// seed replayable.
#[test]
fn a_seed_replays_exactly() {
    for seed in [3, 17, 42] {
        let a = warren::sim::run_seed(seed).unwrap_or_else(|f| panic!("{f}"));
        let b = warren::sim::run_seed(seed).unwrap_or_else(|f| panic!("{f}"));
        assert_eq!(
            (a.fingerprint, a.events, a.virtual_ms, a.counts.delivered),
            (b.fingerprint, b.events, b.virtual_ms, b.counts.delivered),
            "seed {seed} ran differently twice"
        );
    }
}
