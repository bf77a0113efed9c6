//! Channel state and the handling of every channel-level method.

use super::confirms::ConfirmTracker;
use super::connection::{Session, SessionStats, analyze_frame};
use super::erl;
use super::publish::{self, Assembly, Body, Part, PublishHead};
use super::unacked::{Outstanding, UnackedMap};
use super::{Broker, Event, HandOffTarget};
use crate::broker::reply_to;
use crate::broker::request::{Reply, Request, Settle};
use crate::ids::{ChannelRef, ConsumerRef, QueueId};
use crate::message::Message;
use crate::protocol::methods::*;
use crate::protocol::{
    AmqpError, FRAME_BODY, FRAME_HEADER, FRAME_METHOD, Method, ShortStr, parse_basic_publish,
    scan_properties, write_basic_deliver, write_basic_get_ok, write_basic_nack, write_basic_return,
    write_content, write_method_frame,
};
use crate::queue::ConsumerSpec;
use crate::routing::ExchangeKind;
use bytes::BytesMut;
use std::collections::VecDeque;

/// A consumer as its channel knows it.
#[derive(Debug, Clone)]
pub(crate) struct ChanConsumer {
    pub id: u32,
    pub tag: ShortStr,
    pub queue: QueueId,
    /// Under the channel-wide prefetch (`basic.qos global=true`).
    pub limited: bool,
    pub no_ack: bool,
    pub exclusive: bool,
    pub prefetch: u32,
    /// `x-priority`.
    pub priority: i32,
}

/// The request a channel is waiting on, and how to answer the client.
#[derive(Debug)]
pub(crate) enum Pending {
    Simple {
        nowait: bool,
    },
    Consume {
        tag: ShortStr,
        nowait: bool,
        limited: bool,
        no_ack: bool,
        exclusive: bool,
        prefetch: u32,
        priority: i32,
        /// Queues whose leader changed while the consume was on its way
        /// (`Event::QueueMoved`): if the consume's is one, the node that
        /// answers may be the old leader, so the consumer is resumed at the
        /// new one once added. Empty (no allocation) but in a failover.
        moved: Vec<QueueId>,
    },
    Cancel {
        tag: ShortStr,
        nowait: bool,
    },
    Get,
    Commit,
}

#[derive(Default)]
struct Tx {
    publishes: Vec<(Message, bool)>,
    bytes: usize,
    /// Deliveries acked, nacked or rejected in the transaction. RabbitMQ
    /// resolves delivery tags when the method arrives, even in a
    /// transaction: they leave the unacked map then (a second ack of one
    /// is an unknown tag, `multiple` covers only what was delivered before
    /// it), are settled at commit and given back at rollback.
    settles: Vec<(Outstanding, Settle)>,
}

/// One open channel. Owned by its connection's task.
pub(crate) struct Channel {
    pub cref: ChannelRef,
    /// We sent `channel.close` and await `close-ok`.
    pub closing: bool,
    pub assembly: Assembly,
    pub confirms: ConfirmTracker,
    pub confirm_dirty: bool,
    tx: Option<Tx>,
    /// The committed transactions' publishes, tracked as confirms that are
    /// never sent: RabbitMQ answers `tx.commit-ok` once every queue took
    /// them (a quorum queue's majority, another node's queue), and fails
    /// the commit if one refused.
    tx_confirms: ConfirmTracker,
    /// Some queue refused a publish of the commit under way.
    tx_refused: bool,
    /// The commit's barrier completed: `commit-ok` waits for `tx_confirms`.
    commit_barrier: bool,
    pub unacked: UnackedMap,
    next_tag: u64,
    pub consumers: Vec<ChanConsumer>,
    /// Prefetch for consumers created from now on (`global=false`).
    prefetch: u32,
    /// Channel-wide prefetch (`global=true`); 0 = none.
    global_prefetch: u32,
    /// Credits granted plus limited deliveries unacked.
    global_used: u32,
    credit_waiting: VecDeque<(QueueId, ConsumerRef)>,
    /// For the empty-queue-name shortcut.
    last_queue: Option<ShortStr>,
    pending: Option<Pending>,
    /// `basic.cancel` notifications held while the channel awaits a reply:
    /// a queue deleted by its own consumer's channel answers `delete-ok`
    /// first, as RabbitMQ does (kombu relies on it).
    deferred_cancels: Vec<ShortStr>,
    scratch: Vec<Outstanding>,
    /// The channel's direct reply-to consumer (see `broker::reply_to`).
    reply: Option<ReplyConsumer>,
    /// The channel's place in its user's channel count (`max-channels`),
    /// given back when the channel goes.
    _lease: Option<crate::broker::limits::Lease>,
}

/// A consumer of `amq.rabbitmq.reply-to`: its tag, and the key the names
/// given out for it carry.
pub(crate) struct ReplyConsumer {
    tag: ShortStr,
    key: [u8; reply_to::KEY_LEN],
}

/// Without method ids: `channel_method` adds those of the ack, nack or
/// reject that named the tag.
fn unknown_tag(tag: u64) -> AmqpError {
    AmqpError::precondition(format!("unknown delivery tag {tag}"))
}

impl Channel {
    /// Nothing of the channel is elsewhere in the broker (see
    /// [`Session::quiet`]).
    pub(super) fn is_quiet(&self) -> bool {
        !self.closing
            && self.consumers.is_empty()
            && self.unacked.is_empty()
            && self.confirms.outstanding() == 0
            && self.tx.is_none()
            && self.pending.is_none()
            && self.assembly.is_idle()
            && self.deferred_cancels.is_empty()
    }

    fn new(cref: ChannelRef, lease: Option<crate::broker::limits::Lease>) -> Self {
        Channel {
            _lease: lease,
            cref,
            closing: false,
            assembly: Assembly::Idle,
            confirms: ConfirmTracker::default(),
            confirm_dirty: false,
            tx: None,
            tx_confirms: ConfirmTracker::default(),
            tx_refused: false,
            commit_barrier: false,
            unacked: UnackedMap::default(),
            next_tag: 1,
            consumers: Vec::new(),
            prefetch: 0,
            global_prefetch: 0,
            global_used: 0,
            credit_waiting: VecDeque::new(),
            last_queue: None,
            pending: None,
            deferred_cancels: Vec::new(),
            scratch: Vec::new(),
            reply: None,
        }
    }

    /// Returns everything the channel holds to the broker: consumers go
    /// first so that requeued messages are not redelivered to them.
    pub fn release(&mut self, b: &mut impl Broker) {
        if let Some(r) = self.reply.take() {
            b.reply_consumer(r.key, false);
        }
        for c in self.consumers.drain(..) {
            b.drop_consumer(
                c.queue,
                ConsumerRef {
                    ch: self.cref,
                    id: c.id,
                },
            );
        }
        if let Some(Pending::Consume { .. }) = self.pending {
            // The consume may complete after we are gone: orphan_event drops it.
        }
        if let Some(tx) = self.tx.take() {
            // Settled by nothing yet: requeued with the rest, in tag order.
            self.unacked.restore(tx.settles.into_iter().map(|(o, _)| o));
        }
        let mut all = std::mem::take(&mut self.scratch);
        all.clear();
        self.unacked.take_all(&mut all);
        for o in &all {
            b.settle(o.queue, o.seq, Settle::Requeue);
        }
        all.clear();
        self.scratch = all;
        self.pending = None;
        self.deferred_cancels.clear();
        self.credit_waiting.clear();
    }

