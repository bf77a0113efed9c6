//! One shard's state and the handling of everything that reaches it.

use super::item::{Batch, ControlMsg, Item, QueueOp};
use super::notify::Notify;
use crate::broker::control::ControlPlane;
use crate::broker::request::{Reply, Settle};
use crate::broker::topology::{Change, RouteScratch, Topology};
use crate::config::Config;
use crate::ids::{ChannelRef, Loc};
use crate::ids::{ConnId, ConsumerRef, IdMap, QueueId, ShardId, VhostId};
use crate::message::Message;
use crate::protocol::{AmqpError, ShortStr};
use crate::queue::{Admit, ConsumeError, DeadReason, Delivery, Queue, QueueSink};
use crate::session::{Event, SessionConfig};
use crate::storage::QueueStore;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Waker;

/// A queue engine with what its owner needs to know about it.
/// Owned by the queue's owner shard.
pub struct QueueSlot {
    pub q: Queue,
    pub name: ShortStr,
    pub vhost: VhostId,
    pub auto_delete: bool,
    pub had_consumers: bool,
    dirty: bool,
    /// Durable queues keep persistent messages here.
    pub store: Option<QueueStore>,
    /// The store could not be opened: persistent messages are refused
    /// (nacked) rather than kept without durability.
    store_failed: bool,
    /// Connections this queue paused (flow control).
    throttled: Vec<ConnId>,
    /// Dead-lettering and expiry settings.
    pub extras: crate::broker::args::QueueExtras,
    /// Last time the queue was used (for `x-expires`), ms.
    pub last_used_ms: u64,
    /// Body bytes of `pending`.
    pending_bytes: u64,
    /// Holds messages with a per-message TTL (so the sweeper looks at it).
    may_expire: bool,
    /// Publishes waiting for the end-of-step store write, in order (with
    /// the transient ones queued behind them, to keep FIFO).
    pending: Vec<(Message, Option<(ChannelRef, u64)>)>,
    store_dirty: bool,
}

/// A connection as its shard sees it: the inbox other tasks fill and the
/// wake-up for the connection's task. Owned by the connection's shard.
pub struct ConnHandle {
    pub inbox: RefCell<VecDeque<Event>>,
    pub notify: Notify,
    /// What the management plane shows; refreshed by the connection's task
    /// when its state changes and about once a second.
    pub meta: RefCell<ConnMeta>,
}

/// A connection's description for management.
#[derive(Debug, Clone, Default)]
pub struct ConnMeta {
    pub name: String,
    pub peer: Option<std::net::SocketAddr>,
    pub local: Option<std::net::SocketAddr>,
    pub connected_at_ms: u64,
    pub user: String,
    pub vhost: String,
    pub state: &'static str,
    pub frame_max: u32,
    pub heartbeat: u16,
    pub client_properties: serde_json::Value,
    pub channels: Vec<crate::session::ChannelSummary>,
    pub recv_oct: u64,
    pub send_oct: u64,
    pub published: u64,
    pub delivered: u64,
    pub confirmed: u64,
}

impl ConnHandle {
    pub fn push(&self, ev: Event) {
        self.inbox.borrow_mut().push_back(ev);
        self.notify.notify();
    }
}

/// What waits for the next sync.
#[derive(Debug, Clone, Copy)]
pub enum SyncWaiter {
    Confirm(ChannelRef, u64),
    Barrier { ch: ChannelRef, token: u64 },
}

/// The control plane's state. Shard 0 only.
#[derive(Default)]
pub struct ControlState {
    pub plane: RefCell<ControlPlane>,
    pub inbox: RefCell<VecDeque<ControlMsg>>,
    pub notify: Notify,
    /// Shards yet to apply the last broadcast.
    pub acks_pending: Cell<usize>,
    pub acks_notify: Notify,
    pub next_op: Cell<u64>,
    pub results: RefCell<IdMap<u64, Result<u32, AmqpError>>>,
    pub results_notify: Notify,
    /// Where durable topology changes are written.
    pub log: RefCell<Option<crate::storage::topolog::TopoLog>>,
}

/// Everything one shard owns. Lives on its executor thread; shared by that
/// shard's tasks through `Rc`. No locks: each field is touched only by this
/// thread, and RefCell borrows never span an await.
pub struct Shard {
    pub id: ShardId,
    pub nshards: usize,
    pub cfg: Arc<Config>,
    pub session_cfg: SessionConfig,
    /// Replica of the topology (the authoritative copy on shard 0).
    pub topo: RefCell<Topology>,
    /// Queues this shard owns.
    pub queues: RefCell<IdMap<QueueId, QueueSlot>>,
    pub conns: RefCell<IdMap<ConnId, Rc<ConnHandle>>>,
    next_conn: Cell<u64>,
    /// Items waiting for the next ring push, per destination shard.
    pub outbox: RefCell<Vec<Batch>>,
    pub flush: Vec<Notify>,
    /// Connections waiting for a congested outbox to drain.
    pub drain_waiters: RefCell<Vec<Waker>>,
    /// Items addressed to this shard, handled after the current step.
    local: RefCell<VecDeque<Item>>,
    pub local_notify: Notify,
    dirty: RefCell<Vec<QueueId>>,
    /// Queues with store work to do at the end of the step.
    store_dirty: RefCell<Vec<QueueId>>,
    /// Confirms and barriers to answer once the next sync completes.
    pub awaiting_sync: RefCell<Vec<SyncWaiter>>,
    /// Barriers started here: token → (channel, shards yet to answer).
    barriers: RefCell<IdMap<u64, (ChannelRef, usize)>>,
    next_barrier: Cell<u64>,
    pub sync_notify: Notify,
    pub route: RefCell<(RouteScratch, Vec<(QueueId, ShardId)>)>,
    pub control: Option<ControlState>,
    rng: Cell<u64>,
    pub stopping: Cell<bool>,
    pub stats: Arc<super::server::SharedStats>,
    /// Messages routed by this shard's connections.
    pub routed: Cell<u64>,
    pub sync_stats: RefCell<SyncStats>,
    /// The first store that failed to open while applying changes.
    boot_error: RefCell<Option<String>>,
}

