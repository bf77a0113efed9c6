//! One shard's socket-free core: its replica of the topology, the queues
//! it owns (the [`Owner`]), the control plane on shard 0, the broker its
//! connections' sessions talk to ([`Client`]), and its outputs — events
//! for its connections and items for every shard.
//!
//! No glommio, no sockets, no clock: the runtime (`shard`) drives one hub
//! per executor, feeding it items from the rings and input from sockets,
//! calling [`Hub::step`] after each batch and carrying out what it leaves
//! in [`Outbox`]; the simulation drives several hubs the same way, on
//! virtual time, with a simulated disk and network.

mod balance;
mod boot;
mod client;
mod moves;

pub use boot::recover_topology;
pub use client::{Client, ConnState};

use crate::broker::request::Reply;
use crate::broker::topology::{Change, RouteScratch, Topology};
use crate::config::{Config, QueueLocator};
use crate::control::{Action, ControlService};
use crate::ids::{ChannelRef, ConnId, IdMap, QueueId, ShardId};
use crate::owner::{Effects, Item, Owner, OwnerConfig, SyncBatch};
use crate::protocol::ShortStr;
use crate::session::{Event, SessionConfig};
use crate::storage::topolog::TopoLog;
use crate::storage::{Disk, Syncable};
use std::sync::Arc;

/// What a hub leaves for its runtime.
pub struct Outbox {
    id: ShardId,
    /// Events for this shard's connections, in order.
    pub events: Vec<(ConnId, Event)>,
    /// Items for each shard; this shard's own are handled by the next
    /// [`Hub::step`], never re-entrantly.
    pub items: Vec<Vec<Item>>,
    /// Connections to close because their vhost or user was deleted:
    /// (vhost name or user name matched, the close text).
    pub closes: Vec<(CloseMatch, String)>,
    /// Topology log syncs the control plane waits for; answer each with
    /// [`Hub::log_synced`].
    pub log_syncs: Vec<Arc<dyn Syncable>>,
    /// Connections handed over to this shard, for the runtime to run.
    pub adopted: Vec<crate::owner::Adoption>,
    /// Clustered (shard 0): changes for the metadata log; answer with
    /// [`Hub::replicated`] (every committed entry) or
    /// [`Hub::propose_failed`].
    pub proposals: Vec<crate::control::Proposal>,
    /// Clustered (shard 0): answers of committed changes, to give with
    /// [`Hub::release`] once every running member applied them (see
    /// [`crate::control::Action::Hold`]).
    pub held: Vec<crate::control::Action>,
    /// Shard 0: messages for queues on other nodes of the cluster.
    pub forwards: Vec<crate::owner::Forward>,
    /// Shard 0: operations of local channels on queues of other nodes.
    pub remote_ops: Vec<(u64, QueueId, crate::owner::RemoteOp)>,
    /// Shard 0: replies to direct reply-to consumers of other nodes.
    pub remote_replies: Vec<crate::owner::RemoteReply>,
    /// Shard 0: changes to quorum queues for their Raft groups.
    pub quorum: Vec<crate::owner::QuorumProposal>,
    /// Shard 0: quorum groups this node must run (group, replicas).
    pub quorum_open: Vec<(u32, Vec<u64>)>,
    /// Shard 0: deleted quorum queues (group, queue).
    pub quorum_forget: Vec<(u32, QueueId)>,
    /// Shard 0: quorum groups whose replicas changed in the metadata.
    pub quorum_members: Vec<u32>,
    /// Quorum queues whose leader moved: their consumers on this shard's
    /// connections are cancelled.
    pub moved: Vec<QueueId>,
}

/// Which connections a deleted vhost or user closes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseMatch {
    Vhost(String),
    User(String),
}

impl Outbox {
    fn new(id: ShardId, nshards: usize) -> Outbox {
        Outbox {
            id,
            events: Vec::new(),
            items: (0..nshards).map(|_| Vec::new()).collect(),
            closes: Vec::new(),
            log_syncs: Vec::new(),
            adopted: Vec::new(),
            proposals: Vec::new(),
            held: Vec::new(),
            forwards: Vec::new(),
            remote_ops: Vec::new(),
            remote_replies: Vec::new(),
            quorum: Vec::new(),
            quorum_open: Vec::new(),
            quorum_forget: Vec::new(),
            quorum_members: Vec::new(),
            moved: Vec::new(),
        }
    }