    /// Handles an event for a channel (or consumer) that no longer exists,
    /// so nothing it carries is lost.
    pub fn orphan_event(ev: Event, b: &mut impl Broker) {
        match ev {
            Event::Deliver(d) => {
                if d.needs_ack {
                    b.settle(d.queue, d.seq, Settle::Requeue);
                }
                if d.tracked {
                    b.written(d.queue, d.consumer, 1);
                }
            }
            Event::Reply { reply, .. } => match reply {
                Reply::GetOk {
                    queue,
                    entry,
                    needs_ack: true,
                    ..
                } => b.settle(queue, entry.seq, Settle::Requeue),
                Reply::ConsumeOk { queue, consumer } => b.drop_consumer(queue, consumer),
                _ => {}
            },
            // A consumer carried over after its channel went: what it took
            // over goes back (a second settle of one is ignored).
            Event::Resumed {
                consumer,
                queue,
                claimed: Some(claimed),
            } => {
                for seq in claimed {
                    b.settle(queue, seq, Settle::Requeue);
                }
                b.drop_consumer(queue, consumer);
            }
            _ => {}
        }
    }

    pub fn emit_confirms(&mut self, out: &mut BytesMut, stats: &mut SessionStats) {
        let mut refused = false;
        self.tx_confirms.drain_ready(|run| refused |= run.nack);
        self.tx_refused |= refused;
        let ch = self.cref.channel;
        self.confirms.drain_ready(|run| {
            stats.confirmed += run.count;
            if run.nack {
                write_basic_nack(out, ch, run.last, run.count > 1, false);
            } else {
                crate::protocol::write_basic_ack(out, ch, run.last, run.count > 1);
            }
        });
    }

    fn mark_confirm(&mut self, dirty: &mut Vec<u16>) {
        if !self.confirm_dirty {
            self.confirm_dirty = true;
            dirty.push(self.cref.channel);
        }
    }

    /// The tag a new consumer gets: the client's, or a generated one; 530
    /// if the channel has a consumer (started or starting) with it.
    fn new_consumer_tag(&self, given: ShortStr, b: &mut impl Broker) -> Result<ShortStr, AmqpError> {
        let tag = if given.is_empty() {
            b.unique_name("amq.ctag-")
        } else {
            given
        };
        let pending_tag = matches!(&self.pending, Some(Pending::Consume { tag: t, .. }) if *t == tag);
        let reply_tag = self.reply.as_ref().is_some_and(|r| r.tag == tag);
        if pending_tag || reply_tag || self.consumers.iter().any(|x| x.tag == tag) {
            return Err(AmqpError::not_allowed(format!(
                "attempt to reuse consumer tag '{tag}'"
            )));
        }
        Ok(tag)
    }

    fn queue_or_last(&self, q: &ShortStr) -> Result<ShortStr, AmqpError> {
        if !q.is_empty() {
            return Ok(q.clone());
        }
        self.last_queue
            .clone()
            .ok_or_else(|| AmqpError::not_found("no previously declared queue"))
    }

    fn limited_consumers(&self) -> usize {
        self.consumers.iter().filter(|c| c.limited).count()
    }

    fn release_global(&mut self, n: u32, b: &mut impl Broker) {
        self.global_used = self.global_used.saturating_sub(n);
        self.serve_credit(b);
    }

    fn serve_credit(&mut self, b: &mut impl Broker) {
        while self.global_used < self.global_prefetch {
            let Some((q, c)) = self.credit_waiting.pop_front() else {
                return;
            };
            if !self.consumers.iter().any(|x| x.id == c.id) {
                continue;
            }
            self.global_used += 1;
            b.grant_credit(q, c, 1);
        }
    }

    /// The queue's leader moved: each of the channel's consumers of it
    /// carries on there. The deliveries the channel holds from the queue
    /// go with the first consumer that acks, so the new leader does not
    /// deliver them again. Credit the old leader held for a channel-wide
    /// limit is lost with it: when the queue's consumers are the channel's
    /// only limited ones, what is used is recounted from the deliveries held.
    pub(super) fn resume_consumers(&mut self, queue: QueueId, b: &mut impl Broker) {
        if let Some(Pending::Consume { moved, .. }) = &mut self.pending
            && !moved.contains(&queue)
        {
            moved.push(queue);
        }
        if self.closing || !self.consumers.iter().any(|c| c.queue == queue) {
            return;
        }
        let mut held: Vec<u64> = self
            .unacked
            .iter()
            .filter(|o| o.queue == queue)
            .map(|o| o.seq)
            .collect();
        for c in self.consumers.iter().filter(|c| c.queue == queue) {
            let spec = ConsumerSpec {
                cref: ConsumerRef {
                    ch: self.cref,
                    id: c.id,
                },
                no_ack: c.no_ack,
                exclusive: c.exclusive,
                prefetch: c.prefetch,
                channel_limited: c.limited,
                priority: c.priority,
            };
            let held = if c.no_ack {
                Vec::new()
            } else {
                std::mem::take(&mut held)
            };
            b.resume_consumer(queue, spec, held);
        }
        let limited_here = self.consumers.iter().any(|c| c.queue == queue && c.limited);
        let limited_elsewhere = self.consumers.iter().any(|c| c.queue != queue && c.limited);
        if self.global_prefetch > 0 && limited_here && !limited_elsewhere {
            self.global_used = self.unacked.iter().filter(|o| o.limited).count() as u32;
            self.serve_credit(b);
        }
    }

    fn credit_request(&mut self, queue: QueueId, consumer: ConsumerRef, b: &mut impl Broker) {
        if self.global_prefetch == 0 {
            // The limit was lifted after the consumer started.
            b.grant_credit(queue, consumer, u16::MAX as u32);
            return;
        }
        if self.global_used < self.global_prefetch {
            let free = self.global_prefetch - self.global_used;
            let n = if self.limited_consumers() <= 1 { free } else { 1 };
            self.global_used += n;
            b.grant_credit(queue, consumer, n);
        } else if !self.credit_waiting.iter().any(|(_, c)| *c == consumer) {
            self.credit_waiting.push_back((queue, consumer));
        }
    }

    /// Takes the deliveries named by a client ack/nack/reject out of the
    /// unacked map, in tag order, into `got`.
    fn take_tags(&mut self, tag: u64, multiple: bool, got: &mut Vec<Outstanding>) -> Result<(), AmqpError> {
        if multiple {
            if tag == 0 {
                self.unacked.take_all(got);
            } else if self.unacked.contains(tag) {
                self.unacked.take_up_to(tag, got);
            } else {
                return Err(unknown_tag(tag));
            }
        } else {
            got.push(self.unacked.take(tag).ok_or_else(|| unknown_tag(tag))?);
        }
        Ok(())
    }

