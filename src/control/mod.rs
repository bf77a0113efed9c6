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

use crate::broker::control::{ControlPlane, Plan, Requester};
use crate::broker::request::Reply;
use crate::broker::topology::{Change, Topology};
use crate::ids::{ChannelRef, ConnId, QueueId, ShardId};
use crate::owner::{ControlMsg, Item};
use crate::protocol::AmqpError;
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
}

impl std::fmt::Debug for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::Apply(c) => f.debug_tuple("Apply").field(c).finish(),
            Action::Send(s, i) => f.debug_tuple("Send").field(s).field(i).finish(),
            Action::Reply(ch, r) => f.debug_tuple("Reply").field(ch).field(r).finish(),
            Action::AdminReply(_, r) => f.debug_tuple("AdminReply").field(r).finish(),
            Action::SyncLog(_) => f.write_str("SyncLog"),
        }
    }
}

/// One step of an operation.
#[derive(Debug)]
enum Stage {
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
    /// Persist (if durable), apply, broadcast, wait for every shard.
    Commit(Vec<Change>),
}

#[derive(Debug, PartialEq, Eq)]
enum Wait {
    Nothing,
    Persist,
    Acks(usize),
    OwnerDeleted(u64),
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
            self.apply_and_broadcast(changes);
        } else {
            log::error!("a sync of the topology log failed; durable changes are refused until a restart");
            self.log_failed = true;
            self.finish(Err(AmqpError::internal("cannot sync the topology log")));
        }
    }

    /// A shard applied the last broadcast.
    pub fn topology_applied(&mut self) {
        if let Some(op) = &mut self.op
            && let Wait::Acks(n) = op.wait
        {
            op.wait = if n > 1 { Wait::Acks(n - 1) } else { Wait::Nothing };
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
                match self.plane.plan(topo, who, req) {
                    Err(e) => self.actions.push_back(Action::Reply(ch, Reply::Error(e))),
                    Ok(Plan::Reply(r)) => self.actions.push_back(Action::Reply(ch, r)),
                    Ok(Plan::Apply { changes, reply }) => {
                        self.begin(Answer::Channel(ch), Some(reply), [Stage::Commit(changes)]);
                    }
                    Ok(Plan::DeclareExisting { queue, owner, name }) => {
                        let (to, item) = via(ch.shard(), owner, Item::DeclareCounts { queue, ch, name });
                        self.actions.push_back(Action::Send(to, item));
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
            ControlMsg::Admin { user, op, reply } => match admin::stages(&mut self.plane, topo, &user, op) {
                Ok(stages) => self.begin(Answer::Admin(reply), None, stages),
                Err(e) => self.actions.push_back(Action::AdminReply(reply, Err(e))),
            },
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
            Stage::OwnerDelete {
                queue,
                owner,
                via: through,
                if_unused,
                if_empty,
            } => {
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
                }
            }
            Stage::Commit(changes) => self.commit(topo, changes),
        }
    }

    fn commit(&mut self, topo: &Topology, changes: Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        let durable: Vec<&Change> = changes.iter().filter(|c| is_durable(topo, c)).collect();
        if durable.is_empty() || self.log.is_none() {
            self.apply_and_broadcast(changes);
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

    fn apply_and_broadcast(&mut self, changes: Vec<Change>) {
        for d in 1..self.nshards {
            self.actions
                .push_back(Action::Send(d as ShardId, Item::Topology(changes.clone())));
        }
        self.actions.push_front(Action::Apply(changes));
        if let Some(op) = &mut self.op
            && self.nshards > 1
        {
            op.wait = Wait::Acks(self.nshards - 1);
        }
    }

    fn finish(&mut self, result: Result<(), AmqpError>) {
        let Some(op) = self.op.take() else { return };
        match (op.answer, result) {
            (Answer::Channel(ch), Ok(())) => {
                if let Some(r) = op.reply {
                    self.actions.push_back(Action::Reply(ch, r));
                }
            }
            (Answer::Channel(ch), Err(e)) => self.actions.push_back(Action::Reply(ch, Reply::Error(e))),
            (Answer::Admin(tx), r) => self.actions.push_back(Action::AdminReply(tx, r)),
            (Answer::Nobody, _) => {}
        }
    }
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
