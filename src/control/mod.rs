//! The control plane (shard 0 only): the single writer of the topology.
//!
//! Requests are handled one at a time, so topology changes are serialized.
//! A change is planned ([`crate::broker::control::ControlPlane`]), written
//! to the topology log and synced if durable, applied here, broadcast to
//! every shard, and answered only once every shard has applied it. A
//! queue delete first asks the queue's owner (which checks `if-unused` /
//! `if-empty` and counts the messages), through the requester's shard so
//! it arrives behind that channel's publishes.
//!
//! Sans-IO: messages and completions come in ([`ControlService::submit`],
//! [`ControlService::persisted`], [`ControlService::topology_applied`],
//! [`ControlService::owner_deleted`]); [`Action`]s come out of
//! [`ControlService::poll`], and the runtime (or the simulation) carries
//! them out.

mod admin;
mod install;
mod moves;

use crate::broker::control::{ControlPlane, Plan, Requester};
use crate::broker::request::Reply;
use crate::broker::topology::{Change, Topology};
use crate::ids::{ChannelRef, ConnId, QueueId, ShardId};
use crate::owner::{ControlMsg, Item};
use crate::protocol::{AmqpError, ShortStr};
use crate::storage::Syncable;
use crate::storage::topolog::{TopoLog, is_durable};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::mpsc::SyncSender;

/// What the runtime must do for the control plane.
pub enum Action {
    /// Apply these changes on shard 0 (topology, then the engines of the
    /// queues it owns).
    Apply(Vec<Change>),
    /// Send an item to a shard (shard 0 included).
    Send(ShardId, Item),
    /// Answer a channel.
    Reply(ChannelRef, Reply),
    /// Answer the management plane.
    AdminReply(SyncSender<Result<(), AmqpError>>, Result<(), AmqpError>),
    /// Sync the topology log, off the reactor, then call
    /// [`ControlService::persisted`].
    SyncLog(Arc<dyn Syncable>),
    /// Clustered: the answer ([`Action::Reply`] or [`Action::AdminReply`])
    /// of an operation whose change the cluster committed, to give once
    /// every running member of the cluster applied it too. As in
    /// RabbitMQ, whose metadata transactions commit on every running
    /// node, a queue declared on one node then takes publishes on any
    /// other: a publish there that found no queue yet would be dropped
    /// as unroutable and confirmed.
    Hold(Box<Action>),
    /// Clustered, inside [`Action::Hold`]: the answer to the declare of a
    /// quorum queue, to give once the queue's Raft group (here, its id)
    /// has a leader, as RabbitMQ answers once the queue's Raft cluster
    /// started. A publish right after the declare-ok then finds a leader
    /// to confirm it.
    WhenLed(u32, Box<Action>),
    /// Clustered: append these changes to the metadata log. Every node
    /// (this one included) hands the committed entry back through
    /// [`ControlService::replicated`]; a proposal that cannot be committed
    /// comes back through [`ControlService::propose_failed`].
    Propose(Proposal),
}

/// Changes planned on this node, for the cluster's metadata log.
#[derive(Debug, Clone)]
pub struct Proposal {
    /// This node's operation, resumed when the entry comes back.
    pub token: u64,
    /// How many commands the cluster had accepted when this was planned:
    /// the entry is rejected (everywhere alike) if another was accepted
    /// in between, and the operation is planned again.
    pub base: u64,
    /// The planner's next ids after these changes.
    pub next_ids: [u64; 3],
    pub changes: Vec<Change>,
}

impl std::fmt::Debug for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::Apply(c) => f.debug_tuple("Apply").field(c).finish(),
            Action::Send(s, i) => f.debug_tuple("Send").field(s).field(i).finish(),
            Action::Reply(ch, r) => f.debug_tuple("Reply").field(ch).field(r).finish(),
            Action::AdminReply(_, r) => f.debug_tuple("AdminReply").field(r).finish(),
            Action::SyncLog(_) => f.write_str("SyncLog"),
            Action::Propose(p) => f.debug_tuple("Propose").field(p).finish(),
            Action::Hold(a) => f.debug_tuple("Hold").field(a).finish(),
            Action::WhenLed(g, a) => f.debug_tuple("WhenLed").field(g).field(a).finish(),
        }
    }
}

