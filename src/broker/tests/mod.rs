//! Unit tests of the broker layer's pure logic: the control-plane planner,
//! the replicated topology, argument rules, dead-lettering and users.
//!
//! Expected reply codes and texts are RabbitMQ 3.10.8's, each checked
//! against a live broker first. A test that shows warren answering
//! differently is `#[ignore = "bug: …"]`, with RabbitMQ's answer asserted.

mod args;
mod deadletter;
mod limits;
mod permissions;
mod planner_exchange;
mod planner_queue;
mod topology;
mod users;

use super::control::{ControlPlane, Plan, Requester};
use super::request::{Reply, Request};
use super::topology::{Change, Dest, Topology};
use super::users::{User, hash_password};
use crate::ids::{ConnId, ExchangeId, QueueId, ShardId, VhostId};
use crate::protocol::{AmqpError, FieldTable, FieldValue, LongStr, ShortStr};
use crate::routing::ExchangeKind;
use bytes::Bytes;

/// A dynamic short string.
pub(super) fn ss(s: &str) -> ShortStr {
    ShortStr::from_string_lossy(s)
}

/// A `longstr` field value.
pub(super) fn ls(s: &str) -> FieldValue {
    FieldValue::LongStr(LongStr::new(Bytes::copy_from_slice(s.as_bytes())))
}

/// A field table from (key, value) pairs, in order.
pub(super) fn table(entries: &[(&str, FieldValue)]) -> FieldTable {
    entries.iter().map(|(k, v)| (ss(k), v.clone())).collect()
}

/// Asserts an error's code and its full reply text as RabbitMQ sends it
/// (`"NOT_FOUND - no queue 'q' in vhost '/'"`).
#[track_caller]
pub(super) fn assert_amqp_err<T: std::fmt::Debug>(r: Result<T, AmqpError>, code: u16, text: &str) {
    match r {
        Ok(v) => panic!("expected {code} {text:?}, got Ok({v:?})"),
        Err(e) => {
            assert_eq!((e.code, e.reply_text()), (code, text.to_string()));
        }
    }
}

pub(super) const CONN_A: ConnId = ConnId(1);
pub(super) const CONN_B: ConnId = ConnId((1 << 48) | 7);

/// A control plane and its topology, with vhost `/` (and its standard
/// exchanges) and user `guest` allowed everything there.
pub(super) struct World {
    pub topo: Topology,
    pub cp: ControlPlane,
    pub vhost: VhostId,
}

/// Who asks: user, connection and shard.
#[derive(Clone, Copy)]
pub(super) struct Who {
    pub user: &'static str,
    pub conn: ConnId,
    pub shard: ShardId,
    pub vhost: Option<VhostId>,
}

pub(super) const GUEST: Who = Who {
    user: "guest",
    conn: CONN_A,
    shard: 0,
    vhost: None,
};

impl Who {
    pub fn on(self, conn: ConnId, shard: ShardId) -> Who {
        Who { conn, shard, ..self }
    }
    pub fn user(self, user: &'static str) -> Who {
        Who { user, ..self }
    }
    pub fn in_vhost(self, v: VhostId) -> Who {
        Who {
            vhost: Some(v),
            ..self
        }
    }
}

impl World {
    pub fn new() -> World {
        let mut topo = Topology::default();
        let mut cp = ControlPlane::default();
        let changes = cp.add_vhost(&topo, "/").expect("new vhost");
        for c in &changes {
            topo.apply(c);
        }
        let vhost = topo.vhost("/").expect("vhost /").id;
        let mut w = World { topo, cp, vhost };
        w.add_user("guest", ".*", ".*", ".*");
        w
    }

    /// Adds a vhost (with its standard exchanges) and returns its id.
    pub fn add_vhost(&mut self, name: &str) -> VhostId {
        let changes = self.cp.add_vhost(&self.topo, name).expect("new vhost");
        self.apply_all(&changes);
        self.topo.vhost(name).expect("added").id
    }

    /// Adds a user with these permissions in `/`.
    pub fn add_user(&mut self, name: &str, configure: &str, write: &str, read: &str) {
        self.topo.apply(&Change::PutUser(User {
            name: name.to_string(),
            password_hash: hash_password(b"pw", [1, 2, 3, 4]),
            tags: vec![],
            counters: Default::default(),
        }));
        self.topo.apply(&Change::SetPermissions {
            user: name.to_string(),
            vhost: self.vhost,
            configure: configure.to_string(),
            write: write.to_string(),
            read: read.to_string(),
        });
    }

    pub fn apply_all(&mut self, changes: &[Change]) {
        for c in changes {
            self.topo.apply(c);
        }
    }

