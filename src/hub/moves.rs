//! Moving a classic queue from one shard of this node to another, with
//! every item addressed to it applied once and in order per sender.
//!
//! The control plane runs a move as one operation (`control`):
//! 1. it tells the new shard to expect the queue (`ExpectQueue`); from then
//!    on the new shard holds what comes to it for the queue, and says so
//!    (`MoveStep`);
//! 2. it broadcasts `Change::MoveQueue`. The old shard takes the queue out
//!    when it applies it and sends it over whole (`QueueArrives`: ready
//!    messages, unacked deliveries, consumers, store). Every other shard,
//!    when it applies it, sends a `QueueFence` to the old shard: what it
//!    sent the queue before went to the old shard, what it sends after
//!    goes to the new one;
//! 3. the old shard passes on (`Moved`) whatever still reaches it for the
//!    queue, fences included, behind the queue itself on the same ring;
//! 4. the new shard handles passed-on items at once (they were sent
//!    before their sender switched) and holds items sent to it directly
//!    until it has the queue and a fence from every other shard: by then
//!    everything each sender sent before switching is applied. It then
//!    handles the held items in order and tells the control plane.
//!
//! A transaction's barrier follows the same rule: held on the new shard
//! until the queue is whole; on the old shard, answered only after what it
//! passed on is applied and synced on the new one (it goes there, behind
//! those items, once the old shard's own sync is done).

use super::Hub;
use crate::ids::{IdMap, QueueId, ShardId};
use crate::owner::Effects;
use crate::owner::{Arrival, Item};

/// One shard's part in the moves of queues.
#[derive(Default)]
pub(super) struct Moves {
    /// Queues that left this shard: items that still reach it for them
    /// go on to where they went.
    departed: IdMap<QueueId, Departed>,
    /// Queues on their way here.
    arriving: IdMap<QueueId, Arriving>,
    /// Fences for moves this shard has not applied yet: (queue, epoch).
    early: Vec<(QueueId, u64)>,
    /// Items for arriving queues (and barriers) sent here directly, in
    /// the order they came, with when they came: they are applied as of
    /// then (a message's TTL runs from its arrival, not its release).
    held: Vec<(Item, u64)>,
}

/// Held items past which this shard's connections stop reading (as for a
/// congested ring) until the move completes. A move lasts until every
/// shard has applied it, a step or two each; the cap bounds the memory a
/// stalled shard could make the others hold.
pub const HELD_MAX: usize = 16 * 1024;

struct Departed {
    to: ShardId,
    /// Fences of other shards still to pass through here.
    left: usize,
}

struct Arriving {
    epoch: u64,
    slot_in: bool,
    fences: usize,
}

impl Moves {
    /// Items for `queue` must wait: it is on its way here.
    pub fn holds(&self, queue: QueueId) -> bool {
        !self.arriving.is_empty() && self.arriving.contains_key(&queue)
    }

    /// Too many items are held: the shard's publishers must wait.
    pub fn over_hold_limit(&self) -> bool {
        self.held.len() >= HELD_MAX
    }

    /// Holds an item of one of this shard's connections (see [`Moves::holds`]).
    pub fn hold(&mut self, item: Item, now: u64) {
        self.held.push((item, now));
    }

    /// A queue was deleted: nothing of it is forwarded any more.
    pub fn forget(&mut self, queue: QueueId) {
        self.departed.remove(&queue);
    }
}

impl Hub {
    /// This shard's part of move `epoch` of `queue` from shard `from` to
    /// `to` (the topology already says `to`).
    pub(super) fn queue_moved(&mut self, queue: QueueId, from: ShardId, to: ShardId, epoch: u64, now: u64) {
        if from == to {
            return;
        }
        if self.id != from {
            self.out.to_shard(
                from,
                Item::QueueFence {
                    queue,
                    epoch,
                    from: self.id,
                },
            );
            return;
        }
        let slot = self.owner.depart(queue, &self.topo, &mut self.out, now);
        let before = self.moves.early.len();
        self.moves.early.retain(|&e| e != (queue, epoch));
        let fenced = before - self.moves.early.len();
        let left = self.nshards - 1 - fenced;
        self.moves.departed.insert(queue, Departed { to, left });
        self.out.to_shard(
            to,
            Item::QueueArrives(Box::new(Arrival {
                queue,
                epoch,
                slot,
                fenced,
            })),
        );
    }

