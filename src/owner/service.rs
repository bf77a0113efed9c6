//! The queue-owner service of one shard: the queues it owns and everything
//! that happens to them, from a publish to a delete. Pure: the clock comes
//! in as `now` (wall-clock milliseconds: TTLs are wall-clock, as in
//! RabbitMQ), files go through the stores' [`Disk`], and everything else
//! leaves through [`Effects`].

use super::effects::{Effects, Sink};
use super::item::{ControlMsg, Item, SyncWaiter};
use super::slot::QueueSlot;
use crate::broker::request::{Reply, Settle};
use crate::broker::topology::{Change, QueueDef, Topology};
use crate::ids::{ChannelRef, ConnId, ConsumerRef, IdMap, Loc, QueueId, ShardId, VhostId};
use crate::message::Message;
use crate::protocol::AmqpError;
use crate::queue::{Admit, DeadReason, Entry, Queue};
use crate::session::Event;
use crate::storage::{Disk, QueueStore, Syncable};
use std::path::PathBuf;
use std::sync::Arc;

/// What the owner needs from the broker's configuration.
#[derive(Debug, Clone)]
pub struct OwnerConfig {
    /// The shard this owner runs on.
    pub shard: ShardId,
    /// Deliveries in flight per consumer without a prefetch bound.
    pub consumer_window: u32,
    /// Ready messages a consumed queue holds before its publishers pause.
    pub flow_backlog: usize,
    pub segment_size: usize,
    pub data_dir: PathBuf,
    /// This node's Raft id: in a cluster, the owner holds the queues whose
    /// home is this node (or 0, "here").
    pub node: u64,
}

impl OwnerConfig {
    pub fn from_config(shard: ShardId, cfg: &crate::config::Config) -> OwnerConfig {
        OwnerConfig {
            shard,
            consumer_window: cfg.limits.consumer_window,
            flow_backlog: cfg.limits.flow_backlog,
            segment_size: cfg.limits.segment_size,
            data_dir: cfg.data_dir.clone(),
            node: cfg.cluster.node_id(),
        }
    }
}

/// Where a routed message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// In the queue now; confirm at once.
    Now,
    /// Waiting for the store write and sync; the confirm comes as an event.
    Deferred,
    /// Refused (full with `reject-publish`, or the store cannot be
    /// trusted): nack.
    Refused,
}

/// Files to sync, and what waits for them.
#[derive(Default)]
pub struct SyncBatch {
    /// Each file with the queue whose store it belongs to.
    pub files: Vec<(QueueId, Arc<dyn Syncable>)>,
    pub waiters: Vec<SyncWaiter>,
}

impl SyncBatch {
    pub fn is_empty(&self) -> bool {
        self.files.is_empty() && self.waiters.is_empty()
    }
}

/// The queues one shard owns. Lives on that shard only.
pub struct Owner {
    pub(super) cfg: OwnerConfig,
    disk: Arc<dyn Disk>,
    pub(super) queues: IdMap<QueueId, QueueSlot>,
    /// Queues to dispatch at the end of the step.
    pub(super) dirty: Vec<QueueId>,
    /// Queues with store work to do at the end of the step.
    pub(super) store_dirty: Vec<QueueId>,
    /// Confirms and barriers to answer once the next sync completes.
    awaiting_sync: Vec<SyncWaiter>,
    /// Something waits for a sync (the runtime's syncer should run).
    pub(super) sync_wanted: bool,
    /// The next sync covers the ack logs too (see [`Owner::sweep`]).
    acks_due: bool,
    /// Files of queues that moved to another shard, written here and not
    /// yet synced: the next sync covers them (see [`Owner::depart`]).
    pub(super) departed_files: Vec<(QueueId, Arc<dyn Syncable>)>,
    /// The first store that failed to open.
    boot_error: Option<String>,
    /// Something may now expire that could not before (a queue with a TTL
    /// or expiry, a message with one): the runtime's sweeper, idling on a
    /// slow tick, should start sweeping often now.
    pub(super) sweep_kick: bool,
}

impl Owner {
    pub fn new(cfg: OwnerConfig, disk: Arc<dyn Disk>) -> Owner {
        Owner {
            cfg,
            disk,
            queues: IdMap::default(),
            dirty: Vec::new(),
            store_dirty: Vec::new(),
            awaiting_sync: Vec::new(),
            sync_wanted: false,
            acks_due: false,
            departed_files: Vec::new(),
            boot_error: None,
            sweep_kick: false,
        }
    }

