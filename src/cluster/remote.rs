//! Consuming from a queue on another node: the queue operations a channel
//! sends to the queue's node (`KIND_OPS`), and the events that node sends
//! back (`KIND_EVENTS`): replies, deliveries, cancellations and credit.
//!
//! Identities travel as the consumer's node knows them (its connection ids);
//! the queue's node maps each remote connection to a local stand-in
//! (see `shard::cluster`). Encoded with postcard; a batch that does not
//! decode is refused whole.

use crate::broker::request::{Reply, Settle};
use crate::ids::{ChannelRef, ConnId, ConsumerRef, QueueId};
use crate::message::Message;
use crate::owner::QueueOp;
use crate::protocol::{AmqpError, ShortStr};
use crate::queue::{ConsumerSpec, Delivery, Entry};
use crate::session::Event;
use serde::{Deserialize, Serialize};

/// Request kind of a batch of queue operations for the queue's node.
pub const KIND_OPS: u8 = 41;
/// Request kind of a batch of events for the consumers' node.
pub const KIND_EVENTS: u8 = 42;
/// Request kind of the figures of the queues a node serves (JSON, for the
/// management plane of another node).
pub const KIND_QUEUE_FIGURES: u8 = 44;

/// A channel: connection id (on the consumer's node), channel, epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WireCh(pub u64, pub u16, pub u32);

impl From<ChannelRef> for WireCh {
    fn from(c: ChannelRef) -> Self {
        WireCh(c.conn.0, c.channel, c.epoch)
    }
}

impl WireCh {
    pub fn on(self, conn: ConnId) -> ChannelRef {
        ChannelRef {
            conn,
            channel: self.1,
            epoch: self.2,
        }
    }
    pub fn conn(self) -> ConnId {
        ConnId(self.0)
    }
}

/// A consumer: its channel and its id there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireConsumer(pub WireCh, pub u32);

impl From<ConsumerRef> for WireConsumer {
    fn from(c: ConsumerRef) -> Self {
        WireConsumer(c.ch.into(), c.id)
    }
}

impl WireConsumer {
    pub fn on(self, conn: ConnId) -> ConsumerRef {
        ConsumerRef {
            ch: self.0.on(conn),
            id: self.1,
        }
    }
}

/// A message: exchange, routing key, properties, body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireMsg(pub Vec<u8>, pub Vec<u8>, pub Vec<u8>, pub Vec<u8>);

impl From<&Message> for WireMsg {
    fn from(m: &Message) -> Self {
        WireMsg(
            m.exchange().to_vec(),
            m.routing_key().to_vec(),
            m.props().to_vec(),
            m.body().to_vec(),
        )
    }
}

impl WireMsg {
    pub fn message(&self) -> Option<Message> {
        if self.0.len() > 255 || self.1.len() > 255 {
            return None;
        }
        Some(Message::assemble(&self.0, &self.1, &self.2, &self.3).with_properties_from_raw())
    }
}

/// A queue operation of a remote channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Consume {
        name: String,
        consumer: WireConsumer,
        no_ack: bool,
        exclusive: bool,
        prefetch: u32,
        channel_limited: bool,
        priority: i32,
    },
    Cancel {
        name: String,
        consumer: WireConsumer,
    },
    Get {
        name: String,
        ch: WireCh,
        no_ack: bool,
    },
    Purge {
        name: String,
        ch: WireCh,
    },
    /// 0 ack, 1 reject+requeue, 2 reject, 3 requeue.
    Settle {
        seq: u64,
        how: u8,
    },
    Written {
        consumer: WireConsumer,
        n: u32,
    },
    Credit {
        consumer: WireConsumer,
        n: u32,
    },
    Drop {
        consumer: WireConsumer,
    },
    /// `queue.declare` of an existing queue: its counts.
    Counts {
        name: String,
        ch: WireCh,
    },
    /// A consumer carried over to a quorum queue's new leader, with the
    /// sequences its channel holds.
    Resume {
        consumer: WireConsumer,
        no_ack: bool,
        exclusive: bool,
        prefetch: u32,
        channel_limited: bool,
        priority: i32,
        held: Vec<u64>,
    },
    /// `queue.declare` of a direct reply-to name of the receiving node
    /// (sent with queue 0): declare-ok if its reply consumer lives, else
    /// 404 (the vhost for the text).
    ReplyName {
        name: String,
        ch: WireCh,
        key: [u8; crate::broker::reply_to::KEY_LEN],
        vhost: String,
    },
}

/// One entry of an ops batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpFor {
    pub queue: u64,
    pub op: Op,
}

/// An ops batch: the sender's boot id (a restarted node's connections are
/// new ones), then the operations in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpsBatch {
    pub boot: u64,
    pub ops: Vec<OpFor>,
}

