//! What crosses between shards: the shard protocol. Items for one
//! destination are batched into one `Vec` per ring push; the ring (an SPSC
//! channel per pair of shards) keeps them in order, which the protocol
//! relies on (a `consume-ok` reply travels before the deliveries that
//! follow it). Plain data: the runtime carries them, the simulation too.

use crate::broker::request::{Request, Settle};
use crate::broker::topology::Change;
use crate::ids::{ChannelRef, ConnId, ConsumerRef, QueueId, ShardId, VhostId};
use crate::message::Message;
use crate::protocol::{AmqpError, ShortStr};
use crate::queue::ConsumerSpec;
use crate::session::Event;

/// An operation on a queue, run on its owner shard, answered to `ch`.
#[derive(Debug)]
pub enum QueueOp {
    Consume(ConsumerSpec),
    /// A consumer carried over to a quorum queue's new leader, with the
    /// deliveries its channel holds (sequences); answered with
    /// `Event::Resumed`, not a reply.
    Resume {
        spec: ConsumerSpec,
        held: Vec<u64>,
    },
    Cancel(ConsumerRef),
    Get {
        no_ack: bool,
    },
    Purge,
    /// `queue.declare-ok` with the queue's counts (a channel of another
    /// node declared it).
    Counts,
}

/// Messages for the control plane (shard 0).
#[derive(Debug)]
pub enum ControlMsg {
    Request {
        ch: ChannelRef,
        vhost: VhostId,
        user: String,
        req: Request,
    },
    /// A connection closed: its exclusive queues must go.
    ConnectionClosed(ConnId),
    /// An auto-delete queue lost its last consumer; its owner already
    /// dropped it.
    AutoDeleted(QueueId),
    /// This node (its Raft id) now leads these quorum queues: the metadata
    /// must say so, for other nodes to route to it.
    /// `force`: record it even where the metadata names this node already
    /// (it leads in a new term: the queue's consumers must carry on).
    QueueLeader {
        queues: Vec<QueueId>,
        node: u64,
        force: bool,
    },
    /// A cluster node restarted and caught up (its id): its transient and
    /// exclusive queues, back from the metadata log, must go.
    NodeRestarted(u64),
    /// Move a classic queue to another shard of this node (the balancer).
    MoveQueue { queue: QueueId, to: ShardId },
    /// A management operation (never crosses shards: posted on shard 0).
    Admin {
        user: String,
        op: crate::admin::AdminOp,
        reply: std::sync::mpsc::SyncSender<Result<(), AmqpError>>,
    },
}

/// A connection on its way to another shard, as its runtime (or the
/// simulation) packed it: socket, session and what its task held.
pub struct Adoption(pub Box<dyn std::any::Any + Send>);

impl std::fmt::Debug for Adoption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Adoption")
    }
}

#[derive(Debug)]
pub enum Item {
    /// A connection moves to the destination shard. It travels on the
    /// ring behind everything it sent before, so the destination handles
    /// those first.
    Adopt(Adoption),
    Publish {
        queue: QueueId,
        msg: Message,
        confirm: Option<(ChannelRef, u64)>,
        /// For flow control.
        publisher: ConnId,
    },
    /// To shard 0: a message for a queue on another node of the cluster,
    /// to forward there.
    Forward(Forward),
    /// To shard 0: what a local channel does to a queue on another node of
    /// the cluster, to send there.
    Remote {
        node: u64,
        queue: QueueId,
        op: RemoteOp,
    },
    /// To shard 0: a reply to a direct reply-to name of another node of
    /// the cluster, to send there.
    RemoteReply(RemoteReply),
    Settle {
        queue: QueueId,
        seq: u64,
        how: Settle,
    },
    Written {
        queue: QueueId,
        consumer: ConsumerRef,
        n: u32,
    },
    Credit {
        queue: QueueId,
        consumer: ConsumerRef,
        n: u32,
    },
    DropConsumer {
        queue: QueueId,
        consumer: ConsumerRef,
    },
    /// For a connection of the destination shard.
    Event {
        conn: ConnId,
        ev: Event,
    },
    QueueOp {
        queue: QueueId,
        name: ShortStr,
        ch: ChannelRef,
        op: QueueOp,
    },
    Control(ControlMsg),
    /// Shard 0 → every shard: apply, then answer `TopologyApplied`.
    Topology(Vec<Change>),
    /// Shard → 0: it applied the oldest broadcast it had not.
    TopologyApplied(ShardId),
    /// Shard 0 → owner: delete the queue if the conditions hold.
    OwnerDelete {
        op: u64,
        queue: QueueId,
        if_unused: bool,
        if_empty: bool,
    },
    OwnerDeleted {
        op: u64,
        result: Result<u32, AmqpError>,
    },
    /// Everything sent before this on the ring is applied; answer with
    /// `BarrierDone` once it is also synced.
    Barrier {
        ch: ChannelRef,
        token: u64,
    },
    BarrierDone {
        ch: ChannelRef,
        token: u64,
    },
    /// Shard 0 → owner: a management queue operation.
    AdminQueue {
        queue: QueueId,
        action: crate::admin::QueueAction,
        reply: std::sync::mpsc::SyncSender<Result<crate::admin::QueueResult, AmqpError>>,
    },
    /// Pass `item` on to shard `dest`. Shard 0 sends a channel's queue
    /// operation through the channel's own shard, so it reaches the owner
    /// behind every publish that channel sent before it (the rings keep
    /// order per pair of shards, not across three).
    Via {
        dest: ShardId,
        item: Box<Item>,
    },
    /// Shard 0 → owner: answer `queue.declare-ok` with the queue's counts.
    DeclareCounts {
        queue: QueueId,
        ch: ChannelRef,
        name: ShortStr,
    },
    /// Shard 0 → the shard a queue is about to move to (move `epoch`,
    /// from shard `from`): hold what comes for the queue until all of it
    /// is here, and answer `MoveStep` (see `hub::moves`).
    ExpectQueue {
        queue: QueueId,
        epoch: u64,
        from: ShardId,
    },
    /// Shard `from` applied move `epoch` of `queue`: nothing more for the
    /// queue comes from it through the old shard. Sent to the old shard,
    /// which passes it on behind what it forwarded.
    QueueFence {
        queue: QueueId,
        epoch: u64,
        from: ShardId,
    },
    /// The moving queue, from its old shard to its new one.
    QueueArrives(Box<Arrival>),
    /// An item for a queue that reached its old shard after the queue
    /// left, passed on to its new one.
    Moved(Box<Item>),
    /// To shard 0: the destination of move `epoch` holds the queue's
    /// items (first answer) / has the queue whole (second).
    MoveStep {
        epoch: u64,
    },
}

