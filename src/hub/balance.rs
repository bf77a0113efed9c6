//! Where classic queues run on this node, by load (`--queue-locator
//! packed`, the default).
//!
//! Two busy shards cost more per message than one: each wakes for fewer
//! messages, and on a machine the clients share, both compete with them
//! for the cores. So queues are packed: a new classic queue goes to the
//! lowest shard with CPU to spare (the connections that use it follow it
//! there, see the connection hand-off), and the other shards sleep. Only
//! when a shard stays busy while another idles does a queue move off it
//! (see `hub::moves`): the one whose traffic best splits the load.
//!
//! Pure: each shard's runtime feeds it every shard's CPU use, once a
//! second; the hub carries out what it decides.

use crate::ids::{IdMap, QueueId, ShardId};

/// A shard whose CPU use is below this takes new queues.
pub const FILL_BELOW: f32 = 0.60;
/// A shard busier than this for [`HOT_TICKS`] ticks in a row sheds a
/// queue, to a shard below [`COOL_BELOW`].
pub const HOT_ABOVE: f32 = 0.80;
pub const COOL_BELOW: f32 = 0.45;
pub const HOT_TICKS: u32 = 2;
/// Ticks after a move before the next one (the load must settle first).
pub const COOLDOWN_TICKS: u32 = 3;
/// A queue that carries more than this share of a shard's traffic is
/// the hot spot itself: moving it moves the problem.
pub const MAX_SHARE: f64 = 0.75;

/// One shard's balancer state.
#[derive(Default)]
pub struct Balancer {
    /// Each queue's traffic count at the last tick.
    last: IdMap<QueueId, u64>,
    hot_for: u32,
    cooldown: u32,
    /// A tick has set the traffic baseline.
    started: bool,
}

/// A queue as the balancer sees it.
#[derive(Debug, Clone, Copy)]
pub struct QueueLoad {
    pub id: QueueId,
    /// Messages in and out so far (any counter that grows with work).
    pub traffic: u64,
    /// It may move (a classic queue, not exclusive, not pinned).
    pub movable: bool,
}

/// The shard new classic queues go to: the lowest one with CPU to spare,
/// or the least busy.
pub fn fill_shard(cpu: &[f32]) -> ShardId {
    if let Some(s) = cpu.iter().position(|c| *c < FILL_BELOW) {
        return s as ShardId;
    }
    cpu.iter()
        .enumerate()
        .min_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(s, _)| s as ShardId)
}

impl Balancer {
    /// One tick of shard `me`: its queues now, and every shard's CPU use
    /// (fraction of a core) over the last tick. A queue to move, and
    /// where.
    pub fn tick(&mut self, me: ShardId, cpu: &[f32], queues: &[QueueLoad]) -> Option<(QueueId, ShardId)> {
        let mut deltas: Vec<(QueueId, u64, bool)> = Vec::with_capacity(queues.len());
        let mut last = IdMap::default();
        for q in queues {
            let before = self.last.get(&q.id).copied().unwrap_or(q.traffic);
            deltas.push((q.id, q.traffic.saturating_sub(before), q.movable));
            last.insert(q.id, q.traffic);
        }
        self.last = last;
        if !std::mem::replace(&mut self.started, true) {
            return None;
        }
        let mine = cpu.get(me as usize).copied().unwrap_or(0.0);
        if self.cooldown > 0 {
            self.cooldown -= 1;
            self.hot_for = 0;
            return None;
        }
        self.hot_for = if mine > HOT_ABOVE { self.hot_for + 1 } else { 0 };
        if self.hot_for < HOT_TICKS {
            return None;
        }
        let (to, coolest) = cpu
            .iter()
            .enumerate()
            .filter(|(s, _)| *s != me as usize)
            .min_by(|a, b| a.1.total_cmp(b.1))?;
        if *coolest >= COOL_BELOW {
            return None;
        }
        let total: u64 = deltas.iter().map(|d| d.1).sum();
        if total == 0 {
            return None;
        }
        // Move about half the difference.
        let want = f64::from((mine - coolest) / 2.0 / mine);
        let pick = deltas
            .iter()
            .filter(|d| d.2 && d.1 > 0)
            .map(|d| (d.0, d.1 as f64 / total as f64))
            .filter(|(_, share)| *share <= MAX_SHARE)
            .min_by(|a, b| (a.1 - want).abs().total_cmp(&(b.1 - want).abs()))?;
        self.hot_for = 0;
        self.cooldown = COOLDOWN_TICKS;
        Some((pick.0, to as ShardId))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(id: u64, traffic: u64) -> QueueLoad {
        QueueLoad {
            id: QueueId(id),
            traffic,
            movable: true,
        }
    }

    #[test]
    fn new_queues_fill_the_lowest_shard_with_room() {
        assert_eq!(fill_shard(&[0.1, 0.0]), 0);
        assert_eq!(fill_shard(&[0.7, 0.2, 0.0]), 1);
        assert_eq!(fill_shard(&[0.9, 0.8, 0.7]), 2);
        assert_eq!(fill_shard(&[]), 0);
    }

    #[test]
    fn a_shard_that_stays_hot_sheds_the_queue_that_splits_its_load() {
        let mut b = Balancer::default();
        let cpu = [0.95, 0.05];
        let load = |t: u64| [q(1, 40 * t), q(2, 35 * t), q(3, 25 * t)];
        assert_eq!(b.tick(0, &cpu, &load(0)), None, "the first tick only counts");
        assert_eq!(b.tick(0, &cpu, &load(1)), None, "hot once");
        // Half of (0.95 - 0.05) / 0.95 is 47%: queue 1 (40%) is closest.
        assert_eq!(b.tick(0, &cpu, &load(2)), Some((QueueId(1), 1)));
        for t in 3..3 + COOLDOWN_TICKS as u64 {
            assert_eq!(b.tick(0, &cpu, &load(t)), None, "cooling down");
        }
    }

    #[test]
    fn nothing_moves_when_no_shard_is_idle_or_one_queue_is_the_load() {
        let mut b = Balancer::default();
        for t in 0..5 {
            assert_eq!(b.tick(0, &[0.95, 0.6], &[q(1, 10 * t), q(2, 10 * t)]), None);
        }
        let mut b = Balancer::default();
        for t in 0..5 {
            assert_eq!(b.tick(0, &[0.95, 0.0], &[q(1, 90 * t), q(2, 0)]), None);
        }
    }

    #[test]
    fn a_busy_spell_shorter_than_the_hot_ticks_moves_nothing() {
        let mut b = Balancer::default();
        let loads = [0.9, 0.3, 0.9, 0.3, 0.9];
        for (t, c) in loads.iter().enumerate() {
            let t = t as u64;
            assert_eq!(b.tick(0, &[*c, 0.0], &[q(1, 10 * t), q(2, 10 * t)]), None);
        }
    }

    #[test]
    fn pinned_queues_stay() {
        let mut b = Balancer::default();
        let pinned = |t: u64| {
            [
                QueueLoad {
                    movable: false,
                    ..q(1, 50 * t)
                },
                QueueLoad {
                    movable: false,
                    ..q(2, 50 * t)
                },
            ]
        };
        for t in 0..6 {
            assert_eq!(b.tick(0, &[0.95, 0.0], &pinned(t)), None);
        }
    }
}