/// One step of an operation.
#[derive(Debug)]
enum Stage {
    /// Plan a request (again: its first plan lost a race in the cluster).
    Plan(ControlMsg),
    /// Plan a management operation again (likewise).
    PlanAdmin { user: String, op: crate::admin::AdminOp },
    /// Ask the owner to delete a queue (conditions checked there); waits
    /// for its answer.
    OwnerDelete {
        queue: QueueId,
        owner: ShardId,
        via: ShardId,
        if_unused: bool,
        if_empty: bool,
    },
    /// Commit the deletion of a queue and what goes with it (bindings,
    /// auto-delete exchanges), computed when this stage runs.
    DeleteQueue(QueueId),
    /// Record that quorum queues' leader is now this node (its Raft id),
    /// for those the topology still places elsewhere.
    /// Queues, this node's id, and whether to record it even where the
    /// metadata names it already (a new term: consumers must carry on).
    SetLeader(Vec<QueueId>, u64, bool),
    /// Persist (if durable), apply, broadcast, wait for every shard.
    Commit(Vec<Change>),
    /// Tell shard `to` to expect `queue` (move `epoch`, from shard
    /// `from`), and wait until it holds the queue's items.
    Expect {
        queue: QueueId,
        to: ShardId,
        from: ShardId,
        epoch: u64,
    },
    /// Wait until the new shard of move `epoch` has the queue whole.
    AwaitMove(u64),
}

#[derive(Debug, PartialEq, Eq)]
enum Wait {
    Nothing,
    Persist,
    /// Until every shard applied every broadcast so far.
    Acks,
    OwnerDeleted(u64),
    /// Clustered: until the metadata log hands back proposal `token`.
    Replicated(u64),
    /// Until the new shard of move `epoch` answers `MoveStep`.
    Move(u64),
}

enum Answer {
    Channel(ChannelRef),
    Admin(SyncSender<Result<(), AmqpError>>),
    Nobody,
}

struct Op {
    answer: Answer,
    stages: VecDeque<Stage>,
    wait: Wait,
    /// A channel's reply on success.
    reply: Option<Reply>,
    /// Changes persisted, waiting for the sync before they are applied.
    committing: Option<Vec<Change>>,
    /// Clustered: the stage that planned the changes being proposed, run
    /// again if the proposal is rejected (another node changed the
    /// topology first).
    replan: Option<Stage>,
    /// Clustered: a change of this operation was committed (its answer
    /// is held: [`Action::Hold`]).
    committed: bool,
    /// The Raft group of a quorum queue it declared (its answer waits for
    /// a leader: [`Action::WhenLed`]).
    quorum_group: Option<u32>,
}

/// Shard 0's state as a member of a cluster.
#[derive(Debug, Default)]
struct Clustered {
    /// Commands accepted so far (the `base` of the next proposal).
    accepted: u64,
    /// The ids committed entries used so far. The planner's own may run
    /// ahead (a proposal that lost a race keeps its ids used here).
    committed_ids: [u64; 3],
}

/// Shard 0's control plane. See the module documentation.
pub struct ControlService {
    plane: ControlPlane,
    nshards: usize,
    log: Option<TopoLog>,
    /// A write or sync of the topology log failed: its contents can no
    /// longer be trusted, so durable changes are refused until a restart.
    log_failed: bool,
    inbox: VecDeque<ControlMsg>,
    op: Option<Op>,
    actions: VecDeque<Action>,
    next_token: u64,
    /// Broadcast items not yet answered by `TopologyApplied`.
    unacked: usize,
    /// Broadcasts sent so far, and how many of them each shard applied
    /// (shard 0's entry unused: it applies its own at once).
    broadcasts: u64,
    applied_by: Vec<u64>,
    /// Set once this node is a member of a cluster: changes go through
    /// the metadata log instead of the topology log.
    cluster: Option<Clustered>,
    /// No new operation starts (a node seeding a cluster: its topology is
    /// being copied into the cluster's first entry).
    paused: bool,
    /// `MoveStep` answers that came before their operation waited for
    /// them (moves' epochs).
    move_steps: Vec<u64>,
}