pub fn settle_code(how: Settle) -> u8 {
    match how {
        Settle::Ack => 0,
        Settle::Reject { requeue: true } => 1,
        Settle::Reject { requeue: false } => 2,
        Settle::Requeue => 3,
    }
}

pub fn settle_of(code: u8) -> Option<Settle> {
    Some(match code {
        0 => Settle::Ack,
        1 => Settle::Reject { requeue: true },
        2 => Settle::Reject { requeue: false },
        3 => Settle::Requeue,
        _ => return None,
    })
}

impl Op {
    /// The operation as the local owner takes it, with the remote
    /// connection replaced by its stand-in `conn`.
    pub fn queue_op(&self, conn: ConnId) -> Option<(ShortStr, ChannelRef, QueueOp)> {
        let name = |n: &str| ShortStr::from_string_lossy(n);
        Some(match self {
            Op::Consume {
                name: n,
                consumer,
                no_ack,
                exclusive,
                prefetch,
                channel_limited,
                priority,
            } => {
                let cref = consumer.on(conn);
                (
                    name(n),
                    cref.ch,
                    QueueOp::Consume(ConsumerSpec {
                        cref,
                        no_ack: *no_ack,
                        exclusive: *exclusive,
                        prefetch: *prefetch,
                        channel_limited: *channel_limited,
                        priority: *priority,
                    }),
                )
            }
            Op::Cancel { name: n, consumer } => {
                let cref = consumer.on(conn);
                (name(n), cref.ch, QueueOp::Cancel(cref))
            }
            Op::Resume {
                consumer,
                no_ack,
                exclusive,
                prefetch,
                channel_limited,
                priority,
                held,
            } => {
                let cref = consumer.on(conn);
                let spec = ConsumerSpec {
                    cref,
                    no_ack: *no_ack,
                    exclusive: *exclusive,
                    prefetch: *prefetch,
                    channel_limited: *channel_limited,
                    priority: *priority,
                };
                (
                    ShortStr::default(),
                    cref.ch,
                    QueueOp::Resume {
                        spec,
                        held: held.clone(),
                    },
                )
            }
            Op::Get { name: n, ch, no_ack } => (name(n), ch.on(conn), QueueOp::Get { no_ack: *no_ack }),
            Op::Purge { name: n, ch } => (name(n), ch.on(conn), QueueOp::Purge),
            Op::Counts { name: n, ch } => (name(n), ch.on(conn), QueueOp::Counts),
            _ => return None,
        })
    }

    /// The remote connection a queue operation comes from.
    pub fn real_conn(&self) -> Option<ConnId> {
        match self {
            Op::Consume { consumer, .. } | Op::Cancel { consumer, .. } | Op::Resume { consumer, .. } => {
                Some(consumer.0.conn())
            }
            Op::Get { ch, .. } | Op::Purge { ch, .. } | Op::Counts { ch, .. } | Op::ReplyName { ch, .. } => {
                Some(ch.conn())
            }
            _ => None,
        }
    }

    /// The operation of a local channel on a remote queue.
    pub fn of_queue_op(name: &ShortStr, ch: ChannelRef, op: &QueueOp) -> Op {
        let name = name.as_str().into_owned();
        match op {
            QueueOp::Consume(s) => Op::Consume {
                name,
                consumer: s.cref.into(),
                no_ack: s.no_ack,
                exclusive: s.exclusive,
                prefetch: s.prefetch,
                channel_limited: s.channel_limited,
                priority: s.priority,
            },
            QueueOp::Cancel(c) => Op::Cancel {
                name,
                consumer: (*c).into(),
            },
            QueueOp::Resume { spec: s, held } => Op::Resume {
                consumer: s.cref.into(),
                no_ack: s.no_ack,
                exclusive: s.exclusive,
                prefetch: s.prefetch,
                channel_limited: s.channel_limited,
                priority: s.priority,
                held: held.clone(),
            },
            QueueOp::Get { no_ack } => Op::Get {
                name,
                ch: ch.into(),
                no_ack: *no_ack,
            },
            QueueOp::Purge => Op::Purge { name, ch: ch.into() },
            QueueOp::Counts => Op::Counts { name, ch: ch.into() },
        }
    }
}

