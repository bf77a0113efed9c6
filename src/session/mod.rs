//! Per-connection and per-channel AMQP state machines. Sans-IO: bytes and
//! [`Event`]s in, bytes (in [`Session::output`]) and calls on a [`Broker`]
//! out. The runtime owns the socket and the clock; this layer owns protocol
//! correctness: handshake, tuning, publish assembly, delivery tags, prefetch
//! credit, confirms, transactions, and mapping errors to `channel.close` /
//! `connection.close` with RabbitMQ's codes.

mod auth;
mod channel;
mod confirms;
mod connection;
pub(crate) mod erl;
mod publish;
mod table;
mod timers;
mod unacked;

pub use auth::{Credentials, MECHANISMS, parse_response};
pub use channel::{ChannelSummary, ConsumerSummary};
pub use confirms::{ConfirmRun, ConfirmTracker};
pub use connection::{Phase, Session, SessionConfig, Status};
pub use timers::{CLOSE_TIMEOUT_MS, LINGER_MAX_MS};
pub use unacked::{Outstanding, UnackedMap};

use crate::broker::reply_to;
use crate::broker::request::{Reply, Request, Settle};
use crate::ids::{ChannelRef, ConnId, ConsumerRef, QueueId, VhostId};
use crate::message::Message;
use crate::protocol::{AmqpError, ShortStr};
use crate::queue::Delivery;

/// What a publish did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PublishOutcome {
    /// At least one queue took the message (or will: remote queues count).
    pub routed: bool,
    /// Queue acknowledgements the confirm must still wait for (remote queues,
    /// durable storage). 0 = confirm now.
    pub pending_confirms: u32,
    /// A queue refused the message (e.g. `x-overflow = reject-publish`):
    /// the confirm is a nack.
    pub rejected: bool,
}

/// The services a session needs from the broker. Implemented by the runtime
/// (and by fakes in tests). Calls never block; anything that needs another
/// shard completes later as an [`Event`].
pub trait Broker {
    /// Checks a user's password; `None` when the user was authenticated by
    /// other means (a verified client certificate), so only its existence
    /// and where it may connect from are checked. Errors are 403
    /// ACCESS_REFUSED.
    fn check_login(&mut self, user: &str, password: Option<&[u8]>) -> Result<(), AmqpError>;
    /// Resolves `connection.open`'s vhost for the user (530 NOT_ALLOWED if
    /// missing or not permitted).
    fn open_vhost(&mut self, user: &str, vhost: &str) -> Result<VhostId, AmqpError>;
    /// Routes and enqueues a message. `confirm` is the publish's confirm seq
    /// when the channel is in confirm mode; `mandatory`, its flag (the
    /// session returns what it can tell is unrouted; a reply to another
    /// node's reply name that finds no consumer there comes back later,
    /// as `Event::Returned`). Errors close the channel.
    fn publish(
        &mut self,
        ch: ChannelRef,
        vhost: VhostId,
        msg: Message,
        confirm: Option<u64>,
        mandatory: bool,
    ) -> Result<PublishOutcome, AmqpError>;
    /// Checks that a publish could be routed from this exchange (404 if
    /// missing, 403 if internal); used by transactions, which route at commit.
    fn exchange_exists(&mut self, vhost: VhostId, exchange: &[u8]) -> Result<(), AmqpError>;
    /// Settles a delivery on its queue.
    fn settle(&mut self, queue: QueueId, seq: u64, how: Settle);
    /// Starts an asynchronous request; the answer arrives as [`Event::Reply`].
    fn request(&mut self, ch: ChannelRef, vhost: VhostId, user: &str, req: Request);
    /// Removes a consumer without a reply (its channel is closing).
    fn drop_consumer(&mut self, queue: QueueId, consumer: ConsumerRef);
    /// Carries a consumer over to its queue's new leader (see
    /// [`Event::QueueMoved`]), with the deliveries (sequences) its channel
    /// holds from that queue; answered with [`Event::Resumed`].
    fn resume_consumer(&mut self, queue: QueueId, spec: crate::queue::ConsumerSpec, held: Vec<u64>);
    /// Reports tracked deliveries written to the socket (transport window).
    fn written(&mut self, queue: QueueId, consumer: ConsumerRef, n: u32);
    /// Grants channel-wide prefetch credit to a consumer.
    fn grant_credit(&mut self, queue: QueueId, consumer: ConsumerRef, n: u32);
    /// A fresh server-generated name: `prefix` + 22 url-safe base64 chars.
    fn unique_name(&mut self, prefix: &str) -> ShortStr;
    /// The connection is gone: its exclusive queues go with it, and the
    /// places it took in connection counts are given back.
    fn connection_closed(&mut self, conn: ConnId);
    /// A channel is opening: the place it takes in its user's channel
    /// count, held while the channel lives, or 530 NOT_ALLOWED at the
    /// user's `max-channels`.
    fn open_channel(&mut self) -> Result<Option<crate::broker::limits::Lease>, AmqpError> {
        Ok(None)
    }
    /// A quiet connection (no consumers, unacked deliveries, unconfirmed
    /// publishes or requests in flight) is about to publish or consume:
    /// should it first move to the shard that owns what it will use? If
    /// so (true), the session stops before that frame, and the runtime
    /// hands the connection over; the frame is processed there.
    fn hand_off(&mut self, _to: HandOffTarget<'_>) -> bool {
        false
    }
    /// The name a request's `reply-to: amq.rabbitmq.reply-to` becomes,
    /// for a channel whose reply consumer holds `key`.
    fn reply_name(&mut self, ch: ChannelRef, key: &[u8; reply_to::KEY_LEN]) -> ShortStr {
        reply_to::name_for(0, ch, key)
    }
    /// A channel's direct reply-to consumer started (`live`) or ended.
    fn reply_consumer(&mut self, _key: [u8; reply_to::KEY_LEN], _live: bool) {}
    /// Whether a reply name leads to a live reply consumer of this node
    /// (what a declare of it answers).
    fn reply_name_lives(&mut self, _to: reply_to::Target) -> bool {
        false
    }
    /// A declare of a reply name another node of the cluster gave out:
    /// asks that node (true), whose answer comes back as a `Reply`
    /// (declare-ok, or 404 once its reply consumer ended); false when
    /// the name is this node's, to answer here.
    fn ask_reply_name(
        &mut self,
        _ch: ChannelRef,
        _name: &ShortStr,
        _vhost: &str,
        _to: reply_to::Target,
    ) -> bool {
        false
    }
    /// Whether a reply name leads to no reply consumer, as far as this
    /// node knows: one of this node whose consumer ended (a mandatory
    /// reply to it is returned). Another node's name is taken as live.
    fn reply_name_gone(&mut self, _to: reply_to::Target) -> bool {
        false
    }
}