impl Clustered {
    fn raise(&mut self, ids: [u64; 3]) {
        for (c, n) in self.committed_ids.iter_mut().zip(ids) {
            *c = (*c).max(n);
        }
    }
}

impl ControlService {
    /// The control plane over `topo` (recovered, or fresh), writing durable
    /// changes to `log` (none: nothing is durable, as in tests).
    pub fn new(nshards: usize, log: Option<TopoLog>, topo: &Topology) -> ControlService {
        let mut plane = ControlPlane::default();
        plane.resume_ids(topo);
        ControlService {
            plane,
            nshards,
            log,
            log_failed: false,
            inbox: VecDeque::new(),
            op: None,
            actions: VecDeque::new(),
            next_token: 1,
            unacked: 0,
            broadcasts: 0,
            applied_by: vec![0; nshards],
            cluster: None,
            paused: false,
            move_steps: Vec::new(),
        }
    }

    /// Stops starting new operations (or starts again); see
    /// [`ControlService::settled`] for when those in flight are done.
    pub fn pause(&mut self, paused: bool) {
        self.paused = paused;
    }

    /// Back outside a cluster (seeding or joining one failed).
    pub fn leave_cluster(&mut self) {
        self.cluster = None;
        self.paused = false;
        if let Some(op) = &self.op
            && matches!(op.wait, Wait::Replicated(_))
        {
            self.finish(Err(AmqpError::internal("this node left its cluster")));
        }
    }

    /// From now on, changes go through the cluster's metadata log
    /// ([`Action::Propose`]); `accepted` commands were applied before.
    /// `tokens`: where this boot's proposal tokens start (random: an entry
    /// proposed before a restart must not match an operation after it;
    /// token 0 is the seed's).
    pub fn enter_cluster(&mut self, accepted: u64, tokens: u64) {
        self.cluster = Some(Clustered {
            accepted,
            // What this node's topology used: its own, before the cluster
            // (seeding), or the cluster's, replayed.
            committed_ids: self.plane.next_ids(),
        });
        self.next_token = self.next_token.max(tokens.max(1));
        self.plane.fill = None;
    }

    /// Whether this node is a member of a cluster.
    pub fn is_clustered(&self) -> bool {
        self.cluster.is_some()
    }

    /// Commands the cluster accepted so far (0 when not clustered).
    pub fn accepted(&self) -> u64 {
        self.cluster.as_ref().map_or(0, |c| c.accepted)
    }

    /// Clustered: the next ids as of the committed entries applied here;
    /// an id below them was used by a committed change (outside a
    /// cluster: the planner's).
    pub fn committed_ids(&self) -> [u64; 3] {
        match &self.cluster {
            Some(cl) => cl.committed_ids,
            None => self.plane.next_ids(),
        }
    }

    /// The planner's next ids (carried in proposals and snapshots).
    /// Where quorum queues' replicas may go (see
    /// [`ControlPlane::quorum_nodes`]).
    pub fn set_quorum_nodes(&mut self, me: u64, nodes: Vec<u64>) {
        self.plane.quorum_nodes = Some((me, nodes));
    }

    /// Spread new classic queues over this many shards (see
    /// [`ControlPlane::balance_over`]).
    /// Where new classic queues go (see [`ControlPlane::fill`]); not in a
    /// cluster, where a classic queue stays with its declarer.
    pub fn set_fill(&mut self, shard: Option<ShardId>) {
        self.plane.fill = shard.filter(|_| self.cluster.is_none());
    }

    pub fn set_balance_over(&mut self, shards: usize) {
        self.plane.balance_over = shards;
    }

    pub fn next_ids(&self) -> [u64; 3] {
        self.plane.next_ids()
    }

