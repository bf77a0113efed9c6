//! Operations on one queue that a channel or the management plane asks of
//! its owner: consume, cancel, get, purge, counts, and the management
//! plane's get and purge.

use super::effects::Effects;
use super::item::QueueOp;
use super::service::{Owner, forget_stored, gone, record_delivery};
use crate::admin::{GetMode, PeekedMessage, QueueAction, QueueResult};
use crate::broker::request::Reply;
use crate::broker::topology::Topology;
use crate::ids::{ChannelRef, QueueId};
use crate::protocol::{AmqpError, ShortStr};
use crate::queue::ConsumeError;
use crate::session::Event;

impl Owner {
    /// A channel's operation on a queue; the answer goes to the channel.
    #[allow(clippy::too_many_arguments)]
    pub fn queue_op(
        &mut self,
        topo: &Topology,
        fx: &mut impl Effects,
        queue: QueueId,
        name: ShortStr,
        ch: ChannelRef,
        op: QueueOp,
        now: u64,
    ) {
        let reply = |fx: &mut _, r| Self::reply(fx, ch, r);
        if !self.queues.contains_key(&queue) {
            if let QueueOp::Resume { spec, .. } = op {
                let consumer = spec.cref;
                return fx.to_conn(
                    ch.conn,
                    Event::Resumed {
                        consumer,
                        queue,
                        claimed: None,
                    },
                );
            }
            let r = match op {
                QueueOp::Cancel(consumer) => Reply::CancelOk { consumer },
                _ => gone(topo, queue, &name),
            };
            return reply(fx, r);
        }
        match op {
            QueueOp::Consume(spec) => {
                let consumer = spec.cref;
                let (dirty, _, slot) = self.parts(queue);
                slot.last_used_ms = now;
                match slot.q.add_consumer(spec) {
                    Ok(()) => {
                        slot.had_consumers = true;
                        // The reply must precede the deliveries it enables.
                        reply(fx, Reply::ConsumeOk { queue, consumer });
                        Self::mark_dirty(dirty, slot);
                    }
                    Err(ConsumeError::ExclusiveInUse) => {
                        let text = format!(
                            "queue '{}' in vhost '{}' in exclusive use",
                            name,
                            topo.vhost_name(slot.vhost)
                        );
                        reply(fx, Reply::Error(AmqpError::access_refused(text)));
                    }
                }
            }
            QueueOp::Resume { spec, held } => {
                let consumer = spec.cref;
                let (dirty, _, slot) = self.parts(queue);
                slot.last_used_ms = now;
                let claimed = slot.q.resume_consumer(spec, &held).ok();
                if claimed.is_some() {
                    slot.had_consumers = true;
                    Self::mark_dirty(dirty, slot);
                }
                fx.to_conn(
                    ch.conn,
                    Event::Resumed {
                        consumer,
                        queue,
                        claimed,
                    },
                );
            }
            QueueOp::Counts => self.declare_counts(topo, fx, queue, ch, name, now),
            QueueOp::Cancel(consumer) => {
                reply(fx, Reply::CancelOk { consumer });
                self.drop_consumer(fx, queue, consumer, now);
            }
            QueueOp::Get { no_ack } => {
                if !self.quorum_get_waits(queue, ch, no_ack) {
                    self.serve_get(topo, fx, queue, ch, no_ack, now);
                }
            }
            QueueOp::Purge => {
                self.catch_up(queue, topo, fx, now);
                let (_, store_dirty, slot) = self.parts(queue);
                let purged = slot.q.purge();
                let n = purged.len().min(u32::MAX as usize) as u32;
                forget_stored(slot, purged);
                Self::mark_store_dirty(store_dirty, slot);
                reply(fx, Reply::QueuePurgeOk { messages: n });
            }
        }
    }

