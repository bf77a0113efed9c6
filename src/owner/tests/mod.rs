//! Unit tests of the queue-owner service, driven directly: a topology
//! built with the control-plane planner, one [`Owner`] on a simulated disk
//! (real store writes, in memory, with injected faults and crashes), and a
//! recording [`Effects`] whose events and items are compared exactly.
//!
//! Reply codes and texts are RabbitMQ 3.10's. A test that shows warren
//! behaving differently from RabbitMQ is `#[ignore = "bug: …"]`, with
//! RabbitMQ's behaviour asserted.

mod consumers;
mod enqueue;
mod lifecycle;
mod quorum;
mod store;

use super::{Effects, Enqueued, Item, Owner, OwnerConfig, QueueOp, SyncWaiter};
use crate::broker::control::{ControlPlane, Plan, Requester};
use crate::broker::request::{Reply, Request, Settle};
use crate::broker::topology::{Change, PolicyDef, Topology};
use crate::broker::users::{User, hash_password};
use crate::ids::{ChannelRef, ConnId, ConsumerRef, QueueId, ShardId, VhostId};
use crate::message::Message;
use crate::protocol::AmqpError;
use crate::protocol::{BasicProperties, FieldTable, FieldValue, LongStr, ShortStr};
use crate::queue::ConsumerSpec;
use crate::routing::ExchangeKind;
use crate::session::Event;
use crate::storage::sim_disk::Faults;
use crate::storage::{Disk, SimDisk};
use bytes::Bytes;
use std::path::PathBuf;
use std::sync::Arc;

/// The shard the owner under test runs on.
pub(super) const SHARD: ShardId = 1;

/// The publishing connection (on the owner's shard) and its channel.
pub(super) const PUB: ConnId = ConnId((1 << 48) | 1);
pub(super) const PUB_CH: ChannelRef = ChannelRef {
    conn: PUB,
    channel: 1,
    epoch: 1,
};

/// The consuming connection and its channel.
pub(super) const CONS: ConnId = ConnId((1 << 48) | 2);
pub(super) const CONS_CH: ChannelRef = ChannelRef {
    conn: CONS,
    channel: 1,
    epoch: 1,
};

/// A dynamic short string.
pub(super) fn ss(s: &str) -> ShortStr {
    ShortStr::from_string_lossy(s)
}

/// A `longstr` field value.
pub(super) fn ls(s: &str) -> FieldValue {
    FieldValue::LongStr(LongStr::new(Bytes::copy_from_slice(s.as_bytes())))
}

/// A field table from (key, value) pairs.
pub(super) fn table(entries: &[(&str, FieldValue)]) -> FieldTable {
    entries.iter().map(|(k, v)| (ss(k), v.clone())).collect()
}

pub(super) fn int(v: i32) -> FieldValue {
    FieldValue::I32(v)
}

/// A message published to `exchange` with `routing_key`.
pub(super) fn message(exchange: &str, routing_key: &str, props: &BasicProperties, body: &str) -> Message {
    Message::assemble(
        exchange.as_bytes(),
        routing_key.as_bytes(),
        &props.to_bytes(),
        body.as_bytes(),
    )
    .with_properties_from_raw()
}

/// A transient message through the default exchange to queue `q`.
pub(super) fn transient(body: &str) -> Message {
    message("", "q", &BasicProperties::default(), body)
}

/// A persistent message (`delivery-mode` 2) to queue `q`.
pub(super) fn persistent(body: &str) -> Message {
    let props = BasicProperties {
        delivery_mode: Some(2),
        ..Default::default()
    };
    message("", "q", &props, body)
}

/// A transient message to queue `q` with a per-message TTL.
pub(super) fn expiring(body: &str, expiration: &'static str) -> Message {
    let props = BasicProperties {
        expiration: Some(ShortStr::from_static(expiration)),
        ..Default::default()
    };
    message("", "q", &props, body)
}

pub(super) fn cref(id: u32) -> ConsumerRef {
    ConsumerRef { ch: CONS_CH, id }
}