    /// A committed entry of the metadata log, in log order, on every node.
    /// `mine`: this node proposed it (its `token` is this node's).
    /// Returns whether it was accepted (planned against the current
    /// topology); every node decides alike.
    pub fn replicated(
        &mut self,
        mine: bool,
        token: u64,
        base: u64,
        next_ids: [u64; 3],
        changes: Vec<Change>,
    ) -> bool {
        let Some(cl) = &mut self.cluster else {
            debug_assert!(false, "replicated entry on a node outside a cluster");
            return false;
        };
        let waiting = mine
            && self
                .op
                .as_ref()
                .is_some_and(|op| op.wait == Wait::Replicated(token));
        if base != cl.accepted {
            if waiting {
                let op = self.op.as_mut().expect("waiting");
                op.wait = Wait::Nothing;
                op.committing = None;
                match op.replan.take() {
                    Some(stage) => op.stages.push_front(stage),
                    None => self.finish(Err(AmqpError::internal(
                        "another node changed the topology at the same time: try again",
                    ))),
                }
            }
            return false;
        }
        cl.accepted += 1;
        cl.raise(next_ids);
        self.plane.raise_ids(next_ids);
        if waiting {
            let op = self.op.as_mut().expect("waiting");
            op.wait = Wait::Nothing;
            op.replan = None;
            op.committed = true;
            let planned = op.committing.take().unwrap_or(changes);
            self.apply_own(planned);
        } else {
            self.apply_and_broadcast(changes);
        }
        true
    }

    /// The first entry of a cluster this node seeded came back: it holds
    /// this node's own topology, already applied here.
    pub fn seeded(&mut self, next_ids: [u64; 3]) {
        if let Some(cl) = &mut self.cluster {
            cl.accepted += 1;
            cl.raise(next_ids);
            self.plane.raise_ids(next_ids);
        }
        self.paused = false;
    }

    /// Applies a snapshot of the cluster's metadata (`accepted` commands):
    /// the node's topology becomes the snapshot's (see [`install`]).
    pub fn install(&mut self, topo: &Topology, accepted: u64, next_ids: [u64; 3], changes: Vec<Change>) {
        if let Some(cl) = &mut self.cluster {
            cl.accepted = accepted;
            cl.raise(next_ids);
        }
        self.plane.raise_ids(next_ids);
        // Only what differs: what this node serves and the snapshot holds
        // too keeps its messages.
        self.apply_and_broadcast(install::changes_to(topo, changes));
        // An operation waiting for an entry the snapshot covers will not
        // see it: it fails (its change may or may not be in the snapshot).
        if let Some(op) = &self.op
            && matches!(op.wait, Wait::Replicated(_))
        {
            self.finish(Err(AmqpError::internal(
                "the cluster's snapshot replaced this node's metadata: try again",
            )));
        }
    }

    /// Forgets the whole topology, on this node only (one about to join a
    /// cluster: its own data is reset, as `rabbitmqctl join_cluster` does).
    /// Queue owners drop their queues and stores.
    pub fn reset(&mut self, topo: &Topology) {
        self.apply_and_broadcast(reset_changes(topo));
    }

    /// Proposal `token` could not be committed (no leader, no majority, a
    /// timeout): its operation fails with `error`. (A timed-out proposal
    /// may still be committed later; it is then applied as another
    /// node's.)
    pub fn propose_failed(&mut self, token: u64, error: AmqpError) {
        if self
            .op
            .as_ref()
            .is_some_and(|op| op.wait == Wait::Replicated(token))
        {
            self.finish(Err(error));
        }
    }

    /// Queues a message for the control plane.
    pub fn submit(&mut self, msg: ControlMsg) {
        self.inbox.push_back(msg);
    }

    /// Nothing in progress and nothing queued.
    pub fn is_idle(&self) -> bool {
        self.op.is_none() && self.inbox.is_empty() && self.actions.is_empty()
    }

    /// Broadcasts sent so far (each one change set, in order).
    pub fn broadcasts(&self) -> u64 {
        self.broadcasts
    }

    /// How many of the first broadcasts every shard applied.
    pub fn applied_everywhere(&self) -> u64 {
        self.applied_by[1..]
            .iter()
            .copied()
            .min()
            .unwrap_or(self.broadcasts)
    }

    /// Idle, and every shard applied every broadcast.
    pub fn settled(&self) -> bool {
        self.is_idle() && self.unacked == 0
    }

    /// Nothing in progress (queued messages may wait: see
    /// [`ControlService::pause`]), and every shard applied every broadcast.
    pub fn quiet(&self) -> bool {
        self.op.is_none() && self.actions.is_empty() && self.unacked == 0
    }

