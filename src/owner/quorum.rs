//! The owner's side of quorum queues. A quorum queue's contents change
//! only when its Raft group applies an entry: a publish waits in `pending`
//! until the end of the step, then goes to the group as a proposal (and is
//! confirmed once committed); acks, drops and returns likewise. On the
//! node that leads the group, the engine mirrors the replicated state and
//! delivers; elsewhere it stays empty. Sequences are the group's message
//! indices, so a delivery names the same message on every replica.

use super::RemoteOp;
use super::effects::{Effects, QuorumProposal};
use super::service::{Owner, dead_letter};
use super::slot::QueueSlot;
use crate::broker::deadletter::with_delivery_count;
use crate::broker::request::Settle;
use crate::broker::topology::Topology;
use crate::ids::{ChannelRef, QueueId};
use crate::message::Message;
use crate::queue::{DeadReason, Queue};
use crate::session::Event;

impl Owner {
    /// The end-of-step proposal of one quorum queue: its pending
    /// publishes, settles and returns.
    pub(super) fn propose_quorum(slot: &mut QueueSlot, fx: &mut impl Effects) {
        let Some(qs) = &mut slot.quorum else { return };
        if slot.pending.is_empty() && qs.settles.is_empty() && qs.returns.is_empty() {
            return;
        }
        let mut p = QuorumProposal {
            group: qs.group,
            queue: slot.q.id,
            settles: std::mem::take(&mut qs.settles),
            returns: std::mem::take(&mut qs.returns),
            enqueue: Vec::with_capacity(slot.pending.len()),
            confirms: Vec::new(),
        };
        slot.pending_bytes = 0;
        qs.proposed += slot.pending.len() as u64;
        for (msg, confirm) in slot.pending.drain(..) {
            p.enqueue.push(msg);
            p.confirms.extend(confirm);
        }
        fx.propose_quorum(p);
    }

    /// A settlement of a quorum queue's delivery: an ack or a drop is
    /// proposed as a settle; a requeue as a return (the message stays out
    /// of the engine until the return is committed and its delivery count
    /// grown), unless it reaches `x-delivery-limit`: then it is
    /// dead-lettered (reason `delivery_limit`) and settled.
    pub(super) fn settle_quorum(
        &mut self,
        topo: &Topology,
        fx: &mut impl Effects,
        queue: QueueId,
        seq: u64,
        how: Settle,
        now: u64,
    ) {
        let (dirty, store_dirty, slot) = self.parts(queue);
        // A sequence names the same message on every replica: an ack or a
        // drop of a delivery the previous leader made settles it here too
        // (it may come before its consumer carried over).
        let taken = slot.q.take_delivery(seq).or_else(|| match how {
            Settle::Ack | Settle::Reject { requeue: false } => slot.q.take_ready(seq),
            _ => None,
        });
        let Some(mut e) = taken else {
            return;
        };
        let qs = slot.quorum.as_mut().expect("a quorum queue");
        match how {
            Settle::Ack => qs.settles.push(seq),
            Settle::Reject { requeue: false } => {
                qs.settles.push(seq);
                dead_letter(slot, &e.msg, DeadReason::Rejected, topo, fx, now);
            }
            Settle::Reject { requeue: true } | Settle::Requeue => {
                let count = qs.counts.get(&seq).copied().unwrap_or(0) as i64 + 1;
                if qs.delivery_limit.is_some_and(|l| count > l) {
                    qs.settles.push(seq);
                    qs.counts.remove(&seq);
                    dead_letter(slot, &e.msg, DeadReason::DeliveryLimit, topo, fx, now);
                } else {
                    e.redelivered = true;
                    qs.returns.push(seq);
                    qs.returning.insert(seq, e);
                }
            }
        }
        Self::mark_store_dirty(store_dirty, slot);
        Self::mark_dirty(dirty, slot);
    }