/// A consumer on [`CONS_CH`].
pub(super) fn spec(id: u32, prefetch: u32, no_ack: bool) -> ConsumerSpec {
    ConsumerSpec {
        cref: cref(id),
        no_ack,
        exclusive: false,
        prefetch,
        channel_limited: false,
        priority: 0,
    }
}

fn body(m: &Message) -> String {
    String::from_utf8_lossy(m.body()).into_owned()
}

/// One line per event, compact and exact: what a test compares.
pub(super) fn describe(conn: ConnId, ev: &Event) -> String {
    match ev {
        Event::Reply { ch, reply } => {
            let r = describe_reply(reply);
            if *ch == PUB_CH || *ch == CONS_CH {
                r
            } else {
                format!("{:?}/{} {r}", ch.conn, ch.channel)
            }
        }
        Event::Deliver(d) => format!(
            "deliver c{} '{}'{}{}",
            d.consumer.id,
            body(&d.msg),
            if d.redelivered { " redelivered" } else { "" },
            if d.needs_ack { "" } else { " no-ack" }
        ),
        Event::Confirm { seq, ok, .. } => format!("confirm {seq} {}", if *ok { "ack" } else { "nack" }),
        Event::ConsumerCancelled { consumer } => format!("cancelled c{}", consumer.id),
        Event::CreditRequest { queue, consumer } => format!("credit-request q{} c{}", queue.0, consumer.id),
        Event::CreditReturn { queue, consumer, n } => {
            format!("credit-return q{} c{} {n}", queue.0, consumer.id)
        }
        Event::Throttle { queue, on } => {
            format!(
                "throttle {conn:?} q{} {}",
                queue.0,
                if *on { "on" } else { "off" }
            )
        }
        other => format!("{other:?}"),
    }
}

pub(super) fn describe_reply(r: &Reply) -> String {
    match r {
        Reply::GetOk {
            entry,
            remaining,
            needs_ack,
            ..
        } => format!(
            "get-ok '{}' remaining={remaining}{}{}",
            body(&entry.msg),
            if entry.redelivered { " redelivered" } else { "" },
            if *needs_ack { "" } else { " no-ack" }
        ),
        Reply::GetEmpty => "get-empty".into(),
        Reply::QueueDeclareOk {
            name,
            messages,
            consumers,
        } => format!("declare-ok {name} messages={messages} consumers={consumers}"),
        Reply::QueuePurgeOk { messages } => format!("purge-ok {messages}"),
        Reply::QueueDeleteOk { messages } => format!("delete-ok {messages}"),
        Reply::ConsumeOk { queue, consumer } => format!("consume-ok q{} c{}", queue.0, consumer.id),
        Reply::CancelOk { consumer } => format!("cancel-ok c{}", consumer.id),
        Reply::Error(e) => format!("error {} {}", e.code, e.reply_text()),
        Reply::BarrierDone => "barrier-done".into(),
        other => format!("{other:?}"),
    }
}

/// One line per item.
pub(super) fn describe_item(shard: ShardId, item: &Item) -> String {
    let what = match item {
        Item::Publish {
            queue,
            msg,
            confirm,
            publisher,
        } => format!(
            "publish q{} '{}' ex='{}' rk='{}'{}{}{}",
            queue.0,
            body(msg),
            String::from_utf8_lossy(msg.exchange()),
            String::from_utf8_lossy(msg.routing_key()),
            if msg.persistent { " persistent" } else { "" },
            match confirm {
                Some((_, seq)) => format!(" confirm={seq}"),
                None => String::new(),
            },
            if *publisher == ConnId(0) {
                String::new()
            } else {
                format!(" from {publisher:?}")
            }
        ),
        Item::Control(crate::owner::ControlMsg::AutoDeleted(q)) => format!("auto-deleted q{}", q.0),
        Item::BarrierDone { ch, token } => format!("barrier-done {:?}/{} {token}", ch.conn, ch.channel),
        other => format!("{other:?}"),
    };
    format!("to {shard}: {what}")
}