    /// The next thing to do, planning against `topo` (which must reflect
    /// every [`Action::Apply`] returned before).
    pub fn poll(&mut self, topo: &Topology) -> Option<Action> {
        loop {
            if let Some(a) = self.actions.pop_front() {
                return Some(a);
            }
            match &self.op {
                Some(op) if op.wait != Wait::Nothing => return None,
                Some(_) => self.advance(topo),
                None if self.paused => return None,
                None => {
                    let msg = self.inbox.pop_front()?;
                    self.start(msg, topo);
                }
            }
        }
    }

    /// The topology log sync asked for with [`Action::SyncLog`] is done.
    pub fn persisted(&mut self, ok: bool) {
        let Some(op) = &mut self.op else { return };
        if op.wait != Wait::Persist {
            return;
        }
        op.wait = Wait::Nothing;
        let changes = op.committing.take().unwrap_or_default();
        if ok {
            self.apply_own(changes);
        } else {
            log::error!("a sync of the topology log failed; durable changes are refused until a restart");
            self.log_failed = true;
            self.finish(Err(AmqpError::internal("cannot sync the topology log")));
        }
    }

    /// Shard `shard` applied the oldest broadcast it had not applied.
    pub fn topology_applied(&mut self, shard: ShardId) {
        if let Some(n) = self.applied_by.get_mut(shard as usize) {
            *n = (*n + 1).min(self.broadcasts);
        }
        self.unacked = self.unacked.saturating_sub(1);
        if self.unacked == 0
            && let Some(op) = &mut self.op
            && op.wait == Wait::Acks
        {
            op.wait = Wait::Nothing;
        }
    }

    /// A queue's owner answered [`Item::OwnerDelete`] `token`.
    pub fn owner_deleted(&mut self, token: u64, result: Result<u32, AmqpError>) {
        let Some(op) = &mut self.op else { return };
        if op.wait != Wait::OwnerDeleted(token) {
            return;
        }
        op.wait = Wait::Nothing;
        match result {
            Ok(n) => {
                if let Some(Reply::QueueDeleteOk { messages }) = &mut op.reply {
                    *messages = n;
                }
            }
            Err(e) => self.finish(Err(e)),
        }
    }