/// What a quiet connection is about to use, for [`Broker::hand_off`].
#[derive(Debug, Clone, Copy)]
pub enum HandOffTarget<'a> {
    Publish {
        vhost: VhostId,
        exchange: &'a [u8],
        routing_key: &'a [u8],
    },
    Consume {
        vhost: VhostId,
        queue: &'a [u8],
    },
    /// A new connection opens its first channel: the shard that takes new
    /// work now (`--queue-locator packed`), before it declares anything
    /// (an exclusive queue would tie it to where it is).
    Home,
}

/// Something that happened elsewhere in the broker, addressed to a channel of
/// this connection.
#[derive(Debug)]
pub enum Event {
    Reply {
        ch: ChannelRef,
        reply: Reply,
    },
    Deliver(Delivery),
    /// A reply published to a name this channel's direct reply-to
    /// consumer gave out (`key` is the name's).
    DirectReply {
        ch: ChannelRef,
        key: [u8; reply_to::KEY_LEN],
        msg: Message,
    },
    /// A mandatory publish found no consumer after all (a reply to another
    /// node's reply name whose consumer is gone): `basic.return` 312.
    Returned {
        ch: ChannelRef,
        msg: Message,
    },
    /// A queue took (`ok`) or refused publish `seq`.
    Confirm {
        ch: ChannelRef,
        seq: u64,
        ok: bool,
    },
    /// The queue was deleted under the consumer.
    ConsumerCancelled {
        consumer: ConsumerRef,
    },
    CreditRequest {
        queue: QueueId,
        consumer: ConsumerRef,
    },
    CreditReturn {
        queue: QueueId,
        consumer: ConsumerRef,
        n: u32,
    },
    /// Close the connection (management, shutdown).
    ForceClose {
        code: u16,
        text: String,
    },
    /// The management plane wants a fresh description (handled by the
    /// runtime; the session ignores it).
    Describe,
    /// A queue this connection publishes to is too far behind its
    /// consumers: stop (or resume) reading. Handled by the runtime.
    Throttle {
        queue: QueueId,
        on: bool,
    },
    /// A quorum queue's leader moved (to another node, or back to the
    /// same one in a new term): its consumers here carry on with the new
    /// leader, taking along the deliveries their channels still hold.
    QueueMoved {
        queue: QueueId,
    },
    /// The answer to a consumer's resumption on a queue's new leader: the
    /// deliveries it took over (`None`: the queue refused it or is gone;
    /// the consumer is cancelled).
    Resumed {
        consumer: ConsumerRef,
        queue: QueueId,
        claimed: Option<Vec<u64>>,
    },
}

impl Event {
    /// The channel the event is addressed to, if any.
    pub fn channel(&self) -> Option<ChannelRef> {
        match self {
            Event::Reply { ch, .. }
            | Event::Confirm { ch, .. }
            | Event::DirectReply { ch, .. }
            | Event::Returned { ch, .. } => Some(*ch),
            Event::Deliver(d) => Some(d.consumer.ch),
            Event::ConsumerCancelled { consumer }
            | Event::Resumed { consumer, .. }
            | Event::CreditRequest { consumer, .. }
            | Event::CreditReturn { consumer, .. } => Some(consumer.ch),
            Event::ForceClose { .. }
            | Event::Describe
            | Event::Throttle { .. }
            | Event::QueueMoved { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests;