/// An event for a channel on the consumers' node (its connection id there).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireEvent {
    /// A reply to a direct reply-to name of the receiving node.
    DirectReply {
        ch: WireCh,
        key: [u8; crate::broker::reply_to::KEY_LEN],
        msg: WireMsg,
    },
    ConsumeOk {
        ch: WireCh,
        queue: u64,
        consumer: WireConsumer,
    },
    CancelOk {
        ch: WireCh,
        consumer: WireConsumer,
    },
    GetOk {
        ch: WireCh,
        queue: u64,
        seq: u64,
        msg: WireMsg,
        redelivered: bool,
        remaining: u32,
        needs_ack: bool,
    },
    GetEmpty {
        ch: WireCh,
    },
    PurgeOk {
        ch: WireCh,
        messages: u32,
    },
    Error {
        ch: WireCh,
        code: u16,
        text: String,
        class_id: u16,
        method_id: u16,
    },
    Deliver {
        consumer: WireConsumer,
        queue: u64,
        seq: u64,
        msg: WireMsg,
        redelivered: bool,
        needs_ack: bool,
        tracked: bool,
    },
    DeclareOk {
        ch: WireCh,
        name: String,
        messages: u32,
        consumers: u32,
    },
    Cancelled {
        consumer: WireConsumer,
    },
    CreditRequest {
        queue: u64,
        consumer: WireConsumer,
    },
    CreditReturn {
        queue: u64,
        consumer: WireConsumer,
        n: u32,
    },
}

/// The event for the consumers' node, with the stand-in connection
/// replaced by the real one (`conn`, there). None: nothing to send
/// (flow control of a publisher, which stand-ins never are).
pub fn wire_event(ev: &Event, conn: ConnId) -> Option<WireEvent> {
    let ch_of = |c: ChannelRef| WireCh(conn.0, c.channel, c.epoch);
    let cons = |c: ConsumerRef| WireConsumer(ch_of(c.ch), c.id);
    Some(match ev {
        Event::Reply { ch, reply } => match reply {
            Reply::ConsumeOk { queue, consumer } => WireEvent::ConsumeOk {
                ch: ch_of(*ch),
                queue: queue.0,
                consumer: cons(*consumer),
            },
            Reply::CancelOk { consumer } => WireEvent::CancelOk {
                ch: ch_of(*ch),
                consumer: cons(*consumer),
            },
            Reply::GetOk {
                queue,
                entry,
                remaining,
                needs_ack,
            } => WireEvent::GetOk {
                ch: ch_of(*ch),
                queue: queue.0,
                seq: entry.seq,
                msg: (&entry.msg).into(),
                redelivered: entry.redelivered,
                remaining: *remaining,
                needs_ack: *needs_ack,
            },
            Reply::GetEmpty => WireEvent::GetEmpty { ch: ch_of(*ch) },
            Reply::QueueDeclareOk {
                name,
                messages,
                consumers,
            } => WireEvent::DeclareOk {
                ch: ch_of(*ch),
                name: name.as_str().into_owned(),
                messages: *messages,
                consumers: *consumers,
            },
            Reply::QueuePurgeOk { messages } => WireEvent::PurgeOk {
                ch: ch_of(*ch),
                messages: *messages,
            },
            Reply::Error(e) => WireEvent::Error {
                ch: ch_of(*ch),
                code: e.code,
                text: e.text.to_string(),
                class_id: e.class_id,
                method_id: e.method_id,
            },
            other => {
                log::warn!("a reply to a remote channel cannot be sent: {other:?}");
                return None;
            }
        },
        Event::Deliver(d) => WireEvent::Deliver {
            consumer: cons(d.consumer),
            queue: d.queue.0,
            seq: d.seq,
            msg: (&d.msg).into(),
            redelivered: d.redelivered,
            needs_ack: d.needs_ack,
            tracked: d.tracked,
        },
        Event::ConsumerCancelled { consumer }
        | Event::Resumed {
            consumer,
            claimed: None,
            ..
        } => WireEvent::Cancelled {
            consumer: cons(*consumer),
        },
        // Taken over: nothing to tell the consumer's node.
        Event::Resumed { .. } => return None,
        // Direct replies, and returns of them, go to this node's
        // connections only.
        Event::DirectReply { .. } | Event::Returned { .. } => return None,
        Event::CreditRequest { queue, consumer } => WireEvent::CreditRequest {
            queue: queue.0,
            consumer: cons(*consumer),
        },
        Event::CreditReturn { queue, consumer, n } => WireEvent::CreditReturn {
            queue: queue.0,
            consumer: cons(*consumer),
            n: *n,
        },
        Event::Confirm { .. }
        | Event::ForceClose { .. }
        | Event::Describe
        | Event::Throttle { .. }
        | Event::QueueMoved { .. } => {
            return None;
        }
    })
}