    fn start(&mut self, msg: ControlMsg, topo: &Topology) {
        match msg {
            ControlMsg::Request { ch, vhost, user, req } => {
                let who = Requester {
                    vhost,
                    conn: ch.conn,
                    shard: ch.shard(),
                    user: &user,
                };
                let again = self.cluster.is_some().then(|| ControlMsg::Request {
                    ch,
                    vhost,
                    user: user.clone(),
                    req: req.clone(),
                });
                match self.plane.plan(topo, who, req) {
                    Err(e) => self.actions.push_back(Action::Reply(ch, Reply::Error(e))),
                    Ok(Plan::Reply(r)) => self.actions.push_back(Action::Reply(ch, r)),
                    Ok(Plan::Apply { changes, reply }) => {
                        self.begin(Answer::Channel(ch), Some(reply), [Stage::Commit(changes)]);
                        if let Some(op) = &mut self.op {
                            op.replan = again.map(Stage::Plan);
                        }
                    }
                    Ok(Plan::DeclareExisting { queue, owner, name }) => {
                        self.declare_existing(topo, ch, queue, owner, name);
                    }
                    Ok(Plan::DeleteQueue {
                        queue,
                        owner,
                        if_unused,
                        if_empty,
                    }) => self.begin(
                        Answer::Channel(ch),
                        Some(Reply::QueueDeleteOk { messages: 0 }),
                        [
                            Stage::OwnerDelete {
                                queue,
                                owner,
                                via: ch.shard(),
                                if_unused,
                                if_empty,
                            },
                            Stage::DeleteQueue(queue),
                        ],
                    ),
                }
            }
            ControlMsg::ConnectionClosed(conn) => {
                let stages = exclusive_queues(topo, conn)
                    .into_iter()
                    .flat_map(|(queue, owner)| {
                        [
                            Stage::OwnerDelete {
                                queue,
                                owner,
                                via: 0,
                                if_unused: false,
                                if_empty: false,
                            },
                            Stage::DeleteQueue(queue),
                        ]
                    });
                self.begin(Answer::Nobody, None, stages);
            }
            ControlMsg::AutoDeleted(queue) => {
                self.begin(Answer::Nobody, None, [Stage::DeleteQueue(queue)]);
            }
            ControlMsg::QueueLeader { queues, node, force } => {
                self.begin(Answer::Nobody, None, [Stage::SetLeader(queues, node, force)]);
            }
            ControlMsg::NodeRestarted(me) => {
                // What a restarted cluster node held only for its clients
                // and connections (as RabbitMQ drops a node's transient
                // and exclusive queues when it restarts).
                let stages = topo
                    .queues()
                    .filter(|q| (q.node == 0 || q.node == me) && (!q.durable || q.exclusive.is_some()))
                    .map(|q| Stage::DeleteQueue(q.id))
                    .collect::<Vec<_>>();
                self.begin(Answer::Nobody, None, stages);
            }
            ControlMsg::MoveQueue { queue, to } => match self.move_stages(topo, queue, to) {
                Ok(stages) => self.begin(Answer::Nobody, None, stages),
                Err(e) => log::debug!("queue {queue:?} stays: {e}"),
            },
            ControlMsg::Admin {
                user,
                op: crate::admin::AdminOp::MoveQueue { vhost, name, shard },
                reply,
            } => {
                let found = topo
                    .vhost(&vhost)
                    .and_then(|v| topo.queue_by_name(v.id, name.as_bytes()))
                    .map(|q| q.id);
                let stages = match found {
                    Some(queue) => self.move_stages(topo, queue, shard),
                    None => Err(AmqpError::not_found(format!(
                        "no queue '{name}' in vhost '{vhost}'"
                    ))),
                };
                let _ = user;
                match stages {
                    Ok(stages) => self.begin(Answer::Admin(reply), None, stages),
                    Err(e) => self.actions.push_back(Action::AdminReply(reply, Err(e))),
                }
            }
            ControlMsg::Admin { user, op, reply } => {
                let again = self.cluster.is_some().then(|| Stage::PlanAdmin {
                    user: user.clone(),
                    op: op.clone(),
                });
                match admin::stages(&mut self.plane, topo, &user, op) {
                    Ok(stages) => {
                        self.begin(Answer::Admin(reply), None, stages);
                        if let Some(op) = &mut self.op {
                            op.replan = again;
                        }
                    }
                    Err(e) => self.actions.push_back(Action::AdminReply(reply, Err(e))),
                }
            }
        }
    }

    fn begin(&mut self, answer: Answer, reply: Option<Reply>, stages: impl IntoIterator<Item = Stage>) {
        debug_assert!(self.op.is_none(), "one operation at a time");
        self.op = Some(Op {
            answer,
            stages: stages.into_iter().collect(),
            wait: Wait::Nothing,
            reply,
            committing: None,
            replan: None,
            committed: false,
            quorum_group: None,
        });
    }

    /// Runs the current operation's next stage, or finishes it.
    fn advance(&mut self, topo: &Topology) {
        let op = self.op.as_mut().expect("an operation");
        let Some(stage) = op.stages.pop_front() else {
            self.finish(Ok(()));
            return;
        };
        match stage {
            Stage::Plan(msg) => self.replan(msg, topo),
            Stage::PlanAdmin { user, op: admin_op } => {
                let again = Stage::PlanAdmin {
                    user: user.clone(),
                    op: admin_op.clone(),
                };
                match admin::stages(&mut self.plane, topo, &user, admin_op) {
                    Ok(stages) => {
                        let op = self.op.as_mut().expect("an operation");
                        for s in stages.into_iter().rev() {
                            op.stages.push_front(s);
                        }
                        op.replan = Some(again);
                    }
                    Err(e) => self.finish(Err(e)),
                }
            }
            Stage::OwnerDelete {
                queue,
                owner,
                via: through,
                if_unused,
                if_empty,
            } => {
                // A queue on another node: its owner is not here. Deleted
                // outright (its node drops it with the change); the
                // conditions cannot be checked from here.
                if topo.queue(queue).is_some_and(|q| q.node != 0) {
                    if if_unused || if_empty {
                        self.finish(Err(AmqpError::not_implemented(
                            "queue.delete with if-unused or if-empty on a queue of another node of the cluster is not supported: delete it on its node",
                        )));
                    }
                    return;
                }
                let token = self.next_token;
                self.next_token += 1;
                op.wait = Wait::OwnerDeleted(token);
                let item = Item::OwnerDelete {
                    op: token,
                    queue,
                    if_unused,
                    if_empty,
                };
                let (to, item) = via(through, owner, item);
                self.actions.push_back(Action::Send(to, item));
            }
            Stage::DeleteQueue(queue) => {
                if topo.queue(queue).is_some() {
                    let changes = self.plane.delete_queue_changes(topo, queue);
                    op.stages.push_front(Stage::Commit(changes));
                    op.replan = Some(Stage::DeleteQueue(queue));
                }
            }
            Stage::SetLeader(queues, me, force) => {
                let changes: Vec<Change> = queues
                    .iter()
                    .filter(|q| {
                        topo.queue(**q)
                            .is_some_and(|d| force || (d.node != 0 && d.node != me))
                    })
                    // "Here": the metadata log names this node instead.
                    .map(|&id| Change::QueueLeader { id, node: 0 })
                    .collect();
                if !changes.is_empty() {
                    op.stages.push_front(Stage::Commit(changes));
                    op.replan = Some(Stage::SetLeader(queues, me, false));
                }
            }
            Stage::Commit(changes) => self.commit(topo, changes),
            s @ (Stage::Expect { .. } | Stage::AwaitMove(_)) => self.advance_move(s),
        }
    }