/// The `x-death` entries of a message, each as one line of its fields
/// (`time` left out), most recent first; and its `x-first-death-*`.
pub(super) fn deaths(m: &Message) -> (Vec<String>, String) {
    let p = BasicProperties::decode(&m.props_bytes()).expect("properties decode");
    let h = p.headers.unwrap_or_default();
    let text = |v: Option<&FieldValue>| {
        v.and_then(|v| v.as_bytes())
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_else(|| "-".into())
    };
    let entries = match h.get("x-death") {
        Some(FieldValue::Array(a)) => a
            .iter()
            .map(|d| {
                let t = d.as_table().expect("x-death entries are tables");
                let keys = match t.get("routing-keys") {
                    Some(FieldValue::Array(k)) => {
                        k.iter().map(|k| text(Some(k))).collect::<Vec<_>>().join(",")
                    }
                    _ => "-".into(),
                };
                let mut s = format!(
                    "{} queue={} count={} exchange='{}' routing-keys=[{keys}]",
                    text(t.get("reason")),
                    text(t.get("queue")),
                    t.get("count").and_then(|c| c.as_i64()).unwrap_or(-1),
                    text(t.get("exchange")),
                );
                if let Some(e) = t.get("original-expiration") {
                    s += &format!(" original-expiration={}", text(Some(e)));
                }
                s
            })
            .collect(),
        _ => Vec::new(),
    };
    let first = format!(
        "first: {} {} '{}'",
        text(h.get("x-first-death-reason")),
        text(h.get("x-first-death-queue")),
        text(h.get("x-first-death-exchange"))
    );
    (entries, first)
}

/// A recording [`Effects`].
#[derive(Default)]
pub(super) struct Fx {
    pub events: Vec<(ConnId, Event)>,
    pub items: Vec<(ShardId, Item)>,
}

impl Effects for Fx {
    fn to_conn(&mut self, conn: ConnId, ev: Event) {
        self.events.push((conn, ev));
    }
    fn to_shard(&mut self, shard: ShardId, item: Item) {
        self.items.push((shard, item));
    }
}

impl Fx {
    /// The events so far, described, and forgotten.
    pub fn take(&mut self) -> Vec<String> {
        self.events.drain(..).map(|(c, e)| describe(c, &e)).collect()
    }
    /// The items so far, described, and forgotten.
    pub fn take_items(&mut self) -> Vec<String> {
        self.items.drain(..).map(|(s, i)| describe_item(s, &i)).collect()
    }
    /// The items so far, and forgotten.
    pub fn take_raw_items(&mut self) -> Vec<(ShardId, Item)> {
        std::mem::take(&mut self.items)
    }
}

/// The data directory on the simulated disk.
pub(super) fn data_dir() -> PathBuf {
    PathBuf::from("/data")
}

pub(super) fn owner_config() -> OwnerConfig {
    OwnerConfig {
        shard: SHARD,
        consumer_window: 100,
        flow_backlog: 1000,
        segment_size: 64 * 1024,
        data_dir: data_dir(),
        node: 0,
    }
}

/// A topology with vhost `/` and `guest`, one owner on shard [`SHARD`]
/// over a simulated disk, and a recording effects sink.
pub(super) struct W {
    pub topo: Topology,
    pub cp: ControlPlane,
    pub vhost: VhostId,
    pub disk: SimDisk,
    pub cfg: OwnerConfig,
    pub owner: Owner,
    pub fx: Fx,
}

impl W {
    pub fn new() -> W {
        Self::with_config(owner_config())
    }

    pub fn with_config(cfg: OwnerConfig) -> W {
        let mut topo = Topology::default();
        let mut cp = ControlPlane::default();
        for c in cp.add_vhost(&topo, "/").expect("new vhost") {
            topo.apply(&c);
        }
        let vhost = topo.vhost("/").expect("vhost /").id;
        topo.apply(&Change::PutUser(User {
            name: "guest".into(),
            password_hash: hash_password(b"guest", [1, 2, 3, 4]),
            tags: vec![],
            counters: Default::default(),
        }));
        topo.apply(&Change::SetPermissions {
            user: "guest".into(),
            vhost,
            configure: ".*".into(),
            write: ".*".into(),
            read: ".*".into(),
        });
        let disk = SimDisk::new(42);
        let owner = Owner::new(cfg.clone(), Arc::new(disk.clone()));
        W {
            topo,
            cp,
            vhost,
            disk,
            cfg,
            owner,
            fx: Fx::default(),
        }
    }

