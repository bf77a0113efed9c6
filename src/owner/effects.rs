//! How the queue-owner service acts on the rest of the broker: it never
//! touches a socket, a ring or a task; it says where events and items go,
//! and the runtime (or the simulation) carries them.

use super::item::Item;
use crate::ids::{ConnId, ConsumerRef, QueueId, ShardId};
use crate::queue::{DeadReason, Delivery, Entry, QueueSink};
use crate::session::Event;

/// Where the owner's effects go.
pub trait Effects {
    /// An event for a connection, on this shard or another.
    fn to_conn(&mut self, conn: ConnId, ev: Event);
    /// An item for a shard; for this very shard it is handled after the
    /// current step, never re-entrantly.
    fn to_shard(&mut self, shard: ShardId, item: Item);
    /// An operation of one of this node's channels on a queue of another
    /// node (shard 0 sends it there).
    fn to_node(&mut self, node: u64, queue: QueueId, op: super::RemoteOp) {
        self.to_shard(0, Item::Remote { node, queue, op });
    }
    /// Changes to a quorum queue, for its Raft group. Without a cluster
    /// side (the simulation) nothing is replicated: confirms are nacks.
    fn propose_quorum(&mut self, p: QuorumProposal) {
        for (ch, seq) in p.confirms {
            self.to_conn(ch.conn, Event::Confirm { ch, seq, ok: false });
        }
    }
}

/// One queue's changes of one step, for its Raft group: the publishes are
/// confirmed once committed; settles and returns come back applied.
#[derive(Debug)]
pub struct QuorumProposal {
    pub group: u32,
    pub queue: QueueId,
    pub enqueue: Vec<crate::message::Message>,
    pub confirms: Vec<(crate::ids::ChannelRef, u64)>,
    pub settles: Vec<u64>,
    pub returns: Vec<u64>,
}

/// A queue engine's effects, routed through [`Effects`]: deliveries and
/// credit traffic to connections; what the owner must do afterwards
/// (store marks, dead-lettering) collected for it.
pub(super) struct Sink<'a, E: Effects> {
    pub fx: &'a mut E,
    pub queue: QueueId,
    /// Stored messages delivered: (where, needs ack, redelivered).
    pub stored: &'a mut Vec<(crate::ids::Loc, bool, bool)>,
    /// Messages that left the queue undelivered.
    pub removed: &'a mut Vec<(Entry, DeadReason)>,
    /// A quorum queue's: sequences delivered without an ack (it settles
    /// them). None for other queues (nothing to collect).
    pub unacked_off: Option<&'a mut Vec<u64>>,
}

impl<E: Effects> QueueSink for Sink<'_, E> {
    fn deliver(&mut self, d: Delivery) {
        if let Some(loc) = d.loc {
            self.stored.push((loc, d.needs_ack, d.redelivered));
        }
        if !d.needs_ack
            && let Some(off) = self.unacked_off.as_deref_mut()
        {
            off.push(d.seq);
        }
        self.fx.to_conn(d.consumer.ch.conn, Event::Deliver(d));
    }
    fn request_credit(&mut self, consumer: ConsumerRef) {
        let queue = self.queue;
        self.fx
            .to_conn(consumer.ch.conn, Event::CreditRequest { queue, consumer });
    }
    fn return_credit(&mut self, consumer: ConsumerRef, n: u32) {
        let queue = self.queue;
        self.fx
            .to_conn(consumer.ch.conn, Event::CreditReturn { queue, consumer, n });
    }
    fn removed(&mut self, entry: Entry, reason: DeadReason) {
        self.removed.push((entry, reason));
    }
}
