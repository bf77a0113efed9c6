//! How long a shard's parks may hold their wake-up (`--park-batch-us`).
//!
//! A batched park holds its wake-up for up to a window after the shard
//! went to sleep, so events arriving close together (input on many
//! connections, other shards' items, disk completions) cost one wake-up
//! and one pass instead of one each. Under an open load (producers that
//! publish without waiting for the broker) a longer window cuts CPU per
//! message by half or more. It does not always pay: a client that waits
//! for each answer (one confirm at a time, RPC) is slowed by the wait, and
//! at light load a held wake-up batches nothing and costs an extra switch.
//!
//! The shard cannot see its clients, so it measures. It runs on one of
//! three windows (none, a third and all of the configured longest) and,
//! in rounds, tries a neighbouring one: the candidate, then the
//! current window for twice as long, then the candidate again, so a load
//! that drifts during the round weighs on both sides alike. Each part
//! starts with a warm-up that is not measured: the clients' pipelines
//! take a while to fill or drain after the window changes. A longer window
//! wins only if work comes in at no less than about two thirds of the
//! rate (a closed loop loses more; an open load's noise less) and it saves
//! both a share of the CPU per unit of work and an absolute share of a
//! core; keeping the current window asks for less than taking a new one,
//! so the choice does not flap. A round whose two candidate
//! parts saw different loads decides nothing. A direction that loses is
//! not tried again for a while, longer each time, until the load changes.
//! Under a light load, or none, the shard runs with no window and tries
//! none: a held wake-up there only adds latency, which rate and CPU cannot
//! show. It looks at the load in every slot, so a load that falls off is
//! on no window within one; a load that comes after starts one round from
//! either end (on the middle window).
//!
//! Rounds run only in this shard's own slots of a grid common to all
//! shards, so that one shard's trial does not blur another's (a message
//! that crosses shards costs on both). A shard under a light load or idle
//! leaves its slots free, and the next busy shard after it takes them:
//! with packed placement one shard often carries all the work, and it
//! then gets a round in every slot, as it would running alone.

use super::state::Shard;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// The grid of rounds: shard i of n may start a round in slot k when
/// `k % n == i`, or when the shards from `k % n` up to i (cyclically)
/// leave their slots free.
const SLOT_US: u64 = 3_000_000;
/// Not measured after each change of window.
const WARM_US: u64 = 250_000;
/// One measured part of the candidate; the current window gets two.
const PART_US: u64 = 500_000;
// A round (three warm-ups, four parts' worth of measuring) fits in a slot.
const _: () = assert!(3 * WARM_US + 4 * PART_US < SLOT_US);
/// A longer window that lowers the rate of work below this share of the
/// shorter one's slows the clients down (a closed loop): it loses; to
/// take a window, then to keep it (a held window asks for less). From the
/// rounds logged under lapin's loads (sessions 14–16): a closed loop on a
/// window it cannot use reads 0.49–0.60 of the shorter window's rate, and
/// mostly no saving per unit; an open load reads as low as 0.66–0.74 in
/// one round in six on a longer window that saves 9–43% per unit, and
/// over the whole run delivers no less on it. A floor of three quarters
/// let that noise keep a shard off the cheaper window for a whole run
/// (1→1 with multiple acks left on no window: 21.6 µs per message where
/// one shard, on a third of the longest, spent 6.4).
const RATE_FLOOR: (f64, f64) = (0.65, 0.6);
/// A longer window that raises the rate by this much, at no more CPU
/// per unit, wins.
const RATE_GAIN: f64 = 1.12;
/// What a longer window must save to be taken: a share of the CPU per
/// unit of work, and of a core at the measured rate.
const TAKE_SAVING: (f64, f64) = (0.05, 0.015);
/// What the current longer window must save to be kept.
const KEEP_SAVING: (f64, f64) = (0.02, 0.008);
/// Work per µs below which a shard runs with no window and tries none:
/// about 2 000 small messages a second, whose events are further apart
/// than the longest window. A held wake-up batches nothing there and adds
/// its wait to every message's latency, which a trial of the rate and
/// the CPU cannot see.
const LIGHT: f64 = 0.25;
/// Less work than this in a measured part tells nothing.
const MIN_WORK: u64 = 8 * 1024;
/// A direction that lost is skipped for 2, 4, .. 2^MAX_BACKOFF own slots.
const MAX_BACKOFF: u32 = 3;
/// A settled rate outside this band around the rate of the last decision
/// is a new load: directions that lost may be tried at once.
const LOAD_CHANGE: (f64, f64) = (0.5, 2.0);
/// What a cross-shard item weighs against a byte of socket input.
pub const ITEM_WEIGHT: u64 = 64;