    /// Settles at once the deliveries named by a client ack/nack/reject
    /// (or all of them, for `basic.recover`).
    fn settle_tags(
        &mut self,
        tag: u64,
        multiple: bool,
        how: Settle,
        b: &mut impl Broker,
    ) -> Result<(), AmqpError> {
        let mut got = std::mem::take(&mut self.scratch);
        got.clear();
        let r = self.take_tags(tag, multiple, &mut got);
        if r.is_ok() {
            self.settle_now(got.iter().map(|o| (*o, how)), b);
        }
        got.clear();
        self.scratch = got;
        r
    }

    /// Settles taken deliveries on their queues and frees the channel-wide
    /// credit of those that counted against it, whether or not their
    /// consumer is still there.
    fn settle_now(&mut self, settles: impl Iterator<Item = (Outstanding, Settle)>, b: &mut impl Broker) {
        let mut limited = 0;
        for (o, how) in settles {
            b.settle(o.queue, o.seq, how);
            limited += u32::from(o.limited);
        }
        if limited > 0 {
            self.release_global(limited, b);
        }
    }

    /// An ack, nack or reject: settled now, or in a transaction taken out
    /// of the unacked map for the commit.
    fn client_settle(
        &mut self,
        tag: u64,
        multiple: bool,
        how: Settle,
        max_tx_settles: usize,
        b: &mut impl Broker,
    ) -> Result<(), AmqpError> {
        let Some(tx) = &mut self.tx else {
            return self.settle_tags(tag, multiple, how, b);
        };
        if tx.settles.len() >= max_tx_settles {
            return Err(AmqpError::precondition(
                "too many acknowledgements in one transaction",
            ));
        }
        let mut got = std::mem::take(&mut self.scratch);
        got.clear();
        let r = self.take_tags(tag, multiple, &mut got);
        if r.is_ok() {
            let tx = self.tx.as_mut().expect("transactional");
            tx.settles.extend(got.iter().map(|o| (*o, how)));
        }
        got.clear();
        self.scratch = got;
        r
    }
}

/// Whether a mandatory publish is returned: it reached no queue, or it is
/// a direct reply to a name of this node whose reply consumer ended (it
/// went nowhere).
fn unrouted(b: &mut impl Broker, m: &Message, routed: bool) -> bool {
    !routed
        || m.exchange().is_empty() && reply_to::target(m.routing_key()).is_some_and(|t| b.reply_name_gone(t))
}

fn ok_frame(out: &mut BytesMut, ch: u16, m: Method) {
    write_method_frame(out, ch, &m);
}

/// A channel as the management plane sees it.
#[derive(Debug, Clone, Default)]
pub struct ChannelSummary {
    pub number: u16,
    pub prefetch: u32,
    pub global_prefetch: u32,
    pub unacked: usize,
    pub confirm: bool,
    pub transactional: bool,
    pub consumers: Vec<ConsumerSummary>,
}

#[derive(Debug, Clone)]
pub struct ConsumerSummary {
    pub tag: ShortStr,
    pub queue: QueueId,
    pub no_ack: bool,
    pub exclusive: bool,
    pub prefetch: u32,
}

impl Session {
    /// Closes channels holding a delivery unacked for longer than the
    /// consumer timeout, as RabbitMQ does (406 PRECONDITION_FAILED).
    pub(super) fn check_consumer_timeouts(&mut self, b: &mut impl Broker) {
        let timeout = self.cfg.consumer_timeout_ms;
        if timeout == 0 {
            return;
        }
        let now = self.now_ms;
        let late: Vec<u16> = self
            .channels
            .iter()
            .filter(|c| {
                !c.closing
                    && c.unacked
                        .oldest()
                        .is_some_and(|o| now.saturating_sub(o.at_ms) > timeout)
            })
            .map(|c| c.cref.channel)
            .collect();
        for n in late {
            let e = AmqpError::precondition(format!(
                "delivery acknowledgement on channel {n} timed out. Timeout value used: {timeout} ms. This timeout value can be configured, see consumers doc guide to learn more"
            ));
            self.close_channel(n, e, b);
        }
    }

    /// The open channels, for the management plane.
    pub fn channel_summaries(&self) -> Vec<ChannelSummary> {
        self.channels
            .iter()
            .filter(|c| !c.closing)
            .map(|c| ChannelSummary {
                number: c.cref.channel,
                prefetch: c.prefetch,
                global_prefetch: c.global_prefetch,
                unacked: c.unacked.len(),
                confirm: c.confirms.enabled(),
                transactional: c.tx.is_some(),
                consumers: c
                    .consumers
                    .iter()
                    .map(|x| ConsumerSummary {
                        tag: x.tag.clone(),
                        queue: x.queue,
                        no_ack: x.no_ack,
                        exclusive: x.exclusive,
                        prefetch: x.prefetch,
                    })
                    .collect(),
            })
            .collect()
    }

    fn channel_mut(&mut self, n: u16) -> Option<&mut Channel> {
        self.channels.get_mut(n)
    }

    /// Opens channel `n`. Any number is valid, as in RabbitMQ; what
    /// `channel_max` limits is how many are open at once, and going past it
    /// is a connection error (530), with RabbitMQ's text. So is going past
    /// the user's channel limit, checked after it (`create_channel`).
    fn open_channel(&mut self, n: u16, b: &mut impl Broker) -> Result<(), AmqpError> {
        let open = self.channels.len();
        if self.channel_max != 0 && open >= self.channel_max as usize {
            return Err(AmqpError::not_allowed(format!(
                "number of channels opened ({open}) has reached the negotiated channel_max ({})",
                self.channel_max
            )));
        }
        let lease = b.open_channel()?;
        let cref = self.new_channel_ref(n);
        self.channels.insert(n, Box::new(Channel::new(cref, lease)));
        ok_frame(
            &mut self.out,
            n,
            Method::ChannelOpenOk(ChannelOpenOk {
                channel_id: Default::default(),
            }),
        );
        Ok(())
    }

    fn remove_channel(&mut self, n: u16) {
        self.channels.remove(n);
        if self.awaiting == Some(n) {
            self.awaiting = None;
        }
    }

    /// Closes a channel for a soft error: `channel.close`, then ignore its
    /// frames until `close-ok`.
    pub(super) fn close_channel(&mut self, n: u16, e: AmqpError, b: &mut impl Broker) {
        let Some(ch) = self.channel_mut(n) else {
            return;
        };
        if ch.closing {
            return;
        }
        ch.release(b);
        ch.closing = true;
        ch.assembly = Assembly::Idle;
        ok_frame(
            &mut self.out,
            n,
            Method::ChannelClose(ChannelClose {
                reply_code: e.code,
                reply_text: ShortStr::from_string_lossy(&e.reply_text()),
                class_id: e.class_id,
                method_id: e.method_id,
            }),
        );
        if self.awaiting == Some(n) {
            self.awaiting = None;
        }
    }

