//! What a channel asks of the broker, and what it gets back. These cross
//! shards (a channel on shard A, the control plane on shard 0, a queue on
//! shard B), so they are plain `Send` data.

use crate::ids::{ConsumerRef, QueueId};
use crate::protocol::{AmqpError, FieldTable, ShortStr};
use crate::queue::{ConsumerSpec, Entry};
use crate::routing::ExchangeKind;

/// A channel request that completes asynchronously with a [`Reply`].
/// Queue names are already resolved from the channel's "last declared queue"
/// shortcut; vhost and connection come with the envelope.
#[derive(Clone, Debug)]
pub enum Request {
    ExchangeDeclare {
        name: ShortStr,
        kind: ExchangeKind,
        passive: bool,
        durable: bool,
        auto_delete: bool,
        internal: bool,
        args: FieldTable,
    },
    ExchangeDelete {
        name: ShortStr,
        if_unused: bool,
    },
    ExchangeBind {
        destination: ShortStr,
        source: ShortStr,
        routing_key: ShortStr,
        args: FieldTable,
    },
    ExchangeUnbind {
        destination: ShortStr,
        source: ShortStr,
        routing_key: ShortStr,
        args: FieldTable,
    },
    QueueDeclare {
        name: ShortStr,
        /// The server generated the name (`amq.gen-…`) for an empty one.
        generated: bool,
        passive: bool,
        durable: bool,
        exclusive: bool,
        auto_delete: bool,
        args: FieldTable,
    },
    QueueBind {
        queue: ShortStr,
        exchange: ShortStr,
        routing_key: ShortStr,
        args: FieldTable,
    },
    QueueUnbind {
        queue: ShortStr,
        exchange: ShortStr,
        routing_key: ShortStr,
        args: FieldTable,
    },
    QueuePurge {
        queue: ShortStr,
    },
    QueueDelete {
        queue: ShortStr,
        if_unused: bool,
        if_empty: bool,
    },
    Consume {
        queue: ShortStr,
        spec: ConsumerSpec,
    },
    Cancel {
        queue: QueueId,
        consumer: ConsumerRef,
    },
    Get {
        queue: ShortStr,
        no_ack: bool,
    },
    /// Completes once everything this channel sent before it has been
    /// applied, and synced where durable, on every shard (`tx.commit`).
    Barrier,
}

impl Request {
    /// (class id, method id) of the AMQP method that made this request, for
    /// error replies.
    pub fn method_ids(&self) -> (u16, u16) {
        match self {
            Request::ExchangeDeclare { .. } => (40, 10),
            Request::ExchangeDelete { .. } => (40, 20),
            Request::ExchangeBind { .. } => (40, 30),
            Request::ExchangeUnbind { .. } => (40, 40),
            Request::QueueDeclare { .. } => (50, 10),
            Request::QueueBind { .. } => (50, 20),
            Request::QueuePurge { .. } => (50, 30),
            Request::QueueDelete { .. } => (50, 40),
            Request::QueueUnbind { .. } => (50, 50),
            Request::Consume { .. } => (60, 20),
            Request::Cancel { .. } => (60, 30),
            Request::Get { .. } => (60, 70),
            Request::Barrier => (90, 20),
        }
    }
}

/// The answer to a [`Request`].
#[derive(Clone, Debug)]
pub enum Reply {
    ExchangeDeclareOk,
    ExchangeDeleteOk,
    ExchangeBindOk,
    ExchangeUnbindOk,
    QueueDeclareOk {
        name: ShortStr,
        messages: u32,
        consumers: u32,
    },
    QueueBindOk,
    QueueUnbindOk,
    QueuePurgeOk {
        messages: u32,
    },
    QueueDeleteOk {
        messages: u32,
    },
    ConsumeOk {
        queue: QueueId,
        consumer: ConsumerRef,
    },
    CancelOk {
        consumer: ConsumerRef,
    },
    GetOk {
        queue: QueueId,
        entry: Entry,
        remaining: u32,
        needs_ack: bool,
    },
    GetEmpty,
    BarrierDone,
    Error(AmqpError),
}

/// How a delivery is settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settle {
    Ack,
    /// `basic.reject`/`basic.nack`: requeue, or drop (dead-letter).
    Reject {
        requeue: bool,
    },
    /// Put back unconditionally (channel closed, `basic.recover`).
    Requeue,
}