    /// The move protocol's look at an item before it is handled: gives
    /// back what to handle now.
    pub(super) fn intercept(&mut self, item: Item, now: u64) -> Option<Item> {
        let (item, passed_on) = match item {
            Item::Moved(inner) => (*inner, true),
            item => (item, false),
        };
        match item {
            Item::ExpectQueue { queue, epoch, .. } => {
                self.moves.departed.remove(&queue);
                self.moves.arriving.insert(
                    queue,
                    Arriving {
                        epoch,
                        slot_in: false,
                        fences: 0,
                    },
                );
                self.out.to_shard(0, Item::MoveStep { epoch });
                None
            }
            Item::QueueFence { queue, epoch, from } => {
                if let Some(a) = self.moves.arriving.get_mut(&queue).filter(|a| a.epoch == epoch) {
                    a.fences += 1;
                    self.arrival_progress(queue, now);
                } else if let Some(d) = self.moves.departed.get_mut(&queue).filter(|d| d.left > 0) {
                    d.left -= 1;
                    let to = d.to;
                    self.out.to_shard(to, Item::QueueFence { queue, epoch, from });
                } else {
                    self.moves.early.push((queue, epoch));
                }
                None
            }
            Item::QueueArrives(a) => {
                let Arrival {
                    queue,
                    epoch,
                    slot,
                    fenced,
                } = *a;
                match slot {
                    Some(slot) if self.topo.queue(queue).is_some() => self.owner.arrive(slot),
                    Some(_) => log::warn!("queue {queue:?} reached shard {} after it was deleted", self.id),
                    None => {}
                }
                if let Some(a) = self.moves.arriving.get_mut(&queue).filter(|a| a.epoch == epoch) {
                    a.slot_in = true;
                    a.fences += fenced;
                    self.arrival_progress(queue, now);
                }
                None
            }
            Item::Barrier { ch, token } if !passed_on && !self.moves.arriving.is_empty() => {
                self.moves.held.push((Item::Barrier { ch, token }, now));
                None
            }
            Item::Barrier { ch, token } => match self.moves.departed.values().find(|d| d.left > 0) {
                Some(d) => {
                    self.owner.barrier_via(ch, token, d.to);
                    None
                }
                None => Some(Item::Barrier { ch, token }),
            },
            item => {
                let Some(queue) = item.owner_queue() else {
                    return Some(item);
                };
                if self.moves.departed.is_empty() && self.moves.arriving.is_empty() {
                    return Some(item);
                }
                if let Some(d) = self.moves.departed.get(&queue) {
                    self.out.to_shard(d.to, Item::Moved(Box::new(item)));
                    None
                } else if !passed_on && self.moves.arriving.contains_key(&queue) {
                    self.moves.held.push((item, now));
                    None
                } else {
                    Some(item)
                }
            }
        }
    }

    /// An arriving queue got its slot or a fence: once it has both, and a
    /// fence from every shard but the old one, the items held for it are
    /// handled, in order.
    fn arrival_progress(&mut self, queue: QueueId, now: u64) {
        let whole = self.nshards - 1;
        let Some(a) = self.moves.arriving.get(&queue) else {
            return;
        };
        if !a.slot_in || a.fences < whole {
            return;
        }
        let epoch = a.epoch;
        self.moves.arriving.remove(&queue);
        self.out.to_shard(0, Item::MoveStep { epoch });
        let all = self.moves.arriving.is_empty();
        let (now_items, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.moves.held)
            .into_iter()
            .partition(|(i, _)| all || i.owner_queue() == Some(queue));
        self.moves.held = kept;
        for (item, at) in now_items {
            self.handle_item(item, at.min(now));
        }
    }
}