    pub(super) fn handle_channel_frame(
        &mut self,
        kind: u8,
        n: u16,
        start: usize,
        end: usize,
        b: &mut impl Broker,
    ) -> Result<(), AmqpError> {
        let exists = self.channel_mut(n).map(|c| c.closing);
        match exists {
            None => {
                analyze_frame(kind, &self.chunk[start..end])?;
                if kind != FRAME_METHOD {
                    return Err(Assembly::Idle.interrupted());
                }
                let m = Method::decode(&self.chunk.slice(start..end))?;
                match m {
                    Method::ChannelOpen(_)
                        if !self.home_asked && self.channels.len() == 0 && self.quiet() =>
                    {
                        self.home_asked = true;
                        if b.hand_off(HandOffTarget::Home) {
                            // Stop before this frame: the next shard starts here.
                            self.pos = self.frame_start;
                            self.stats.recv_frames -= 1;
                            self.handoff_pending = true;
                            self.home_pending = true;
                            return Ok(());
                        }
                        self.open_channel(n, b)
                    }
                    Method::ChannelOpen(_) => self.open_channel(n, b),
                    // A late close-ok for a channel we already dropped.
                    Method::ChannelCloseOk(_) => Ok(()),
                    other => Err(AmqpError::new(
                        crate::protocol::reply::CHANNEL_ERROR,
                        "expected 'channel.open'",
                    )
                    .with_method(other.class_id(), other.method_id())),
                }
            }
            Some(true) => {
                // RabbitMQ's reader refuses what it cannot classify even
                // on a closing channel; the rest is ignored until close-ok.
                analyze_frame(kind, &self.chunk[start..end])?;
                if kind == FRAME_METHOD
                    && let Ok(m) = Method::decode(&self.chunk.slice(start..end))
                {
                    match m {
                        Method::ChannelCloseOk(_) => self.remove_channel(n),
                        Method::ChannelClose(_) => {
                            ok_frame(&mut self.out, n, Method::ChannelCloseOk(ChannelCloseOk {}));
                            self.remove_channel(n);
                        }
                        _ => {}
                    }
                }
                Ok(())
            }
            Some(false) => match kind {
                FRAME_HEADER => self.content_header(n, start, end, b),
                FRAME_BODY => self.content_body(n, start, end, b),
                _ => self.channel_method(n, start, end, b),
            },
        }
    }