impl WireEvent {
    /// The connection it is for (on this node), and the event.
    pub fn event(self) -> Option<(ConnId, Event)> {
        let reply = |ch: WireCh, reply: Reply| {
            Some((
                ch.conn(),
                Event::Reply {
                    ch: ch.on(ch.conn()),
                    reply,
                },
            ))
        };
        match self {
            WireEvent::DirectReply { ch, key, msg } => Some((
                ch.conn(),
                Event::DirectReply {
                    ch: ch.on(ch.conn()),
                    key,
                    msg: msg.message()?,
                },
            )),
            WireEvent::ConsumeOk { ch, queue, consumer } => reply(
                ch,
                Reply::ConsumeOk {
                    queue: QueueId(queue),
                    consumer: consumer.on(ch.conn()),
                },
            ),
            WireEvent::CancelOk { ch, consumer } => reply(
                ch,
                Reply::CancelOk {
                    consumer: consumer.on(ch.conn()),
                },
            ),
            WireEvent::GetOk {
                ch,
                queue,
                seq,
                msg,
                redelivered,
                remaining,
                needs_ack,
            } => reply(
                ch,
                Reply::GetOk {
                    queue: QueueId(queue),
                    entry: Entry {
                        seq,
                        msg: msg.message()?,
                        expires_at: 0,
                        loc: None,
                        redelivered,
                    },
                    remaining,
                    needs_ack,
                },
            ),
            WireEvent::GetEmpty { ch } => reply(ch, Reply::GetEmpty),
            WireEvent::DeclareOk {
                ch,
                name,
                messages,
                consumers,
            } => reply(
                ch,
                Reply::QueueDeclareOk {
                    name: ShortStr::from_string_lossy(&name),
                    messages,
                    consumers,
                },
            ),
            WireEvent::PurgeOk { ch, messages } => reply(ch, Reply::QueuePurgeOk { messages }),
            WireEvent::Error {
                ch,
                code,
                text,
                class_id,
                method_id,
            } => reply(
                ch,
                Reply::Error(AmqpError::new(code, text).with_method(class_id, method_id)),
            ),
            WireEvent::Deliver {
                consumer,
                queue,
                seq,
                msg,
                redelivered,
                needs_ack,
                tracked,
            } => {
                let c = consumer.0.conn();
                Some((
                    c,
                    Event::Deliver(Delivery {
                        consumer: consumer.on(c),
                        queue: QueueId(queue),
                        seq,
                        msg: msg.message()?,
                        redelivered,
                        needs_ack,
                        tracked,
                        loc: None,
                    }),
                ))
            }
            WireEvent::Cancelled { consumer } => {
                let c = consumer.0.conn();
                Some((
                    c,
                    Event::ConsumerCancelled {
                        consumer: consumer.on(c),
                    },
                ))
            }
            WireEvent::CreditRequest { queue, consumer } => {
                let c = consumer.0.conn();
                Some((
                    c,
                    Event::CreditRequest {
                        queue: QueueId(queue),
                        consumer: consumer.on(c),
                    },
                ))
            }
            WireEvent::CreditReturn { queue, consumer, n } => {
                let c = consumer.0.conn();
                Some((
                    c,
                    Event::CreditReturn {
                        queue: QueueId(queue),
                        consumer: consumer.on(c),
                        n,
                    },
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivery_round_trips_with_the_real_connection() {
        let standin = ConnId::new(0, 1 << 47);
        let real = ConnId::new(1, 5);
        let d = Delivery {
            consumer: ConsumerRef {
                ch: ChannelRef {
                    conn: standin,
                    channel: 3,
                    epoch: 2,
                },
                id: 9,
            },
            queue: QueueId(4),
            seq: 77,
            msg: Message::assemble(b"", b"q", &[0, 0], b"body"),
            redelivered: true,
            needs_ack: true,
            tracked: false,
            loc: None,
        };
        let w = wire_event(&Event::Deliver(d), real).unwrap();
        let bytes = postcard::to_stdvec(&w).unwrap();
        let back: WireEvent = postcard::from_bytes(&bytes).unwrap();
        let (conn, ev) = back.event().unwrap();
        assert_eq!(conn, real);
        match ev {
            Event::Deliver(d) => {
                assert_eq!(d.consumer.ch.conn, real);
                assert_eq!(
                    (d.consumer.ch.channel, d.consumer.ch.epoch, d.consumer.id),
                    (3, 2, 9)
                );
                assert_eq!(
                    (d.queue, d.seq, d.redelivered, d.needs_ack),
                    (QueueId(4), 77, true, true)
                );
                assert_eq!(d.msg.body(), b"body");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn settle_codes_round_trip() {
        for how in [
            Settle::Ack,
            Settle::Reject { requeue: true },
            Settle::Reject { requeue: false },
            Settle::Requeue,
        ] {
            assert_eq!(settle_of(settle_code(how)), Some(how));
        }
        assert_eq!(settle_of(9), None);
    }
}