    /// `basic.get`: the next ready message, or get-empty.
    pub(super) fn serve_get(
        &mut self,
        topo: &Topology,
        fx: &mut impl Effects,
        queue: QueueId,
        ch: ChannelRef,
        no_ack: bool,
        now: u64,
    ) {
        let reply = |fx: &mut _, r| Self::reply(fx, ch, r);
        if !self.queues.contains_key(&queue) {
            return reply(fx, Reply::GetEmpty);
        }
        self.catch_up(queue, topo, fx, now);
        let (dirty, store_dirty, slot) = self.parts(queue);
        slot.last_used_ms = now;
        let got = Self::with_sink(store_dirty, slot, topo, fx, now, |q, sink| {
            q.get(no_ack, now, sink)
        });
        if let (Some((e, _)), Some(store)) = (&got, &mut slot.store) {
            record_delivery(store, e.loc, !no_ack, e.redelivered);
        }
        // A quorum queue's `basic.get` shows the delivery count,
        // even 0 (as RabbitMQ does); without ack it settles.
        let got = got.map(|(mut e, left)| {
            if let Some(count) = Self::quorum_count(slot, e.seq) {
                e.msg = crate::broker::deadletter::with_delivery_count(&e.msg, count);
                if no_ack && let Some(qs) = &mut slot.quorum {
                    qs.settles.push(e.seq);
                }
            }
            (e, left)
        });
        Self::mark_store_dirty(store_dirty, slot);
        Self::mark_dirty(dirty, slot);
        let r = match got {
            Some((entry, remaining)) => Reply::GetOk {
                queue,
                entry,
                remaining,
                needs_ack: !no_ack,
            },
            None => Reply::GetEmpty,
        };
        reply(fx, r);
    }

    /// `queue.declare-ok` for an existing queue, with its counts.
    pub fn declare_counts(
        &mut self,
        topo: &Topology,
        fx: &mut impl Effects,
        queue: QueueId,
        ch: ChannelRef,
        name: ShortStr,
        now: u64,
    ) {
        self.catch_up(queue, topo, fx, now);
        let counts = self.queues.get_mut(&queue).map(|s| {
            s.last_used_ms = now;
            (s.ready_count() as u32, s.q.consumer_count() as u32)
        });
        let r = match counts {
            Some((messages, consumers)) => Reply::QueueDeclareOk {
                name,
                messages,
                consumers,
            },
            None => gone(topo, queue, &name),
        };
        Self::reply(fx, ch, r);
    }

    /// A management queue operation.
    pub fn admin_queue(
        &mut self,
        topo: &Topology,
        fx: &mut impl Effects,
        queue: QueueId,
        action: QueueAction,
        now: u64,
    ) -> Result<QueueResult, AmqpError> {
        if !self.queues.contains_key(&queue) {
            return Err(AmqpError::not_found("queue deleted"));
        }
        self.catch_up(queue, topo, fx, now);
        let (dirty, store_dirty, slot) = self.parts(queue);
        let r = match action {
            QueueAction::Purge => {
                let purged = slot.q.purge();
                let n = purged.len().min(u32::MAX as usize) as u32;
                forget_stored(slot, purged);
                QueueResult::Purged(n)
            }
            QueueAction::Get { count, mode } => {
                let mut out = Vec::new();
                let mut back = Vec::new();
                let remove = mode == GetMode::Remove;
                for _ in 0..count.min(10_000) {
                    let Some((e, left)) = Self::with_sink(store_dirty, slot, topo, fx, now, |q, sink| {
                        q.get(remove, now, sink)
                    }) else {
                        break;
                    };
                    if let Some(store) = &mut slot.store {
                        record_delivery(store, e.loc, !remove, e.redelivered);
                    }
                    if remove && let Some(qs) = &mut slot.quorum {
                        qs.settles.push(e.seq);
                    }
                    let props =
                        crate::protocol::BasicProperties::decode(&e.msg.props_bytes()).unwrap_or_default();
                    out.push(PeekedMessage {
                        payload: e.msg.body().to_vec(),
                        payload_bytes: e.msg.body_len(),
                        redelivered: e.redelivered,
                        exchange: String::from_utf8_lossy(e.msg.exchange()).into_owned(),
                        routing_key: String::from_utf8_lossy(e.msg.routing_key()).into_owned(),
                        message_count: left,
                        properties: crate::admin::json::props_to_json(&props),
                    });
                    if !remove {
                        back.push(e.seq);
                    }
                }
                slot.q.requeue(back);
                QueueResult::Messages(out)
            }
        };
        Self::mark_store_dirty(store_dirty, slot);
        Self::mark_dirty(dirty, slot);
        Ok(r)
    }

    fn reply(fx: &mut impl Effects, ch: ChannelRef, reply: Reply) {
        fx.to_conn(ch.conn, Event::Reply { ch, reply });
    }
}