    fn channel_method(
        &mut self,
        n: u16,
        start: usize,
        end: usize,
        b: &mut impl Broker,
    ) -> Result<(), AmqpError> {
        let payload = &self.chunk[start..end];
        let ch = self.channels.get_mut(n).expect("open channel");
        if !ch.assembly.is_idle() {
            analyze_frame(FRAME_METHOD, payload)?;
            return Err(ch.assembly.interrupted());
        }
        // basic.publish (60, 40), compared as one word: slice equality
        // would be a libc call per frame.
        if payload.len() >= 4
            && u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]) == 0x003C_0028
        {
            // basic.publish: the hot path, parsed in place.
            let f = parse_basic_publish(payload)?;
            if f.immediate {
                return Err(AmqpError::not_implemented("immediate=true").with_method(60, 40));
            }
            if self.alarm.is_some() {
                // Blocked before this frame until the alarm clears.
                self.pos = self.frame_start;
                self.stats.recv_frames -= 1;
                self.alarm_blocked = true;
                self.write_blocked(true);
                return Ok(());
            }
            if !self.handoff_asked.0 && self.quiet() {
                self.handoff_asked.0 = true;
                let to = HandOffTarget::Publish {
                    vhost: self.vhost,
                    exchange: &payload[f.exchange.clone()],
                    routing_key: &payload[f.routing_key.clone()],
                };
                if b.hand_off(to) {
                    // Stop before this frame: the next shard starts here.
                    self.pos = self.frame_start;
                    self.stats.recv_frames -= 1;
                    self.handoff_pending = true;
                    return Ok(());
                }
            }
            let ch = self.channels.get_mut(n).expect("open channel");
            ch.assembly = Assembly::AwaitHeader(PublishHead {
                exchange: Part::chunk(start + f.exchange.start, f.exchange.len()),
                routing_key: Part::chunk(start + f.routing_key.start, f.routing_key.len()),
                mandatory: f.mandatory,
            });
            return Ok(());
        }
        let m = Method::decode(&self.chunk.slice(start..end)).map_err(|e| {
            // Too short to name a method: RabbitMQ's reader refuses it.
            analyze_frame(FRAME_METHOD, &self.chunk[start..end])
                .err()
                .unwrap_or(e)
        })?;
        let (cid, mid) = (m.class_id(), m.method_id());
        self.method(n, m, b).map_err(|e| {
            if e.class_id == 0 && e.method_id == 0 {
                e.with_method(cid, mid)
            } else {
                e
            }
        })
    }

    fn content_header(
        &mut self,
        n: u16,
        start: usize,
        end: usize,
        _b: &mut impl Broker,
    ) -> Result<(), AmqpError> {
        let max = self.cfg.max_message_size;
        let ch = self.channels.get_mut(n).expect("open channel");
        let p = &self.chunk[start..end];
        let Assembly::AwaitHeader(_) = ch.assembly else {
            analyze_frame(FRAME_HEADER, p)?;
            return Err(ch.assembly.interrupted());
        };
        if p.len() < 14 {
            analyze_frame(FRAME_HEADER, p)?;
            return Err(AmqpError::frame("content header frame too short"));
        }
        let (class, weight, body_size) = crate::protocol::header_fields(p)?;
        if (class, weight) != (60, 0) {
            return Err(publish::wrong_header(p));
        }
        let props = scan_properties(&p[12..])?;
        if let Some((a, b)) = props.user_id {
            let claimed = &p[12 + a..12 + b];
            if claimed != self.user.as_bytes() {
                return Err(AmqpError::precondition(format!(
                    "user_id property set to '{}' but authenticated user was '{}'",
                    String::from_utf8_lossy(claimed),
                    self.user
                ))
                .with_method(60, 40));
            }
        }
        let expiration = match props.expiration {
            None => Message::NO_EXPIRATION,
            Some((a, b)) => {
                let raw = &p[12 + a..12 + b];
                match erl::parse_expiration(raw) {
                    Ok(ms) => ms.min(Message::NO_EXPIRATION as u64 - 1) as u32,
                    Err(why) => {
                        return Err(
                            AmqpError::precondition(erl::expiration_error(raw, why)).with_method(60, 40)
                        );
                    }
                }
            }
        };
        if body_size > max {
            ch.assembly = Assembly::Idle;
            return Err(AmqpError::precondition(format!(
                "message size {body_size} is larger than configured max size {max}"
            ))
            .with_method(60, 40));
        }
        let Assembly::AwaitHeader(head) = std::mem::replace(&mut ch.assembly, Assembly::Idle) else {
            unreachable!()
        };
        ch.assembly = Assembly::AwaitBody {
            head,
            props: Part::chunk(start + 12, end - start - 12),
            persistent: props.delivery_mode == 2,
            priority: props.priority.unwrap_or(0),
            expiration,
            body_size,
            body: Body::None,
        };
        if body_size == 0 {
            self.complete_publish(n, _b)?;
        }
        Ok(())
    }

    fn content_body(
        &mut self,
        n: u16,
        start: usize,
        end: usize,
        b: &mut impl Broker,
    ) -> Result<(), AmqpError> {
        let chunk = &self.chunk;
        let ch = self.channels.get_mut(n).expect("open channel");
        let Assembly::AwaitBody {
            head,
            props,
            body_size,
            body,
            ..
        } = &mut ch.assembly
        else {
            return Err(ch.assembly.interrupted());
        };
        let len = (end - start) as u64;
        let received = match body {
            Body::None => 0,
            Body::Single(Part::Chunk { len, .. }) => *len as u64,
            Body::Single(Part::Owned(b)) => b.len() as u64,
            Body::Building(bld) => bld.body_received() as u64,
        };
        if received + len > *body_size {
            return Err(AmqpError::frame(format!(
                "content body exceeds the declared size {body_size}"
            )));
        }
        match body {
            Body::None if len == *body_size => *body = Body::Single(Part::chunk(start, end - start)),
            Body::None => {
                let mut bld = publish::builder(chunk, head, props, *body_size);
                bld.push_body(&chunk[start..end]);
                *body = Body::Building(bld);
            }
            Body::Single(_) => unreachable!("a single frame is the whole body"),
            Body::Building(bld) => bld.push_body(&chunk[start..end]),
        }
        if received + len == *body_size {
            self.complete_publish(n, b)?;
        }
        Ok(())
    }

    fn complete_publish(&mut self, n: u16, b: &mut impl Broker) -> Result<(), AmqpError> {
        let vhost = self.vhost;
        let ch = self.channels.get_mut(n).expect("open channel");
        let Assembly::AwaitBody {
            head,
            props,
            persistent,
            priority,
            expiration,
            body,
            ..
        } = std::mem::replace(&mut ch.assembly, Assembly::Idle)
        else {
            unreachable!()
        };
        let mandatory = head.mandatory;
        let mut msg = publish::finish(&self.chunk, head, props, persistent, priority, expiration, body);
        if let Some(asked) = reply_to::reply_request(&msg) {
            let Some(r) = &ch.reply else {
                return Err(reply_to::no_consumer().with_method(60, 40));
            };
            msg = reply_to::readdressed(&msg, asked, b.reply_name(ch.cref, &r.key));
            // The name leads to this connection's id on this shard: it
            // stays here from now on.
            self.handoff_asked = (true, true);
        }
        self.stats.published += 1;
        if let Some(tx) = &mut ch.tx {
            b.exchange_exists(vhost, msg.exchange())
                .map_err(|e| e.with_method(60, 40))?;
            if tx.publishes.len() >= self.cfg.tx_max_messages
                || tx.bytes + msg.body_len() > self.cfg.tx_max_bytes
            {
                return Err(AmqpError::precondition(format!(
                    "transaction holds more than {} messages or {} bytes",
                    self.cfg.tx_max_messages, self.cfg.tx_max_bytes
                ))
                .with_method(60, 40));
            }
            tx.bytes += msg.body_len();
            tx.publishes.push((msg, mandatory));
            return Ok(());
        }
        let ret = mandatory.then(|| msg.clone());
        let confirm = ch.confirms.enabled().then(|| ch.confirms.next_seq());
        let outcome = b
            .publish(ch.cref, vhost, msg, confirm, mandatory)
            .map_err(|e| e.with_method(60, 40))?;
        if let Some(m) = ret.filter(|m| unrouted(b, m, outcome.routed)) {
            write_basic_return(&mut self.out, n, 312, b"NO_ROUTE", m.exchange(), m.routing_key());
            write_content(&mut self.out, n, 60, m.props(), m.body(), self.frame_max);
        }
        if confirm.is_some() {
            ch.confirms
                .publish_with(outcome.pending_confirms, outcome.rejected);
            ch.mark_confirm(&mut self.confirm_dirty);
        }
        Ok(())
    }

    fn request(&mut self, n: u16, req: Request, pending: Pending, b: &mut impl Broker) {
        let ch = self.channels.get_mut(n).expect("open channel");
        ch.pending = Some(pending);
        let cref = ch.cref;
        self.awaiting = Some(n);
        b.request(cref, self.vhost, &self.user, req);
    }

    fn method(&mut self, n: u16, m: Method, b: &mut impl Broker) -> Result<(), AmqpError> {
        let out = &mut self.out;
        let ch = self.channels.get_mut(n).expect("open channel");
        match m {
            Method::ChannelOpen(_) => Err(AmqpError::new(
                crate::protocol::reply::CHANNEL_ERROR,
                "second 'channel.open' seen",
            )),
            Method::ChannelFlow(f) => {
                if !f.active {
                    return Err(AmqpError::not_implemented("active=false"));
                }
                ok_frame(out, n, Method::ChannelFlowOk(ChannelFlowOk { active: true }));
                Ok(())
            }
            Method::ChannelFlowOk(_) => Ok(()),
            Method::ChannelClose(_) => {
                ch.release(b);
                ok_frame(out, n, Method::ChannelCloseOk(ChannelCloseOk {}));
                self.remove_channel(n);
                Ok(())
            }
            Method::ChannelCloseOk(_) => Ok(()),
            Method::AccessRequest(_) => {
                ok_frame(out, n, Method::AccessRequestOk(AccessRequestOk { ticket: 1 }));
                Ok(())
            }
            Method::ExchangeDeclare(d) => {
                let kind = match ExchangeKind::parse(d.kind.as_bytes()) {
                    Some(k) => k,
                    // A passive declare only checks existence.
                    None if d.passive => ExchangeKind::Direct,
                    None => return Err(erl::bad_exchange_type(d.kind.as_bytes())),
                };
                let req = Request::ExchangeDeclare {
                    name: d.exchange,
                    kind,
                    passive: d.passive,
                    durable: d.durable,
                    auto_delete: d.auto_delete,
                    internal: d.internal,
                    args: d.arguments,
                };
                self.request(n, req, Pending::Simple { nowait: d.nowait }, b);
                Ok(())
            }
            Method::ExchangeDelete(d) => {
                let req = Request::ExchangeDelete {
                    name: d.exchange,
                    if_unused: d.if_unused,
                };
                self.request(n, req, Pending::Simple { nowait: d.nowait }, b);
                Ok(())
            }
            Method::ExchangeBind(d) => {
                let req = Request::ExchangeBind {
                    destination: d.destination,
                    source: d.source,
                    routing_key: d.routing_key,
                    args: d.arguments,
                };
                self.request(n, req, Pending::Simple { nowait: d.nowait }, b);
                Ok(())
            }
            Method::ExchangeUnbind(d) => {
                let req = Request::ExchangeUnbind {
                    destination: d.destination,
                    source: d.source,
                    routing_key: d.routing_key,
                    args: d.arguments,
                };
                self.request(n, req, Pending::Simple { nowait: d.nowait }, b);
                Ok(())
            }
            Method::QueueDeclare(d)
                if d.queue.as_bytes() == reply_to::PSEUDO_QUEUE
                    || reply_to::is_reply_name(d.queue.as_bytes()) =>
            {
                // RabbitMQ answers for the pseudo-queue and for a live
                // reply name with one consumer and no message.
                let me = self.conn;
                let alive = match reply_to::target(d.queue.as_bytes()) {
                    _ if d.queue.as_bytes() == reply_to::PSEUDO_QUEUE => true,
                    None => false,
                    Some(t) if b.ask_reply_name(ch.cref, &d.queue, &self.vhost_name, t) => {
                        // Another node's name: that node answers.
                        let ch = self.channels.get_mut(n).expect("open channel");
                        ch.pending = Some(Pending::Simple { nowait: d.nowait });
                        self.awaiting = Some(n);
                        return Ok(());
                    }
                    Some(t) if t.ch.conn == me => self
                        .channels
                        .iter()
                        .any(|c| c.cref == t.ch && c.reply.as_ref().is_some_and(|r| r.key == t.key)),
                    Some(t) => b.reply_name_lives(t),
                };
                if !alive {
                    return Err(AmqpError::not_found(format!(
                        "no queue '{}' in vhost '{}'",
                        d.queue, self.vhost_name
                    )));
                }
                if !d.nowait {
                    ok_frame(
                        &mut self.out,
                        n,
                        Method::QueueDeclareOk(QueueDeclareOk {
                            queue: d.queue,
                            message_count: 0,
                            consumer_count: 1,
                        }),
                    );
                }
                Ok(())
            }
            Method::QueueDeclare(d) => {
                let generated = d.queue.is_empty() && !d.passive;
                let name = if generated {
                    b.unique_name("amq.gen-")
                } else {
                    d.queue
                };
                let req = Request::QueueDeclare {
                    name,
                    generated,
                    passive: d.passive,
                    durable: d.durable,
                    exclusive: d.exclusive,
                    auto_delete: d.auto_delete,
                    args: d.arguments,
                };
                self.request(n, req, Pending::Simple { nowait: d.nowait }, b);
                Ok(())
            }
            Method::QueueBind(d) => {
                let queue = ch.queue_or_last(&d.queue)?;
                let routing_key = if d.routing_key.is_empty() && d.queue.is_empty() {
                    queue.clone()
                } else {
                    d.routing_key
                };
                let req = Request::QueueBind {
                    queue,
                    exchange: d.exchange,
                    routing_key,
                    args: d.arguments,
                };
                self.request(n, req, Pending::Simple { nowait: d.nowait }, b);
                Ok(())
            }
            Method::QueueUnbind(d) => {
                let queue = ch.queue_or_last(&d.queue)?;
                let routing_key = if d.routing_key.is_empty() && d.queue.is_empty() {
                    queue.clone()
                } else {
                    d.routing_key
                };
                let req = Request::QueueUnbind {
                    queue,
                    exchange: d.exchange,
                    routing_key,
                    args: d.arguments,
                };
                self.request(n, req, Pending::Simple { nowait: false }, b);
                Ok(())
            }
            Method::QueuePurge(d) => {
                let queue = ch.queue_or_last(&d.queue)?;
                self.request(
                    n,
                    Request::QueuePurge { queue },
                    Pending::Simple { nowait: d.nowait },
                    b,
                );
                Ok(())
            }
            Method::QueueDelete(d) => {
                let queue = ch.queue_or_last(&d.queue)?;
                let req = Request::QueueDelete {
                    queue,
                    if_unused: d.if_unused,
                    if_empty: d.if_empty,
                };
                self.request(n, req, Pending::Simple { nowait: d.nowait }, b);
                Ok(())
            }
            Method::BasicQos(q) => {
                if q.prefetch_size != 0 {
                    return Err(AmqpError::not_implemented(format!(
                        "prefetch_size!=0 ({})",
                        q.prefetch_size
                    )));
                }
                if q.global {
                    ch.global_prefetch = q.prefetch_count as u32;
                    ch.serve_credit(b);
                } else {
                    ch.prefetch = q.prefetch_count as u32;
                }
                ok_frame(out, n, Method::BasicQosOk(BasicQosOk {}));
                Ok(())
            }
            Method::BasicConsume(c) if c.queue.as_bytes() == reply_to::PSEUDO_QUEUE => {
                if !c.no_ack {
                    return Err(reply_to::must_not_ack());
                }
                if ch.reply.is_some() {
                    return Err(reply_to::already_set());
                }
                let tag = ch.new_consumer_tag(c.consumer_tag, b)?;
                let mut key = [0u8; reply_to::KEY_LEN];
                let random = b.unique_name("");
                let n_key = random.as_bytes().len().min(key.len());
                key[..n_key].copy_from_slice(&random.as_bytes()[..n_key]);
                if !c.nowait {
                    ok_frame(
                        out,
                        n,
                        Method::BasicConsumeOk(BasicConsumeOk {
                            consumer_tag: tag.clone(),
                        }),
                    );
                }
                ch.reply = Some(ReplyConsumer { tag, key });
                b.reply_consumer(key, true);
                Ok(())
            }
            Method::BasicConsume(c) => {
                let queue = ch.queue_or_last(&c.queue)?;
                if !self.handoff_asked.1 && self.quiet() {
                    self.handoff_asked.1 = true;
                    let to = HandOffTarget::Consume {
                        vhost: self.vhost,
                        queue: queue.as_bytes(),
                    };
                    if b.hand_off(to) {
                        // The consume is decoded again on the next shard.
                        self.pos = self.frame_start;
                        self.stats.recv_frames -= 1;
                        self.handoff_pending = true;
                        return Ok(());
                    }
                }
                let ch = self.channels.get_mut(n).expect("open channel");
                let tag = ch.new_consumer_tag(c.consumer_tag, b)?;
                let id = self.next_consumer_id;
                self.next_consumer_id = self.next_consumer_id.wrapping_add(1);
                let limited = ch.global_prefetch > 0 && !c.no_ack;
                let priority = match c.arguments.get("x-priority") {
                    None => 0,
                    Some(v) => match v.as_i64() {
                        Some(p) => p.clamp(i32::MIN as i64, i32::MAX as i64) as i32,
                        None => {
                            return Err(AmqpError::precondition(format!(
                                "invalid arg 'x-priority' for consumer: expected integer, got {}",
                                crate::broker::args::type_name(v)
                            )));
                        }
                    },
                };
                let spec = ConsumerSpec {
                    cref: ConsumerRef { ch: ch.cref, id },
                    no_ack: c.no_ack,
                    exclusive: c.exclusive,
                    prefetch: ch.prefetch,
                    channel_limited: limited,
                    priority,
                };
                let pending = Pending::Consume {
                    tag,
                    nowait: c.nowait,
                    limited,
                    no_ack: c.no_ack,
                    exclusive: c.exclusive,
                    prefetch: ch.prefetch,
                    priority,
                    moved: Vec::new(),
                };
                self.request(n, Request::Consume { queue, spec }, pending, b);
                Ok(())
            }
            Method::BasicCancel(c) if ch.reply.as_ref().is_some_and(|r| r.tag == c.consumer_tag) => {
                if let Some(r) = ch.reply.take() {
                    b.reply_consumer(r.key, false);
                }
                if !c.nowait {
                    ok_frame(
                        out,
                        n,
                        Method::BasicCancelOk(BasicCancelOk {
                            consumer_tag: c.consumer_tag,
                        }),
                    );
                }
                Ok(())
            }
            Method::BasicCancel(c) => {
                match ch.consumers.iter().find(|x| x.tag == c.consumer_tag) {
                    Some(x) => {
                        let req = Request::Cancel {
                            queue: x.queue,
                            consumer: ConsumerRef {
                                ch: ch.cref,
                                id: x.id,
                            },
                        };
                        let pending = Pending::Cancel {
                            tag: c.consumer_tag,
                            nowait: c.nowait,
                        };
                        self.request(n, req, pending, b);
                    }
                    None if !c.nowait => ok_frame(
                        out,
                        n,
                        Method::BasicCancelOk(BasicCancelOk {
                            consumer_tag: c.consumer_tag,
                        }),
                    ),
                    None => {}
                }
                Ok(())
            }
            Method::BasicGet(g) => {
                let queue = ch.queue_or_last(&g.queue)?;
                self.request(
                    n,
                    Request::Get {
                        queue,
                        no_ack: g.no_ack,
                    },
                    Pending::Get,
                    b,
                );
                Ok(())
            }
            Method::BasicAck(a) => ch.client_settle(
                a.delivery_tag,
                a.multiple,
                Settle::Ack,
                self.cfg.tx_max_messages,
                b,
            ),
            Method::BasicReject(r) => ch.client_settle(
                r.delivery_tag,
                false,
                Settle::Reject { requeue: r.requeue },
                self.cfg.tx_max_messages,
                b,
            ),
            Method::BasicNack(r) => ch.client_settle(
                r.delivery_tag,
                r.multiple,
                Settle::Reject { requeue: r.requeue },
                self.cfg.tx_max_messages,
                b,
            ),
            Method::BasicRecoverAsync(r) => {
                recover(ch, r.requeue, b)?;
                Ok(())
            }
            Method::BasicRecover(r) => {
                recover(ch, r.requeue, b)?;
                ok_frame(out, n, Method::BasicRecoverOk(BasicRecoverOk {}));
                Ok(())
            }
            Method::TxSelect(_) => {
                if ch.confirms.enabled() {
                    return Err(AmqpError::precondition("cannot switch from confirm to tx mode"));
                }
                if ch.tx.is_none() {
                    ch.tx = Some(Tx::default());
                }
                ok_frame(out, n, Method::TxSelectOk(TxSelectOk {}));
                Ok(())
            }
            Method::TxCommit(_) => {
                let Some(tx) = ch.tx.replace(Tx::default()) else {
                    return Err(AmqpError::precondition("channel is not transactional"));
                };
                self.commit(n, tx, b)?;
                // commit-ok once every queue has applied (and synced) it.
                self.request(n, Request::Barrier, Pending::Commit, b);
                Ok(())
            }
            Method::TxRollback(_) => {
                let Some(tx) = ch.tx.replace(Tx::default()) else {
                    return Err(AmqpError::precondition("channel is not transactional"));
                };
                // Acked in the transaction: unacked again, as RabbitMQ does.
                ch.unacked.restore(tx.settles.into_iter().map(|(o, _)| o));
                ok_frame(out, n, Method::TxRollbackOk(TxRollbackOk {}));
                Ok(())
            }
            Method::ConfirmSelect(c) => {
                if ch.tx.is_some() {
                    return Err(AmqpError::precondition("cannot switch from tx to confirm mode"));
                }
                ch.confirms.enable();
                if !c.nowait {
                    ok_frame(out, n, Method::ConfirmSelectOk(ConfirmSelectOk {}));
                }
                Ok(())
            }
            _ => Err(AmqpError::command_invalid("unimplemented method")),
        }
    }

    fn commit(&mut self, n: u16, tx: Tx, b: &mut impl Broker) -> Result<(), AmqpError> {
        let vhost = self.vhost;
        let ch = self.channels.get_mut(n).expect("open channel");
        ch.settle_now(tx.settles.into_iter(), b);
        if !tx.publishes.is_empty() {
            ch.tx_confirms.enable();
            ch.mark_confirm(&mut self.confirm_dirty);
        }
        for (msg, mandatory) in tx.publishes {
            let ch = self.channels.get_mut(n).expect("open channel");
            let ret = mandatory.then(|| msg.clone());
            let seq = ch.tx_confirms.next_seq();
            let outcome = b.publish(ch.cref, vhost, msg, Some(seq), mandatory)?;
            ch.tx_confirms
                .publish_with(outcome.pending_confirms, outcome.rejected);
            if let Some(m) = ret.filter(|m| unrouted(b, m, outcome.routed)) {
                write_basic_return(&mut self.out, n, 312, b"NO_ROUTE", m.exchange(), m.routing_key());
                write_content(&mut self.out, n, 60, m.props(), m.body(), self.frame_max);
            }
        }
        Ok(())
    }

    /// Answers a commit whose barrier completed, once its publishes are
    /// confirmed: `commit-ok`, or 406 when a queue refused one (RabbitMQ's
    /// "partial tx completion").
    pub(super) fn finish_commit(&mut self, n: u16, b: &mut impl Broker) {
        let Some(ch) = self.channels.get_mut(n) else {
            return;
        };
        if !ch.commit_barrier || ch.tx_confirms.outstanding() > 0 || ch.closing {
            return;
        }
        ch.commit_barrier = false;
        ch.pending = None;
        let refused = std::mem::take(&mut ch.tx_refused);
        let cancels = std::mem::take(&mut ch.deferred_cancels);
        if self.awaiting == Some(n) {
            self.awaiting = None;
        }
        if refused {
            let e = AmqpError::precondition("partial tx completion").with_method(90, 20);
            self.close_channel(n, e, b);
            return;
        }
        ok_frame(&mut self.out, n, Method::TxCommitOk(TxCommitOk {}));
        for tag in cancels {
            write_cancel(&mut self.out, n, tag);
        }
    }

    /// Applies an event to a live channel.
    pub(super) fn channel_event(&mut self, n: u16, ev: Event, b: &mut impl Broker) -> Result<(), AmqpError> {
        let frame_max = self.frame_max;
        let now = self.now_ms;
        let notify_cancel = self.caps.consumer_cancel_notify;
        let out = &mut self.out;
        let ch = self.channels.get_mut(n).expect("live channel");
        match ev {
            Event::Deliver(d) => {
                let Some(c) = ch.consumers.iter().find(|c| c.id == d.consumer.id) else {
                    Channel::orphan_event(Event::Deliver(d), b);
                    return Ok(());
                };
                let tag = ch.next_tag;
                ch.next_tag += 1;
                write_delivery(out, n, c.tag.as_bytes(), tag, d.redelivered, &d.msg, frame_max);
                if d.needs_ack {
                    ch.unacked.push(Outstanding {
                        tag,
                        queue: d.queue,
                        seq: d.seq,
                        limited: c.limited,
                        at_ms: now,
                    });
                }
                if d.tracked {
                    match self.written.last_mut() {
                        Some((q, c, k)) if *q == d.queue && *c == d.consumer => *k += 1,
                        _ => self.written.push((d.queue, d.consumer, 1)),
                    }
                }
                self.stats.delivered += 1;
                Ok(())
            }
            Event::DirectReply { key, msg, .. } => {
                let Some(r) = ch.reply.as_ref().filter(|r| r.key == key) else {
                    return Ok(());
                };
                if out.len() > self.cfg.reply_output_max {
                    self.stats.replies_dropped += 1;
                    return Ok(());
                }
                let tag = ch.next_tag;
                ch.next_tag += 1;
                write_delivery(out, n, r.tag.as_bytes(), tag, false, &msg, frame_max);
                self.stats.delivered += 1;
                Ok(())
            }
            Event::Returned { msg, .. } => {
                write_basic_return(out, n, 312, b"NO_ROUTE", msg.exchange(), msg.routing_key());
                write_content(out, n, 60, msg.props(), msg.body(), frame_max);
                Ok(())
            }
            Event::Confirm { seq, ok, .. } => {
                // tx and confirm mode exclude each other.
                if ch.tx.is_some() {
                    ch.tx_confirms.settle(seq, ok);
                } else {
                    ch.confirms.settle(seq, ok);
                }
                ch.mark_confirm(&mut self.confirm_dirty);
                Ok(())
            }
            Event::Resumed { claimed: Some(_), .. } => Ok(()),
            Event::ConsumerCancelled { consumer } | Event::Resumed { consumer, .. } => {
                if let Some(i) = ch.consumers.iter().position(|c| c.id == consumer.id) {
                    let c = ch.consumers.remove(i);
                    match (notify_cancel, ch.pending.is_some()) {
                        (false, _) => {}
                        (true, true) => ch.deferred_cancels.push(c.tag),
                        (true, false) => write_cancel(out, n, c.tag),
                    }
                }
                Ok(())
            }
            Event::CreditRequest { queue, consumer } => {
                ch.credit_request(queue, consumer, b);
                Ok(())
            }
            Event::CreditReturn { n: k, .. } => {
                ch.release_global(k, b);
                Ok(())
            }
            Event::Reply {
                reply: Reply::BarrierDone,
                ..
            } if matches!(ch.pending, Some(Pending::Commit)) => {
                // Still awaited: `end_batch` answers once the commit's
                // publishes are confirmed.
                ch.commit_barrier = true;
                ch.mark_confirm(&mut self.confirm_dirty);
                Ok(())
            }
            Event::Reply { reply, .. } => {
                let pending = ch.pending.take();
                if self.awaiting == Some(n) {
                    self.awaiting = None;
                }
                let ch = self.channels.get_mut(n).expect("live channel");
                reply_frames(ch, n, pending, reply, &mut self.out, frame_max, now, b)?;
                // A channel closed by an error reply never sees these.
                for tag in std::mem::take(&mut ch.deferred_cancels) {
                    write_cancel(&mut self.out, n, tag);
                }
                Ok(())
            }
            Event::ForceClose { .. }
            | Event::Describe
            | Event::Throttle { .. }
            | Event::QueueMoved { .. } => Ok(()),
        }
    }
}