    pub fn shard(&self) -> ShardId {
        self.cfg.shard
    }

    /// This node's Raft id.
    pub fn node(&self) -> u64 {
        self.cfg.node
    }

    /// The first store that could not be opened while applying changes.
    pub fn take_boot_error(&mut self) -> Option<String> {
        self.boot_error.take()
    }

    pub fn queue(&self, id: QueueId) -> Option<&QueueSlot> {
        self.queues.get(&id)
    }

    pub fn queues(&self) -> impl Iterator<Item = &QueueSlot> {
        self.queues.values()
    }

    /// Work left for the end of the step (dispatch, store writes).
    pub fn has_work(&self) -> bool {
        !self.dirty.is_empty() || !self.store_dirty.is_empty()
    }

    /// Whether the syncer should run (and [`Owner::take_sync`]).
    pub fn wants_sync(&self) -> bool {
        self.sync_wanted
    }

    /// The dispatch list, the store list and one existing queue's slot,
    /// borrowed together.
    pub(super) fn parts(&mut self, queue: QueueId) -> (&mut Vec<QueueId>, &mut Vec<QueueId>, &mut QueueSlot) {
        let slot = self
            .queues
            .get_mut(&queue)
            .expect("the caller checked that the queue exists");
        (&mut self.dirty, &mut self.store_dirty, slot)
    }

    pub(super) fn mark_dirty(dirty: &mut Vec<QueueId>, slot: &mut QueueSlot) {
        if !slot.dirty {
            slot.dirty = true;
            dirty.push(slot.q.id);
        }
    }

    pub(super) fn mark_store_dirty(store_dirty: &mut Vec<QueueId>, slot: &mut QueueSlot) {
        if !slot.store_dirty && (slot.store.is_some() || slot.quorum.is_some()) {
            slot.store_dirty = true;
            store_dirty.push(slot.q.id);
        }
    }

    /// Applies a replicated change's local effects (creating and dropping
    /// the engines of queues this shard owns). `topo` already holds it.
    pub fn apply_change(&mut self, topo: &Topology, c: &Change, fx: &mut impl Effects, now: u64) {
        // Declares and policies can bring TTLs (rare: look at once).
        self.sweep_kick = true;
        match c {
            Change::DeclareQueue(def)
                if def.owner == self.cfg.shard
                    && (def.node == 0
                        || def.node == self.cfg.node
                        || def.replicas.contains(&self.cfg.node)) =>
            {
                self.create(topo, def, now)
            }
            // A quorum queue this node replicates from now on (`grow`).
            Change::QueueReplicas { id, replicas }
                if replicas.contains(&self.cfg.node) && !self.queues.contains_key(id) =>
            {
                if let Some(def) = topo.queue(*id).filter(|d| d.owner == self.cfg.shard) {
                    self.create(topo, def, now);
                }
            }
            Change::DeleteQueue { id } => {
                self.remove_engine(*id, fx);
            }
            Change::SetPolicy(crate::broker::topology::PolicyDef { vhost, .. })
            | Change::ClearPolicy { vhost, .. } => self.reapply_policies(topo, *vhost, fx, now),
            Change::DeleteVhost { id } => {
                let gone: Vec<QueueId> = self
                    .queues
                    .values()
                    .filter(|s| s.vhost == *id)
                    .map(|s| s.q.id)
                    .collect();
                for q in gone {
                    self.remove_engine(q, fx);
                }
            }
            _ => {}
        }
    }

    fn create(&mut self, topo: &Topology, def: &QueueDef, now: u64) {
        let (qcfg, extras) = {
            let policy = topo.policy_for(def.vhost, def.name.as_bytes(), true);
            crate::broker::args::queue_settings(&def.args, policy)
        };
        let mut slot = QueueSlot {
            q: Queue::with_config(def.id, self.cfg.consumer_window, qcfg),
            extras,
            last_used_ms: now,
            pending_bytes: 0,
            may_expire: false,
            name: def.name.clone(),
            vhost: def.vhost,
            auto_delete: def.auto_delete,
            had_consumers: false,
            deleting: false,
            dirty: false,
            store: None,
            store_failed: false,
            write_errors: 0,
            throttled: Vec::new(),
            pending: Vec::new(),
            store_dirty: false,
            quorum: def.is_quorum().then(|| super::QuorumSlot {
                group: def.quorum_group(),
                delivery_limit: crate::broker::args::delivery_limit(
                    &def.args,
                    topo.policy_for(def.vhost, def.name.as_bytes(), true),
                ),
                ..Default::default()
            }),
        };
        if def.durable
            && def.exclusive.is_none()
            && !def.is_quorum()
            && let Err(e) = self.open_store(&mut slot)
        {
            log::error!("{e}");
            slot.store_failed = true;
            self.boot_error.get_or_insert(e);
        }
        self.queues.insert(def.id, slot);
    }

