//! Runs warren's deterministic simulation (see `warren::sim`).
//!
//! ```text
//! warren-sim --seed N                 replay one seed (prints its trace on failure)
//! warren-sim --seeds COUNT [--from N] run COUNT seeds from N
//! warren-sim --minutes M [--from N]   run seeds for M minutes
//! ```
//! Exit status 1 at the first failing seed.

use clap::Parser;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(about = "warren's deterministic simulation")]
struct Args {
    /// Run (replay) this one seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Number of seeds to run.
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// First seed.
    #[arg(long, default_value_t = 1)]
    from: u64,
    /// Run seeds for this long instead of a count.
    #[arg(long)]
    minutes: Option<u64>,
}

fn main() {
    // RUST_LOG=info shows what the simulated broker logs (recovery, repairs).
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("off")).init();
    let args = Args::parse();
    if let Some(seed) = args.seed {
        match warren::sim::run_seed(seed) {
            Ok(o) => println!("seed {seed}: ok {o:?}"),
            Err(f) => {
                eprintln!("{f}");
                std::process::exit(1);
            }
        }
        return;
    }
    let started = Instant::now();
    let deadline = args.minutes.map(|m| started + Duration::from_secs(m * 60));
    let (mut n, mut messages, mut crashes, mut events) = (0u64, 0u64, 0u64, 0u64);
    let mut handoffs = 0u64;
    let mut queue_moves = 0u64;
    let mut seed = args.from;
    loop {
        if deadline.map_or(n >= args.seeds, |d| Instant::now() >= d) {
            break;
        }
        match warren::sim::run_seed(seed) {
            Ok(o) => {
                messages += o.counts.published;
                crashes += o.crashes as u64;
                handoffs += o.handoffs;
                queue_moves += o.queue_moves;
                events += o.events;
            }
            Err(f) => {
                eprintln!("{f}");
                eprintln!("{n} seed(s) passed before seed {seed}");
                std::process::exit(1);
            }
        }
        n += 1;
        seed += 1;
        if n % 1000 == 0 {
            eprintln!(
                "{n} seeds ({} to {}) ok in {:.0?}: {messages} messages, {crashes} crashes, {events} events",
                args.from,
                seed - 1,
                started.elapsed()
            );
        }
    }
    println!(
        "{n} seeds ({} to {}) ok in {:.1?}: {messages} messages published, {crashes} broker crashes, {handoffs} connection hand-offs, {queue_moves} queue moves, {events} events",
        args.from,
        seed.saturating_sub(1),
        started.elapsed()
    );
}