    pub fn plan_as(&mut self, who: Who, req: impl Into<Request>) -> Result<Plan, AmqpError> {
        let r = Requester {
            vhost: who.vhost.unwrap_or(self.vhost),
            conn: who.conn,
            shard: who.shard,
            user: who.user,
        };
        self.cp.plan(&self.topo, r, req.into())
    }

    pub fn plan(&mut self, req: impl Into<Request>) -> Result<Plan, AmqpError> {
        self.plan_as(GUEST, req)
    }

    /// Plans and carries the plan out as shard 0 would, with the queue
    /// owner's conditions of a `DeleteQueue` taken as met. Returns the plan.
    pub fn run_as(&mut self, who: Who, req: impl Into<Request>) -> Result<Plan, AmqpError> {
        let plan = self.plan_as(who, req)?;
        match &plan {
            Plan::Apply { changes, .. } => self.apply_all(changes),
            Plan::DeleteQueue { queue, .. } => {
                let changes = self.cp.delete_queue_changes(&self.topo, *queue);
                self.apply_all(&changes);
            }
            Plan::Reply(_) | Plan::DeclareExisting { .. } => {}
        }
        Ok(plan)
    }

    pub fn run(&mut self, req: impl Into<Request>) -> Result<Plan, AmqpError> {
        self.run_as(GUEST, req)
    }

    pub fn xid(&self, name: &str) -> ExchangeId {
        self.topo
            .exchange_id(self.vhost, name.as_bytes())
            .unwrap_or_else(|| panic!("no exchange {name}"))
    }
    pub fn qid(&self, name: &str) -> QueueId {
        self.topo
            .queue_id(self.vhost, name.as_bytes())
            .unwrap_or_else(|| panic!("no queue {name}"))
    }
    pub fn has_exchange(&self, name: &str) -> bool {
        self.topo.exchange_id(self.vhost, name.as_bytes()).is_some()
    }
    pub fn has_queue(&self, name: &str) -> bool {
        self.topo.queue_id(self.vhost, name.as_bytes()).is_some()
    }

    /// The bindings whose source is `exchange`, as sorted (key, dest).
    pub fn bindings_of(&self, exchange: &str) -> Vec<(String, Dest)> {
        let ex = self.topo.exchange(self.xid(exchange)).expect("exists");
        let mut v: Vec<_> = ex
            .bindings
            .iter()
            .map(|(k, _, d)| (k.as_str().into_owned(), d))
            .collect();
        v.sort();
        v
    }

    pub fn declare_exchange(&mut self, name: &str, kind: ExchangeKind) {
        self.run(XDecl::new(name, kind)).expect("exchange declared");
    }
    pub fn declare_queue(&mut self, name: &str) {
        self.run(QDecl::new(name)).expect("queue declared");
    }
    pub fn bind_queue(&mut self, queue: &str, exchange: &str, key: &str) {
        self.run(queue_bind(queue, exchange, key, FieldTable::new()))
            .expect("bound");
    }
    pub fn bind_exchange(&mut self, destination: &str, source: &str, key: &str) {
        self.run(exchange_bind(destination, source, key, FieldTable::new()))
            .expect("bound");
    }
}

/// An `exchange.declare`.
#[derive(Clone, Debug)]
pub(super) struct XDecl {
    pub name: ShortStr,
    pub kind: ExchangeKind,
    pub passive: bool,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    pub args: FieldTable,
}

impl XDecl {
    pub fn new(name: &str, kind: ExchangeKind) -> XDecl {
        XDecl {
            name: ss(name),
            kind,
            passive: false,
            durable: false,
            auto_delete: false,
            internal: false,
            args: FieldTable::new(),
        }
    }
    pub fn passive(self) -> Self {
        XDecl {
            passive: true,
            ..self
        }
    }
    pub fn durable(self) -> Self {
        XDecl {
            durable: true,
            ..self
        }
    }
    pub fn auto_delete(self) -> Self {
        XDecl {
            auto_delete: true,
            ..self
        }
    }
    pub fn internal(self) -> Self {
        XDecl {
            internal: true,
            ..self
        }
    }
    pub fn args(self, args: FieldTable) -> Self {
        XDecl { args, ..self }
    }
}

impl From<XDecl> for Request {
    fn from(d: XDecl) -> Request {
        Request::ExchangeDeclare {
            name: d.name,
            kind: d.kind,
            passive: d.passive,
            durable: d.durable,
            auto_delete: d.auto_delete,
            internal: d.internal,
            args: d.args,
        }
    }
}

/// A `queue.declare`.
#[derive(Clone, Debug)]
pub(super) struct QDecl {
    pub name: ShortStr,
    pub generated: bool,
    pub passive: bool,
    pub durable: bool,
    pub exclusive: bool,
    pub auto_delete: bool,
    pub args: FieldTable,
}