    /// Opens (or creates) a durable queue's store and loads what it holds.
    fn open_store(&self, slot: &mut QueueSlot) -> Result<(), String> {
        let dir = QueueStore::dir_for(&self.cfg.data_dir, slot.q.id.0);
        match QueueStore::open(self.disk.clone(), &dir, slot.q.id.0, self.cfg.segment_size) {
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
                    slot.may_expire |= r.msg.ttl().is_some();
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

    /// Runs queue operations with a sink, then carries out what they left
    /// for the owner: delivery marks on disk, removed messages (store
    /// cleanup and dead-lettering).
    pub(super) fn with_sink<R, E: Effects>(
        store_dirty: &mut Vec<QueueId>,
        slot: &mut QueueSlot,
        topo: &Topology,
        fx: &mut E,
        now: u64,
        f: impl FnOnce(&mut Queue, &mut Sink<'_, E>) -> R,
    ) -> R {
        let mut stored = Vec::new();
        let mut removed = Vec::new();
        let mut unacked_off = Vec::new();
        let queue = slot.q.id;
        let quorum = slot.quorum.is_some();
        let r = f(
            &mut slot.q,
            &mut Sink {
                fx,
                queue,
                stored: &mut stored,
                removed: &mut removed,
                unacked_off: quorum.then_some(&mut unacked_off),
            },
        );
        if let Some(qs) = &mut slot.quorum {
            qs.settles.extend(unacked_off);
            qs.settles.extend(removed.iter().map(|(e, _)| e.seq));
        }
        if let Some(store) = &mut slot.store {
            for (loc, needs_ack, redelivered) in stored {
                record_delivery(store, Some(loc), needs_ack, redelivered);
            }
        }
        for (entry, reason) in removed {
            dead_letter(slot, &entry.msg, reason, topo, fx, now);
            if let (Some(loc), Some(store)) = (entry.loc, &mut slot.store) {
                store.remove(loc);
            }
        }
        Self::mark_store_dirty(store_dirty, slot);
        r
    }

    /// Puts a routed message into a queue this shard owns. Persistent
    /// messages for durable queues (and anything behind them) wait for the
    /// end-of-step store write; the confirm of a deferred one comes as an
    /// event. A queue that is gone takes the message silently (as a
    /// publish racing a delete does in RabbitMQ).
    #[allow(clippy::too_many_arguments)]
    pub fn enqueue(
        &mut self,
        topo: &Topology,
        fx: &mut impl Effects,
        queue: QueueId,
        msg: Message,
        confirm: Option<(ChannelRef, u64)>,
        publisher: ConnId,
        now: u64,
    ) -> Enqueued {
        let Some(slot) = self.queues.get_mut(&queue) else {
            // A queue deleted meanwhile: confirmed and dropped, as RabbitMQ
            // does. A quorum queue this node stopped replicating, which the
            // metadata still routes here: refused (nacked), never dropped.
            return if topo.queue(queue).is_some_and(|d| d.is_quorum()) {
                Enqueued::Refused
            } else {
                Enqueued::Now
            };
        };
        if slot.store_failed && msg.persistent {
            return Enqueued::Refused;
        }
        let mut admit = slot
            .q
            .admit(msg.body_len(), slot.pending.len(), slot.pending_bytes);
        if admit != Admit::Yes && slot.q.consumer_count() > 0 {
            // Full, but consumers may be waiting: what they take now does
            // not count against the limit (RabbitMQ hands a message to a
            // waiting consumer before it ever counts as queued).
            Self::with_sink(&mut self.store_dirty, slot, topo, fx, now, |q, sink| {
                q.dispatch(now, sink)
            });
            admit = slot
                .q
                .admit(msg.body_len(), slot.pending.len(), slot.pending_bytes);
        }
        match admit {
            Admit::Yes => {}
            Admit::Reject => return Enqueued::Refused,
            Admit::RejectDeadLetter => {
                dead_letter(slot, &msg, DeadReason::MaxLen, topo, fx, now);
                return Enqueued::Refused;
            }
        }
        maybe_throttle(slot, publisher, self.cfg.flow_backlog, fx);
        if !slot.may_expire && msg.ttl().is_some() {
            slot.may_expire = true;
            self.sweep_kick = true;
        }
        if slot.quorum.is_some() || (slot.store.is_some() && (msg.persistent || !slot.pending.is_empty())) {
            slot.pending_bytes += msg.body_len() as u64;
            slot.pending.push((msg, confirm));
            Self::mark_store_dirty(&mut self.store_dirty, slot);
            Enqueued::Deferred
        } else {
            let expires_at = slot.q.expiry_for(msg.ttl(), now);
            slot.q.publish_at(msg, None, false, expires_at);
            // Drop-head applies at once: the next operation on the queue
            // must see it as if the publish and its overflow were applied.
            // Waiting consumers take what they can first: a message handed
            // over at once never counted against the limit.
            if slot.q.config().overflow_drops_head() && slot.q.is_over_limit() {
                Self::with_sink(&mut self.store_dirty, slot, topo, fx, now, |q, sink| {
                    q.dispatch(now, sink);
                    q.trim(sink)
                });
            }
            Self::mark_dirty(&mut self.dirty, slot);
            Enqueued::Now
        }
    }

    /// An `Item::Publish` from another shard (or a dead-lettering): enqueue
    /// and answer the confirm unless it waits for a sync.
    #[allow(clippy::too_many_arguments)]
    pub fn publish_item(
        &mut self,
        topo: &Topology,
        fx: &mut impl Effects,
        queue: QueueId,
        msg: Message,
        confirm: Option<(ChannelRef, u64)>,
        publisher: ConnId,
        now: u64,
    ) {
        let r = self.enqueue(topo, fx, queue, msg, confirm, publisher, now);
        if r != Enqueued::Deferred
            && let Some((ch, seq)) = confirm
        {
            fx.to_conn(
                ch.conn,
                Event::Confirm {
                    ch,
                    seq,
                    ok: r == Enqueued::Now,
                },
            );
        }
    }

    /// End-of-step work: write pending publishes to their stores, then
    /// dispatch the queues that changed. Returns whether anything was done
    /// (more may have been queued for this shard: the caller loops).
    pub fn run_step(&mut self, topo: &Topology, fx: &mut impl Effects, now: u64) -> bool {
        let did = self.has_work();
        self.flush_stores(topo, fx, now);
        for id in std::mem::take(&mut self.dirty) {
            self.dispatch(id, topo, fx, now);
        }
        self.flush_stores(topo, fx, now);
        did
    }

    fn dispatch(&mut self, id: QueueId, topo: &Topology, fx: &mut impl Effects, now: u64) {
        let Some(slot) = self.queues.get_mut(&id) else {
            return;
        };
        slot.dirty = false;
        Self::with_sink(&mut self.store_dirty, slot, topo, fx, now, |q, sink| {
            // Drop-head first, then deliver, then drop what expires now
            // (this is what makes a TTL of 0 mean "deliver now or drop").
            q.trim(sink);
            q.dispatch(now, sink);
            q.expire(now, true, sink);
        });
        maybe_release(slot, self.cfg.flow_backlog, fx);
    }

    /// Writes pending publishes to their stores (one batch per queue),
    /// enqueues them, and flushes ack logs. Confirms for what was written
    /// wait for the syncer.
    fn flush_stores(&mut self, topo: &Topology, fx: &mut impl Effects, now: u64) {
        for id in std::mem::take(&mut self.store_dirty) {
            self.flush_store(id, topo, fx, now);
        }
    }

    /// Brings a queue up to date with everything that reached it before
    /// an operation on it (a get, a purge, a count, a delete): publishes
    /// still waiting for the end-of-step store write are written and
    /// enqueued, and drop-head applied, so the operation sees the queue as
    /// if each publish had been applied on arrival.
    pub(super) fn catch_up(&mut self, queue: QueueId, topo: &Topology, fx: &mut impl Effects, now: u64) {
        if self.queues.get(&queue).is_some_and(|s| !s.pending.is_empty()) {
            self.flush_store(queue, topo, fx, now);
        }
    }

    /// One queue's part of [`Owner::flush_stores`].
    pub(super) fn flush_store(&mut self, id: QueueId, topo: &Topology, fx: &mut impl Effects, now: u64) {
        let Some(slot) = self.queues.get_mut(&id) else {
            return;
        };
        slot.store_dirty = false;
        if slot.quorum.is_some() {
            Self::propose_quorum(slot, fx);
            return;
        }
        let Some(store) = &mut slot.store else { return };
        if !slot.pending.is_empty() {
            let pending = std::mem::take(&mut slot.pending);
            slot.pending_bytes = 0;
            let mut stored = Vec::new();
            let persistent = pending
                .iter()
                .filter(|(m, _)| m.persistent)
                .map(|(m, _)| m.clone());
            let write = store.append_batch(persistent, now, &mut stored);
            let mut stored = stored.into_iter();
            for (msg, confirm) in pending {
                if !msg.persistent {
                    let expires_at = slot.q.expiry_for(msg.ttl(), now);
                    slot.q.publish_at(msg, None, false, expires_at);
                    if let Some((ch, seq)) = confirm {
                        fx.to_conn(ch.conn, Event::Confirm { ch, seq, ok: true });
                    }
                    continue;
                }
                match (&write, stored.next()) {
                    (Ok(()), Some((loc, m))) => {
                        let expires_at = slot.q.expiry_for(m.ttl(), now);
                        slot.q.publish_at(m, Some(loc), false, expires_at);
                        if let Some((ch, seq)) = confirm {
                            self.awaiting_sync
                                .push(SyncWaiter::Confirm { ch, seq, queue: id });
                        }
                    }
                    _ => {
                        // The store refused the write (disk full, I/O
                        // error): the message is not taken; nack it.
                        if let Some((ch, seq)) = confirm {
                            fx.to_conn(ch.conn, Event::Confirm { ch, seq, ok: false });
                        }
                    }
                }
            }
            if let Err(e) = write {
                slot.write_errors += 1;
                if slot.write_errors.is_power_of_two() {
                    log::error!(
                        "cannot write to the store of queue '{}': {e} ({} refused writes so far)",
                        slot.name,
                        slot.write_errors
                    );
                }
            }
            Self::with_sink(&mut self.store_dirty, slot, topo, fx, now, |q, sink| q.trim(sink));
            Self::mark_dirty(&mut self.dirty, slot);
        }
        let Some(store) = &mut slot.store else { return };
        if let Err(e) = store.flush() {
            log::error!("cannot write the ack log of queue '{}': {e}", slot.name);
        }
        self.sync_wanted |= store.needs_sync() || !self.awaiting_sync.is_empty();
    }

    /// Takes the files to sync and what waits on them: a sync of all of
    /// them covers everything written so far (group commit).
    /// Ack logs are included only when the sweep found them due.
    pub fn take_sync(&mut self) -> SyncBatch {
        self.sync_wanted = false;
        let acks = std::mem::take(&mut self.acks_due);
        let mut files = std::mem::take(&mut self.departed_files);
        let mut scratch: Vec<Arc<dyn Syncable>> = Vec::new();
        for slot in self.queues.values_mut() {
            if let Some(store) = &mut slot.store
                && (store.needs_sync() || acks && store.acks_unsynced())
            {
                store.take_sync(acks, &mut scratch);
                files.extend(scratch.drain(..).map(|f| (slot.q.id, f)));
            }
        }
        SyncBatch {
            files,
            waiters: std::mem::take(&mut self.awaiting_sync),
        }
    }

    /// Everything written so far, ack logs included (at shutdown).
    pub fn take_sync_all(&mut self) -> SyncBatch {
        self.acks_due = true;
        self.take_sync()
    }

    /// A sync is done. `failed`: the queues one of whose files failed to
    /// sync: they stop taking persistent messages (the page cache can no
    /// longer be trusted after a failed fsync), and the confirms that
    /// waited on them are nacks. Everything else waiting is answered.
    pub fn synced(&mut self, waiters: Vec<SyncWaiter>, failed: &[QueueId], fx: &mut impl Effects) {
        for q in failed {
            if let Some(slot) = self.queues.get_mut(q)
                && !slot.store_failed
            {
                log::error!(
                    "queue '{}': a sync of its store failed; it refuses persistent messages until a restart",
                    slot.name
                );
                slot.store_failed = true;
            }
        }
        for w in waiters {
            match w {
                SyncWaiter::Confirm { ch, seq, queue } => {
                    // A store that failed once is never trusted again: a
                    // later sync of it may succeed over pages the kernel
                    // dropped after the failure (confirms of the batches
                    // that were on their way then are nacks too).
                    let ok =
                        !failed.contains(&queue) && !self.queues.get(&queue).is_some_and(|s| s.store_failed);
                    fx.to_conn(ch.conn, Event::Confirm { ch, seq, ok });
                }
                SyncWaiter::Barrier { ch, token } => fx.to_shard(ch.shard(), Item::BarrierDone { ch, token }),
                SyncWaiter::BarrierVia { ch, token, to } => {
                    fx.to_shard(to, Item::Moved(Box::new(Item::Barrier { ch, token })))
                }
            }
        }
    }

    /// Everything a channel sent here before `token` is applied; answer
    /// once it is synced too.
    pub fn barrier(&mut self, ch: ChannelRef, token: u64) {
        self.awaiting_sync.push(SyncWaiter::Barrier { ch, token });
        self.sync_wanted = true;
    }

    /// [`Owner::barrier`], answered by shard `to` (see
    /// [`SyncWaiter::BarrierVia`]).
    pub fn barrier_via(&mut self, ch: ChannelRef, token: u64, to: crate::ids::ShardId) {
        self.awaiting_sync.push(SyncWaiter::BarrierVia { ch, token, to });
        self.sync_wanted = true;
    }

    /// Applies a delivery settlement.
    pub fn settle(
        &mut self,
        topo: &Topology,
        fx: &mut impl Effects,
        queue: QueueId,
        seq: u64,
        how: Settle,
        now: u64,
    ) {
        let Some(slot) = self.queues.get_mut(&queue) else {
            return;
        };
        if slot.quorum.is_some() {
            self.settle_quorum(topo, fx, queue, seq, how, now);
            return;
        }
        let gone = match how {
            Settle::Ack => slot.q.ack(seq),
            Settle::Reject { requeue } => slot.q.reject(seq, requeue),
            Settle::Requeue => {
                slot.q.requeue([seq]);
                None
            }
        };
        if let (Settle::Reject { requeue: false }, Some(e)) = (how, &gone) {
            dead_letter(slot, &e.msg, DeadReason::Rejected, topo, fx, now);
        }
        if let (Some(loc), Some(store)) = (gone.and_then(|e| e.loc), &mut slot.store) {
            store.remove(loc);
            Self::mark_store_dirty(&mut self.store_dirty, slot);
        }
        Self::mark_dirty(&mut self.dirty, slot);
    }

    /// Deliveries written to a consumer's socket (transport window).
    pub fn written(&mut self, queue: QueueId, consumer: ConsumerRef, n: u32) {
        if let Some(slot) = self.queues.get_mut(&queue) {
            slot.q.written(consumer, n);
            Self::mark_dirty(&mut self.dirty, slot);
        }
    }

    /// Channel-wide prefetch credit for a consumer; given back when the
    /// queue cannot use it.
    pub fn credit(&mut self, fx: &mut impl Effects, queue: QueueId, consumer: ConsumerRef, n: u32) {
        let granted = match self.queues.get_mut(&queue) {
            Some(slot) => {
                let ok = slot.q.grant_credit(consumer, n);
                Self::mark_dirty(&mut self.dirty, slot);
                ok
            }
            None => false,
        };
        if !granted {
            fx.to_conn(consumer.ch.conn, Event::CreditReturn { queue, consumer, n });
        }
    }

    /// Removes a consumer without a reply; an auto-delete queue that loses
    /// its last consumer goes.
    pub fn drop_consumer(&mut self, fx: &mut impl Effects, queue: QueueId, consumer: ConsumerRef, now: u64) {
        let auto_deleted = {
            let Some(slot) = self.queues.get_mut(&queue) else {
                return;
            };
            slot.q.cancel_consumer(consumer);
            slot.last_used_ms = now;
            Self::mark_dirty(&mut self.dirty, slot);
            slot.auto_delete && slot.had_consumers && slot.q.consumer_count() == 0
        };
        if auto_deleted {
            self.auto_delete(queue, fx);
        }
    }

    /// Asks the control plane to delete a queue that lost its last
    /// consumer or expired; the engine goes when the deletion is committed
    /// (a deletion that cannot be logged leaves the queue intact).
    fn auto_delete(&mut self, queue: QueueId, fx: &mut impl Effects) {
        if let Some(slot) = self.queues.get_mut(&queue)
            && !slot.deleting
        {
            slot.deleting = true;
            fx.to_shard(0, Item::Control(ControlMsg::AutoDeleted(queue)));
        }
    }

    /// Drops a queue engine, telling its consumers and answering what
    /// waits on it. Returns its ready message count.
    pub(super) fn remove_engine(&mut self, queue: QueueId, fx: &mut impl Effects) -> Option<u32> {
        let mut slot = self.queues.remove(&queue)?;
        for conn in std::mem::take(&mut slot.throttled) {
            fx.to_conn(conn, Event::Throttle { queue, on: false });
        }
        for c in slot.q.consumer_refs() {
            fx.to_conn(c.ch.conn, Event::ConsumerCancelled { consumer: c });
        }
        let n = slot.ready_count() as u32;
        for (ch, _, _) in slot
            .quorum
            .as_mut()
            .map(|q| std::mem::take(&mut q.gets))
            .unwrap_or_default()
        {
            fx.to_conn(
                ch.conn,
                Event::Reply {
                    ch,
                    reply: crate::broker::request::Reply::GetEmpty,
                },
            );
        }
        // Gets held for the leader on another node go there now: it
        // answers them.
        for (_, node, op) in slot
            .quorum
            .as_mut()
            .map(|q| std::mem::take(&mut q.remote_gets))
            .unwrap_or_default()
        {
            fx.to_node(node, queue, op);
        }
        for (_, confirm) in slot.pending.drain(..) {
            if let Some((ch, seq)) = confirm {
                fx.to_conn(ch.conn, Event::Confirm { ch, seq, ok: true });
            }
        }
        if let Some(store) = slot.store.take() {
            store.destroy();
        }
        Some(n)
    }

    /// Checks, for the control plane, that a queue may be deleted, and
    /// counts its messages; the engine goes when the deletion is committed
    /// and applied (so a deletion that cannot be logged changes nothing).
    /// RabbitMQ counts ready messages only for `if-empty`: a queue holding
    /// nothing but unacknowledged deliveries is empty.
    pub fn owner_delete(
        &mut self,
        topo: &Topology,
        fx: &mut impl Effects,
        queue: QueueId,
        if_unused: bool,
        if_empty: bool,
        now: u64,
    ) -> Result<u32, AmqpError> {
        self.catch_up(queue, topo, fx, now);
        {
            let Some(slot) = self.queues.get(&queue) else {
                return Ok(0);
            };
            let vhost = topo.vhost_name(slot.vhost);
            if if_unused && slot.q.consumer_count() > 0 {
                return Err(AmqpError::precondition(format!(
                    "queue '{}' in vhost '{vhost}' in use",
                    slot.name
                )));
            }
            if if_empty && slot.ready_count() > 0 {
                return Err(AmqpError::precondition(format!(
                    "queue '{}' in vhost '{vhost}' not empty",
                    slot.name
                )));
            }
        }
        Ok(self.queues.get(&queue).map_or(0, |s| s.ready_count() as u32))
    }

    /// Recomputes the settings of the queues of a vhost whose policies
    /// changed.
    fn reapply_policies(&mut self, topo: &Topology, vhost: VhostId, fx: &mut impl Effects, now: u64) {
        for slot in self.queues.values_mut().filter(|s| s.vhost == vhost) {
            let Some(def) = topo.queue(slot.q.id) else {
                continue;
            };
            let (cfg, extras) = crate::broker::args::queue_settings(
                &def.args,
                topo.policy_for(vhost, def.name.as_bytes(), true),
            );
            slot.extras = extras;
            Self::with_sink(&mut self.store_dirty, slot, topo, fx, now, |q, sink| {
                q.set_config(cfg, sink)
            });
            Self::mark_dirty(&mut self.dirty, slot);
        }
    }

    /// Expires messages of idle queues and deletes queues unused for their
    /// `x-expires`. The runtime runs it every 100 ms.
    /// Whether something may expire now that could not before (and
    /// forgets it): see [`Owner::wants_sweep`].
    pub fn take_sweep_kick(&mut self) -> bool {
        std::mem::take(&mut self.sweep_kick)
    }

    /// Whether any queue here has messages or a lifetime that can expire
    /// (the runtime sweeps such shards often, idle ones rarely).
    pub fn wants_sweep(&self) -> bool {
        self.queues
            .values()
            .any(|s| s.may_expire || s.q.config().message_ttl.is_some() || s.extras.expires.is_some())
    }

    /// Also schedules a sync of the ack logs written since the last one:
    /// acks and deliveries are made durable within about a sweep tick (a
    /// second at most), in one sync, rather than each costing one.
    pub fn sweep(&mut self, topo: &Topology, fx: &mut impl Effects, now: u64) {
        let mut unused = Vec::new();
        if self
            .queues
            .values()
            .any(|s| s.store.as_ref().is_some_and(|st| st.acks_unsynced()))
        {
            self.acks_due = true;
            self.sync_wanted = true;
        }
        for slot in self.queues.values_mut() {
            if slot.may_expire || slot.q.config().message_ttl.is_some() {
                Self::with_sink(&mut self.store_dirty, slot, topo, fx, now, |q, sink| {
                    q.expire(now, true, sink)
                });
            }
            if let Some(ttl) = slot.extras.expires
                && slot.q.consumer_count() == 0
                && now.saturating_sub(slot.last_used_ms) >= ttl
            {
                unused.push(slot.q.id);
            }
        }
        for q in unused {
            self.auto_delete(q, fx);
        }
    }
}

/// On disk, a delivery without ack removes the message; a first delivery
/// with ack is marked so a crash brings it back redelivered.
pub(super) fn record_delivery(store: &mut QueueStore, loc: Option<Loc>, needs_ack: bool, redelivered: bool) {
    let Some(loc) = loc else { return };
    if !needs_ack {
        store.remove(loc);
    } else if !redelivered {
        store.delivered(loc);
    }
}

/// Republishes a message that left `slot` for `reason` to the queue's
/// dead-letter exchange (if it has one), as RabbitMQ does: routed without
/// confirms, dropped when nothing matches or it would cycle.
pub(super) fn dead_letter(
    slot: &QueueSlot,
    msg: &Message,
    reason: DeadReason,
    topo: &Topology,
    fx: &mut impl Effects,
    now: u64,
) {
    let Some(dlx) = &slot.extras.dead_letter_exchange else {
        return;
    };
    let dl = crate::broker::deadletter::dead_letter(
        msg,
        slot.name.as_bytes(),
        reason,
        dlx.as_bytes(),
        slot.extras.dead_letter_routing_key.as_ref().map(|k| k.as_bytes()),
        now / 1000,
    );
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
        // A dead-letter queue on another node of the cluster: forwarded
        // there through shard 0 (dead-lettering is unconfirmed, as in
        // RabbitMQ without at-least-once dead-lettering).
        if let Some(node) = topo.queue(queue).map(|q| q.node).filter(|&n| n != 0) {
            fx.to_shard(
                0,
                Item::Forward(crate::owner::Forward {
                    node,
                    queue,
                    msg: dl.msg.clone(),
                    confirm: None,
                }),
            );
            continue;
        }
        fx.to_shard(
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

/// Pauses a publisher whose queue runs too far ahead of its consumers. A
/// connection that consumes from the queue itself is never paused: it
/// could not read the acks that would drain it.
fn maybe_throttle(slot: &mut QueueSlot, publisher: ConnId, flow_backlog: usize, fx: &mut impl Effects) {
    if slot.ready_count() <= flow_backlog || slot.q.consumer_count() == 0 {
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
    fx.to_conn(publisher, Event::Throttle { queue, on: true });
}

/// Resumes paused publishers once the backlog is down to half, or no
/// consumer is left to wait for.
fn maybe_release(slot: &mut QueueSlot, flow_backlog: usize, fx: &mut impl Effects) {
    if slot.throttled.is_empty() {
        return;
    }
    if slot.ready_count() > flow_backlog / 2 && slot.q.consumer_count() > 0 {
        return;
    }
    let queue = slot.q.id;
    for conn in std::mem::take(&mut slot.throttled) {
        fx.to_conn(conn, Event::Throttle { queue, on: false });
    }
}

/// Drops what purged or removed entries held on disk.
pub(super) fn forget_stored(slot: &mut QueueSlot, entries: impl IntoIterator<Item = Entry>) {
    if let Some(qs) = &mut slot.quorum {
        qs.settles.extend(entries.into_iter().map(|e| e.seq));
    } else if let Some(store) = &mut slot.store {
        for loc in entries.into_iter().filter_map(|e| e.loc) {
            store.remove(loc);
        }
    }
}

/// The reply for an operation on a queue that is gone.
pub(super) fn gone(topo: &Topology, queue: QueueId, name: &crate::protocol::ShortStr) -> Reply {
    let vhost = topo
        .queue(queue)
        .map(|q| topo.vhost_name(q.vhost).to_string())
        .unwrap_or_else(|| "/".into());
    Reply::Error(crate::broker::control::no_queue(name, &vhost))
}
