//! Whether a shard's parks batch their wake-ups (`--park-batch-us`).
//!
//! A batched park holds its wake-up for up to the window after the shard
//! went to sleep, so events arriving close together (input on many
//! connections, other shards' items, disk completions) cost one wake-up
//! and one pass instead of one each. Under an open load (producers that
//! publish without waiting for the broker) that cuts CPU per message by a
//! third or more. Under a closed loop (one confirm at a time, RPC), the
//! client waits for each answer, so holding the wake-up only slows it
//! down. The shard cannot see its clients' windows, so it measures: it
//! runs in one mode, briefly tries the other, and keeps batching only while
//! batching does not lower the rate of work coming in.

use super::state::Shard;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// How long a mode runs before the other is tried.
const SETTLE: Duration = Duration::from_millis(400);
/// How long the other mode is tried.
const PROBE: Duration = Duration::from_millis(50);
/// Turning batching off must raise the rate of work by this much to win:
/// below it, the difference is noise and batching saves CPU.
const OFF_WINS_BY: f64 = 0.15;
/// Turning batching on may lower the rate of work by at most this much.
const ON_MAY_LOSE: f64 = 0.05;
/// Less work than this in a window tells nothing: the mode stays. At such
/// rates events are sparse and a park is rarely held anyway.
const MIN_WORK: u64 = 16 * 1024;
/// What a cross-shard item weighs against a byte of socket input.
pub const ITEM_WEIGHT: u64 = 64;

/// The decision, as a pure state machine fed with a clock and a counter of
/// work (bytes read from clients plus weighted items from other shards).
#[derive(Debug)]
pub struct BatchControl {
    /// The mode that runs between probes.
    settled_on: bool,
    probing: bool,
    since_us: u64,
    work_at_start: u64,
    /// Work per µs while settled, measured before the current probe.
    settled_rate: f64,
}

impl BatchControl {
    pub fn new(now_us: u64, work: u64) -> BatchControl {
        BatchControl {
            settled_on: true,
            probing: false,
            since_us: now_us,
            work_at_start: work,
            settled_rate: 0.0,
        }
    }

    /// Whether parks batch now.
    pub fn batching(&self) -> bool {
        self.settled_on != self.probing
    }

    /// When `tick` has something to decide.
    pub fn next_tick_us(&self) -> u64 {
        self.since_us + if self.probing { PROBE } else { SETTLE }.as_micros() as u64
    }

    /// Advances the state machine; returns the new mode when parks must
    /// change.
    pub fn tick(&mut self, now_us: u64, work: u64) -> Option<bool> {
        if now_us < self.next_tick_us() {
            return None;
        }
        let before = self.batching();
        let done = work.saturating_sub(self.work_at_start);
        let rate = done as f64 / now_us.saturating_sub(self.since_us).max(1) as f64;
        if !self.probing {
            if done >= MIN_WORK {
                self.settled_rate = rate;
                self.probing = true;
            }
        } else {
            self.probing = false;
            if done >= MIN_WORK {
                let settled = self.settled_rate;
                self.settled_on = if self.settled_on {
                    // The probe ran unbatched.
                    rate <= settled * (1.0 + OFF_WINS_BY)
                } else {
                    rate >= settled * (1.0 - ON_MAY_LOSE)
                };
            }
        }
        self.since_us = now_us;
        self.work_at_start = work;
        let after = self.batching();
        (after != before).then_some(after)
    }
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
    let mut c = BatchControl::new(now_us(), work(&shard));
    shard.park_batching.set(c.batching());
    loop {
        let wait = c.next_tick_us().saturating_sub(now_us());
        glommio::timer::sleep(Duration::from_micros(wait)).await;
        if let Some(on) = c.tick(now_us(), work(&shard)) {
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

    /// Drives the control with a load whose work rate (per µs) depends on
    /// the mode; returns the modes seen over `cycles` settle+probe rounds.
    fn drive(mut rate: impl FnMut(bool) -> f64, cycles: usize) -> (BatchControl, Vec<bool>) {
        let mut c = BatchControl::new(0, 0);
        let (mut now, mut work) = (0u64, 0u64);
        let mut seen = Vec::new();
        for _ in 0..cycles * 2 {
            let next = c.next_tick_us();
            work += (rate(c.batching()) * (next - now) as f64) as u64;
            now = next;
            c.tick(now, work);
            seen.push(c.settled_on);
        }
        (c, seen)
    }

    #[test]
    fn an_open_load_keeps_batching() {
        // The producers' rate does not depend on the broker's wake-ups.
        let (c, seen) = drive(|_| 40.0, 10);
        assert!(seen.iter().all(|on| *on));
        assert!(c.batching());
    }

    #[test]
    fn a_closed_loop_that_batching_slows_turns_it_off() {
        // One confirm at a time: unbatched, 30% more work comes in.
        let (c, seen) = drive(|on| if on { 3.0 } else { 3.9 }, 10);
        assert!(!c.settled_on, "{seen:?}");
        // It stays off: probing batching again loses each time.
        assert!(seen[2..].iter().all(|on| !on), "{seen:?}");
    }

    #[test]
    fn a_load_that_turns_open_brings_batching_back() {
        let mut closed = true;
        let mut c = BatchControl::new(0, 0);
        let (mut now, mut work) = (0u64, 0u64);
        for round in 0..40 {
            if round == 20 {
                closed = false;
            }
            let next = c.next_tick_us();
            let rate = if closed && c.batching() {
                3.0
            } else if closed {
                3.9
            } else {
                40.0
            };
            work += (rate * (next - now) as f64) as u64;
            now = next;
            c.tick(now, work);
            if round == 19 {
                assert!(!c.settled_on);
            }
        }
        assert!(c.settled_on);
    }

    #[test]
    fn noise_below_the_threshold_keeps_batching() {
        let (c, _) = drive(|on| if on { 10.0 } else { 11.0 }, 10);
        assert!(c.settled_on);
    }

    #[test]
    fn an_idle_shard_changes_nothing_and_does_not_probe() {
        let mut c = BatchControl::new(0, 0);
        for i in 1..100u64 {
            assert_eq!(c.tick(i * 400 * MS, 10), None);
            assert!(c.batching());
        }
    }

    #[test]
    fn tick_before_its_time_does_nothing() {
        let mut c = BatchControl::new(0, 0);
        assert_eq!(c.tick(399 * MS, 1 << 30), None);
        assert_eq!(
            c.tick(400 * MS, 1 << 30),
            Some(false),
            "the probe turns batching off"
        );
        assert_eq!(c.tick(420 * MS, 1 << 31), None);
        // The probe brought twice the work per µs: batching stays off.
        assert_eq!(c.tick(450 * MS, (1 << 30) + (1 << 30) / 8 * 2), None);
        assert!(!c.batching());
    }
}