/// The server's `basic.cancel` (a consumer's queue went away).
/// `basic.deliver` and the message's content.
#[inline]
fn write_delivery(
    out: &mut BytesMut,
    n: u16,
    consumer_tag: &[u8],
    delivery_tag: u64,
    redelivered: bool,
    msg: &Message,
    frame_max: u32,
) {
    write_basic_deliver(
        out,
        n,
        consumer_tag,
        delivery_tag,
        redelivered,
        msg.exchange(),
        msg.routing_key(),
    );
    write_content(out, n, 60, msg.props(), msg.body(), frame_max);
}

fn write_cancel(out: &mut BytesMut, n: u16, tag: ShortStr) {
    ok_frame(
        out,
        n,
        Method::BasicCancel(BasicCancel {
            consumer_tag: tag,
            nowait: true,
        }),
    );
}

fn recover(ch: &mut Channel, requeue: bool, b: &mut impl Broker) -> Result<(), AmqpError> {
    if !requeue {
        return Err(AmqpError::not_implemented("requeue=false"));
    }
    ch.settle_tags(0, true, Settle::Requeue, b)
}

#[allow(clippy::too_many_arguments)]
fn reply_frames(
    ch: &mut Channel,
    n: u16,
    pending: Option<Pending>,
    reply: Reply,
    out: &mut BytesMut,
    frame_max: u32,
    now: u64,
    b: &mut impl Broker,
) -> Result<(), AmqpError> {
    let nowait = match &pending {
        Some(Pending::Simple { nowait }) => *nowait,
        Some(Pending::Consume { nowait, .. }) | Some(Pending::Cancel { nowait, .. }) => *nowait,
        _ => false,
    };
    let frame = match reply {
        Reply::Error(e) => {
            if let Some(Pending::Consume { .. }) = pending {
                // Nothing was registered.
            }
            return Err(e);
        }
        Reply::ExchangeDeclareOk => Method::ExchangeDeclareOk(ExchangeDeclareOk {}),
        Reply::ExchangeDeleteOk => Method::ExchangeDeleteOk(ExchangeDeleteOk {}),
        Reply::ExchangeBindOk => Method::ExchangeBindOk(ExchangeBindOk {}),
        Reply::ExchangeUnbindOk => Method::ExchangeUnbindOk(ExchangeUnbindOk {}),
        Reply::QueueDeclareOk {
            name,
            messages,
            consumers,
        } => {
            ch.last_queue = Some(name.clone());
            Method::QueueDeclareOk(QueueDeclareOk {
                queue: name,
                message_count: messages,
                consumer_count: consumers,
            })
        }
        Reply::QueueBindOk => Method::QueueBindOk(QueueBindOk {}),
        Reply::QueueUnbindOk => Method::QueueUnbindOk(QueueUnbindOk {}),
        Reply::QueuePurgeOk { messages } => Method::QueuePurgeOk(QueuePurgeOk {
            message_count: messages,
        }),
        Reply::QueueDeleteOk { messages } => Method::QueueDeleteOk(QueueDeleteOk {
            message_count: messages,
        }),
        Reply::ConsumeOk { queue, consumer } => {
            let Some(Pending::Consume {
                tag,
                limited,
                no_ack,
                exclusive,
                prefetch,
                priority,
                moved,
                ..
            }) = pending
            else {
                b.drop_consumer(queue, consumer);
                return Ok(());
            };
            ch.consumers.push(ChanConsumer {
                id: consumer.id,
                tag: tag.clone(),
                queue,
                limited,
                no_ack,
                exclusive,
                prefetch,
                priority,
            });
            if moved.contains(&queue) {
                ch.resume_consumers(queue, b);
            }
            Method::BasicConsumeOk(BasicConsumeOk { consumer_tag: tag })
        }
        Reply::CancelOk { consumer } => {
            ch.consumers.retain(|c| c.id != consumer.id);
            let tag = match pending {
                Some(Pending::Cancel { tag, .. }) => tag,
                _ => return Ok(()),
            };
            Method::BasicCancelOk(BasicCancelOk { consumer_tag: tag })
        }
        Reply::GetOk {
            queue,
            entry,
            remaining,
            needs_ack,
        } => {
            let tag = ch.next_tag;
            ch.next_tag += 1;
            if needs_ack {
                ch.unacked.push(Outstanding {
                    tag,
                    queue,
                    seq: entry.seq,
                    limited: false,
                    at_ms: now,
                });
            }
            let m = &entry.msg;
            write_basic_get_ok(
                out,
                n,
                tag,
                entry.redelivered,
                m.exchange(),
                m.routing_key(),
                remaining,
            );
            write_content(out, n, 60, m.props(), m.body(), frame_max);
            return Ok(());
        }
        // (A commit's barrier is taken by `channel_event`.)
        Reply::BarrierDone => return Ok(()),
        Reply::GetEmpty => Method::BasicGetEmpty(BasicGetEmpty {
            cluster_id: Default::default(),
        }),
    };
    if !nowait {
        write_method_frame(out, n, &frame);
    }
    Ok(())
}
