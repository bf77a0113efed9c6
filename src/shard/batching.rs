//! Whether a shard's parks batch their wake-ups (`--park-batch-us`).
//!
//! A batched park holds its wake-up for up to the window after the shard
//! went to sleep, so events arriving close together (input on many
//! connections, other shards' items, disk completions) cost one wake-up
//! and one pass instead of one each. Under an open load (producers that
//! publish without waiting for the broker) that cuts CPU per message by a
//! quarter or more. It does not always pay: a client that waits for each
//! answer (one confirm at a time, RPC) is slowed by the wait, and at light
//! load a held wake-up batches nothing and costs an extra switch. The shard
//! cannot see its clients, so it measures: every few seconds it runs a
//! short trial of each mode and keeps batching only if, with it, work comes
//! in at the same rate and costs the shard's thread less CPU per unit.

use super::state::Shard;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// How long the chosen mode runs between trials.
const SETTLE: Duration = Duration::from_millis(1600);
/// How long each mode runs in a trial.
const TRIAL: Duration = Duration::from_millis(200);
/// Without batching, this much more work per µs means batching slows the
/// clients down (a closed loop): off.
const OFF_WINS_BY: f64 = 0.15;
/// Batching must save at least this share of CPU per unit of work to stay.
const ON_SAVES_AT_LEAST: f64 = 0.05;
/// Less work than this in a trial window tells nothing: the mode stays.
const MIN_WORK: u64 = 8 * 1024;
/// What a cross-shard item weighs against a byte of socket input.
pub const ITEM_WEIGHT: u64 = 64;

/// Counters at the start of a window, and what a window measured.
#[derive(Debug, Clone, Copy, Default)]
struct Mark {
    at_us: u64,
    work: u64,
    cpu_us: u64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Settled,
    /// Trying the mode other than the settled one.
    TrialOther,
    /// Then the settled mode again, for a comparison under the same load.
    TrialSame,
}

/// The decision, as a pure state machine fed with a clock, a counter of
/// work (bytes read from clients plus weighted items from other shards)
/// and the shard thread's CPU time.
#[derive(Debug)]
pub struct BatchControl {
    settled_on: bool,
    phase: Phase,
    start: Mark,
    /// What the trial of the other mode measured.
    other: Mark,
}

impl BatchControl {
    pub fn new(now_us: u64, work: u64, cpu_us: u64) -> BatchControl {
        BatchControl {
            settled_on: true,
            phase: Phase::Settled,
            start: Mark {
                at_us: now_us,
                work,
                cpu_us,
            },
            other: Mark::default(),
        }
    }

    /// Whether parks batch now.
    pub fn batching(&self) -> bool {
        self.settled_on != (self.phase == Phase::TrialOther)
    }

    /// When `tick` has something to decide.
    pub fn next_tick_us(&self) -> u64 {
        let len = if self.phase == Phase::Settled {
            SETTLE
        } else {
            TRIAL
        };
        self.start.at_us + len.as_micros() as u64
    }

    /// Advances the state machine; returns the new mode when parks must
    /// change.
    pub fn tick(&mut self, now_us: u64, work: u64, cpu_us: u64) -> Option<bool> {
        if now_us < self.next_tick_us() {
            return None;
        }
        let before = self.batching();
        let done = Mark {
            at_us: now_us.saturating_sub(self.start.at_us).max(1),
            work: work.saturating_sub(self.start.work),
            cpu_us: cpu_us.saturating_sub(self.start.cpu_us),
        };
        self.phase = match self.phase {
            Phase::Settled => Phase::TrialOther,
            Phase::TrialOther => {
                self.other = done;
                Phase::TrialSame
            }
            Phase::TrialSame => {
                let (on, off) = if self.settled_on {
                    (done, self.other)
                } else {
                    (self.other, done)
                };
                if let Some(batch) = decide(on, off) {
                    self.settled_on = batch;
                }
                Phase::Settled
            }
        };
        self.start = Mark {
            at_us: now_us,
            work,
            cpu_us,
        };
        let after = self.batching();
        (after != before).then_some(after)
    }
}

/// Batch or not, from one window of each mode; None when a window saw too
/// little work to tell.
fn decide(on: Mark, off: Mark) -> Option<bool> {
    if on.work < MIN_WORK || off.work < MIN_WORK {
        return None;
    }
    let rate = |m: Mark| m.work as f64 / m.at_us as f64;
    let cost = |m: Mark| m.cpu_us as f64 / m.work as f64;
    if rate(off) > rate(on) * (1.0 + OFF_WINS_BY) {
        return Some(false);
    }
    Some(cost(on) <= cost(off) * (1.0 - ON_SAVES_AT_LEAST))
}

/// CPU time of the calling thread, in µs.
pub(super) fn thread_cpu_us() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a valid out pointer.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