/// Where a routed message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// In the queue now; confirm at once.
    Now,
    /// Waiting for the store write and sync; the confirm comes as an event.
    Deferred,
    /// Refused (the queue's store is unavailable): nack.
    Refused,
}

/// Group-commit figures of one shard.
pub struct SyncStats {
    pub fsyncs: u64,
    pub files: u64,
    pub waiters: u64,
    /// fsync latency in microseconds.
    pub latency: hdrhistogram::Histogram<u64>,
}

impl Default for SyncStats {
    fn default() -> Self {
        SyncStats {
            fsyncs: 0,
            files: 0,
            waiters: 0,
            latency: hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 2).expect("valid bounds"),
        }
    }
}

impl Shard {
    /// A shard whose topology starts as `initial` (recovered or fresh),
    /// with the stores of the durable queues it owns opened and read back.
    pub fn new(
        id: ShardId,
        nshards: usize,
        cfg: Arc<Config>,
        seed: u64,
        initial: &[Change],
        stats: Arc<super::server::SharedStats>,
    ) -> Result<Self, String> {
        let l = &cfg.limits;
        let session_cfg = SessionConfig {
            frame_max: l.frame_max,
            channel_max: l.channel_max,
            heartbeat: l.heartbeat.as_secs().min(u16::MAX as u64) as u16,
            max_message_size: l.max_message_size,
            max_unconfirmed: l.max_unconfirmed,
            tx_max_messages: l.tx_max_messages,
            tx_max_bytes: l.tx_max_bytes,
            cluster_name: format!("warren@{}", hostname()),
            product_version: env!("CARGO_PKG_VERSION").into(),
            consumer_timeout_ms: l.consumer_timeout.as_millis() as u64,
            handshake_timeout_ms: l.handshake_timeout.as_millis() as u64,
        };
        let control = (id == 0).then(ControlState::default);
        let shard = Shard {
            id,
            nshards,
            session_cfg,
            queues: RefCell::default(),
            conns: RefCell::default(),
            next_conn: Cell::new(1),
            outbox: RefCell::new((0..nshards).map(|_| Vec::new()).collect()),
            flush: (0..nshards).map(|_| Notify::default()).collect(),
            drain_waiters: RefCell::default(),
            local: RefCell::default(),
            local_notify: Notify::default(),
            dirty: RefCell::default(),
            store_dirty: RefCell::default(),
            awaiting_sync: RefCell::default(),
            barriers: RefCell::default(),
            next_barrier: Cell::new(1),
            sync_notify: Notify::default(),
            route: RefCell::default(),
            control,
            rng: Cell::new(seed | 1),
            stopping: Cell::new(false),
            stats,
            routed: Cell::new(0),
            sync_stats: RefCell::default(),
            boot_error: RefCell::default(),
            topo: RefCell::new(Topology::default()),
            cfg,
        };
        // Every shard applies the same initial changes, so all replicas start
        // equal with no broadcast before the first connection.
        shard.apply_changes(initial);
        if let Some(e) = shard.boot_error.borrow_mut().take() {
            return Err(e);
        }
        if let Some(c) = &shard.control {
            c.plane.borrow_mut().resume_ids(&shard.topo.borrow());
        }
        Ok(shard)
    }

    pub fn new_conn_id(&self) -> ConnId {
        let n = self.next_conn.get();
        self.next_conn.set(n + 1);
        ConnId::new(self.id, n)
    }