    /// Plans a request again, for the operation in progress (its answer
    /// stays; what it changes and replies is recomputed).
    fn replan(&mut self, msg: ControlMsg, topo: &Topology) {
        let ControlMsg::Request { ch, vhost, user, req } = msg else {
            debug_assert!(false, "only channel requests are planned again");
            return;
        };
        let who = Requester {
            vhost,
            conn: ch.conn,
            shard: ch.shard(),
            user: &user,
        };
        let again = ControlMsg::Request {
            ch,
            vhost,
            user: user.clone(),
            req: req.clone(),
        };
        match self.plane.plan(topo, who, req) {
            Err(e) => self.finish(Err(e)),
            Ok(Plan::Reply(r)) => {
                // Another node made the same change first (the same
                // declare): answer as the topology answers now.
                let op = self.op.as_mut().expect("an operation");
                op.reply = Some(r);
                op.stages.clear();
            }
            Ok(Plan::Apply { changes, reply }) => {
                let op = self.op.as_mut().expect("an operation");
                op.reply = Some(reply);
                op.stages.push_front(Stage::Commit(changes));
                op.replan = Some(Stage::Plan(again));
            }
            Ok(Plan::DeclareExisting { queue, owner, name }) => {
                // The queue now exists: its owner answers the declare.
                self.op = None;
                self.declare_existing(topo, ch, queue, owner, name);
            }
            Ok(Plan::DeleteQueue { .. }) => {
                debug_assert!(false, "a delete is planned again from its DeleteQueue stage");
                self.finish(Err(AmqpError::internal("queue.delete planned again")));
            }
        }
    }

    /// `declare-ok` for a queue that exists: its owner answers with its
    /// counts, on whichever node it is (a node that is down: 404, as
    /// RabbitMQ answers for a durable queue whose home node is down).
    fn declare_existing(
        &mut self,
        topo: &Topology,
        ch: ChannelRef,
        queue: QueueId,
        owner: ShardId,
        name: ShortStr,
    ) {
        if let Some(node) = topo.queue(queue).map(|q| q.node).filter(|n| *n != 0) {
            let op = crate::owner::RemoteOp::Queue {
                name,
                ch,
                op: crate::owner::QueueOp::Counts,
            };
            self.actions
                .push_back(Action::Send(0, Item::Remote { node, queue, op }));
            return;
        }
        let (to, item) = via(ch.shard(), owner, Item::DeclareCounts { queue, ch, name });
        self.actions.push_back(Action::Send(to, item));
    }

