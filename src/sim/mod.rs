//! A deterministic simulation of warren (TigerBeetle's VOPR is the model):
//! several shards with their real hubs — sessions, queue owners, the
//! control plane — joined by simulated rings, over a simulated disk
//! (latency, failed syncs and appends, process crashes and power loss
//! with torn writes) and a simulated network (delays, spikes, partial
//! writes, disconnects), with a workload of AMQP clients and a checker of
//! the guarantees (see [`checker`]). Everything random comes from one
//! seed: a failure prints its seed, and [`run`] with that seed replays it
//! event for event.
//!
//! `cargo test` runs a bounded number of seeds (`tests/sim.rs`); the
//! `warren-sim` binary runs as many as asked (see the README).

pub mod checker;
mod client;
mod rng;
mod world;

pub use checker::Counts;

/// What a run does.
#[derive(Debug, Clone)]
pub struct Options {
    pub shards: usize,
    /// Messages per publisher, about.
    pub messages: u64,
    /// Crashes (process and power loss) and client disconnects.
    pub crashes: bool,
    /// Failed syncs and appends on the disk.
    pub faults: bool,
    /// Until when (virtual µs) crashes and disconnects may happen.
    pub chaos_us: u64,
    /// Give up after this much virtual time (µs) or this many events.
    pub max_us: u64,
    pub max_events: u64,
}

impl Options {
    /// A run's shape from its seed: 1 to 3 shards, with or without chaos.
    pub fn for_seed(seed: u64) -> Options {
        let mut r = rng::Rng::new(seed ^ 0x5EED);
        Options {
            shards: r.range(1, 3) as usize,
            messages: r.range(20, 200),
            crashes: r.chance(0.7),
            faults: r.chance(0.5),
            chaos_us: 400_000,
            max_us: 120_000_000,
            max_events: 2_000_000,
        }
    }
}

/// A run that passed.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub seed: u64,
    pub virtual_ms: u64,
    pub events: u64,
    pub crashes: u32,
    /// Connections handed over to another shard.
    pub handoffs: u64,
    /// Queues that moved to another shard (arrived there).
    pub queue_moves: u64,
    pub counts: Counts,
    /// (syncs, failed syncs) on the simulated disk.
    pub syncs: (u64, u64),
    /// A hash of every event and its time: a seed run twice gives the same.
    pub fingerprint: u64,
}

/// A run that found something wrong.
#[derive(Debug, Clone)]
pub struct Failure {
    pub seed: u64,
    pub what: String,
    pub at_us: u64,
    /// The last events before it.
    pub trace: Vec<String>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "simulation seed {} failed at {} µs: {}",
            self.seed, self.at_us, self.what
        )?;
        writeln!(
            f,
            "replay: cargo run --release --bin warren-sim -- --seed {}",
            self.seed
        )?;
        writeln!(f, "last events:")?;
        for line in &self.trace {
            writeln!(f, "  {line}")?;
        }
        Ok(())
    }
}

/// Runs one seed with the given options.
pub fn run(seed: u64, opts: &Options) -> Result<Outcome, Failure> {
    world::World::new(seed, opts).run()
}

/// Runs one seed with the options it picks for itself.
pub fn run_seed(seed: u64) -> Result<Outcome, Failure> {
    run(seed, &Options::for_seed(seed))
}