/// The windows the control chooses among, for a longest of `max_us`.
/// Three, not more: between neighbours that close the saving drowns in
/// the noise of a round, and the search stops short of the longest.
pub fn levels(max_us: u64) -> [u64; 3] {
    [0, max_us / 3, max_us]
}

/// A reading: the time (µs, on a clock common to all shards), the work
/// done so far and the shard thread's CPU time so far (µs).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Mark3(pub u64, pub u64, pub u64);

/// What one stretch measured: its length, the work in it, the CPU it took.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Meas {
    us: u64,
    work: u64,
    cpu: u64,
}

impl Meas {
    fn between(a: Mark3, b: Mark3) -> Meas {
        Meas {
            us: b.0.saturating_sub(a.0).max(1),
            work: b.1.saturating_sub(a.1),
            cpu: b.2.saturating_sub(a.2),
        }
    }
    fn add(self, o: Meas) -> Meas {
        Meas {
            us: self.us + o.us,
            work: self.work + o.work,
            cpu: self.cpu + o.cpu,
        }
    }
    fn rate(&self) -> f64 {
        self.work as f64 / self.us as f64
    }
    fn cost(&self) -> f64 {
        self.cpu as f64 / self.work.max(1) as f64
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Step {
    Settled,
    WarmA,
    MeasA,
    WarmCur,
    MeasCur,
    WarmB,
    MeasB,
}

impl Step {
    fn len_us(self) -> u64 {
        match self {
            Step::Settled => 0,
            Step::WarmA | Step::WarmCur | Step::WarmB => WARM_US,
            Step::MeasA | Step::MeasB => PART_US,
            Step::MeasCur => 2 * PART_US,
        }
    }
    fn on_candidate(self) -> bool {
        matches!(self, Step::WarmA | Step::MeasA | Step::WarmB | Step::MeasB)
    }
}

/// Where a load starts that follows a light one or none (and a new
/// shard's first): a third of the longest window, one round from either
/// end. Until then a shard runs with no window.
const START_LEVEL: usize = 1;

/// Down and up, as indexes of the back-off arrays.
const DOWN: usize = 0;
const UP: usize = 1;

/// The decision, as a pure state machine fed with readings.
#[derive(Debug)]
pub struct BatchControl {
    levels: [u64; 3],
    level: usize,
    shard: u64,
    nshards: u64,
    step: Step,
    /// Where the current step (or settled stretch) began.
    start: Mark3,
    /// The slot the current round began in.
    round_slot: u64,
    cand: usize,
    cand_meas: Meas,
    cur_meas: Meas,
    prefer_longer: bool,
    backoff: [u32; 2],
    not_before_slot: [u64; 2],
    /// The rate of work when the window was last chosen.
    decided_rate: Option<f64>,
    /// What the last round compared, for the log.
    last_round: Option<String>,
    /// The last look found a light load or none: other shards may take
    /// this shard's slots.
    frees: bool,
    /// No window has been chosen for the load: the shard has been light
    /// or idle since it started or last was.
    unchosen: bool,
}

impl BatchControl {
    pub fn new(max_us: u64, shard: usize, nshards: usize, now: Mark3) -> BatchControl {
        BatchControl {
            levels: levels(max_us),
            level: 0,
            shard: shard as u64,
            nshards: nshards.max(1) as u64,
            step: Step::Settled,
            start: now,
            round_slot: 0,
            cand: 1,
            cand_meas: Meas::default(),
            cur_meas: Meas::default(),
            prefer_longer: true,
            backoff: [0; 2],
            not_before_slot: [0; 2],
            decided_rate: None,
            last_round: None,
            frees: false,
            unchosen: true,
        }
    }

    /// Whether this shard leaves its slots to others (light load or idle).
    pub fn frees_slots(&self) -> bool {
        self.frees
    }

    /// The window parks use now (a candidate's during a round).
    pub fn window_us(&self) -> u64 {
        if self.step.on_candidate() {
            self.levels[self.cand]
        } else {
            self.levels[self.level]
        }
    }

    /// The window chosen by the last round.
    pub fn settled_us(&self) -> u64 {
        self.levels[self.level]
    }

    /// When `tick` has something to do: settled, at the start of every
    /// slot, otherwise when the step ends.
    pub fn next_tick_us(&self) -> u64 {
        if self.step == Step::Settled {
            (self.start.0 / SLOT_US + 1) * SLOT_US
        } else {
            self.start.0 + self.step.len_us()
        }
    }

    /// Whether this shard may use slot `k`, when `free(s)` tells whether
    /// shard s leaves its slots free: its own, or, while it is busy, one
    /// whose owner and every shard between the owner and this one leave
    /// theirs. (An idle shard that took slots would start a round in the
    /// same slot as their owner when a load reaches both at once.)
    fn may_use(&self, k: u64, free: &impl Fn(u64) -> bool) -> bool {
        let owner = k % self.nshards;
        if owner != self.shard && self.frees {
            return false;
        }
        (0..self.nshards)
            .map(|j| (owner + j) % self.nshards)
            .find(|&s| s == self.shard || !free(s))
            == Some(self.shard)
    }

    /// Advances the state machine; returns the new window when parks must
    /// change. `free(s)`: shard s leaves its slots free (what it last
    /// published of [`BatchControl::frees_slots`]).
    pub fn tick(&mut self, now: Mark3, free: impl Fn(u64) -> bool) -> Option<u64> {
        if now.0 < self.next_tick_us() {
            return None;
        }
        let slot = now.0 / SLOT_US;
        let before = self.window_us();
        let done = Meas::between(self.start, now);
        self.step = match self.step {
            Step::Settled => self.settled_ended(slot, done, &free),
            Step::WarmA => Step::MeasA,
            Step::MeasA => {
                self.cand_meas = done;
                Step::WarmCur
            }
            Step::WarmCur => Step::MeasCur,
            Step::MeasCur => {
                self.cur_meas = done;
                Step::WarmB
            }
            Step::WarmB => Step::MeasB,
            Step::MeasB => {
                let steady = same_load(self.cand_meas, done);
                self.cand_meas = self.cand_meas.add(done);
                self.decide(steady);
                Step::Settled
            }
        };
        self.start = now;
        let after = self.window_us();
        (after != before).then_some(after)
    }

    /// At the start of every slot: whether the load is light (looked at
    /// in every slot, so that a shard whose load falls goes to no window
    /// and frees its slots within one), then, in a slot it may use, a
    /// round; otherwise another settled stretch.
    fn settled_ended(&mut self, slot: u64, settled: Meas, free: &impl Fn(u64) -> bool) -> Step {
        let idle = settled.work < MIN_WORK;
        self.frees = idle || settled.rate() < LIGHT;
        if self.frees {
            // Idle too: whatever comes next is most likely light at
            // first, and on a held window its first messages would wait.
            if self.level > 0 {
                self.level = 0;
                self.lift_backoffs();
                self.last_round = Some(format!("light load or none: {settled:?}"));
            }
            self.unchosen = true;
            return Step::Settled;
        }
        if self.unchosen {
            // A load after a light one or none: no window was chosen for
            // it. It starts one round from either end, so an open load is
            // one round from the longest window, not two.
            self.unchosen = false;
            self.level = START_LEVEL;
            self.lift_backoffs();
            self.decided_rate = Some(settled.rate());
            self.last_round = Some(format!("a load after a light one or none: {settled:?}"));
        }
        if let Some(d) = self.decided_rate {
            let r = settled.rate();
            if r < d * LOAD_CHANGE.0 || r > d * LOAD_CHANGE.1 {
                self.lift_backoffs();
                self.decided_rate = Some(r);
            }
        }
        let open = |dir: usize| {
            let exists = if dir == UP {
                self.level + 1 < self.levels.len()
            } else {
                self.level > 0
            };
            exists && slot >= self.not_before_slot[dir]
        };
        if !self.may_use(slot, free) {
            // Another shard's slot: its trials must not be blurred.
            return Step::Settled;
        }
        let first = if self.prefer_longer { UP } else { DOWN };
        let Some(dir) = [first, 1 - first].into_iter().find(|&d| open(d)) else {
            return Step::Settled;
        };
        self.cand = if dir == UP { self.level + 1 } else { self.level - 1 };
        self.round_slot = slot;
        Step::WarmA
    }

    /// A new load, or a new window: every direction may be tried again.
    fn lift_backoffs(&mut self) {
        self.backoff = [0; 2];
        self.not_before_slot = [0; 2];
    }

    /// `steady`: the candidate's two parts saw the same load.
    fn decide(&mut self, steady: bool) {
        let dir = if self.cand > self.level { UP } else { DOWN };
        let (short, long) = if dir == UP {
            (self.cur_meas, self.cand_meas)
        } else {
            (self.cand_meas, self.cur_meas)
        };
        let won = if steady {
            longer_wins(short, long, dir == DOWN)
        } else {
            None
        };
        let show = |m: Meas| {
            format!(
                "{:.0} work/ms at {:.3} cpu µs/work ({:.2} core)",
                m.rate() * 1000.0,
                m.cost(),
                m.cpu as f64 / m.us as f64
            )
        };
        self.last_round = Some(format!(
            "slot of shard {}; {} µs: {}; {} µs: {}; steady: {steady}; longer won: {won:?}",
            self.round_slot % self.nshards,
            self.levels[self.level],
            show(self.cur_meas),
            self.levels[self.cand],
            show(self.cand_meas)
        ));
        let Some(longer_won) = won else {
            self.prefer_longer = !self.prefer_longer;
            return;
        };
        if longer_won == (dir == UP) {
            self.level = self.cand;
            self.lift_backoffs();
            self.decided_rate = Some(self.cand_meas.rate());
            self.prefer_longer = dir == UP;
        } else {
            self.backoff[dir] = (self.backoff[dir] + 1).min(MAX_BACKOFF);
            self.not_before_slot[dir] = self.round_slot + self.nshards * (1 << self.backoff[dir]);
            self.decided_rate = Some(self.cur_meas.rate());
            self.prefer_longer = !self.prefer_longer;
        }
    }
}

/// Whether two parts on the same window saw the same load: rates within
/// the band of a load change of each other. A load that starts, stops or
/// moves during a round says nothing about the windows: the round
/// decides nothing.
fn same_load(a: Meas, b: Meas) -> bool {
    let (ra, rb) = (a.rate(), b.rate());
    rb >= ra * LOAD_CHANGE.0 && rb <= ra * LOAD_CHANGE.1
}

/// Whether the longer of two windows wins, from what each measured; None
/// when one saw too little work to tell. `holding`: the longer one is the
/// current window, and is kept on a smaller saving, and a larger drop of
/// the rate, than it takes to be taken.
fn longer_wins(short: Meas, long: Meas, holding: bool) -> Option<bool> {
    if short.work < MIN_WORK || long.work < MIN_WORK {
        return None;
    }
    let floor = if holding { RATE_FLOOR.1 } else { RATE_FLOOR.0 };
    if long.rate() < short.rate() * floor {
        return Some(false);
    }
    if long.rate() > short.rate() * RATE_GAIN && long.cost() <= short.cost() {
        return Some(true);
    }
    let (rel, core) = if holding { KEEP_SAVING } else { TAKE_SAVING };
    let saved = short.cost() - long.cost();
    Some(saved >= short.cost() * rel && saved * long.rate() >= core)
}

/// CPU time of the calling thread, in µs.
pub(super) fn thread_cpu_us() -> u64 {
    clock_us(libc::CLOCK_THREAD_CPUTIME_ID)
}

fn clock_us(id: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a valid out pointer.
    if unsafe { libc::clock_gettime(id, &mut ts) } != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

/// Runs the control for this shard's executor, for as long as the shard.
pub async fn control(shard: Rc<Shard>) {
    let max_us = shard.cfg.park_batching.as_micros() as u64;
    if max_us == 0 {
        return;
    }
    // The monotonic clock is common to all shards' threads: their slots
    // line up.
    let read = |s: &Shard| {
        Mark3(
            clock_us(libc::CLOCK_MONOTONIC),
            s.recv_bytes.get() + s.ring_items.get() * ITEM_WEIGHT,
            thread_cpu_us(),
        )
    };
    let mut c = BatchControl::new(max_us, shard.id.into(), shard.flush.len(), read(&shard));
    // Asked with a window, the reactor says whether the kernel holds
    // wake-ups at all (a shard starts on none, which any kernel takes).
    if !glommio::executor().set_park_batching(Duration::from_micros(max_us)) {
        if shard.id == 0 {
            log::info!("park batching is off: this kernel lacks io_uring min-wait (Linux 6.12+)");
        }
        return;
    }
    glommio::executor().set_park_batching(Duration::from_micros(c.window_us()));
    shard.park_window_us.set(c.window_us());
    loop {
        let wait = c.next_tick_us().saturating_sub(clock_us(libc::CLOCK_MONOTONIC));
        glommio::timer::sleep(Duration::from_micros(wait)).await;
        let settled = c.settled_us();
        let free = &shard.stats.round_free;
        let changed = c.tick(read(&shard), |s| {
            free.get(s as usize).is_some_and(|f| f.load(Ordering::Relaxed))
        });
        if let Some(f) = free.get(shard.id as usize) {
            f.store(c.frees_slots(), Ordering::Relaxed);
        }
        if let Some(w) = changed {
            glommio::executor().set_park_batching(Duration::from_micros(w));
            shard.park_window_us.set(w);
        }
        if let Some(r) = c.last_round.take() {
            log::debug!("shard {}: park window round: {r}", shard.id);
        }
        if c.settled_us() != settled {
            log::debug!(
                "shard {}: park window {} µs (was {} µs)",
                shard.id,
                c.settled_us(),
                settled
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: u64 = 1000;

    /// A load: (work per µs, CPU µs per unit of work) for a window.
    type Load = dyn Fn(u64) -> (f64, f64);

    /// A shard's clock, work and CPU, fed to a control by a load.
    struct Run {
        c: BatchControl,
        now: u64,
        work: f64,
        cpu: f64,
        /// (time, settled window) after each round.
        settled: Vec<(u64, u64)>,
        /// (slot, window, candidate window) of each round started.
        tried: Vec<(u64, u64, u64)>,
        /// What each shard last published of `frees_slots`.
        free: Vec<bool>,
    }

    impl Run {
        fn new(shard: usize, nshards: usize) -> Run {
            Run {
                c: BatchControl::new(MAX, shard, nshards, Mark3(0, 0, 0)),
                now: 0,
                work: 0.0,
                cpu: 0.0,
                settled: Vec::new(),
                tried: Vec::new(),
                free: vec![false; nshards],
            }
        }

        fn drive(&mut self, load: &Load, until_us: u64) {
            loop {
                let next = self.c.next_tick_us();
                if next > until_us {
                    break;
                }
                let (rate, cost) = load(self.c.window_us());
                let w = rate * (next - self.now) as f64;
                self.work += w;
                self.cpu += w * cost;
                self.now = next;
                let was = self.c.step;
                let free = &self.free;
                self.c
                    .tick(Mark3(self.now, self.work as u64, self.cpu as u64), |s| {
                        free[s as usize]
                    });
                if was == Step::MeasB {
                    self.settled.push((self.now, self.c.settled_us()));
                }
                if was == Step::Settled && self.c.step == Step::WarmA {
                    self.tried
                        .push((self.now / SLOT_US, self.c.settled_us(), self.c.window_us()));
                }
            }
        }

        fn slots(&mut self, load: &Load, n: u64) {
            let until = self.now + n * SLOT_US;
            self.drive(load, until);
        }
    }

    /// Shards side by side for `n` slots, each under its own load, each
    /// seeing what the others publish of `frees_slots` as it ticks.
    fn lockstep(rs: &mut [Run], loads: &[&Load], n: u64) {
        let until = rs[0].now + n * SLOT_US;
        loop {
            let (i, next) = rs
                .iter()
                .enumerate()
                .map(|(i, r)| (i, r.c.next_tick_us()))
                .min_by_key(|x| x.1)
                .unwrap();
            if next > until {
                break;
            }
            rs[i].drive(loads[i], next);
            let f = rs[i].c.frees_slots();
            for r in rs.iter_mut() {
                r.free[i] = f;
            }
        }
    }

    /// Producers that do not wait, 0.8 of a core with no window: the same
    /// rate on any window, each longer one cheaper per unit, the first
    /// microseconds most.
    fn open(w: u64) -> (f64, f64) {
        (2.0, 0.4 * (1.0 - 0.3 * (w as f64 / MAX as f64).sqrt()))
    }

    /// One request at a time: a longer window slows the client, even
    /// though each unit then costs a little less.
    fn closed(w: u64) -> (f64, f64) {
        (
            3.0 / (1.0 + w as f64 / 200.0),
            0.3 * (1.0 - 0.05 * w as f64 / MAX as f64),
        )
    }

    /// 1 000 msg/s: a held wake-up batches nothing and only adds latency.
    fn light(w: u64) -> (f64, f64) {
        (0.15, 0.5 * (1.0 - 0.05 * w as f64 / MAX as f64))
    }

    /// Enough work to try windows, so little CPU that what a longer one
    /// saves is a sliver of a core.
    fn thin(w: u64) -> (f64, f64) {
        (0.5, 0.04 * (1.0 - 0.5 * w as f64 / MAX as f64))
    }

    /// No window makes any difference.
    fn flat(_: u64) -> (f64, f64) {
        (2.0, 0.4)
    }

    #[test]
    fn an_open_load_climbs_to_the_longest_window() {
        let mut r = Run::new(0, 1);
        r.slots(&open, 10);
        assert_eq!(r.c.settled_us(), MAX, "{:?}", r.settled);
        assert_eq!(r.settled.first(), Some(&(r.settled[0].0, MAX)));
    }

    #[test]
    fn a_closed_loop_goes_to_no_window() {
        let mut r = Run::new(0, 1);
        r.slots(&closed, 10);
        assert_eq!(r.c.settled_us(), 0, "{:?}", r.settled);
        // And stays: the way up keeps losing.
        let n = r.settled.len();
        r.slots(&closed, 40);
        assert!(r.settled[n..].iter().all(|s| s.1 == 0), "{:?}", r.settled);
    }

    #[test]
    fn a_light_load_runs_with_no_window_and_tries_none() {
        let mut r = Run::new(0, 1);
        r.slots(&light, 10);
        assert_eq!(r.c.settled_us(), 0);
        assert!(r.tried.is_empty(), "{:?}", r.tried);
    }

    #[test]
    fn a_saving_too_small_to_matter_goes_down() {
        let mut r = Run::new(0, 1);
        r.slots(&thin, 10);
        assert_eq!(r.c.settled_us(), 0, "{:?}", r.settled);
        assert!(!r.tried.is_empty());
    }

    #[test]
    fn a_direction_that_keeps_losing_is_tried_ever_more_rarely() {
        let mut r = Run::new(0, 1);
        r.c.level = 2;
        r.c.unchosen = false;
        r.c.prefer_longer = false;
        r.slots(&flat, 60);
        // Down wins from the longest (keeping it saves nothing), then again
        // to no window; from there only up is open, and it loses.
        assert_eq!(r.c.settled_us(), 0, "{:?}", r.settled);
        let ups: Vec<u64> = r.tried.iter().filter(|t| t.1 == 0).map(|t| t.0).collect();
        let gaps: Vec<u64> = ups.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.len() >= 4, "{ups:?}");
        assert_eq!(&gaps[..3], &[2, 4, 8], "{ups:?}");
        assert!(gaps[3..].iter().all(|g| *g == 8), "{ups:?}");
    }

    #[test]
    fn a_dip_in_the_rate_keeps_no_shard_off_a_cheaper_window() {
        // On the longest window the rate reads 0.7 of the others' and each
        // unit costs 40% less: an open load's noise, not a closed loop.
        let dip = |w: u64| if w == MAX { (1.4, 0.24) } else { (2.0, 0.4) };
        let mut r = Run::new(0, 1);
        r.slots(&dip, 10);
        assert_eq!(r.c.settled_us(), MAX, "{:?}", r.settled);
        // At 0.62 it is not taken, and held it is kept.
        let deeper = |w: u64| if w == MAX { (1.24, 0.24) } else { (2.0, 0.4) };
        let mut r = Run::new(0, 1);
        r.slots(&deeper, 20);
        assert!(r.settled.iter().all(|s| s.1 < MAX), "{:?}", r.settled);
        let mut r = Run::new(0, 1);
        r.c.level = 2;
        r.c.unchosen = false;
        r.c.prefer_longer = false;
        r.slots(&deeper, 20);
        assert!(r.tried.len() >= 3, "{:?}", r.tried);
        assert!(r.settled.iter().all(|s| s.1 == MAX), "{:?}", r.settled);
    }

    #[test]
    fn an_idle_shard_starts_no_round() {
        let mut r = Run::new(0, 1);
        r.slots(&|_| (0.001, 1.0), 100);
        assert!(r.tried.is_empty(), "{:?}", r.tried);
        assert_eq!(r.c.window_us(), 0);
        assert_eq!(r.c.step, Step::Settled);
    }

    #[test]
    fn a_change_of_load_lifts_the_back_off() {
        let mut r = Run::new(0, 1);
        r.slots(&flat, 40);
        assert_eq!(r.c.settled_us(), 0);
        assert!(r.c.backoff[UP] >= 2, "{:?}", r.c.backoff);
        let before = r.tried.len();
        // Four times the work, and now the longer windows pay.
        let heavy = |w: u64| (8.0 * open(w).0 / 2.0, open(w).1 / 4.0);
        r.slots(&heavy, 2);
        assert!(r.tried.len() > before, "a round at the next own slot");
        r.slots(&heavy, 10);
        assert_eq!(r.c.settled_us(), MAX);
    }

    #[test]
    fn shards_take_their_rounds_in_alternate_slots() {
        let mut rs = [Run::new(0, 2), Run::new(1, 2)];
        lockstep(&mut rs, &[&open, &open], 20);
        for (i, r) in rs.iter().enumerate() {
            assert!(r.tried.len() >= 3, "{:?}", r.tried);
            assert!(r.tried.iter().all(|t| t.0 % 2 == i as u64), "{:?}", r.tried);
            assert_eq!(r.c.settled_us(), MAX);
            assert!(!r.c.frees_slots());
        }
    }

    #[test]
    fn a_busy_shard_takes_the_slots_of_an_idle_one() {
        let idle = |_| (0.001, 1.0);
        let mut rs = [Run::new(0, 2), Run::new(1, 2)];
        lockstep(&mut rs, &[&open, &idle], 4);
        assert!(rs[1].c.frees_slots());
        assert!(rs[1].tried.is_empty(), "{:?}", rs[1].tried);
        assert_eq!(rs[0].c.settled_us(), MAX, "{:?}", rs[0].settled);
        // Under a load on which the windows go up and down, shard 0 starts
        // rounds in consecutive slots, shard 1's too.
        let mut flat_runs = [Run::new(0, 2), Run::new(1, 2)];
        lockstep(&mut flat_runs, &[&flat, &idle], 12);
        let tried: Vec<u64> = flat_runs[0].tried.iter().map(|t| t.0).collect();
        assert!(tried.windows(2).any(|w| w[1] == w[0] + 1), "{tried:?}");
        assert!(tried.iter().any(|k| k % 2 == 1), "{tried:?}");
    }

    #[test]
    fn the_slots_of_a_free_shard_go_to_the_next_busy_one() {
        let c = |shard| BatchControl::new(MAX, shard, 3, Mark3(0, 0, 0));
        let one_free = |s: u64| s == 1;
        // Slot 4 is shard 1's: shard 2 takes it, shard 0 does not.
        assert!(!c(0).may_use(4, &one_free));
        assert!(c(1).may_use(4, &one_free));
        assert!(c(2).may_use(4, &one_free));
        assert!(!c(2).may_use(4, &|_| false));
        // Own slots stay own, whatever the others publish.
        assert!(c(0).may_use(3, &|_| true));
        assert!(!c(1).may_use(3, &|s: u64| s == 1));
        // Both other shards free: all slots are shard 0's.
        let others = |s: u64| s != 0;
        assert!((0..9).all(|k| c(0).may_use(k, &others)));
        // Unless shard 0 leaves its own free too: it keeps to its own.
        let mut idle = c(0);
        idle.frees = true;
        assert!((0..9).all(|k| idle.may_use(k, &|_| true) == (k % 3 == 0)));
    }

    #[test]
    fn a_load_after_a_light_one_starts_on_the_start_window() {
        let mut r = Run::new(0, 1);
        r.slots(&light, 3);
        assert_eq!(r.c.settled_us(), 0);
        // The first slot the open load fills puts the shard back on a third
        // and starts a round from there.
        r.slots(&open, 2);
        assert!(r.c.settled_us() > 0, "{:?}", r.c.last_round);
        assert_eq!(r.tried.first().map(|t| t.1), Some(MAX / 3), "{:?}", r.tried);
        r.slots(&open, 2);
        assert_eq!(r.c.settled_us(), MAX, "{:?}", r.settled);
        // An idle stretch (no work at all) ends it too: the first messages
        // after it are not held.
        r.slots(&|_| (0.0, 0.0), 2);
        assert_eq!(r.c.settled_us(), 0);
        r.slots(&open, 3);
        assert_eq!(r.c.settled_us(), MAX);
    }

    #[test]
    fn a_load_turning_light_is_seen_in_the_next_slot_whoever_owns_it() {
        // Shard 0 of two, on the longest window from an open load, under
        // 1 000 msg/s, shard 1 idle: the first slot (shard 1's) already
        // puts it on no window, where a held wake-up would add up to a
        // millisecond to each message for a slot or two.
        let idle = |_| (0.0, 0.0);
        let mut rs = [Run::new(0, 2), Run::new(1, 2)];
        rs[0].c.level = 2;
        rs[0].c.unchosen = false;
        lockstep(&mut rs, &[&light, &idle], 1);
        assert_eq!(rs[0].now, SLOT_US);
        assert_eq!(rs[0].c.window_us(), 0);
        assert!(rs[0].c.frees_slots() && rs[1].c.frees_slots());
        assert!(rs[0].tried.is_empty() && rs[1].tried.is_empty());
    }

    #[test]
    fn a_light_shard_frees_its_slots_and_a_busy_one_does_not() {
        let mut r = Run::new(0, 1);
        r.slots(&light, 3);
        assert!(r.c.frees_slots());
        r.slots(&open, 3);
        assert!(!r.c.frees_slots());
    }

    #[test]
    fn a_load_that_stops_during_a_round_decides_nothing() {
        let mut r = Run::new(0, 1);
        // Settled on the longest under an open load.
        r.slots(&open, 6);
        assert_eq!(r.c.settled_us(), MAX);
        // The next round (down) begins; the load stops after its first
        // candidate part, which on its own would make the longer window
        // look like a closed loop's.
        while r.c.step != Step::WarmA {
            let t = r.c.next_tick_us();
            r.drive(&open, t);
        }
        let round = r.now;
        r.drive(&open, round + WARM_US + PART_US);
        assert_eq!(r.c.step, Step::WarmCur);
        r.drive(&|_| (0.0, 0.0), round + SLOT_US - 1);
        assert_eq!(r.c.step, Step::Settled);
        assert_eq!(r.c.settled_us(), MAX);
        assert!(r.c.last_round.as_deref().unwrap().contains("steady: false"));
    }

    #[test]
    fn too_little_work_in_a_part_changes_nothing() {
        let short = Meas {
            us: PART_US,
            work: MIN_WORK - 1,
            cpu: 10,
        };
        let long = Meas {
            us: PART_US,
            work: 1 << 20,
            cpu: 1,
        };
        assert_eq!(longer_wins(short, long, false), None);
        assert_eq!(longer_wins(long, short, true), None);
    }

    #[test]
    fn keeping_a_window_asks_for_less_than_taking_it() {
        let m = |work: u64, cpu: u64| Meas {
            us: 1_000_000,
            work,
            cpu,
        };
        // 3% and 0.03 of a core saved.
        let (short, long) = (m(1_000_000, 1_000_000), m(1_000_000, 970_000));
        assert_eq!(longer_wins(short, long, false), Some(false));
        assert_eq!(longer_wins(short, long, true), Some(true));
        // At 0.62 of the rate, a third cheaper per unit: kept, not taken.
        let (short, long) = (m(1_000_000, 1_000_000), m(620_000, 413_000));
        assert_eq!(longer_wins(short, long, false), Some(false));
        assert_eq!(longer_wins(short, long, true), Some(true));
        // At half the rate, a closed loop's: lost, held or not.
        let (short, long) = (m(1_000_000, 1_000_000), m(500_000, 450_000));
        assert_eq!(longer_wins(short, long, false), Some(false));
        assert_eq!(longer_wins(short, long, true), Some(false));
    }

    #[test]
    fn the_levels_are_off_a_third_and_all_of_the_longest() {
        assert_eq!(levels(1000), [0, 333, 1000]);
    }
}