    /// xorshift64*: server-generated names need uniqueness, not secrecy.
    pub fn random(&self) -> u64 {
        let mut x = self.rng.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// `prefix` + 22 url-safe base64 characters, as RabbitMQ names
    /// `amq.gen-…` queues and `amq.ctag-…` consumer tags.
    pub fn unique_name(&self, prefix: &str) -> ShortStr {
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

    /// Sends an item to a shard: batched for a peer, deferred for ourselves
    /// (never handled re-entrantly).
    pub fn send(&self, dest: ShardId, item: Item) {
        if dest == self.id {
            self.local.borrow_mut().push_back(item);
            self.local_notify.notify();
        } else {
            self.outbox.borrow_mut()[dest as usize].push(item);
        }
    }

    /// Sends an item to `dest` behind everything shard `via` has already
    /// sent there (see [`Item::Via`]).
    pub fn send_via(&self, via: ShardId, dest: ShardId, item: Item) {
        if via == self.id || via == dest {
            self.send(dest, item);
        } else {
            self.send(
                via,
                Item::Via {
                    dest,
                    item: Box::new(item),
                },
            );
        }
    }

    /// Sends an event to a connection, wherever it lives.
    pub fn to_conn(&self, conn: ConnId, ev: Event) {
        if conn.shard() == self.id {
            self.deliver_event(conn, ev);
        } else {
            self.send(conn.shard(), Item::Event { conn, ev });
        }
    }

    pub fn reply(&self, ch: crate::ids::ChannelRef, reply: Reply) {
        self.to_conn(ch.conn, Event::Reply { ch, reply });
    }

    fn deliver_event(&self, conn: ConnId, ev: Event) {
        let handle = self.conns.borrow().get(&conn).cloned();
        match handle {
            Some(h) => h.push(ev),
            None => self.orphan(ev),
        }
    }

    fn owner_of(&self, queue: QueueId) -> Option<ShardId> {
        self.topo.borrow().queue(queue).map(|q| q.owner)
    }

    /// An event whose connection is gone: give back what it holds.
    fn orphan(&self, ev: Event) {
        let give_back = |queue: QueueId, item: Item| {
            if let Some(owner) = self.owner_of(queue) {
                self.send(owner, item);
            }
        };
        match ev {
            Event::Deliver(d) => {
                if d.needs_ack {
                    give_back(
                        d.queue,
                        Item::Settle {
                            queue: d.queue,
                            seq: d.seq,
                            how: Settle::Requeue,
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
                        how: Settle::Requeue,
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

    pub fn mark_dirty(&self, slot: &mut QueueSlot) {
        if !slot.dirty {
            slot.dirty = true;
            self.dirty.borrow_mut().push(slot.q.id);
        }
    }

    /// Work left by the current step: deferred local items, dispatch of
    /// queues that changed, then wake the ring flushers. Run after every
    /// step of every task, so one ring push carries a whole turn's items.
    pub fn after_step(&self) {
        loop {
            let item = self.local.borrow_mut().pop_front();
            if let Some(item) = item {
                self.handle_item(item);
                continue;
            }
            self.flush_stores();
            let dirty = std::mem::take(&mut *self.dirty.borrow_mut());
            if dirty.is_empty() {
                break;
            }
            for id in dirty {
                self.dispatch(id);
            }
        }
        self.flush_stores();
        let outbox = self.outbox.borrow();
        for (d, items) in outbox.iter().enumerate() {
            if !items.is_empty() {
                self.flush[d].notify();
            }
        }
    }

    pub fn outbox_congested(&self) -> bool {
        let high = self.cfg.limits.outbox_high;
        self.outbox.borrow().iter().any(|b| b.len() > high)
    }

    fn dispatch(&self, id: QueueId) {
        let mut queues = self.queues.borrow_mut();
        let Some(slot) = queues.get_mut(&id) else {
            return;
        };
        slot.dirty = false;
        let now = now_ms();
        self.with_sink(slot, |q, sink| {
            // Drop-head first, then deliver, then drop what expires now
            // (this is what makes a TTL of 0 mean "deliver now or drop").
            q.trim(sink);
            q.dispatch(now, sink);
            q.expire(now, true, sink);
        });
        self.maybe_release(slot);
    }

    /// Runs queue operations with a sink, then carries out what they left
    /// for the owner: delivery marks on disk, removed messages (store
    /// cleanup and dead-lettering).
    pub fn with_sink<R>(&self, slot: &mut QueueSlot, f: impl FnOnce(&mut Queue, &mut Sink<'_>) -> R) -> R {
        let mut stored = Vec::new();
        let mut removed = Vec::new();
        let queue = slot.q.id;
        let r = f(
            &mut slot.q,
            &mut Sink {
                shard: self,
                queue,
                stored: &mut stored,
                removed: &mut removed,
            },
        );
        if let Some(store) = &mut slot.store {
            for (loc, needs_ack, redelivered) in stored {
                Self::record_delivery(store, Some(loc), needs_ack, redelivered);
            }
        }
        for (entry, reason) in removed {
            self.dead_letter(slot, &entry.msg, reason);
            if let (Some(loc), Some(store)) = (entry.loc, &mut slot.store) {
                store.remove(loc);
            }
        }
        if slot.store.is_some() {
            self.mark_store_dirty(slot);
        }
        r
    }

    /// Republishes a message that left `slot` for `reason` to the queue's
    /// dead-letter exchange (if it has one), as RabbitMQ does: routed
    /// without confirms, dropped when nothing matches or it would cycle.
    fn dead_letter(&self, slot: &QueueSlot, msg: &Message, reason: DeadReason) {
        let Some(dlx) = &slot.extras.dead_letter_exchange else {
            return;
        };
        let now_secs = now_ms() / 1000;
        let dl = crate::broker::deadletter::dead_letter(
            msg,
            slot.name.as_bytes(),
            reason,
            dlx.as_bytes(),
            slot.extras.dead_letter_routing_key.as_ref().map(|k| k.as_bytes()),
            now_secs,
        );
        let topo = self.topo.borrow();
        let mut dests: Vec<(QueueId, ShardId)> = Vec::new();
        let mut scratch = crate::broker::topology::RouteScratch::default();
        let mut out = Vec::new();
        for key in &dl.routing_keys {
            if topo
                .route(
                    slot.vhost,
                    dlx.as_bytes(),
                    key,
                    dl.msg.props(),
                    &mut scratch,
                    &mut out,
                )
                .is_ok()
            {
                dests.extend(out.iter().copied());
            }
        }
        dests.sort_unstable();
        dests.dedup();
        for (queue, owner) in dests {
            let name = topo.queue(queue).map(|q| q.name.clone()).unwrap_or_default();
            if crate::broker::deadletter::is_cycle(&dl.msg, name.as_bytes()) {
                continue;
            }
            self.send(
                owner,
                Item::Publish {
                    queue,
                    msg: dl.msg.clone(),
                    confirm: None,
                    publisher: ConnId(0),
                },
            );
        }
    }

    /// On disk, a delivery without ack removes the message; a first
    /// delivery with ack is marked so a crash brings it back redelivered.
    fn record_delivery(store: &mut QueueStore, loc: Option<Loc>, needs_ack: bool, redelivered: bool) {
        let Some(loc) = loc else { return };
        if !needs_ack {
            store.remove(loc);
        } else if !redelivered {
            store.delivered(loc);
        }
    }

    /// Pauses a publisher whose queue runs too far ahead of its consumers.
    /// A connection that consumes from the queue itself is never paused: it
    /// could not read the acks that would drain it.
    fn maybe_throttle(&self, slot: &mut QueueSlot, publisher: ConnId) {
        let backlog = slot.q.ready_count() + slot.pending.len();
        if backlog <= self.cfg.limits.flow_backlog || slot.q.consumer_count() == 0 {
            return;
        }
        if publisher.0 == 0 || slot.throttled.contains(&publisher) {
            return;
        }
        if slot.q.consumers().any(|c| c.spec.cref.ch.conn == publisher) {
            return;
        }
        slot.throttled.push(publisher);
        let queue = slot.q.id;
        self.to_conn(publisher, Event::Throttle { queue, on: true });
    }

    /// Resumes paused publishers once the backlog is down to half, or no
    /// consumer is left to wait for.
    fn maybe_release(&self, slot: &mut QueueSlot) {
        if slot.throttled.is_empty() {
            return;
        }
        let backlog = slot.q.ready_count() + slot.pending.len();
        if backlog > self.cfg.limits.flow_backlog / 2 && slot.q.consumer_count() > 0 {
            return;
        }
        let queue = slot.q.id;
        for conn in std::mem::take(&mut slot.throttled) {
            self.to_conn(conn, Event::Throttle { queue, on: false });
        }
    }

    fn mark_store_dirty(&self, slot: &mut QueueSlot) {
        if !slot.store_dirty {
            slot.store_dirty = true;
            self.store_dirty.borrow_mut().push(slot.q.id);
        }
    }

    /// Puts a routed message into a queue this shard owns. Persistent
    /// messages for durable queues (and anything behind them) wait for the
    /// end-of-step store write; returns whether the confirm is deferred
    /// (it then arrives as an event).
    pub fn enqueue(
        &self,
        slot: &mut QueueSlot,
        msg: Message,
        confirm: Option<(ChannelRef, u64)>,
        publisher: ConnId,
    ) -> Enqueued {
        if slot.store_failed && msg.persistent {
            return Enqueued::Refused;
        }
        match slot
            .q
            .admit(msg.body_len(), slot.pending.len(), slot.pending_bytes)
        {
            Admit::Yes => {}
            Admit::Reject => return Enqueued::Refused,
            Admit::RejectDeadLetter => {
                self.dead_letter(slot, &msg, DeadReason::MaxLen);
                return Enqueued::Refused;
            }
        }
        self.maybe_throttle(slot, publisher);
        slot.may_expire |= msg.ttl().is_some();
        if slot.store.is_some() && (msg.persistent || !slot.pending.is_empty()) {
            slot.pending_bytes += msg.body_len() as u64;
            slot.pending.push((msg, confirm));
            self.mark_store_dirty(slot);
            Enqueued::Deferred
        } else {
            // The clock is read only for queues or messages with a TTL.
            let expires_at = if slot.q.config().message_ttl.is_some() || msg.ttl().is_some() {
                slot.q.expiry_for(msg.ttl(), now_ms())
            } else {
                0
            };
            slot.q.publish_at(msg, None, false, expires_at);
            if slot.q.config().overflow_drops_head() {
                self.with_sink(slot, |q, sink| q.trim(sink));
            }
            self.mark_dirty(slot);
            Enqueued::Now
        }
    }

    /// Writes pending publishes to their stores (one batch per queue),
    /// enqueues them, and flushes ack logs. Confirms for what was written
    /// wait for the sync task.
    fn flush_stores(&self) {
        let ids = std::mem::take(&mut *self.store_dirty.borrow_mut());
        if ids.is_empty() {
            return;
        }
        let mut needs_sync = false;
        let mut queues = self.queues.borrow_mut();
        for id in ids {
            let Some(slot) = queues.get_mut(&id) else { continue };
            needs_sync |= self.flush_store(slot);
        }
        if needs_sync || !self.awaiting_sync.borrow().is_empty() {
            self.sync_notify.notify();
        }
    }

    /// Brings a queue up to date with everything that reached it before
    /// an operation on it (a get, a purge, a count, a delete): publishes
    /// still waiting for the end-of-step store write are written and
    /// enqueued, and drop-head applied, so the operation sees the queue as
    /// if each publish had been applied on arrival.
    fn catch_up(&self, slot: &mut QueueSlot) {
        if slot.pending.is_empty() {
            return;
        }
        if self.flush_store(slot) || !self.awaiting_sync.borrow().is_empty() {
            self.sync_notify.notify();
        }
    }

    /// One queue's part of [`Shard::flush_stores`]; returns whether its
    /// store needs a sync.
    fn flush_store(&self, slot: &mut QueueSlot) -> bool {
        slot.store_dirty = false;
        let Some(store) = &mut slot.store else {
            return false;
        };
        if !slot.pending.is_empty() {
            let now_ms = now_ms();
            let pending = std::mem::take(&mut slot.pending);
            slot.pending_bytes = 0;
            let mut stored = Vec::new();
            let persistent = pending
                .iter()
                .filter(|(m, _)| m.persistent)
                .map(|(m, _)| m.clone());
            let write = store.append_batch(persistent, now_ms, &mut stored);
            let mut stored = stored.into_iter();
            for (msg, confirm) in pending {
                if !msg.persistent {
                    let expires_at = slot.q.expiry_for(msg.ttl(), now_ms);
                    slot.q.publish_at(msg, None, false, expires_at);
                    if let Some((ch, seq)) = confirm {
                        self.to_conn(ch.conn, Event::Confirm { ch, seq, ok: true });
                    }
                    continue;
                }
                match (&write, stored.next()) {
                    (Ok(()), Some((loc, m))) => {
                        let expires_at = slot.q.expiry_for(m.ttl(), now_ms);
                        slot.q.publish_at(m, Some(loc), false, expires_at);
                        if let Some((ch, seq)) = confirm {
                            self.awaiting_sync.borrow_mut().push(SyncWaiter::Confirm(ch, seq));
                        }
                    }
                    _ => {
                        // The store refused the write (disk full, I/O
                        // error): the message is not taken; nack it.
                        if let Some((ch, seq)) = confirm {
                            self.to_conn(ch.conn, Event::Confirm { ch, seq, ok: false });
                        }
                    }
                }
            }
            if let Err(e) = write {
                log::error!("cannot write to the store of queue '{}': {e}", slot.name);
            }
            self.with_sink(slot, |q, sink| q.trim(sink));
            self.mark_dirty(slot);
        }
        let Some(store) = &mut slot.store else {
            return false;
        };
        if let Err(e) = store.flush() {
            log::error!("cannot write the ack log of queue '{}': {e}", slot.name);
        }
        store.needs_sync()
    }

    /// Takes the files to sync and what waits on them.
    pub fn take_sync(&self) -> (Vec<Arc<dyn crate::storage::Syncable>>, Vec<SyncWaiter>) {
        let mut files = Vec::new();
        for slot in self.queues.borrow_mut().values_mut() {
            if let Some(store) = &mut slot.store
                && store.needs_sync()
            {
                store.take_sync(&mut files);
            }
        }
        let confirms = std::mem::take(&mut *self.awaiting_sync.borrow_mut());
        (files, confirms)
    }

    fn queue_gone_error(name: &ShortStr, vhost: &str) -> AmqpError {
        crate::broker::control::no_queue(name, vhost)
    }

    /// Handles one item addressed to this shard.
    pub fn handle_item(&self, item: Item) {
        match item {
            Item::Publish {
                queue,
                msg,
                confirm,
                publisher,
            } => {
                let mut queues = self.queues.borrow_mut();
                let r = match queues.get_mut(&queue) {
                    Some(slot) => self.enqueue(slot, msg, confirm, publisher),
                    None => Enqueued::Now,
                };
                if r != Enqueued::Deferred
                    && let Some((ch, seq)) = confirm
                {
                    let ok = r == Enqueued::Now;
                    self.to_conn(ch.conn, Event::Confirm { ch, seq, ok });
                }
            }
            Item::Settle { queue, seq, how } => self.settle_local(queue, seq, how),
            Item::Written { queue, consumer, n } => {
                let mut queues = self.queues.borrow_mut();
                if let Some(slot) = queues.get_mut(&queue) {
                    slot.q.written(consumer, n);
                    self.mark_dirty(slot);
                }
            }
            Item::Credit { queue, consumer, n } => {
                let mut queues = self.queues.borrow_mut();
                let granted = match queues.get_mut(&queue) {
                    Some(slot) => {
                        let ok = slot.q.grant_credit(consumer, n);
                        self.mark_dirty(slot);
                        ok
                    }
                    None => false,
                };
                if !granted {
                    self.to_conn(consumer.ch.conn, Event::CreditReturn { queue, consumer, n });
                }
            }
            Item::DropConsumer { queue, consumer } => {
                self.drop_consumer_local(queue, consumer);
            }
            Item::Event { conn, ev } => self.deliver_event(conn, ev),
            Item::QueueOp { queue, name, ch, op } => self.queue_op(queue, name, ch, op),
            Item::Control(msg) => {
                if let Some(c) = &self.control {
                    c.inbox.borrow_mut().push_back(msg);
                    c.notify.notify();
                }
            }
            Item::Topology(changes) => {
                self.apply_changes(&changes);
                self.send(0, Item::TopologyApplied);
            }
            Item::TopologyApplied => {
                if let Some(c) = &self.control {
                    c.acks_pending.set(c.acks_pending.get().saturating_sub(1));
                    c.acks_notify.notify();
                }
            }
            Item::OwnerDelete {
                op,
                queue,
                if_unused,
                if_empty,
            } => {
                let result = self.owner_delete(queue, if_unused, if_empty);
                self.send(0, Item::OwnerDeleted { op, result });
            }
            Item::OwnerDeleted { op, result } => {
                if let Some(c) = &self.control {
                    c.results.borrow_mut().insert(op, result);
                    c.results_notify.notify();
                }
            }
            Item::AdminQueue { queue, action, reply } => {
                let _ = reply.try_send(self.admin_queue(queue, action));
            }
            Item::Barrier { ch, token } => {
                self.awaiting_sync
                    .borrow_mut()
                    .push(SyncWaiter::Barrier { ch, token });
                self.sync_notify.notify();
            }
            Item::BarrierDone { ch, token } => self.barrier_done(ch, token),
            Item::Via { dest, item } => self.send(dest, *item),
            Item::DeclareCounts { queue, ch, name } => {
                let counts = self.queues.borrow_mut().get_mut(&queue).map(|s| {
                    self.catch_up(s);
                    s.last_used_ms = now_ms();
                    (s.q.ready_count() as u32, s.q.consumer_count() as u32)
                });
                let reply = match counts {
                    Some((messages, consumers)) => Reply::QueueDeclareOk {
                        name,
                        messages,
                        consumers,
                    },
                    None => {
                        let vhost = self.vhost_name_of(queue);
                        Reply::Error(Self::queue_gone_error(&name, &vhost))
                    }
                };
                self.reply(ch, reply);
            }
        }
    }

    fn vhost_name_of(&self, queue: QueueId) -> String {
        let topo = self.topo.borrow();
        topo.queue(queue)
            .map(|q| topo.vhost_name(q.vhost).to_string())
            .unwrap_or_else(|| "/".into())
    }

    /// A management queue operation on a queue this shard owns.
    fn admin_queue(
        &self,
        queue: QueueId,
        action: crate::admin::QueueAction,
    ) -> Result<crate::admin::QueueResult, AmqpError> {
        use crate::admin::{GetMode, PeekedMessage, QueueAction, QueueResult};
        let mut queues = self.queues.borrow_mut();
        let Some(slot) = queues.get_mut(&queue) else {
            return Err(AmqpError::not_found("queue deleted"));
        };
        self.catch_up(slot);
        let r = match action {
            QueueAction::Purge => {
                let gone = slot.q.purge();
                let n = gone.len().min(u32::MAX as usize) as u32;
                Self::forget_stored(slot, gone);
                QueueResult::Purged(n)
            }
            QueueAction::Get { count, mode } => {
                let mut out = Vec::new();
                let mut back = Vec::new();
                for _ in 0..count.min(10_000) {
                    let remove = mode == GetMode::Remove;
                    let now = now_ms();
                    let Some((e, left)) = self.with_sink(slot, |q, sink| q.get(remove, now, sink)) else {
                        break;
                    };
                    if let Some(store) = &mut slot.store {
                        Self::record_delivery(store, e.loc, !remove, e.redelivered);
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
        self.mark_store_dirty(slot);
        self.mark_dirty(slot);
        Ok(r)
    }

    /// Starts a barrier for a channel: every shard (this one included)
    /// answers once what the channel sent before is applied and synced.
    pub fn start_barrier(&self, ch: ChannelRef) {
        let token = self.next_barrier.get();
        self.next_barrier.set(token + 1);
        self.barriers.borrow_mut().insert(token, (ch, self.nshards));
        for d in 0..self.nshards {
            self.send(d as ShardId, Item::Barrier { ch, token });
        }
    }

    /// A shard finished its part of a barrier.
    fn barrier_done(&self, ch: ChannelRef, token: u64) {
        let done = {
            let mut b = self.barriers.borrow_mut();
            match b.get_mut(&token) {
                Some((_, left)) => {
                    *left -= 1;
                    *left == 0
                }
                None => false,
            }
        };
        if done {
            self.barriers.borrow_mut().remove(&token);
            self.reply(ch, Reply::BarrierDone);
        }
    }

    /// Answers what waited for a sync.
    pub fn release(&self, waiters: Vec<SyncWaiter>, ok: bool) {
        for w in waiters {
            match w {
                SyncWaiter::Confirm(ch, seq) => self.to_conn(ch.conn, Event::Confirm { ch, seq, ok }),
                SyncWaiter::Barrier { ch, token } => self.send(ch.shard(), Item::BarrierDone { ch, token }),
            }
        }
    }

    /// Recomputes the settings of this shard's queues in a vhost whose
    /// policies changed.
    fn reapply_policies(&self, vhost: VhostId) {
        let mut queues = self.queues.borrow_mut();
        for slot in queues.values_mut().filter(|s| s.vhost == vhost) {
            let (cfg, extras) = {
                let topo = self.topo.borrow();
                let Some(def) = topo.queue(slot.q.id) else {
                    continue;
                };
                crate::broker::args::queue_settings(
                    &def.args,
                    topo.policy_for(vhost, def.name.as_bytes(), true),
                )
            };
            slot.extras = extras;
            self.with_sink(slot, |q, sink| q.set_config(cfg, sink));
            self.mark_dirty(slot);
        }
    }

    /// Expires messages of idle queues and deletes queues unused for their
    /// `x-expires`. Run every 100 ms by the shard's sweeper task.
    pub fn sweep(&self) {
        let now = now_ms();
        let mut unused = Vec::new();
        {
            let mut queues = self.queues.borrow_mut();
            for slot in queues.values_mut() {
                if slot.may_expire || slot.q.config().message_ttl.is_some() {
                    self.with_sink(slot, |q, sink| q.expire(now, true, sink));
                }
                if let Some(ttl) = slot.extras.expires
                    && slot.q.consumer_count() == 0
                    && now.saturating_sub(slot.last_used_ms) >= ttl
                {
                    unused.push(slot.q.id);
                }
            }
        }
        for q in unused {
            self.auto_delete(q);
        }
    }

    /// RabbitMQ closes the connections of a deleted vhost or user.
    fn close_connections_for(&self, c: &Change) {
        let (vhost, user) = match c {
            Change::DeleteVhost { id } => (Some(self.topo.borrow().vhost_name(*id).to_string()), None),
            Change::DeleteUser { name } => (None, Some(name.clone())),
            _ => return,
        };
        for h in self.conns.borrow().values() {
            let hit = {
                let m = h.meta.borrow();
                vhost.as_ref().is_some_and(|v| *v == m.vhost) || user.as_ref().is_some_and(|u| *u == m.user)
            };
            if hit {
                let text = match (&vhost, &user) {
                    (Some(v), _) => format!("vhost '{v}' is deleted"),
                    (_, Some(u)) => format!("user '{u}' is deleted"),
                    _ => unreachable!(),
                };
                h.push(Event::ForceClose {
                    code: crate::protocol::reply::CONNECTION_FORCED,
                    text,
                });
            }
        }
    }

    /// Applies a delivery settlement to a queue this shard owns.
    pub fn settle_local(&self, queue: QueueId, seq: u64, how: Settle) {
        let mut queues = self.queues.borrow_mut();
        let Some(slot) = queues.get_mut(&queue) else {
            return;
        };
        let gone = match how {
            Settle::Ack => slot.q.ack(seq),
            Settle::Reject { requeue } => slot.q.reject(seq, requeue),
            Settle::Requeue => {
                slot.q.requeue([seq]);
                None
            }
        };
        if let (Settle::Reject { requeue: false }, Some(e)) = (how, &gone) {
            self.dead_letter(slot, &e.msg, DeadReason::Rejected);
        }
        if let (Some(loc), Some(store)) = (gone.and_then(|e| e.loc), &mut slot.store) {
            store.remove(loc);
            self.mark_store_dirty(slot);
        }
        self.mark_dirty(slot);
    }

    fn forget_stored(slot: &mut QueueSlot, entries: impl IntoIterator<Item = crate::queue::Entry>) {
        if let Some(store) = &mut slot.store {
            for loc in entries.into_iter().filter_map(|e| e.loc) {
                store.remove(loc);
            }
        }
    }

    pub fn drop_consumer_local(&self, queue: QueueId, consumer: ConsumerRef) {
        let auto_deleted = {
            let mut queues = self.queues.borrow_mut();
            let Some(slot) = queues.get_mut(&queue) else {
                return;
            };
            slot.q.cancel_consumer(consumer);
            slot.last_used_ms = now_ms();
            self.mark_dirty(slot);
            slot.auto_delete && slot.had_consumers && slot.q.consumer_count() == 0
        };
        if auto_deleted {
            self.auto_delete(queue);
        }
    }

    fn auto_delete(&self, queue: QueueId) {
        self.remove_engine(queue);
        self.send(0, Item::Control(ControlMsg::AutoDeleted(queue)));
    }

    /// Drops a queue engine, telling its consumers.
    fn remove_engine(&self, queue: QueueId) -> Option<u32> {
        let mut slot = self.queues.borrow_mut().remove(&queue)?;
        for conn in std::mem::take(&mut slot.throttled) {
            self.to_conn(conn, Event::Throttle { queue, on: false });
        }
        for c in slot.q.consumer_refs() {
            self.to_conn(c.ch.conn, Event::ConsumerCancelled { consumer: c });
        }
        let n = (slot.q.ready_count() + slot.pending.len()) as u32;
        for (_, confirm) in slot.pending.drain(..) {
            if let Some((ch, seq)) = confirm {
                self.to_conn(ch.conn, Event::Confirm { ch, seq, ok: true });
            }
        }
        if let Some(store) = slot.store.take() {
            store.destroy();
        }
        Some(n)
    }

    fn owner_delete(&self, queue: QueueId, if_unused: bool, if_empty: bool) -> Result<u32, AmqpError> {
        {
            let mut queues = self.queues.borrow_mut();
            let Some(slot) = queues.get_mut(&queue) else {
                return Ok(0);
            };
            self.catch_up(slot);
            let vhost = self.topo.borrow().vhost_name(slot.vhost).to_string();
            if if_unused && slot.q.consumer_count() > 0 {
                return Err(AmqpError::precondition(format!(
                    "queue '{}' in vhost '{vhost}' in use",
                    slot.name
                )));
            }
            // RabbitMQ counts ready messages only: a queue holding nothing
            // but unacknowledged deliveries is empty.
            if if_empty && slot.q.ready_count() + slot.pending.len() > 0 {
                return Err(AmqpError::precondition(format!(
                    "queue '{}' in vhost '{vhost}' not empty",
                    slot.name
                )));
            }
        }
        Ok(self.remove_engine(queue).unwrap_or(0))
    }

    fn queue_op(&self, queue: QueueId, name: ShortStr, ch: crate::ids::ChannelRef, op: QueueOp) {
        let vhost = {
            let topo = self.topo.borrow();
            topo.queue(queue).map(|q| topo.vhost_name(q.vhost).to_string())
        };
        let exists = self.queues.borrow().contains_key(&queue);
        if !exists {
            let reply = match op {
                QueueOp::Cancel(consumer) => Reply::CancelOk { consumer },
                _ => Reply::Error(Self::queue_gone_error(&name, vhost.as_deref().unwrap_or("/"))),
            };
            self.reply(ch, reply);
            return;
        }
        match op {
            QueueOp::Consume(spec) => {
                let consumer = spec.cref;
                let mut queues = self.queues.borrow_mut();
                let slot = queues.get_mut(&queue).expect("exists");
                slot.last_used_ms = now_ms();
                match slot.q.add_consumer(spec) {
                    Ok(()) => {
                        slot.had_consumers = true;
                        // The reply must precede the deliveries it enables.
                        self.reply(ch, Reply::ConsumeOk { queue, consumer });
                        self.mark_dirty(slot);
                    }
                    Err(ConsumeError::ExclusiveInUse) => {
                        let text = format!(
                            "queue '{}' in vhost '{}' in exclusive use",
                            name,
                            vhost.as_deref().unwrap_or("/")
                        );
                        self.reply(ch, Reply::Error(AmqpError::access_refused(text)));
                    }
                }
            }
            QueueOp::Cancel(consumer) => {
                self.reply(ch, Reply::CancelOk { consumer });
                self.drop_consumer_local(queue, consumer);
            }
            QueueOp::Get { no_ack } => {
                let got = {
                    let mut queues = self.queues.borrow_mut();
                    let slot = queues.get_mut(&queue).expect("exists");
                    self.catch_up(slot);
                    slot.last_used_ms = now_ms();
                    let now = slot.last_used_ms;
                    let r = self.with_sink(slot, |q, sink| q.get(no_ack, now, sink));
                    if let (Some((e, _)), Some(store)) = (&r, &mut slot.store) {
                        Self::record_delivery(store, e.loc, !no_ack, e.redelivered);
                    }
                    self.mark_store_dirty(slot);
                    self.mark_dirty(slot);
                    r
                };
                let reply = match got {
                    Some((entry, remaining)) => Reply::GetOk {
                        queue,
                        entry,
                        remaining,
                        needs_ack: !no_ack,
                    },
                    None => Reply::GetEmpty,
                };
                self.reply(ch, reply);
            }
            QueueOp::Purge => {
                let n = {
                    let mut queues = self.queues.borrow_mut();
                    let slot = queues.get_mut(&queue).expect("exists");
                    self.catch_up(slot);
                    let gone = slot.q.purge();
                    let n = gone.len().min(u32::MAX as usize) as u32;
                    Self::forget_stored(slot, gone);
                    self.mark_store_dirty(slot);
                    n
                };
                self.reply(ch, Reply::QueuePurgeOk { messages: n });
            }
        }
    }

    /// Applies replicated changes and their local effects (creating and
    /// dropping the engines of queues this shard owns).
    pub fn apply_changes(&self, changes: &[Change]) {
        for c in changes {
            self.close_connections_for(c);
            self.topo.borrow_mut().apply(c);
            match c {
                Change::DeclareQueue(def) if def.owner == self.id => {
                    let (qcfg, extras) = {
                        let topo = self.topo.borrow();
                        let policy = topo.policy_for(def.vhost, def.name.as_bytes(), true);
                        crate::broker::args::queue_settings(&def.args, policy)
                    };
                    let mut slot = QueueSlot {
                        q: Queue::with_config(def.id, self.cfg.limits.consumer_window, qcfg),
                        extras,
                        last_used_ms: now_ms(),
                        pending_bytes: 0,
                        may_expire: false,
                        name: def.name.clone(),
                        vhost: def.vhost,
                        auto_delete: def.auto_delete,
                        had_consumers: false,
                        dirty: false,
                        store: None,
                        store_failed: false,
                        throttled: Vec::new(),
                        pending: Vec::new(),
                        store_dirty: false,
                    };
                    if def.durable
                        && def.exclusive.is_none()
                        && let Err(e) = self.open_store(&mut slot)
                    {
                        log::error!("{e}");
                        slot.store_failed = true;
                        self.boot_error.borrow_mut().get_or_insert(e);
                    }
                    self.queues.borrow_mut().insert(def.id, slot);
                }
                Change::DeleteQueue { id } => {
                    self.remove_engine(*id);
                }
                Change::SetPolicy(crate::broker::topology::PolicyDef { vhost, .. })
                | Change::ClearPolicy { vhost, .. } => self.reapply_policies(*vhost),
                Change::DeleteVhost { id } => {
                    let gone: Vec<QueueId> = self
                        .queues
                        .borrow()
                        .values()
                        .filter(|s| s.vhost == *id)
                        .map(|s| s.q.id)
                        .collect();
                    for q in gone {
                        self.remove_engine(q);
                    }
                }
                _ => {}
            }
        }
    }
}

impl Shard {
    /// Opens (or creates) a durable queue's store and loads what it holds.
    fn open_store(&self, slot: &mut QueueSlot) -> Result<(), String> {
        let dir = QueueStore::dir_for(&self.cfg.data_dir, slot.q.id.0);
        match QueueStore::open(crate::storage::RealDisk::shared(), &dir, slot.q.id.0, self.cfg.limits.segment_size) {
            Ok((store, recovered)) => {
                if !recovered.is_empty() {
                    log::info!(
                        "queue '{}': recovered {} message(s) from {}",
                        slot.name,
                        recovered.len(),
                        dir.display()
                    );
                }
                for r in recovered {
                    let expires_at = slot.q.expiry_for(r.msg.ttl(), r.timestamp_ms);
                    slot.q.publish_at(r.msg, Some(r.loc), r.redelivered, expires_at);
                }
                slot.store = Some(store);
                Ok(())
            }
            Err(e) => Err(format!(
                "cannot open the store of queue '{}' at {}: {e}",
                slot.name,
                dir.display()
            )),
        }
    }
}

/// Routes a queue's effects: local consumers get events directly, remote
/// ones through the outbox.
pub struct Sink<'a> {
    shard: &'a Shard,
    queue: QueueId,
    /// Stored messages delivered: (where, needs ack, redelivered).
    stored: &'a mut Vec<(Loc, bool, bool)>,
    /// Messages that left the queue undelivered.
    removed: &'a mut Vec<(crate::queue::Entry, DeadReason)>,
}

impl QueueSink for Sink<'_> {
    fn deliver(&mut self, d: Delivery) {
        if let Some(loc) = d.loc {
            self.stored.push((loc, d.needs_ack, d.redelivered));
        }
        let conn = d.consumer.ch.conn;
        self.shard.to_conn(conn, Event::Deliver(d));
    }
    fn request_credit(&mut self, consumer: ConsumerRef) {
        let queue = self.queue;
        self.shard
            .to_conn(consumer.ch.conn, Event::CreditRequest { queue, consumer });
    }
    fn return_credit(&mut self, consumer: ConsumerRef, n: u32) {
        let queue = self.queue;
        self.shard
            .to_conn(consumer.ch.conn, Event::CreditReturn { queue, consumer, n });
    }
    fn removed(&mut self, entry: crate::queue::Entry, reason: DeadReason) {
        self.removed.push((entry, reason));
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// Wall-clock milliseconds (TTLs are wall-clock in RabbitMQ too).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