impl QDecl {
    pub fn new(name: &str) -> QDecl {
        QDecl {
            name: ss(name),
            generated: false,
            passive: false,
            durable: false,
            exclusive: false,
            auto_delete: false,
            args: FieldTable::new(),
        }
    }
    /// A name the server generated for an empty one.
    pub fn generated(name: &str) -> QDecl {
        QDecl {
            generated: true,
            ..QDecl::new(name)
        }
    }
    pub fn passive(self) -> Self {
        QDecl {
            passive: true,
            ..self
        }
    }
    pub fn durable(self) -> Self {
        QDecl {
            durable: true,
            ..self
        }
    }
    pub fn exclusive(self) -> Self {
        QDecl {
            exclusive: true,
            ..self
        }
    }
    pub fn auto_delete(self) -> Self {
        QDecl {
            auto_delete: true,
            ..self
        }
    }
    pub fn args(self, args: FieldTable) -> Self {
        QDecl { args, ..self }
    }
}

impl From<QDecl> for Request {
    fn from(d: QDecl) -> Request {
        Request::QueueDeclare {
            name: d.name,
            generated: d.generated,
            passive: d.passive,
            durable: d.durable,
            exclusive: d.exclusive,
            auto_delete: d.auto_delete,
            args: d.args,
        }
    }
}

pub(super) fn exchange_delete(name: &str, if_unused: bool) -> Request {
    Request::ExchangeDelete {
        name: ss(name),
        if_unused,
    }
}

pub(super) fn queue_delete(name: &str, if_unused: bool, if_empty: bool) -> Request {
    Request::QueueDelete {
        queue: ss(name),
        if_unused,
        if_empty,
    }
}

pub(super) fn queue_bind(queue: &str, exchange: &str, key: &str, args: FieldTable) -> Request {
    Request::QueueBind {
        queue: ss(queue),
        exchange: ss(exchange),
        routing_key: ss(key),
        args,
    }
}

pub(super) fn queue_unbind(queue: &str, exchange: &str, key: &str, args: FieldTable) -> Request {
    Request::QueueUnbind {
        queue: ss(queue),
        exchange: ss(exchange),
        routing_key: ss(key),
        args,
    }
}

pub(super) fn exchange_bind(destination: &str, source: &str, key: &str, args: FieldTable) -> Request {
    Request::ExchangeBind {
        destination: ss(destination),
        source: ss(source),
        routing_key: ss(key),
        args,
    }
}

pub(super) fn exchange_unbind(destination: &str, source: &str, key: &str, args: FieldTable) -> Request {
    Request::ExchangeUnbind {
        destination: ss(destination),
        source: ss(source),
        routing_key: ss(key),
        args,
    }
}

/// A short description of a plan, for exact comparisons (`Plan`, `Change`
/// and `Reply` do not implement `PartialEq`).
pub(super) fn describe(plan: &Plan) -> String {
    match plan {
        Plan::Reply(r) => format!("reply {}", describe_reply(r)),
        Plan::Apply { changes, reply } => format!(
            "apply [{}] then {}",
            changes.iter().map(describe_change).collect::<Vec<_>>().join(", "),
            describe_reply(reply)
        ),
        Plan::DeclareExisting { queue, owner, name } => {
            format!("existing q{} on shard {owner} named {name}", queue.0)
        }
        Plan::DeleteQueue {
            queue,
            owner,
            if_unused,
            if_empty,
        } => format!(
            "delete q{} on shard {owner} if_unused={if_unused} if_empty={if_empty}",
            queue.0
        ),
    }
}

pub(super) fn describe_reply(r: &Reply) -> String {
    match r {
        Reply::QueueDeclareOk {
            name,
            messages,
            consumers,
        } => format!("declare-ok {name} {messages} {consumers}"),
        Reply::QueueDeleteOk { messages } => format!("delete-ok {messages}"),
        other => format!("{other:?}"),
    }
}

fn dest(d: &Dest) -> String {
    match d {
        Dest::Queue(q) => format!("q{}", q.0),
        Dest::Exchange(e) => format!("x{}", e.0),
    }
}

pub(super) fn describe_change(c: &Change) -> String {
    match c {
        Change::DeclareExchange(d) => format!("declare x{} {}", d.id.0, d.name),
        Change::DeleteExchange { id } => format!("delete x{}", id.0),
        Change::DeclareQueue(d) => format!("declare q{} {}", d.id.0, d.name),
        Change::DeleteQueue { id } => format!("delete q{}", id.0),
        Change::Bind {
            source, dest: d, key, ..
        } => format!("bind x{} -{key}-> {}", source.0, dest(d)),
        Change::Unbind {
            source, dest: d, key, ..
        } => {
            format!("unbind x{} -{key}-> {}", source.0, dest(d))
        }
        other => format!("{other:?}"),
    }
}