    /// Applies changes to the topology and to the owner, as a shard does.
    pub fn apply(&mut self, changes: &[Change]) {
        for c in changes {
            self.topo.apply(c);
            self.owner.apply_change(&self.topo, c, &mut self.fx, 0);
        }
    }

    fn plan(&mut self, shard: ShardId, req: Request) -> Plan {
        let who = Requester {
            vhost: self.vhost,
            conn: ConnId::new(shard, 99),
            shard,
            user: "guest",
        };
        self.cp.plan(&self.topo, who, req).expect("planned")
    }

    /// Declares a queue owned by `shard`.
    pub fn declare_on(&mut self, shard: ShardId, name: &str, durable: bool, args: FieldTable) -> QueueId {
        let req = Request::QueueDeclare {
            name: ss(name),
            generated: false,
            passive: false,
            durable,
            exclusive: false,
            auto_delete: false,
            args,
        };
        match self.plan(shard, req) {
            Plan::Apply { changes, .. } => self.apply(&changes),
            other => panic!("{other:?}"),
        }
        self.qid(name)
    }

    /// Declares a transient queue owned by the owner under test.
    pub fn declare(&mut self, name: &str, args: FieldTable) -> QueueId {
        self.declare_on(SHARD, name, false, args)
    }

    /// Declares a durable queue owned by the owner under test.
    pub fn declare_durable(&mut self, name: &str, args: FieldTable) -> QueueId {
        self.declare_on(SHARD, name, true, args)
    }

    /// Declares an auto-delete queue owned by the owner under test.
    pub fn declare_auto_delete(&mut self, name: &str) -> QueueId {
        let req = Request::QueueDeclare {
            name: ss(name),
            generated: false,
            passive: false,
            durable: false,
            exclusive: false,
            auto_delete: true,
            args: FieldTable::new(),
        };
        match self.plan(SHARD, req) {
            Plan::Apply { changes, .. } => self.apply(&changes),
            other => panic!("{other:?}"),
        }
        self.qid(name)
    }

    pub fn declare_exchange(&mut self, name: &str, kind: ExchangeKind) {
        let req = Request::ExchangeDeclare {
            name: ss(name),
            kind,
            passive: false,
            durable: false,
            auto_delete: false,
            internal: false,
            args: FieldTable::new(),
        };
        match self.plan(0, req) {
            Plan::Apply { changes, .. } => self.apply(&changes),
            other => panic!("{other:?}"),
        }
    }

    pub fn bind(&mut self, queue: &str, exchange: &str, key: &str) {
        let req = Request::QueueBind {
            queue: ss(queue),
            exchange: ss(exchange),
            routing_key: ss(key),
            args: FieldTable::new(),
        };
        match self.plan(0, req) {
            Plan::Apply { changes, .. } => self.apply(&changes),
            other => panic!("{other:?}"),
        }
    }

    pub fn set_policy(&mut self, name: &str, pattern: &str, definition: FieldTable) {
        let c = Change::SetPolicy(PolicyDef {
            vhost: self.vhost,
            name: name.into(),
            pattern: pattern.into(),
            apply_to: "queues".into(),
            priority: 0,
            definition,
        });
        self.apply(&[c]);
    }

    pub fn clear_policy(&mut self, name: &str) {
        let c = Change::ClearPolicy {
            vhost: self.vhost,
            name: name.into(),
        };
        self.apply(&[c]);
    }

    pub fn qid(&self, name: &str) -> QueueId {
        self.topo
            .queue_id(self.vhost, name.as_bytes())
            .unwrap_or_else(|| panic!("no queue {name}"))
    }

    /// Deletes a queue from the topology (the control plane's commit after
    /// the owner dropped it).
    pub fn delete_from_topology(&mut self, q: QueueId) {
        let changes = self.cp.delete_queue_changes(&self.topo, q);
        self.apply(&changes);
    }