    /// Items waiting for one destination shard.
    pub fn pending_for(&self, shard: usize) -> usize {
        self.items[shard].len()
    }
}

impl Effects for Outbox {
    fn to_conn(&mut self, conn: ConnId, ev: Event) {
        if conn.shard() == self.id {
            self.events.push((conn, ev));
        } else {
            self.items[conn.shard() as usize].push(Item::Event { conn, ev });
        }
    }
    fn to_shard(&mut self, shard: ShardId, item: Item) {
        self.items[shard as usize].push(item);
    }
    fn propose_quorum(&mut self, p: crate::owner::QuorumProposal) {
        self.quorum.push(p);
    }
    fn to_node(&mut self, node: u64, queue: QueueId, op: crate::owner::RemoteOp) {
        self.remote_ops.push((node, queue, op));
    }
}

/// One shard's core. See the module documentation.
pub struct Hub {
    pub id: ShardId,
    pub nshards: usize,
    pub cfg: Arc<Config>,
    pub session_cfg: SessionConfig,
    /// Replica of the topology (the authoritative copy on shard 0).
    pub topo: Topology,
    pub owner: Owner,
    /// Shard 0 only.
    pub control: Option<ControlService>,
    pub out: Outbox,
    /// Barriers started here: token → (channel, shards yet to answer).
    barriers: IdMap<u64, (ChannelRef, usize)>,
    next_barrier: u64,
    next_conn: u64,
    rng: u64,
    /// Messages routed by this shard's connections.
    pub routed: u64,
    /// This node's live direct reply-to consumers, shared by its shards
    /// (the runtime gives every hub the same; a hub alone has its own).
    pub replies: Arc<crate::broker::reply_to::LiveReplies>,
    route: (RouteScratch, Vec<(QueueId, ShardId)>),
    /// Queues moving to or from this shard.
    moves: moves::Moves,
    balancer: balance::Balancer,
    /// The shard that takes new work (see [`balance::fill_shard`]), as
    /// this shard last computed it.
    fill: ShardId,
}