    /// Messages a quorum queue's group committed, at sequences `first..`.
    pub fn quorum_enqueued(
        &mut self,
        topo: &Topology,
        fx: &mut impl Effects,
        queue: QueueId,
        first: u64,
        msgs: Vec<Message>,
        now: u64,
    ) {
        let Some(slot) = self.queues.get_mut(&queue) else {
            return;
        };
        if !slot.quorum.as_ref().is_some_and(|q| q.active) {
            return;
        }
        for (i, msg) in msgs.into_iter().enumerate() {
            if !slot.may_expire && msg.ttl().is_some() {
                slot.may_expire = true;
                self.sweep_kick = true;
            }
            let expires_at = slot.q.expiry_for(msg.ttl(), now);
            slot.q.publish_seq(first + i as u64, msg, false, expires_at);
        }
        if slot.q.config().overflow_drops_head() && slot.q.is_over_limit() {
            let (_, store_dirty, slot) = self.parts(queue);
            Self::with_sink(store_dirty, slot, topo, fx, now, |q, sink| {
                q.dispatch(now, sink);
                q.trim(sink)
            });
        }
        let (dirty, _, slot) = self.parts(queue);
        Self::mark_dirty(dirty, slot);
    }

    /// `n` messages this node proposed to the queue were answered
    /// (committed or refused): the gets that waited for them are served.
    pub fn quorum_answered(
        &mut self,
        topo: &Topology,
        fx: &mut impl Effects,
        queue: QueueId,
        n: u64,
        now: u64,
    ) {
        let Some(qs) = self.queues.get_mut(&queue).and_then(|s| s.quorum.as_mut()) else {
            return;
        };
        qs.answered += n;
        let mut ready = Vec::new();
        // Held gets go to the leader the metadata names now (it may have
        // changed while they waited); to this node's engine if it leads.
        let leader = topo.queue(queue).map(|d| d.node);
        while qs.remote_gets.front().is_some_and(|g| g.0 <= qs.answered) {
            let (_, node, op) = qs.remote_gets.pop_front().expect("a held get");
            match (leader, op) {
                (
                    Some(0),
                    RemoteOp::Queue {
                        ch,
                        op: crate::owner::QueueOp::Get { no_ack },
                        ..
                    },
                ) if qs.active => ready.push((ch, no_ack)),
                (Some(l), op) if l != 0 => fx.to_node(l, queue, op),
                (_, op) => fx.to_node(node, queue, op),
            }
        }
        while let Some(&(ch, no_ack, until)) = qs.gets.front() {
            if until > qs.answered {
                break;
            }
            qs.gets.pop_front();
            ready.push((ch, no_ack));
        }
        for (ch, no_ack) in ready {
            self.serve_get(topo, fx, queue, ch, no_ack, now);
        }
    }

    /// An operation of one of this node's channels on a queue of another
    /// node, sent there; a `basic.get` of a quorum queue this node
    /// replicates first waits until the publishes this node proposed before
    /// it are answered, so that the channel reads its own publishes at the
    /// leader too.
    pub fn remote_op(&mut self, fx: &mut impl Effects, node: u64, queue: QueueId, op: RemoteOp) {
        if let RemoteOp::Queue {
            op: crate::owner::QueueOp::Get { .. },
            ..
        } = &op
            && let Some(slot) = self.queues.get_mut(&queue)
        {
            let unproposed = slot.pending.len() as u64;
            if let Some(qs) = slot.quorum.as_mut() {
                let until = qs.proposed + unproposed;
                if qs.answered < until {
                    qs.remote_gets.push_back((until, node, op));
                    return;
                }
            }
        }
        fx.to_node(node, queue, op);
    }

    /// Whether a get of the queue must wait for this node's proposals
    /// (see [`super::QuorumSlot::proposed`]); if so it is kept.
    pub(super) fn quorum_get_waits(&mut self, queue: QueueId, ch: ChannelRef, no_ack: bool) -> bool {
        let Some(slot) = self.queues.get_mut(&queue) else {
            return false;
        };
        let unproposed = slot.pending.len() as u64;
        let Some(qs) = slot.quorum.as_mut().filter(|q| q.active) else {
            return false;
        };
        let until = qs.proposed + unproposed;
        if qs.answered >= until {
            return false;
        }
        qs.gets.push_back((ch, no_ack, until));
        true
    }