    /// A queue delete as the control plane runs it: the owner checks and
    /// counts, then the committed deletion is applied (the engine goes).
    pub fn delete(&mut self, q: QueueId, if_unused: bool, if_empty: bool) -> Result<u32, AmqpError> {
        let n = self
            .owner
            .owner_delete(&self.topo, &mut self.fx, q, if_unused, if_empty, 0)?;
        self.delete_from_topology(q);
        Ok(n)
    }

    /// `Owner::enqueue` from [`PUB`], without a confirm.
    pub fn publish(&mut self, q: QueueId, msg: Message, now: u64) -> Enqueued {
        self.owner
            .enqueue(&self.topo, &mut self.fx, q, msg, None, PUB, now)
    }

    /// `Owner::enqueue` from [`PUB`], with confirm `seq`.
    pub fn publish_confirmed(&mut self, q: QueueId, msg: Message, seq: u64, now: u64) -> Enqueued {
        self.owner
            .enqueue(&self.topo, &mut self.fx, q, msg, Some((PUB_CH, seq)), PUB, now)
    }

    /// An `Item::Publish` from another shard, with confirm `seq`.
    pub fn publish_item(&mut self, q: QueueId, msg: Message, seq: u64, now: u64) {
        self.owner
            .publish_item(&self.topo, &mut self.fx, q, msg, Some((PUB_CH, seq)), PUB, now)
    }

    /// The end of a step: store writes and dispatch, until nothing is left.
    pub fn step(&mut self, now: u64) {
        let mut rounds = 0;
        while self.owner.run_step(&self.topo, &mut self.fx, now) {
            rounds += 1;
            assert!(rounds < 100, "run_step never settles");
        }
    }

    /// One group commit: syncs what `take_sync` returns, with the files of
    /// the queues in `failing` failing their sync, and answers the owner.
    /// Returns (files synced, waiters answered).
    pub fn sync_failing(&mut self, failing: &[QueueId]) -> (usize, usize) {
        let batch = self.owner.take_sync();
        let (nfiles, nwaiters) = (batch.files.len(), batch.waiters.len());
        for (_, f) in &batch.files {
            f.begin_sync();
        }
        let mut failed = Vec::new();
        for (q, f) in &batch.files {
            let fail = failing.contains(q);
            self.disk.set_faults(Faults {
                sync_error: if fail { 1.0 } else { 0.0 },
                ..Default::default()
            });
            if f.sync().is_err() && !failed.contains(q) {
                failed.push(*q);
            }
        }
        self.disk.set_faults(Faults::default());
        self.owner.synced(batch.waiters, &failed, &mut self.fx);
        (nfiles, nwaiters)
    }

    /// A fresh owner on `disk` (a simulated disk with its own seed).
    pub fn on_disk(disk: SimDisk) -> W {
        let mut w = W::new();
        w.owner = Owner::new(w.cfg.clone(), Arc::new(disk.clone()));
        w.disk = disk;
        w
    }

    /// The periodic sweep (TTLs, expiry, due ack logs).
    pub fn sweep(&mut self, now: u64) {
        self.owner.sweep(&self.topo, &mut self.fx, now);
    }

    pub fn sync(&mut self) -> (usize, usize) {
        self.sync_failing(&[])
    }

    pub fn queue_op(&mut self, q: QueueId, name: &str, ch: ChannelRef, op: QueueOp, now: u64) {
        self.owner
            .queue_op(&self.topo, &mut self.fx, q, ss(name), ch, op, now);
    }

    /// `basic.get` on [`CONS_CH`]; returns the events it caused.
    pub fn get(&mut self, q: QueueId, no_ack: bool, now: u64) -> Vec<String> {
        self.queue_op(q, "q", CONS_CH, QueueOp::Get { no_ack }, now);
        self.fx.take()
    }