/// A queue handed from one shard to another (see `hub::moves`).
pub struct Arrival {
    pub queue: QueueId,
    pub epoch: u64,
    /// None if the old shard did not have it (deleted meanwhile).
    pub slot: Option<super::QueueSlot>,
    /// Fences the old shard had received before it applied the move.
    pub fenced: usize,
}

impl std::fmt::Debug for Arrival {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Arrival")
            .field("queue", &self.queue)
            .field("epoch", &self.epoch)
            .field("slot", &self.slot.is_some())
            .field("fenced", &self.fenced)
            .finish()
    }
}

impl Item {
    /// The queue an item is for, if it is addressed to the queue's owner.
    pub fn owner_queue(&self) -> Option<QueueId> {
        match self {
            Item::Publish { queue, .. }
            | Item::Settle { queue, .. }
            | Item::Written { queue, .. }
            | Item::Credit { queue, .. }
            | Item::DropConsumer { queue, .. }
            | Item::QueueOp { queue, .. }
            | Item::OwnerDelete { queue, .. }
            | Item::AdminQueue { queue, .. }
            | Item::DeclareCounts { queue, .. } => Some(*queue),
            _ => None,
        }
    }
}

/// One ring push.
pub type Batch = Vec<Item>;

/// What waits for the next sync of a shard's stores.
#[derive(Debug, Clone, Copy)]
pub enum SyncWaiter {
    /// A publisher's confirm, for a message stored in `queue`.
    Confirm {
        ch: ChannelRef,
        seq: u64,
        queue: QueueId,
    },
    /// A transaction's barrier.
    Barrier { ch: ChannelRef, token: u64 },
    /// A barrier that reached this shard while a queue moved away: once
    /// this shard's part is synced, it goes on to the queue's new shard,
    /// behind what this one passed on there, which answers it.
    BarrierVia { ch: ChannelRef, token: u64, to: ShardId },
}

/// A message routed to a queue whose home is another node of the cluster
/// (`node`), on its way there through shard 0's cluster port. The
/// confirm, if any, comes back from that node.
#[derive(Debug)]
pub struct Forward {
    pub node: u64,
    pub queue: QueueId,
    pub msg: Message,
    pub confirm: Option<(ChannelRef, u64)>,
}

/// What a channel does to a queue on another node of the cluster.
#[derive(Debug)]
pub enum RemoteOp {
    Queue {
        name: ShortStr,
        ch: ChannelRef,
        op: QueueOp,
    },
    Settle {
        seq: u64,
        how: crate::broker::request::Settle,
    },
    Written {
        consumer: crate::ids::ConsumerRef,
        n: u32,
    },
    Credit {
        consumer: crate::ids::ConsumerRef,
        n: u32,
    },
    Drop {
        consumer: crate::ids::ConsumerRef,
    },
    /// A passive declare of a direct reply-to name of the node (sent with
    /// queue 0): answered there, from its live reply consumers.
    ReplyName {
        name: ShortStr,
        ch: ChannelRef,
        key: [u8; crate::broker::reply_to::KEY_LEN],
        vhost: String,
    },
}

/// A reply for a direct reply-to consumer on another node (see
/// [`Item::RemoteReply`]).
#[derive(Debug)]
pub struct RemoteReply {
    pub node: u64,
    pub ch: crate::ids::ChannelRef,
    pub key: [u8; crate::broker::reply_to::KEY_LEN],
    pub msg: crate::message::Message,
    /// A mandatory reply's publishing channel: the reply comes back to it
    /// (`basic.return`) if the node has no such reply consumer.
    pub returner: Option<crate::ids::ChannelRef>,
    /// Its confirm, given once the node answered (after the return).
    pub confirm: Option<(crate::ids::ChannelRef, u64)>,
}