    /// Returns a quorum queue's group committed: (sequence, delivery
    /// count now). The leader puts the messages back, with their count.
    pub fn quorum_returned(&mut self, queue: QueueId, idx: Vec<(u64, u32)>) {
        let Some(slot) = self.queues.get_mut(&queue) else {
            return;
        };
        let Some(qs) = slot.quorum.as_mut() else { return };
        for (seq, count) in idx {
            qs.counts.insert(seq, count);
            if let Some(mut e) = qs.returning.remove(&seq) {
                e.msg = with_delivery_count(&e.msg, count);
                slot.q.put_back(e);
            }
        }
        Self::mark_dirty(&mut self.dirty, slot);
    }

    /// A proposal of a quorum queue's returns and settles failed (this
    /// node may have lost the lead, or a majority): the returned messages
    /// go back to the engine at once, their count unchanged; the settles
    /// go in the next proposal while this engine serves (`retry`: the
    /// group did not answer in time). Returns the settles it does not
    /// keep: they are for the next leader. (Failed publishes were nacked.)
    pub fn quorum_failed(
        &mut self,
        queue: QueueId,
        returns: Vec<u64>,
        settles: Vec<u64>,
        retry: bool,
    ) -> Vec<u64> {
        let Some(slot) = self.queues.get_mut(&queue) else {
            return Vec::new();
        };
        let Some(qs) = slot.quorum.as_mut().filter(|q| q.active) else {
            return settles;
        };
        let (settles, left) = if retry {
            (settles, Vec::new())
        } else {
            (Vec::new(), settles)
        };
        let retry = !settles.is_empty();
        qs.settles.extend(settles);

        let mut back = Vec::new();
        for seq in returns {
            if let Some(e) = qs.returning.remove(&seq) {
                back.push(e);
            }
        }
        if retry {
            Self::mark_store_dirty(&mut self.store_dirty, slot);
        }
        if back.is_empty() {
            return left;
        }
        for e in back {
            slot.q.put_back(e);
        }
        Self::mark_dirty(&mut self.dirty, slot);
        left
    }

    /// Settles a quorum queue's group committed.
    pub fn quorum_settled(&mut self, queue: QueueId, idx: &[u64]) {
        if let Some(qs) = self.queues.get_mut(&queue).and_then(|s| s.quorum.as_mut()) {
            for i in idx {
                qs.counts.remove(i);
            }
        }
    }

    /// This node now leads the queue's group: its engine is rebuilt from
    /// the replicated state (every message may have been delivered by the
    /// previous leader: all are marked redelivered). False if it already
    /// served (or the queue is gone).
    pub fn quorum_activate(
        &mut self,
        topo: &Topology,
        queue: QueueId,
        msgs: impl Iterator<Item = (u64, Message, u32)>,
        now: u64,
    ) -> bool {
        let window = self.cfg.consumer_window;
        let Some(slot) = self.queues.get_mut(&queue) else {
            return false;
        };
        if slot.quorum.as_ref().is_some_and(|q| q.active) {
            return false;
        }
        let Some(def) = topo.queue(queue) else {
            return false;
        };
        let (cfg, extras) = crate::broker::args::queue_settings(
            &def.args,
            topo.policy_for(def.vhost, def.name.as_bytes(), true),
        );
        // Consumers that attached while this node did not lead yet (a new
        // queue's first election) received nothing: they carry over.
        let waiting: Vec<crate::queue::ConsumerSpec> = slot.q.consumers().map(|c| c.spec.clone()).collect();
        slot.q = Queue::with_config(queue, window, cfg);
        for spec in waiting {
            let _ = slot.q.add_consumer(spec);
        }
        slot.extras = extras;
        let mut counts = std::collections::HashMap::new();
        for (seq, msg, count) in msgs {
            let msg = if count > 0 {
                counts.insert(seq, count);
                with_delivery_count(&msg, count)
            } else {
                msg
            };
            slot.may_expire |= msg.ttl().is_some();
            let expires_at = slot.q.expiry_for(msg.ttl(), now);
            slot.q.publish_seq(seq, msg, true, expires_at);
        }
        let qs = slot.quorum.as_mut().expect("a quorum queue");
        qs.counts = counts;
        qs.returning.clear();
        qs.settles.clear();
        qs.returns.clear();
        qs.active = true;
        log::info!("quorum queue '{}': this node leads it now", slot.name);
        Self::mark_dirty(&mut self.dirty, slot);
        true
    }

