//! One queue's state machine. Owned by the queue's shard; every method is a
//! synchronous state transition whose effects (deliveries, credit requests)
//! go to a [`QueueSink`] supplied by the runtime.

use super::config::{DeadReason, Overflow, QueueConfig};
use super::consumer::{Consumer, ConsumerSpec};
use super::ready::{Entry, ReadyList};
use crate::ids::{ConsumerRef, IdMap, QueueId};
use crate::message::Message;

/// A message handed to a consumer (or to `basic.get`).
#[derive(Clone, Debug)]
pub struct Delivery {
    pub consumer: ConsumerRef,
    pub queue: QueueId,
    pub seq: u64,
    pub msg: Message,
    pub redelivered: bool,
    /// The consumer must ack it (it is in the queue's unacked map).
    pub needs_ack: bool,
    /// The consumer's channel must report it written (transport window).
    pub tracked: bool,
    /// On disk: the store records its first delivery.
    pub loc: Option<crate::ids::Loc>,
}

/// Where a queue's effects go.
pub trait QueueSink {
    fn deliver(&mut self, d: Delivery);
    /// The consumer is under a channel-wide prefetch and needs a credit.
    fn request_credit(&mut self, consumer: ConsumerRef);
    /// Credit granted earlier that the queue cannot use now (no messages).
    fn return_credit(&mut self, consumer: ConsumerRef, n: u32);
    /// A ready message left the queue undelivered (expired, or dropped by
    /// `x-max-length`): dead-letter or discard it.
    fn removed(&mut self, entry: Entry, reason: DeadReason);
}

/// Whether a queue takes a new message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Yes,
    /// Full with `reject-publish`.
    Reject,
    /// Full with `reject-publish-dlx`: refuse and dead-letter.
    RejectDeadLetter,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumeError {
    /// An exclusive consumer holds the queue, or one was asked for while
    /// others exist (RabbitMQ: 403 ACCESS_REFUSED "… in exclusive use").
    ExclusiveInUse,
}

/// Counters for management and metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct QueueStats {
    pub published: u64,
    pub delivered: u64,
    pub acked: u64,
    pub redelivered: u64,
    pub get: u64,
}

struct Unacked {
    entry: Entry,
    /// None for `basic.get` in ack mode.
    consumer: Option<ConsumerRef>,
}

/// A queue's messages and consumers.
pub struct Queue {
    pub id: QueueId,
    ready: ReadyList,
    unacked: IdMap<u64, Unacked>,
    unacked_bytes: u64,
    consumers: Vec<Consumer>,
    next_consumer: usize,
    next_seq: u64,
    /// Transport window for consumers not bounded by prefetch.
    window: u32,
    cfg: QueueConfig,
    pub stats: QueueStats,
}

impl Queue {
    pub fn new(id: QueueId, window: u32) -> Self {
        Self::with_config(id, window, QueueConfig::default())
    }

    pub fn with_config(id: QueueId, window: u32, cfg: QueueConfig) -> Self {
        Queue {
            id,
            ready: ReadyList::new(cfg.max_priority),
            unacked: IdMap::default(),
            unacked_bytes: 0,
            consumers: Vec::new(),
            next_consumer: 0,
            next_seq: 1,
            window: window.max(1),
            cfg,
            stats: QueueStats::default(),
        }
    }

    pub fn config(&self) -> &QueueConfig {
        &self.cfg
    }

    /// New settings (a policy changed). The priority levels are fixed at
    /// declare time and kept.
    pub fn set_config(&mut self, mut cfg: QueueConfig, sink: &mut impl QueueSink) {
        cfg.max_priority = self.cfg.max_priority;
        self.cfg = cfg;
        self.enforce_limits(sink);
    }

    /// When a message published now would expire (0: never), from the
    /// queue's TTL and the message's own `expiration` (the lower wins).
    pub fn expiry_for(&self, msg_ttl: Option<u64>, now_ms: u64) -> u64 {
        match (self.cfg.message_ttl, msg_ttl) {
            (None, None) => 0,
            (a, b) => now_ms
                .saturating_add(a.unwrap_or(u64::MAX).min(b.unwrap_or(u64::MAX)))
                .max(1),
        }
    }