    fn commit(&mut self, topo: &Topology, changes: Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        if let Some(cl) = &self.cluster {
            let token = self.next_token;
            self.next_token += 1;
            let proposal = Proposal {
                token,
                base: cl.accepted,
                next_ids: self.plane.next_ids(),
                changes: changes.clone(),
            };
            let op = self.op.as_mut().expect("an operation");
            op.committing = Some(changes);
            op.wait = Wait::Replicated(token);
            self.actions.push_back(Action::Propose(proposal));
            return;
        }
        let durable: Vec<&Change> = changes.iter().filter(|c| is_durable(topo, c)).collect();
        if durable.is_empty() || self.log.is_none() {
            self.apply_own(changes);
            return;
        }
        if self.log_failed {
            self.finish(Err(AmqpError::internal(
                "the topology log failed earlier; durable changes are refused until a restart",
            )));
            return;
        }
        let log = self.log.as_mut().expect("checked");
        if let Err(e) = log.append(&durable) {
            // The append was rolled back: the log is as it was, and later
            // appends (once the disk has room) land where they should.
            log::error!("cannot write the topology log: {e}");
            self.finish(Err(AmqpError::internal(format!(
                "cannot write the topology log: {e}"
            ))));
            return;
        }
        let file = log.file();
        let op = self.op.as_mut().expect("an operation");
        op.committing = Some(changes);
        op.wait = Wait::Persist;
        self.actions.push_back(Action::SyncLog(file));
    }

    /// Applies the operation's own changes (not another node's, nor an
    /// install): a quorum queue among them makes its answer wait for the
    /// queue's group (`Op::quorum_group`).
    fn apply_own(&mut self, changes: Vec<Change>) {
        if let Some(op) = &mut self.op {
            op.quorum_group = op.quorum_group.or_else(|| {
                changes.iter().find_map(|c| match c {
                    Change::DeclareQueue(d) if d.is_quorum() => Some(d.quorum_group()),
                    _ => None,
                })
            });
        }
        self.apply_and_broadcast(changes);
    }

    fn apply_and_broadcast(&mut self, changes: Vec<Change>) {
        for d in 1..self.nshards {
            self.actions
                .push_back(Action::Send(d as ShardId, Item::Topology(changes.clone())));
        }
        self.unacked += self.nshards - 1;
        self.broadcasts += 1;
        self.actions.push_front(Action::Apply(changes));
        if let Some(op) = &mut self.op
            && self.unacked > 0
            && op.wait == Wait::Nothing
        {
            op.wait = Wait::Acks;
        }
    }

    fn finish(&mut self, result: Result<(), AmqpError>) {
        let Some(op) = self.op.take() else { return };
        let answer = match (op.answer, result) {
            (Answer::Channel(ch), Ok(())) => op.reply.map(|r| Action::Reply(ch, r)),
            (Answer::Channel(ch), Err(e)) => Some(Action::Reply(ch, Reply::Error(e))),
            (Answer::Admin(tx), r) => Some(Action::AdminReply(tx, r)),
            (Answer::Nobody, _) => None,
        };
        if let Some(a) = answer {
            self.actions.push_back(match (op.committed, op.quorum_group) {
                // A node alone: no other member to wait for.
                (false, Some(group)) => Action::WhenLed(group, Box::new(a)),
                (false, None) => a,
                (true, None) => Action::Hold(Box::new(a)),
                (true, Some(group)) => Action::Hold(Box::new(Action::WhenLed(group, Box::new(a)))),
            });
        }
    }
}

/// The changes that empty `topo`.
fn reset_changes(topo: &Topology) -> Vec<Change> {
    let mut changes: Vec<Change> = topo.vhosts().map(|v| Change::DeleteVhost { id: v.id }).collect();
    changes.extend(topo.users().map(|u| Change::DeleteUser { name: u.name.clone() }));
    changes
}

/// An item for `dest` sent behind what shard `through` sent there before:
/// through it, unless it is this shard (0) or the destination.
fn via(through: ShardId, dest: ShardId, item: Item) -> (ShardId, Item) {
    if through == 0 || through == dest {
        (dest, item)
    } else {
        (
            through,
            Item::Via {
                dest,
                item: Box::new(item),
            },
        )
    }
}

/// The exclusive queues of a connection that closed, with their owners.
fn exclusive_queues(topo: &Topology, conn: ConnId) -> Vec<(QueueId, ShardId)> {
    topo.queues()
        .filter(|q| q.exclusive == Some(conn))
        .map(|q| (q.id, q.owner))
        .collect()
}

#[cfg(test)]
mod tests;