    /// This node no longer leads the queue's group: the engine is emptied,
    /// its consumers with it. They are not cancelled: once the metadata
    /// names the new leader (`Event::QueueMoved`), each carries on there
    /// with the deliveries its channel holds; what was delivered and is
    /// not held any more is redelivered by the new leader.
    /// Returns the settles it had not proposed yet: they are for the next
    /// leader.
    pub fn quorum_deactivate(&mut self, fx: &mut impl Effects, queue: QueueId) -> Vec<u64> {
        let window = self.cfg.consumer_window;
        let Some(slot) = self.queues.get_mut(&queue) else {
            return Vec::new();
        };
        if !slot.quorum.as_ref().is_some_and(|q| q.active) {
            return Vec::new();
        }
        for conn in std::mem::take(&mut slot.throttled) {
            fx.to_conn(conn, Event::Throttle { queue, on: false });
        }
        let cfg = slot.q.config().clone();
        slot.q = Queue::with_config(queue, window, cfg);
        let qs = slot.quorum.as_mut().expect("a quorum queue");
        qs.active = false;
        qs.returning.clear();
        qs.returns.clear();
        // Gets that waited on this leader: answered from its (now empty)
        // engine, as a get that reaches a follower is.
        for (ch, _, _) in std::mem::take(&mut qs.gets) {
            fx.to_conn(
                ch.conn,
                Event::Reply {
                    ch,
                    reply: crate::broker::request::Reply::GetEmpty,
                },
            );
        }
        log::info!("quorum queue '{}': this node no longer leads it", slot.name);
        std::mem::take(&mut qs.settles)
    }

    /// The metadata recorded a new leader for the queue: its consumers on
    /// every node carry on there (`Event::QueueMoved`). Those this node's
    /// idle engine held go quietly.
    pub fn quorum_moved(&mut self, queue: QueueId) {
        let Some(slot) = self.queues.get_mut(&queue) else {
            return;
        };
        if slot.quorum.as_ref().is_some_and(|q| !q.active) {
            for c in slot.q.consumer_refs() {
                slot.q.cancel_consumer(c);
            }
        }
    }

    /// A quorum queue's delivery count, for `basic.get` (which shows it
    /// even at 0, as RabbitMQ does).
    pub(super) fn quorum_count(slot: &QueueSlot, seq: u64) -> Option<u32> {
        slot.quorum
            .as_ref()
            .map(|q| q.counts.get(&seq).copied().unwrap_or(0))
    }

    /// This node no longer replicates the queue (its replicas changed):
    /// its slot goes. Returns the settles it had not proposed (see
    /// [`Owner::quorum_deactivate`]).
    pub fn quorum_drop(&mut self, fx: &mut impl Effects, queue: QueueId) -> Vec<u64> {
        let left = self.quorum_deactivate(fx, queue);
        self.remove_engine(queue, fx);
        left
    }

    /// The quorum queues of a group held here.
    pub fn quorum_queues(&self, group: u32) -> Vec<QueueId> {
        self.queues
            .values()
            .filter(|s| s.quorum.as_ref().is_some_and(|q| q.group == group))
            .map(|s| s.q.id)
            .collect()
    }
}
