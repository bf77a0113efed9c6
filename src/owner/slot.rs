//! One queue as its owner holds it: the engine, its store, and what the
//! owner tracks around it.

use crate::broker::args::QueueExtras;
use crate::ids::{ChannelRef, ConnId, VhostId};
use crate::message::Message;
use crate::protocol::ShortStr;
use crate::queue::Queue;
use crate::storage::QueueStore;

/// A queue engine with what its owner needs to know about it.
/// Owned by the queue's owner shard.
pub struct QueueSlot {
    pub q: Queue,
    pub name: ShortStr,
    pub vhost: VhostId,
    pub auto_delete: bool,
    pub had_consumers: bool,
    /// Its deletion was asked of the control plane (auto-delete, expiry).
    pub(super) deleting: bool,
    pub(super) dirty: bool,
    /// Durable queues keep persistent messages here.
    pub store: Option<QueueStore>,
    /// The store is not to be trusted with more: it could not be opened,
    /// or a sync of it failed (the page cache may have dropped what it
    /// held). Persistent messages are refused (nacked) until a restart.
    pub store_failed: bool,
    /// Writes the store refused (a full disk refuses every message: the
    /// log says so at 1, 2, 4, 8, ... of them, not once per message).
    pub(super) write_errors: u64,
    /// Connections this queue paused (flow control).
    pub(super) throttled: Vec<ConnId>,
    /// Dead-lettering and expiry settings.
    pub extras: QueueExtras,
    /// Last time the queue was used (for `x-expires`), ms.
    pub last_used_ms: u64,
    /// Body bytes of `pending`.
    pub(super) pending_bytes: u64,
    /// Holds messages with a per-message TTL (so the sweeper looks at it).
    pub(super) may_expire: bool,
    /// Publishes waiting for the end-of-step store write, in order (with
    /// the transient ones queued behind them, to keep FIFO).
    pub(super) pending: Vec<(Message, Option<(ChannelRef, u64)>)>,
    pub(super) store_dirty: bool,
    /// A quorum queue's replication state (its messages live in its Raft
    /// group's log instead of a store).
    pub quorum: Option<QuorumSlot>,
}

/// What the owner tracks of a quorum queue on this node.
#[derive(Default)]
pub struct QuorumSlot {
    /// Its Raft group.
    pub group: u32,
    /// This node leads the group and its engine holds the queue's
    /// messages: it serves consumers. Otherwise the engine is empty.
    pub active: bool,
    /// Sequences (log indices) settled since the last proposal.
    pub(super) settles: Vec<u64>,
    /// Sequences returned since the last proposal, and their entries,
    /// kept out of the engine until the return is committed.
    pub(super) returns: Vec<u64>,
    pub(super) returning: std::collections::HashMap<u64, crate::queue::Entry>,
    /// Delivery counts above 0, by sequence.
    pub(super) counts: std::collections::HashMap<u64, u32>,
    pub(super) delivery_limit: Option<i64>,
    /// Messages proposed from this node, and how many of them the group
    /// answered (committed or refused), in order: a `basic.get` waits
    /// until what was proposed before it is answered, so that a channel
    /// reads its own publishes (RabbitMQ orders both through the log).
    pub(super) proposed: u64,
    pub(super) answered: u64,
    /// Gets waiting for that: channel, no-ack, and the count to reach.
    pub(super) gets: std::collections::VecDeque<(ChannelRef, bool, u64)>,
    /// Gets for the leader on another node, waiting for the same: the
    /// count to reach, the leader, the operation. (A follower proposes
    /// its channels' publishes itself, and they reach the leader through
    /// the group, not in order with the operations this node sends.)
    pub(super) remote_gets: std::collections::VecDeque<(u64, u64, super::RemoteOp)>,
}

impl QueueSlot {
    /// Messages ready, counting those waiting for the store write.
    pub fn ready_count(&self) -> usize {
        self.q.ready_count() + self.pending.len()
    }

    /// Bytes on disk, if the queue has a store.
    pub fn disk_bytes(&self) -> u64 {
        self.store.as_ref().map_or(0, QueueStore::disk_bytes)
    }
}