/// Runs the control for this shard's executor, for as long as the shard.
pub async fn control(shard: Rc<Shard>) {
    let window = shard.cfg.park_batching;
    if window.is_zero() {
        return;
    }
    if !glommio::executor().set_park_batching(window) {
        if shard.id == 0 {
            log::info!("park batching is off: this kernel lacks io_uring min-wait (Linux 6.12+)");
        }
        return;
    }
    let start = Instant::now();
    let now_us = || start.elapsed().as_micros() as u64;
    let work = |s: &Shard| s.recv_bytes.get() + s.ring_items.get() * ITEM_WEIGHT;
    let mut c = BatchControl::new(now_us(), work(&shard), thread_cpu_us());
    shard.park_batching.set(c.batching());
    loop {
        let wait = c.next_tick_us().saturating_sub(now_us());
        glommio::timer::sleep(Duration::from_micros(wait)).await;
        if let Some(on) = c.tick(now_us(), work(&shard), thread_cpu_us()) {
            glommio::executor().set_park_batching(if on { window } else { Duration::ZERO });
            shard.park_batching.set(on);
            log::debug!(
                "shard {}: park batching {}",
                shard.id,
                if on { "on" } else { "off" }
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1000;

    /// A load: work per µs and CPU µs per unit of work, by mode.
    struct Load {
        rate: fn(bool) -> f64,
        cost: fn(bool) -> f64,
    }

    /// Drives the control for `cycles` settle+trial rounds; returns the
    /// settled mode after each round.
    fn drive(c: &mut BatchControl, t: &mut (u64, f64, f64), load: &Load, cycles: usize) -> Vec<bool> {
        let mut seen = Vec::new();
        for _ in 0..cycles * 3 {
            let next = c.next_tick_us();
            let on = c.batching();
            let w = (load.rate)(on) * (next - t.0) as f64;
            t.1 += w;
            t.2 += w * (load.cost)(on);
            t.0 = next;
            c.tick(t.0, t.1 as u64, t.2 as u64);
            if c.phase == Phase::Settled {
                seen.push(c.settled_on);
            }
        }
        seen
    }

    /// 1→1 at full speed: the same rate either way, a third less CPU per
    /// message with batching.
    const OPEN: Load = Load {
        rate: |_| 40.0,
        cost: |on| if on { 0.2 } else { 0.3 },
    };
    /// One confirm at a time: unbatched, 30% more work comes in.
    const CLOSED: Load = Load {
        rate: |on| if on { 3.0 } else { 3.9 },
        cost: |on| if on { 2.0 } else { 2.2 },
    };

    fn run(load: &Load, cycles: usize) -> Vec<bool> {
        let mut c = BatchControl::new(0, 0, 0);
        drive(&mut c, &mut (0, 0.0, 0.0), load, cycles)
    }

    #[test]
    fn an_open_load_that_batching_makes_cheaper_keeps_it() {
        let seen = run(&OPEN, 5);
        assert!(seen.iter().all(|on| *on), "{seen:?}");
    }

    #[test]
    fn a_closed_loop_that_batching_slows_turns_it_off() {
        // Even though each unit costs more unbatched.
        let seen = run(&CLOSED, 5);
        assert!(seen.iter().all(|on| !on), "{seen:?}");
    }

    #[test]
    fn a_light_load_where_batching_saves_nothing_turns_it_off() {
        // 1 000 msg/s: the same rate either way, and a held wake-up costs
        // an extra switch.
        let seen = run(
            &Load {
                rate: |_| 0.15,
                cost: |on| if on { 0.5 } else { 0.45 },
            },
            5,
        );
        assert!(seen.iter().all(|on| !on), "{seen:?}");
    }

    #[test]
    fn savings_below_the_margin_do_not_keep_batching() {
        let seen = run(
            &Load {
                rate: |_| 10.0,
                cost: |on| if on { 0.98 } else { 1.0 },
            },
            3,
        );
        assert!(seen.iter().all(|on| !on), "{seen:?}");
    }

    #[test]
    fn a_load_that_turns_open_brings_batching_back() {
        let mut c = BatchControl::new(0, 0, 0);
        let mut t = (0, 0.0, 0.0);
        assert_eq!(drive(&mut c, &mut t, &CLOSED, 3).last(), Some(&false));
        assert_eq!(drive(&mut c, &mut t, &OPEN, 3).last(), Some(&true));
    }

    #[test]
    fn an_idle_shard_keeps_its_mode() {
        let mut c = BatchControl::new(0, 0, 0);
        let mut now = 0;
        for _ in 0..100 {
            now = c.next_tick_us();
            c.tick(now, 10, 5);
            assert!(c.settled_on);
        }
        assert!(now >= 100 * TRIAL.as_micros() as u64);
    }

    #[test]
    fn the_trial_runs_the_other_mode_then_the_settled_one() {
        let mut c = BatchControl::new(0, 0, 0);
        assert!(c.batching());
        assert_eq!(c.tick(1599 * MS, 1 << 30, 1 << 20), None);
        assert_eq!(
            c.tick(1600 * MS, 1 << 30, 1 << 20),
            Some(false),
            "trial without batching"
        );
        assert_eq!(c.tick(1700 * MS, 1 << 31, 1 << 21), None, "too early");
        assert_eq!(
            c.tick(1800 * MS, 1 << 31, 1 << 21),
            Some(true),
            "trial with batching"
        );
        // With batching: same work per µs at half the CPU per unit: stays on.
        let work = (1u64 << 31) + (1 << 30);
        assert_eq!(c.tick(2000 * MS, work, (1 << 21) + (1 << 19)), None);
        assert!(c.batching());
        assert_eq!(c.phase, Phase::Settled);
    }
}