    /// Would a new message of `body_len` bytes be refused? `pending` counts
    /// messages admitted but not yet enqueued (awaiting the store write).
    pub fn admit(&self, body_len: usize, pending: usize, pending_bytes: u64) -> Admit {
        let full = self
            .cfg
            .max_length
            .is_some_and(|m| (self.ready.len() + pending) as u64 >= m)
            || self
                .cfg
                .max_length_bytes
                .is_some_and(|m| self.ready.bytes() + pending_bytes + body_len as u64 > m);
        match (full, self.cfg.overflow) {
            (false, _) | (true, Overflow::DropHead) => Admit::Yes,
            (true, Overflow::RejectPublish) => Admit::Reject,
            (true, Overflow::RejectPublishDlx) => Admit::RejectDeadLetter,
        }
    }

    /// More ready messages (or bytes) than `x-max-length(-bytes)` allow.
    pub fn is_over_limit(&self) -> bool {
        self.cfg.max_length.is_some_and(|m| self.ready.len() as u64 > m)
            || self.cfg.max_length_bytes.is_some_and(|m| self.ready.bytes() > m)
    }

    /// Drops from the head while over `x-max-length(-bytes)` (drop-head).
    fn enforce_limits(&mut self, sink: &mut impl QueueSink) {
        if self.cfg.overflow != Overflow::DropHead {
            return;
        }
        loop {
            if !self.is_over_limit() {
                return;
            }
            match self.ready.pop_front() {
                Some(e) => sink.removed(e, DeadReason::MaxLen),
                None => return,
            }
        }
    }

    /// Removes expired messages waiting at the head (`inclusive`: also
    /// those expiring this very millisecond — the end-of-step sweep, which
    /// is what makes `x-message-ttl = 0` mean "deliver now or drop").
    pub fn expire(&mut self, now_ms: u64, inclusive: bool, sink: &mut impl QueueSink) {
        while let Some(e) = self.ready.pop_expired(now_ms, inclusive) {
            sink.removed(e, DeadReason::Expired);
        }
    }

    /// The earliest expiry among the messages waiting at a head (0: none).
    pub fn next_expiry(&self) -> u64 {
        self.ready
            .iter()
            .filter(|e| e.expires_at != 0)
            .map(|e| e.expires_at)
            .min()
            .unwrap_or(0)
    }

    pub fn ready_count(&self) -> usize {
        self.ready.len()
    }
    pub fn ready_bytes(&self) -> u64 {
        self.ready.bytes()
    }
    pub fn unacked_count(&self) -> usize {
        self.unacked.len()
    }
    pub fn unacked_bytes(&self) -> u64 {
        self.unacked_bytes
    }
    pub fn consumer_count(&self) -> usize {
        self.consumers.len()
    }
    pub fn consumers(&self) -> impl Iterator<Item = &Consumer> {
        self.consumers.iter()
    }
    pub fn is_unused(&self) -> bool {
        self.consumers.is_empty()
    }

    /// Enqueues a message and returns its sequence number. Call
    /// [`Queue::dispatch`] afterwards (once per batch).
    pub fn publish(&mut self, msg: Message) -> u64 {
        self.publish_at(msg, None, false, 0)
    }