    /// Gets until the queue is empty (no-ack); the bodies.
    pub fn drain(&mut self, q: QueueId, now: u64) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            self.queue_op(q, "q", CONS_CH, QueueOp::Get { no_ack: true }, now);
            let evs = std::mem::take(&mut self.fx.events);
            match &evs[..] {
                [
                    (
                        _,
                        Event::Reply {
                            reply: Reply::GetOk { entry, .. },
                            ..
                        },
                    ),
                ] => out.push(body(&entry.msg)),
                [
                    (
                        _,
                        Event::Reply {
                            reply: Reply::GetEmpty,
                            ..
                        },
                    ),
                ] => return out,
                other => panic!("unexpected events: {other:?}"),
            }
        }
    }

    pub fn consume(&mut self, q: QueueId, s: ConsumerSpec, now: u64) {
        self.queue_op(q, "q", CONS_CH, QueueOp::Consume(s), now);
    }

    pub fn settle(&mut self, q: QueueId, seq: u64, how: Settle, now: u64) {
        self.owner.settle(&self.topo, &mut self.fx, q, seq, how, now);
    }

    /// The queue's ready count (counting pending store writes).
    pub fn ready(&self, q: QueueId) -> usize {
        self.owner.queue(q).map_or(usize::MAX, |s| s.ready_count())
    }

    /// The process dies and comes back on the same disk: a new owner
    /// applies the durable queues of the topology, as a restart does.
    pub fn restart(&mut self) {
        let fresh = Owner::new(self.cfg.clone(), Arc::new(self.disk.clone()));
        drop(std::mem::replace(&mut self.owner, fresh));
        self.disk.crash_process();
        self.reopen();
    }

    /// The machine loses power and comes back.
    pub fn power_loss(&mut self) {
        let fresh = Owner::new(self.cfg.clone(), Arc::new(self.disk.clone()));
        drop(std::mem::replace(&mut self.owner, fresh));
        self.disk.crash_power();
        self.reopen();
    }

    fn reopen(&mut self) {
        self.fx = Fx::default();
        let mut defs: Vec<_> = self
            .topo
            .queues()
            .filter(|q| q.durable && q.owner == SHARD)
            .cloned()
            .collect();
        defs.sort_by_key(|d| d.id);
        for d in defs {
            self.owner
                .apply_change(&self.topo, &Change::DeclareQueue(d), &mut self.fx, 0);
        }
        assert_eq!(self.owner.take_boot_error(), None);
    }

    /// Whether a queue's store directory exists on the disk.
    pub fn store_exists(&self, q: QueueId) -> bool {
        self.disk
            .exists(&crate::storage::QueueStore::dir_for(&data_dir(), q.0))
    }
}

/// A durable queue's arguments plus a dead-letter exchange.
pub(super) fn dlx_args(dlx: &str, extra: &[(&str, FieldValue)]) -> FieldTable {
    let mut t = table(extra);
    t.insert(ss("x-dead-letter-exchange"), ls(dlx));
    t
}

/// A dead-letter setup: direct exchange `dlx`, queue `dlq` on shard 2
/// bound to it with key `q` (the routing key of the test messages).
pub(super) fn with_dead_letter_queue(w: &mut W) -> QueueId {
    w.declare_exchange("dlx", ExchangeKind::Direct);
    let dlq = w.declare_on(2, "dlq", false, FieldTable::new());
    w.bind("dlq", "dlx", "q");
    dlq
}

/// The dead-lettered messages among the items (taken), with their queue
/// and shard.
pub(super) fn dead_lettered(fx: &mut Fx) -> Vec<(ShardId, QueueId, Message)> {
    fx.take_raw_items()
        .into_iter()
        .map(|(s, i)| match i {
            Item::Publish {
                queue,
                msg,
                confirm: None,
                publisher: ConnId(0),
            } => (s, queue, msg),
            other => panic!("expected a dead-letter publish, got {}", describe_item(s, &other)),
        })
        .collect()
}

pub(super) fn bodies(v: &[(ShardId, QueueId, Message)]) -> Vec<String> {
    v.iter().map(|(_, _, m)| body(m)).collect()
}

/// A sync waiter, described.
pub(super) fn waiter(w: &SyncWaiter) -> String {
    match w {
        SyncWaiter::Confirm { seq, queue, .. } => format!("confirm {seq} q{}", queue.0),
        SyncWaiter::Barrier { token, .. } => format!("barrier {token}"),
        SyncWaiter::BarrierVia { token, to, .. } => format!("barrier {token} via {to}"),
    }
}