impl Hub {
    /// A hub whose topology starts as `initial` (recovered, or fresh), with
    /// the stores of the durable queues it owns opened and read back.
    /// Shard 0 gets the control plane, writing to `log`. Every shard
    /// applies the same initial changes, so all replicas start equal with
    /// no broadcast before the first connection.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: ShardId,
        nshards: usize,
        cfg: Arc<Config>,
        session_cfg: SessionConfig,
        disk: Arc<dyn Disk>,
        seed: u64,
        initial: &[Change],
        log: Option<TopoLog>,
        now: u64,
    ) -> Result<Hub, String> {
        let owner = Owner::new(OwnerConfig::from_config(id, &cfg), disk);
        let mut hub = Hub {
            id,
            nshards,
            session_cfg,
            topo: Topology::default(),
            owner,
            control: None,
            out: Outbox::new(id, nshards),
            barriers: IdMap::default(),
            next_barrier: 1,
            next_conn: 1,
            rng: seed | 1,
            routed: 0,
            replies: Arc::default(),
            route: Default::default(),
            moves: Default::default(),
            balancer: Default::default(),
            fill: 0,
            cfg,
        };
        hub.apply_changes(initial, now);
        if let Some(e) = hub.owner.take_boot_error() {
            return Err(e);
        }
        if id == 0 {
            let mut control = ControlService::new(nshards, log, &hub.topo);
            // Balanced placement pays only if connections can follow their
            // queues to other shards.
            if hub.cfg.queue_locator == QueueLocator::Balanced && hub.cfg.connection_handoff {
                control.set_balance_over(nshards);
            }
            if hub.balances() {
                control.set_fill(Some(0));
            }
            hub.control = Some(control);
        }
        Ok(hub)
    }

    /// Classic queues are placed and moved by load (`--queue-locator
    /// packed`, see [`balance`]). In a cluster the control plane neither
    /// places by load nor moves queues (see [`ControlService::set_fill`]).
    pub fn balances(&self) -> bool {
        self.cfg.queue_locator == QueueLocator::Packed && self.cfg.connection_handoff && self.nshards > 1
    }

    /// The balancer's tick (once a second): every shard's CPU use over the
    /// last second, as fractions of a core. Shard 0 places new queues on
    /// the lowest shard with room; a shard that stays busy while another
    /// idles asks shard 0 to move one of its queues there.
    pub fn balance_tick(&mut self, cpu: &[f32], now: u64) {
        if !self.balances() {
            return;
        }
        let fill = balance::fill_shard(cpu);
        if fill != self.fill {
            log::debug!("shard {}: CPU {cpu:?}: new work goes to shard {fill}", self.id);
        }
        self.fill = fill;
        if let Some(c) = &mut self.control {
            c.set_fill(Some(self.fill));
        }
        let topo = &self.topo;
        let queues: Vec<balance::QueueLoad> = self
            .owner
            .queues()
            .map(|s| {
                let st = &s.q.stats;
                balance::QueueLoad {
                    id: s.q.id,
                    traffic: st.published + st.delivered + st.acked + st.get,
                    movable: s.quorum.is_none()
                        && topo.queue(s.q.id).is_some_and(|d| {
                            d.exclusive.is_none() && !crate::broker::args::wants_client_local(&d.args)
                        }),
                }
            })
            .collect();
        if let Some((queue, to)) = self.balancer.tick(self.id, cpu, &queues) {
            log::info!(
                "shard {} is busy: moving queue {} to shard {to}",
                self.id,
                queue.0
            );
            self.out.to_shard(
                0,
                Item::Control(crate::owner::ControlMsg::MoveQueue { queue, to }),
            );
        }
        self.step(now);
    }

    /// A queue move holds so many items that connections must stop
    /// reading until it completes (see [`moves::HELD_MAX`]).
    pub fn moves_congested(&self) -> bool {
        self.moves.over_hold_limit()
    }

    /// The broker a connection's session talks to, for one batch.
    pub fn client<'a>(&'a mut self, conn: &'a mut ConnState, now: u64) -> Client<'a> {
        Client { hub: self, conn, now }
    }

    pub fn new_conn_id(&mut self) -> ConnId {
        let n = self.next_conn;
        self.next_conn += 1;
        ConnId::new(self.id, n)
    }

    /// xorshift64*: server-generated names need uniqueness, not secrecy.
    pub fn random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// `prefix` + 22 url-safe base64 characters, as RabbitMQ names
    /// `amq.gen-…` queues and `amq.ctag-…` consumer tags.
    pub fn unique_name(&mut self, prefix: &str) -> ShortStr {
        const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut s = String::with_capacity(prefix.len() + 22);
        s.push_str(prefix);
        let (mut a, mut b) = (self.random(), self.random());
        for i in 0..22 {
            let v = if i < 11 { &mut a } else { &mut b };
            s.push(ALPHABET[(*v & 63) as usize] as char);
            *v >>= 6;
        }
        ShortStr::from_string_lossy(&s)
    }

    /// Applies replicated changes and their local effects (the engines of
    /// queues this shard owns; connections of a deleted vhost or user).
    pub fn apply_changes(&mut self, changes: &[Change], now: u64) {
        for c in changes {
            // RabbitMQ closes the connections of a deleted vhost or user.
            match c {
                Change::DeleteVhost { id } => {
                    let v = self.topo.vhost_name(*id).to_string();
                    let text = format!("vhost '{v}' is deleted");
                    self.out.closes.push((CloseMatch::Vhost(v), text));
                }
                Change::DeleteUser { name } => {
                    let text = format!("user '{name}' is deleted");
                    self.out.closes.push((CloseMatch::User(name.clone()), text));
                }
                _ => {}
            }
            match c {
                Change::QueueLeader { id, .. } => {
                    self.out.moved.push(*id);
                    self.owner.quorum_moved(*id);
                }
                Change::DeclareQueue(def) if self.id == 0 && def.replicas.contains(&self.owner.node()) => {
                    let group = def.quorum_group();
                    self.out.quorum_open.push((group, def.replicas.clone()));
                }
                Change::QueueReplicas { id, replicas } if self.id == 0 => {
                    if let Some(d) = self.topo.queue(*id).filter(|d| d.is_quorum()) {
                        let me = self.owner.node();
                        if replicas.contains(&me) && !d.replicas.contains(&me) {
                            self.out.quorum_open.push((d.quorum_group(), replicas.clone()));
                        }
                        if !self.out.quorum_members.contains(&d.quorum_group()) {
                            self.out.quorum_members.push(d.quorum_group());
                        }
                    }
                }
                Change::DeleteQueue { id } if self.id == 0 => {
                    if let Some(d) = self.topo.queue(*id).filter(|d| d.is_quorum()) {
                        let group = d.quorum_group();
                        self.out.quorum_forget.push((group, *id));
                    }
                }
                _ => {}
            }
            let moved = match c {
                Change::MoveQueue { id, owner, epoch } => {
                    self.topo.queue(*id).map(|q| (*id, q.owner, *owner, *epoch))
                }
                Change::DeleteQueue { id } => {
                    self.moves.forget(*id);
                    None
                }
                _ => None,
            };
            self.topo.apply(c);
            self.owner.apply_change(&self.topo, c, &mut self.out, now);
            if let Some((queue, from, to, epoch)) = moved {
                self.queue_moved(queue, from, to, epoch, now);
            }
        }
    }

    /// Handles one item addressed to this shard.
    pub fn handle_item(&mut self, item: Item, now: u64) {
        let Some(item) = self.intercept(item, now) else {
            return;
        };
        let (topo, owner, out) = (&self.topo, &mut self.owner, &mut self.out);
        match item {
            Item::Publish {
                queue,
                msg,
                confirm,
                publisher,
            } => owner.publish_item(topo, out, queue, msg, confirm, publisher, now),
            Item::Forward(f) => out.forwards.push(f),
            Item::Remote { node, queue, op } => owner.remote_op(out, node, queue, op),
            Item::RemoteReply(r) => out.remote_replies.push(r),
            Item::Settle { queue, seq, how } => owner.settle(topo, out, queue, seq, how, now),
            Item::Written { queue, consumer, n } => owner.written(queue, consumer, n),
            Item::Credit { queue, consumer, n } => owner.credit(out, queue, consumer, n),
            Item::DropConsumer { queue, consumer } => owner.drop_consumer(out, queue, consumer, now),
            Item::Event { conn, ev } => out.events.push((conn, ev)),
            Item::Adopt(a) => out.adopted.push(a),
            Item::QueueOp { queue, name, ch, op } => owner.queue_op(topo, out, queue, name, ch, op, now),
            Item::DeclareCounts { queue, ch, name } => owner.declare_counts(topo, out, queue, ch, name, now),
            Item::OwnerDelete {
                op,
                queue,
                if_unused,
                if_empty,
            } => {
                let result = owner.owner_delete(topo, out, queue, if_unused, if_empty, now);
                out.to_shard(0, Item::OwnerDeleted { op, result });
            }
            Item::AdminQueue { queue, action, reply } => {
                let _ = reply.try_send(owner.admin_queue(topo, out, queue, action, now));
            }
            Item::Barrier { ch, token } => owner.barrier(ch, token),
            Item::BarrierDone { ch, token } => self.barrier_done(ch, token),
            Item::Via { dest, item } => out.to_shard(dest, *item),
            Item::Topology(changes) => {
                self.apply_changes(&changes, now);
                self.out.to_shard(0, Item::TopologyApplied(self.id));
            }
            Item::Control(msg) => {
                if let Some(c) = &mut self.control {
                    c.submit(msg);
                }
            }
            Item::TopologyApplied(shard) => {
                if let Some(c) = &mut self.control {
                    c.topology_applied(shard);
                }
            }
            Item::OwnerDeleted { op, result } => {
                if let Some(c) = &mut self.control {
                    c.owner_deleted(op, result);
                }
            }
            Item::MoveStep { epoch } => {
                if let Some(c) = &mut self.control {
                    c.move_step(epoch);
                }
            }
            Item::ExpectQueue { .. } | Item::QueueFence { .. } | Item::QueueArrives(_) | Item::Moved(_) => {
                debug_assert!(false, "the move protocol takes these");
            }
        }
    }

    /// The work a batch of input or items left: this shard's own items,
    /// the control plane's next actions, store writes and dispatch of the
    /// queues that changed — until nothing is left. Run it after every
    /// batch, so one ring push carries a whole batch's items.
    pub fn step(&mut self, now: u64) {
        loop {
            let local = std::mem::take(&mut self.out.items[self.id as usize]);
            if !local.is_empty() {
                for item in local {
                    self.handle_item(item, now);
                }
                continue;
            }
            if self.run_control(now) {
                continue;
            }
            if !self.owner.run_step(&self.topo, &mut self.out, now) {
                break;
            }
        }
    }

    /// Carries out the control plane's ready actions; whether there were any.
    fn run_control(&mut self, now: u64) -> bool {
        let mut any = false;
        loop {
            let Some(control) = &mut self.control else {
                return any;
            };
            let Some(action) = control.poll(&self.topo) else {
                return any;
            };
            any = true;
            match action {
                Action::Apply(changes) => self.apply_changes(&changes, now),
                Action::Send(shard, item) => self.out.to_shard(shard, item),
                a @ (Action::Reply(..) | Action::AdminReply(..)) => self.release(a),
                Action::Hold(a) => self.out.held.push(*a),
                // A node alone: given once the group leads (see `visible`).
                a @ Action::WhenLed(..) => self.out.held.push(a),
                Action::SyncLog(file) => self.out.log_syncs.push(file),
                Action::Propose(p) => self.out.proposals.push(p),
            }
        }
    }

    /// Gives an answer of the control plane ([`Action::Reply`] or
    /// [`Action::AdminReply`]; one it held too, see [`Outbox::held`]).
    pub fn release(&mut self, answer: Action) {
        match answer {
            Action::Reply(ch, reply) => self.out.to_conn(ch.conn, Event::Reply { ch, reply }),
            Action::AdminReply(tx, r) => {
                let _ = tx.try_send(r);
            }
            other => debug_assert!(false, "not an answer: {}", std::any::type_name_of_val(&other)),
        }
    }

    /// A committed entry of the cluster's metadata log (shard 0, in log
    /// order); see [`ControlService::replicated`]. Returns whether it was
    /// accepted.
    pub fn replicated(
        &mut self,
        mine: bool,
        token: u64,
        base: u64,
        next_ids: [u64; 3],
        changes: Vec<Change>,
        now: u64,
    ) -> bool {
        let accepted = match &mut self.control {
            Some(c) => c.replicated(mine, token, base, next_ids, changes),
            None => false,
        };
        self.step(now);
        accepted
    }

    /// Queues a message for the control plane (shard 0; taken at the next
    /// step).
    pub fn submit_control(&mut self, msg: crate::owner::ControlMsg) {
        if let Some(c) = &mut self.control {
            c.submit(msg);
        }
    }

    /// An item for a shard (this one's is handled at the next step).
    pub fn out_to_shard(&mut self, shard: ShardId, item: Item) {
        self.out.to_shard(shard, item);
    }

    /// An event for a connection of any shard (sent there if not this one).
    pub fn send_event(&mut self, conn: ConnId, ev: Event) {
        self.out.to_conn(conn, ev);
    }

    /// A message another node forwarded for local queue `queue` (shard 0):
    /// enqueued by its owner as from [`ConnId::FORWARDED`], whose confirm
    /// (sequence `seq`) comes back as an event for that connection. False
    /// if the queue is not (or no longer) here.
    pub fn forwarded(&mut self, queue: QueueId, msg: crate::message::Message, seq: u64) -> bool {
        let Some(owner) = self.topo.queue(queue).filter(|q| q.node == 0).map(|q| q.owner) else {
            return false;
        };
        let ch = ChannelRef {
            conn: ConnId::FORWARDED,
            channel: 0,
            epoch: 0,
        };
        self.out.to_shard(
            owner,
            Item::Publish {
                queue,
                msg,
                confirm: Some((ch, seq)),
                publisher: ConnId::FORWARDED,
            },
        );
        true
    }

    /// A proposal of this node could not be committed.
    pub fn propose_failed(&mut self, token: u64, error: crate::protocol::AmqpError, now: u64) {
        if let Some(c) = &mut self.control {
            c.propose_failed(token, error);
        }
        self.step(now);
    }

    /// The topology log sync asked for in [`Outbox::log_syncs`] is done.
    pub fn log_synced(&mut self, ok: bool, now: u64) {
        if let Some(c) = &mut self.control {
            c.persisted(ok);
        }
        self.step(now);
    }

    /// Starts a barrier for a channel: every shard (this one included)
    /// answers once what the channel sent before is applied and synced.
    pub fn start_barrier(&mut self, ch: ChannelRef) {
        let token = self.next_barrier;
        self.next_barrier += 1;
        self.barriers.insert(token, (ch, self.nshards));
        for d in 0..self.nshards {
            self.out.to_shard(d as ShardId, Item::Barrier { ch, token });
        }
    }

    /// A shard finished its part of a barrier.
    fn barrier_done(&mut self, ch: ChannelRef, token: u64) {
        let done = match self.barriers.get_mut(&token) {
            Some((_, left)) => {
                *left -= 1;
                *left == 0
            }
            None => false,
        };
        if done {
            self.barriers.remove(&token);
            self.out.to_conn(
                ch.conn,
                Event::Reply {
                    ch,
                    reply: Reply::BarrierDone,
                },
            );
        }
    }

    /// Takes what the next sync must cover.
    pub fn take_sync(&mut self) -> SyncBatch {
        self.owner.take_sync()
    }

    /// [`Hub::take_sync`] with the ack logs (at shutdown).
    pub fn take_sync_all(&mut self) -> SyncBatch {
        self.owner.take_sync_all()
    }

    /// A sync is done; `failed`: the queues whose files failed to sync.
    pub fn synced(&mut self, batch_waiters: Vec<crate::owner::SyncWaiter>, failed: &[QueueId], now: u64) {
        self.owner.synced(batch_waiters, failed, &mut self.out);
        self.step(now);
    }

    /// TTL expiry and `x-expires`, every 100 ms or so.
    pub fn sweep(&mut self, now: u64) {
        self.owner.sweep(&self.topo, &mut self.out, now);
        self.step(now);
    }

    /// An event whose connection is gone: give back what it holds (an
    /// unacked delivery is requeued, a consumer dropped, window credit
    /// returned).
    /// Sends an item for a queue to where the queue is served now: its
    /// owner shard here, or its node.
    pub fn to_queue(&mut self, queue: QueueId, item: Item) {
        match self.topo.queue(queue).map(|q| (q.owner, q.node)) {
            Some((_, node)) if node != 0 => {
                if let Some(op) = remote_op_of(item) {
                    self.out.to_shard(0, Item::Remote { node, queue, op });
                }
            }
            Some((owner, _)) => self.out.to_shard(owner, item),
            None => {}
        }
    }

    pub fn orphan(&mut self, ev: Event) {
        let mut give_back = |queue: QueueId, item: Item| self.to_queue(queue, item);
        match ev {
            Event::Deliver(d) => {
                if d.needs_ack {
                    give_back(
                        d.queue,
                        Item::Settle {
                            queue: d.queue,
                            seq: d.seq,
                            how: crate::broker::request::Settle::Requeue,
                        },
                    );
                }
                if d.tracked {
                    give_back(
                        d.queue,
                        Item::Written {
                            queue: d.queue,
                            consumer: d.consumer,
                            n: 1,
                        },
                    );
                }
            }
            Event::Reply { reply, .. } => match reply {
                Reply::GetOk {
                    queue,
                    entry,
                    needs_ack: true,
                    ..
                } => give_back(
                    queue,
                    Item::Settle {
                        queue,
                        seq: entry.seq,
                        how: crate::broker::request::Settle::Requeue,
                    },
                ),
                Reply::ConsumeOk { queue, consumer } => {
                    give_back(queue, Item::DropConsumer { queue, consumer })
                }
                _ => {}
            },
            _ => {}
        }
    }
}

/// The give-back items of [`Hub::orphan`] as operations on a queue of
/// another node.
fn remote_op_of(item: Item) -> Option<crate::owner::RemoteOp> {
    use crate::owner::RemoteOp;
    match item {
        Item::Settle { seq, how, .. } => Some(RemoteOp::Settle { seq, how }),
        Item::Written { consumer, n, .. } => Some(RemoteOp::Written { consumer, n }),
        Item::DropConsumer { consumer, .. } => Some(RemoteOp::Drop { consumer }),
        _ => None,
    }
}