    /// Enqueues a message (kept on disk at `loc`, or read back from it at
    /// recovery and then possibly already `redelivered`), expiring at
    /// `expires_at` (0: never; see [`Queue::expiry_for`]). Over a length
    /// limit with drop-head, call [`Queue::trim`] afterwards.
    pub fn publish_at(
        &mut self,
        msg: Message,
        loc: Option<crate::ids::Loc>,
        redelivered: bool,
        expires_at: u64,
    ) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.stats.published += 1;
        self.ready.push_new(Entry {
            seq,
            msg,
            expires_at,
            loc,
            redelivered,
        });
        seq
    }

    /// Enqueues a message at sequence `seq`, which must be above every
    /// sequence given so far (a replicated queue's own numbering: its log
    /// index, so a delivery's sequence names the same message on every
    /// replica).
    pub fn publish_seq(&mut self, seq: u64, msg: Message, redelivered: bool, expires_at: u64) {
        debug_assert!(seq >= self.next_seq, "sequences only grow");
        self.next_seq = seq + 1;
        self.stats.published += 1;
        self.ready.push_new(Entry {
            seq,
            msg,
            expires_at,
            loc: None,
            redelivered,
        });
    }

    /// Takes a delivery out of the unacked ones without settling it (a
    /// replicated queue returns it once the return is committed).
    pub fn take_delivery(&mut self, seq: u64) -> Option<Entry> {
        self.take_unacked(seq)
    }

    /// Takes a ready message out (a replicated queue's message that a
    /// previous leader delivered, settled by its consumer here).
    pub fn take_ready(&mut self, seq: u64) -> Option<Entry> {
        self.ready.take_seq(seq)
    }

    /// Puts a message taken with [`Queue::take_delivery`] back in its place.
    pub fn put_back(&mut self, e: Entry) {
        self.ready.requeue(vec![e]);
    }

    /// Applies `x-max-length(-bytes)` with drop-head after publishing.
    pub fn trim(&mut self, sink: &mut impl QueueSink) {
        self.enforce_limits(sink);
    }

    /// Adds a consumer. Call [`Queue::dispatch`] afterwards (after the
    /// `consume-ok`, which must reach the client before any delivery).
    pub fn add_consumer(&mut self, spec: ConsumerSpec) -> Result<(), ConsumeError> {
        let exclusive_held = self.consumers.iter().any(|c| c.spec.exclusive);
        if exclusive_held || (spec.exclusive && !self.consumers.is_empty()) {
            return Err(ConsumeError::ExclusiveInUse);
        }
        self.consumers.push(Consumer::new(spec));
        Ok(())
    }

    /// A consumer that was served by another copy of this queue (a
    /// replicated queue's previous leader) carries on here: added unless it
    /// is here already, and the deliveries its channel still holds
    /// (`held`, by sequence) that are ready here become its unacked ones
    /// rather than being delivered again. Returns the sequences taken.
    /// Call [`Queue::dispatch`] afterwards.
    pub fn resume_consumer(&mut self, spec: ConsumerSpec, held: &[u64]) -> Result<Vec<u64>, ConsumeError> {
        let cref = spec.cref;
        let needs_ack = !spec.no_ack;
        if self.consumer_mut(cref).is_none() {
            self.add_consumer(spec)?;
        }
        if !needs_ack {
            return Ok(Vec::new());
        }
        let mut held = held.to_vec();
        held.sort_unstable();
        held.dedup();
        let taken = self.ready.take_seqs(&held);
        let mut seqs = Vec::with_capacity(taken.len());
        if let Some(c) = self.consumer_mut(cref) {
            c.unacked += taken.len() as u32;
        }
        for entry in taken {
            seqs.push(entry.seq);
            self.unacked_bytes += entry.msg.body_len() as u64;
            self.unacked.insert(
                entry.seq,
                Unacked {
                    entry,
                    consumer: Some(cref),
                },
            );
        }
        Ok(seqs)
    }

    /// Removes a consumer; its unacked messages stay with its channel.
    pub fn cancel_consumer(&mut self, cref: ConsumerRef) -> bool {
        let Some(i) = self.consumers.iter().position(|c| c.spec.cref == cref) else {
            return false;
        };
        self.consumers.remove(i);
        if self.next_consumer > i {
            self.next_consumer -= 1;
        }
        true
    }

    /// Removes every consumer of a channel (channel closed). Returns how many.
    pub fn cancel_channel_consumers(&mut self, ch: crate::ids::ChannelRef) -> usize {
        let before = self.consumers.len();
        let mut i = 0;
        while i < self.consumers.len() {
            if self.consumers[i].spec.cref.ch == ch {
                self.consumers.remove(i);
                if self.next_consumer > i {
                    self.next_consumer -= 1;
                }
            } else {
                i += 1;
            }
        }
        before - self.consumers.len()
    }

    fn consumer_mut(&mut self, cref: ConsumerRef) -> Option<&mut Consumer> {
        self.consumers.iter_mut().find(|c| c.spec.cref == cref)
    }

    /// Hands ready messages to consumers with capacity: the highest
    /// `x-priority` first, round-robin among equals; with single active
    /// consumer, only the first registered. Expired messages met at the
    /// head are removed instead of delivered.
    pub fn dispatch(&mut self, now_ms: u64, sink: &mut impl QueueSink) {
        let window = self.window;
        while !self.ready.is_empty() {
            let n = if self.cfg.single_active_consumer {
                self.consumers.len().min(1)
            } else {
                self.consumers.len()
            };
            if n == 0 {
                return;
            }
            if let Some(e) = self.ready.pop_expired(now_ms, false) {
                sink.removed(e, DeadReason::Expired);
                continue;
            }
            // The best priority any consumer with capacity has.
            let top = self.consumers[..n]
                .iter()
                .filter(|c| c.has_capacity(window))
                .map(|c| c.spec.priority)
                .max();
            let Some(top) = top else { return };
            let mut chosen = None;
            for k in 0..n {
                let i = (self.next_consumer + k) % n;
                let c = &mut self.consumers[i];
                if c.spec.priority != top || !c.has_capacity(window) {
                    continue;
                }
                if c.spec.channel_limited && c.channel_credit == 0 {
                    if !c.credit_requested {
                        c.credit_requested = true;
                        sink.request_credit(c.spec.cref);
                    }
                    continue;
                }
                chosen = Some(i);
                break;
            }
            let Some(i) = chosen else { return };
            self.next_consumer = (i + 1) % n;
            let entry = self.ready.pop_front().expect("ready is not empty");
            let c = &mut self.consumers[i];
            if c.spec.channel_limited {
                c.channel_credit -= 1;
            }
            let tracked = c.window_tracked(window);
            if tracked {
                c.in_flight += 1;
            }
            let needs_ack = !c.spec.no_ack;
            let cref = c.spec.cref;
            if needs_ack {
                c.unacked += 1;
            }
            self.stats.delivered += 1;
            if entry.redelivered {
                self.stats.redelivered += 1;
            }
            let d = Delivery {
                consumer: cref,
                queue: self.id,
                seq: entry.seq,
                msg: entry.msg.clone(),
                redelivered: entry.redelivered,
                needs_ack,
                tracked,
                loc: entry.loc,
            };
            if needs_ack {
                self.unacked_bytes += entry.msg.body_len() as u64;
                self.unacked.insert(
                    entry.seq,
                    Unacked {
                        entry,
                        consumer: Some(cref),
                    },
                );
            }
            sink.deliver(d);
        }
        // Channel credit held by consumers of an empty queue would starve the
        // channel's other consumers: give it back.
        for c in &mut self.consumers {
            if c.channel_credit > 0 {
                sink.return_credit(c.spec.cref, c.channel_credit);
                c.channel_credit = 0;
            }
        }
    }

    /// `basic.get`: the head message, and how many remain after it. In ack
    /// mode the message is held as unacked for the getting channel, which
    /// owns the returned seq.
    pub fn get(&mut self, no_ack: bool, now_ms: u64, sink: &mut impl QueueSink) -> Option<(Entry, u32)> {
        self.expire(now_ms, false, sink);
        let entry = self.ready.pop_front()?;
        self.stats.get += 1;
        if entry.redelivered {
            self.stats.redelivered += 1;
        }
        if !no_ack {
            self.unacked_bytes += entry.msg.body_len() as u64;
            self.unacked.insert(
                entry.seq,
                Unacked {
                    entry: entry.clone(),
                    consumer: None,
                },
            );
        }
        let remaining = self.ready.len().min(u32::MAX as usize) as u32;
        Some((entry, remaining))
    }

    fn take_unacked(&mut self, seq: u64) -> Option<Entry> {
        let u = self.unacked.remove(&seq)?;
        self.unacked_bytes -= u.entry.msg.body_len() as u64;
        if let Some(cref) = u.consumer
            && let Some(c) = self.consumer_mut(cref)
        {
            c.unacked = c.unacked.saturating_sub(1);
        }
        Some(u.entry)
    }

    /// Acknowledges a delivery; returns the message, now gone (None if the
    /// delivery was unknown).
    pub fn ack(&mut self, seq: u64) -> Option<Entry> {
        let e = self.take_unacked(seq)?;
        self.stats.acked += 1;
        Some(e)
    }

    /// Rejects a delivery. With `requeue` it goes back to its position marked
    /// redelivered; otherwise it is removed and returned (for dead-lettering).
    pub fn reject(&mut self, seq: u64, requeue: bool) -> Option<Entry> {
        let mut e = self.take_unacked(seq)?;
        if requeue {
            e.redelivered = true;
            self.ready.requeue(vec![e]);
            None
        } else {
            Some(e)
        }
    }

    /// Requeues many deliveries at once (channel closed, `basic.recover`).
    pub fn requeue(&mut self, seqs: impl IntoIterator<Item = u64>) {
        let mut back = Vec::new();
        for seq in seqs {
            if let Some(mut e) = self.take_unacked(seq) {
                e.redelivered = true;
                back.push(e);
            }
        }
        self.ready.requeue(back);
    }

    /// The consumer's channel wrote `n` tracked deliveries to its socket.
    pub fn written(&mut self, cref: ConsumerRef, n: u32) {
        if let Some(c) = self.consumer_mut(cref) {
            c.in_flight = c.in_flight.saturating_sub(n);
        }
    }

    /// A channel-wide limit granted `n` deliveries to this consumer; false
    /// if the consumer is gone (the caller returns the credit). Call
    /// [`Queue::dispatch`] afterwards.
    pub fn grant_credit(&mut self, cref: ConsumerRef, n: u32) -> bool {
        match self.consumer_mut(cref) {
            Some(c) => {
                c.channel_credit += n;
                c.credit_requested = false;
                true
            }
            None => false,
        }
    }

    /// Drops every ready message and returns them (`queue.purge`). Unacked
    /// messages are not touched, as in RabbitMQ.
    pub fn purge(&mut self) -> std::collections::VecDeque<Entry> {
        self.ready.drain_all()
    }

    /// Every message held, ready or unacked (the queue is being deleted).
    pub fn drain_everything(&mut self) -> Vec<Entry> {
        let mut v: Vec<Entry> = self.ready.drain_all().into_iter().collect();
        v.extend(self.unacked.drain().map(|(_, u)| u.entry));
        self.unacked_bytes = 0;
        v
    }

    /// The consumers to notify when the queue is deleted.
    pub fn consumer_refs(&self) -> Vec<ConsumerRef> {
        self.consumers.iter().map(|c| c.spec.cref).collect()
    }

    pub fn ready_iter(&self) -> impl Iterator<Item = &Entry> {
        self.ready.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{ChannelRef, ConnId};

    #[derive(Default)]
    struct Sink {
        out: Vec<Delivery>,
        requests: Vec<ConsumerRef>,
        returned: Vec<(ConsumerRef, u32)>,
        removed: Vec<(Entry, DeadReason)>,
    }
    impl QueueSink for Sink {
        fn deliver(&mut self, d: Delivery) {
            self.out.push(d);
        }
        fn request_credit(&mut self, c: ConsumerRef) {
            self.requests.push(c);
        }
        fn return_credit(&mut self, c: ConsumerRef, n: u32) {
            self.returned.push((c, n));
        }
        fn removed(&mut self, e: Entry, r: DeadReason) {
            self.removed.push((e, r));
        }
    }

    fn cref(n: u32) -> ConsumerRef {
        ConsumerRef {
            ch: ChannelRef {
                conn: ConnId::new(0, 1),
                channel: 1,
                epoch: 1,
            },
            id: n,
        }
    }

    fn spec(n: u32, prefetch: u32, no_ack: bool) -> ConsumerSpec {
        ConsumerSpec {
            cref: cref(n),
            no_ack,
            exclusive: false,
            prefetch,
            channel_limited: false,
            priority: 0,
        }
    }

    fn msg(i: u32) -> Message {
        Message::assemble(b"", b"q", b"", &i.to_be_bytes())
    }

    fn body(d: &Delivery) -> u32 {
        u32::from_be_bytes(d.msg.body().try_into().unwrap())
    }

    #[test]
    fn a_resumed_consumer_keeps_what_its_channel_holds() {
        let mut q = Queue::new(QueueId(1), 100);
        for i in 1..=5 {
            q.publish_seq(10 + i as u64, msg(i), true, 0);
        }
        // The channel holds 11 and 13 from the previous leader; 99 is not
        // here (settled meanwhile).
        let got = q.resume_consumer(spec(1, 3, false), &[13, 11, 99]).unwrap();
        assert_eq!(got, vec![11, 13]);
        assert_eq!((q.ready_count(), q.unacked_count()), (3, 2));
        let mut sink = Sink::default();
        q.dispatch(0, &mut sink);
        // Prefetch 3: the two held count against it.
        assert_eq!(sink.out.iter().map(|d| d.seq).collect::<Vec<_>>(), vec![12]);
        // Resuming again (the leader record was written twice) changes nothing.
        assert_eq!(
            q.resume_consumer(spec(1, 3, false), &[11, 13]).unwrap(),
            Vec::<u64>::new()
        );
        assert_eq!(q.consumer_count(), 1);
        // Acks of the held ones settle them here.
        assert!(q.ack(11).is_some() && q.ack(13).is_some());
        q.dispatch(0, &mut sink);
        assert_eq!(
            sink.out.iter().map(|d| d.seq).collect::<Vec<_>>(),
            vec![12, 14, 15]
        );
    }

    #[test]
    fn fifo_and_prefetch() {
        let mut q = Queue::new(QueueId(1), 100);
        let mut s = Sink::default();
        for i in 0..5 {
            q.publish(msg(i));
        }
        q.add_consumer(spec(1, 2, false)).unwrap();
        q.dispatch(0, &mut s);
        assert_eq!(s.out.iter().map(body).collect::<Vec<_>>(), vec![0, 1]);
        assert!(q.ack(s.out[0].seq).is_some());
        q.dispatch(0, &mut s);
        assert_eq!(s.out.len(), 3);
        assert_eq!(body(&s.out[2]), 2);
        assert_eq!(q.ready_count(), 2);
        assert_eq!(q.unacked_count(), 2);
        assert!(q.ack(s.out[0].seq).is_none(), "double ack is refused");
    }

    #[test]
    fn round_robin_respects_capacity() {
        let mut q = Queue::new(QueueId(1), 100);
        let mut s = Sink::default();
        q.add_consumer(spec(1, 1, false)).unwrap();
        q.dispatch(0, &mut s);
        q.add_consumer(spec(2, 0, false)).unwrap();
        q.dispatch(0, &mut s);
        for i in 0..4 {
            q.publish(msg(i));
        }
        q.dispatch(0, &mut s);
        let who: Vec<u32> = s.out.iter().map(|d| d.consumer.id).collect();
        assert_eq!(who, vec![1, 2, 2, 2]);
    }

    #[test]
    fn requeue_restores_order_and_marks_redelivered() {
        let mut q = Queue::new(QueueId(1), 100);
        let mut s = Sink::default();
        for i in 0..3 {
            q.publish(msg(i));
        }
        q.add_consumer(spec(1, 2, false)).unwrap();
        q.dispatch(0, &mut s);
        let seqs: Vec<u64> = s.out.iter().map(|d| d.seq).collect();
        q.cancel_consumer(cref(1));
        q.requeue(seqs.into_iter().rev());
        q.add_consumer(spec(2, 0, true)).unwrap();
        q.dispatch(0, &mut s);
        let tail: Vec<(u32, bool)> = s.out[2..].iter().map(|d| (body(d), d.redelivered)).collect();
        assert_eq!(tail, vec![(0, true), (1, true), (2, false)]);
    }

    #[test]
    fn window_bounds_no_ack_consumers() {
        let mut q = Queue::new(QueueId(1), 3);
        let mut s = Sink::default();
        for i in 0..10 {
            q.publish(msg(i));
        }
        q.add_consumer(spec(1, 0, true)).unwrap();
        q.dispatch(0, &mut s);
        assert_eq!(s.out.len(), 3);
        assert!(s.out.iter().all(|d| d.tracked && !d.needs_ack));
        q.written(cref(1), 2);
        q.dispatch(0, &mut s);
        assert_eq!(s.out.len(), 5);
    }

    #[test]
    fn exclusive_consumer() {
        let mut q = Queue::new(QueueId(1), 3);
        let mut s = Sink::default();
        let mut ex = spec(1, 0, false);
        ex.exclusive = true;
        q.add_consumer(ex.clone()).unwrap();
        q.dispatch(0, &mut s);
        assert_eq!(
            q.add_consumer(spec(2, 0, false)),
            Err(ConsumeError::ExclusiveInUse)
        );
        q.cancel_consumer(cref(1));
        q.add_consumer(spec(2, 0, false)).unwrap();
        q.dispatch(0, &mut s);
        ex.cref = cref(3);
        assert_eq!(q.add_consumer(ex), Err(ConsumeError::ExclusiveInUse));
    }

    #[test]
    fn channel_credit_protocol() {
        let mut q = Queue::new(QueueId(1), 100);
        let mut s = Sink::default();
        let mut sp = spec(1, 0, false);
        sp.channel_limited = true;
        q.add_consumer(sp).unwrap();
        q.dispatch(0, &mut s);
        q.publish(msg(0));
        q.publish(msg(1));
        q.dispatch(0, &mut s);
        assert!(s.out.is_empty());
        assert_eq!(s.requests, vec![cref(1)]);
        q.dispatch(0, &mut s);
        assert_eq!(s.requests.len(), 1, "asks once");
        assert!(q.grant_credit(cref(1), 5));
        q.dispatch(0, &mut s);
        assert_eq!(s.out.len(), 2);
        assert_eq!(s.returned, vec![(cref(1), 3)]);
    }

    #[test]
    fn get_and_reject() {
        let mut q = Queue::new(QueueId(1), 100);
        q.publish(msg(7));
        q.publish(msg(8));
        let mut s = Sink::default();
        let (e, left) = q.get(false, 0, &mut s).unwrap();
        assert_eq!(left, 1);
        assert!(q.reject(e.seq, true).is_none());
        let (e2, _) = q.get(true, 0, &mut s).unwrap();
        assert_eq!(e2.seq, e.seq);
        assert!(e2.redelivered);
        let (e3, left) = q.get(false, 0, &mut s).unwrap();
        assert_eq!(left, 0);
        let dropped = q.reject(e3.seq, false).unwrap();
        assert_eq!(dropped.seq, e3.seq);
        assert!(q.get(false, 0, &mut s).is_none());
    }

    fn with(cfg: QueueConfig) -> Queue {
        Queue::with_config(QueueId(1), 100, cfg)
    }

    fn bodies(s: &Sink) -> Vec<u32> {
        s.out.iter().map(body).collect()
    }

    #[test]
    fn queue_ttl_expires_at_the_head_and_zero_means_now_or_never() {
        let mut q = with(QueueConfig {
            message_ttl: Some(100),
            ..Default::default()
        });
        let mut s = Sink::default();
        for i in 0..3 {
            let at = q.expiry_for(None, 1000 + i as u64 * 50);
            q.publish_at(msg(i), None, false, at);
        }
        q.expire(1120, true, &mut s);
        assert_eq!(s.removed.len(), 1, "only the first is past its TTL");
        assert_eq!(s.removed[0].1, DeadReason::Expired);
        // Per-message TTL shorter than the queue's wins.
        assert_eq!(q.expiry_for(Some(10), 5000), 5010);
        let mut z = with(QueueConfig {
            message_ttl: Some(0),
            ..Default::default()
        });
        let at = z.expiry_for(None, 7);
        z.publish_at(msg(9), None, false, at);
        z.add_consumer(spec(1, 0, true)).unwrap();
        z.dispatch(7, &mut s);
        assert_eq!(bodies(&s), vec![9], "TTL 0 delivers at once when it can");
        let at = z.expiry_for(None, 7);
        z.cancel_consumer(cref(1));
        z.publish_at(msg(10), None, false, at);
        z.dispatch(7, &mut s);
        z.expire(7, true, &mut s);
        assert_eq!(z.ready_count(), 0, "and drops otherwise");
    }

    #[test]
    fn max_length_drop_head_and_reject() {
        let mut q = with(QueueConfig {
            max_length: Some(2),
            ..Default::default()
        });
        let mut s = Sink::default();
        for i in 0..4 {
            assert_eq!(q.admit(4, 0, 0), Admit::Yes);
            q.publish(msg(i));
            q.trim(&mut s);
        }
        assert_eq!(q.ready_count(), 2);
        assert_eq!(
            s.removed.iter().map(|(e, _)| body_of(e)).collect::<Vec<_>>(),
            vec![0, 1]
        );
        assert!(s.removed.iter().all(|(_, r)| *r == DeadReason::MaxLen));
        let r = with(QueueConfig {
            max_length_bytes: Some(8),
            overflow: Overflow::RejectPublish,
            ..Default::default()
        });
        assert_eq!(r.admit(8, 0, 0), Admit::Yes);
        assert_eq!(r.admit(8, 1, 8), Admit::Reject, "pending bytes count");
        let d = with(QueueConfig {
            max_length: Some(0),
            overflow: Overflow::RejectPublishDlx,
            ..Default::default()
        });
        assert_eq!(d.admit(1, 0, 0), Admit::RejectDeadLetter);
    }

    fn body_of(e: &Entry) -> u32 {
        u32::from_be_bytes(e.msg.body().try_into().unwrap())
    }

    #[test]
    fn priority_queue_and_consumer_priorities() {
        let mut q = with(QueueConfig {
            max_priority: 10,
            ..Default::default()
        });
        let mut s = Sink::default();
        for (i, p) in [(0, 1), (1, 5), (2, 1), (3, 9)] {
            let mut m = msg(i);
            m.priority = p;
            q.publish(m);
        }
        let mut low = spec(1, 0, true);
        low.priority = 1;
        let mut high = spec(2, 2, false);
        high.priority = 5;
        q.add_consumer(low).unwrap();
        q.add_consumer(high).unwrap();
        q.dispatch(0, &mut s);
        // Highest priority messages first; the high-priority consumer takes
        // all it can (prefetch 2) before the low one gets any.
        let got: Vec<(u32, u32)> = s.out.iter().map(|d| (body(d), d.consumer.id)).collect();
        assert_eq!(got, vec![(3, 2), (1, 2), (0, 1), (2, 1)]);
    }

    #[test]
    fn single_active_consumer_fails_over() {
        let mut q = with(QueueConfig {
            single_active_consumer: true,
            ..Default::default()
        });
        let mut s = Sink::default();
        q.add_consumer(spec(1, 1, false)).unwrap();
        q.add_consumer(spec(2, 1, false)).unwrap();
        for i in 0..3 {
            q.publish(msg(i));
        }
        q.dispatch(0, &mut s);
        assert_eq!(s.out.iter().map(|d| d.consumer.id).collect::<Vec<_>>(), vec![1]);
        q.cancel_consumer(cref(1));
        q.dispatch(0, &mut s);
        assert_eq!(
            s.out.last().unwrap().consumer.id,
            2,
            "the next consumer takes over"
        );
    }
}
