//! The broker's topology: vhosts, exchanges, queues and bindings.
//!
//! Replicated on every shard: each shard holds a full copy so a publish is
//! routed on the connection's own shard without a hop. Shard 0 is the only
//! writer: it validates a request ([`super::control`]), turns it into
//! [`Change`]s, applies them to its copy, then broadcasts the same changes to
//! every other shard, which apply them with [`Topology::apply`]. `apply` is
//! deterministic and does no validation of its own, so all copies stay equal.

use super::limits::{Counter, Limits};
use super::users::{Permissions, User};
use crate::ids::{ConnId, ExchangeId, IdMap, NameMap, QueueId, ShardId, VhostId};
use crate::protocol::{FieldTable, ShortStr};
use crate::routing::{Bindings, ExchangeKind};
use bytes::Bytes;
use std::collections::HashMap;

/// Where a binding leads.
#[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub enum Dest {
    Queue(QueueId),
    Exchange(ExchangeId),
}

/// What declares an exchange, as stored and replicated.
#[derive(Clone, Debug)]
pub struct ExchangeDef {
    pub id: ExchangeId,
    pub vhost: VhostId,
    pub name: ShortStr,
    pub kind: ExchangeKind,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    pub args: FieldTable,
}

/// What declares a queue, as stored and replicated.
#[derive(Clone, Debug)]
pub struct QueueDef {
    pub id: QueueId,
    pub vhost: VhostId,
    pub name: ShortStr,
    /// The shard that holds the queue's messages and consumers.
    pub owner: ShardId,
    /// In a cluster, the Raft id of the queue's home node (whose `owner`
    /// shard holds it); 0 outside a cluster (this node).
    pub node: u64,
    pub durable: bool,
    /// The connection an exclusive queue belongs to.
    pub exclusive: Option<ConnId>,
    pub auto_delete: bool,
    pub args: FieldTable,
    /// A quorum queue's replicas (Raft ids, the first one the node that
    /// declared it); empty for a classic queue. Its `node` is then its
    /// current leader, as the metadata log last heard.
    pub replicas: Vec<u64>,
    /// A quorum queue's Raft group, fixed at its declare (see
    /// [`quorum_group`]); it stays when its replicas change (`grow`,
    /// `shrink`). 0 for a classic queue.
    pub group: u32,
}

impl QueueDef {
    /// A replicated (quorum) queue.
    pub fn is_quorum(&self) -> bool {
        !self.replicas.is_empty()
    }

    /// A quorum queue's Raft group.
    pub fn quorum_group(&self) -> u32 {
        self.group
    }

    /// A quorum queue's replicas once `node` is added (`grow`) or taken out;
    /// `None` when they do not change: the node is there already (or not at
    /// all), `even` and an odd count, or it is the last replica (RabbitMQ's
    /// `last_node`: a queue keeps one).
    pub fn replicas_after(&self, node: u64, grow: bool, even: bool) -> Option<Vec<u64>> {
        if !self.is_quorum() {
            return None;
        }
        let has = self.replicas.contains(&node);
        if grow {
            if has || (even && !self.replicas.len().is_multiple_of(2)) || self.replicas.len() >= 255 {
                return None;
            }
            let mut r = self.replicas.clone();
            r.push(node);
            Some(r)
        } else if has && self.replicas.len() > 1 {
            Some(self.replicas.iter().copied().filter(|&r| r != node).collect())
        } else {
            None
        }
    }
}

/// The Raft group of the quorum queues with these replicas, in this order
/// (the first is the preferred leader): every node computes the same id,
/// never the metadata group's (0).
pub fn quorum_group(replicas: &[u64]) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for r in replicas {
        for b in r.to_le_bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x100_0000_01b3);
        }
    }
    ((h >> 32) as u32 ^ h as u32) | 0x8000_0000
}

/// One replicated topology mutation.
#[derive(Clone, Debug)]
pub enum Change {
    AddVhost {
        id: VhostId,
        name: String,
        /// The vhost's connection counter, shared by every replica (see
        /// [`super::limits`]); runtime state, never written to the log.
        connections: Counter,
    },
    DeleteVhost {
        id: VhostId,
    },
    DeclareExchange(ExchangeDef),
    DeleteExchange {
        id: ExchangeId,
    },
    DeclareQueue(QueueDef),
    DeleteQueue {
        id: QueueId,
    },
    /// A quorum queue's leader moved to `node` (0: this node).
    QueueLeader {
        id: QueueId,
        node: u64,
    },
    /// A quorum queue's replicas changed (`grow`, `shrink`, a forgotten
    /// node); its group stays, and its leader makes the group's Raft
    /// members follow.
    QueueReplicas {
        id: QueueId,
        replicas: Vec<u64>,
    },
    /// A classic queue moves to shard `owner` of this node (load
    /// balancing). `epoch` names the move in the shards' hand-over
    /// protocol. Runtime state: never written to the log (a restart puts
    /// the queue where its declare did).
    MoveQueue {
        id: QueueId,
        owner: ShardId,
        epoch: u64,
    },
    Bind {
        source: ExchangeId,
        dest: Dest,
        key: ShortStr,
        args: FieldTable,
    },
    Unbind {
        source: ExchangeId,
        dest: Dest,
        key: ShortStr,
        args: FieldTable,
    },
    /// Creates or replaces a user.
    PutUser(User),
    DeleteUser {
        name: String,
    },
    SetPermissions {
        user: String,
        vhost: VhostId,
        configure: String,
        write: String,
        read: String,
    },
    ClearPermissions {
        user: String,
        vhost: VhostId,
    },
    /// Creates or replaces a policy.
    SetPolicy(PolicyDef),
    ClearPolicy {
        vhost: VhostId,
        name: String,
    },
    /// Sets a vhost's limits whole (RabbitMQ's `vhost-limits` parameter);
    /// `None` clears the parameter.
    SetVhostLimits {
        vhost: VhostId,
        limits: Option<Limits>,
    },
    /// Sets a user's limits whole.
    SetUserLimits {
        user: String,
        limits: Limits,
    },
}

/// A policy, as RabbitMQ defines them: settings for the queues and/or
/// exchanges of a vhost whose names match a pattern; the highest priority
/// match applies, and explicit `x-` arguments win over it.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyDef {
    pub vhost: VhostId,
    pub name: String,
    pub pattern: String,
    /// "queues", "exchanges" or "all".
    pub apply_to: String,
    pub priority: i64,
    pub definition: FieldTable,
}

/// A policy with its compiled pattern. Replicated on every shard.
pub struct Policy {
    pub def: PolicyDef,
    regex: Option<regex::bytes::Regex>,
}

impl Policy {
    fn applies(&self, vhost: VhostId, name: &[u8], queue: bool) -> bool {
        let kind_ok = match self.def.apply_to.as_str() {
            "queues" => queue,
            "exchanges" => !queue,
            _ => true,
        };
        self.def.vhost == vhost && kind_ok && self.regex.as_ref().is_some_and(|r| r.is_match(name))
    }
}

/// An exchange and the bindings whose source it is.
pub struct Exchange {
    pub def: ExchangeDef,
    pub bindings: Bindings<Dest>,
}

/// A virtual host's name index, limits and connection counter.
pub struct Vhost {
    pub id: VhostId,
    pub name: String,
    /// RabbitMQ's `vhost-limits` parameter, if set (possibly empty).
    pub limits: Option<Limits>,
    /// Connections to this vhost, over every shard.
    pub connections: Counter,
    exchanges: NameMap<Bytes, ExchangeId>,
    queues: NameMap<Bytes, QueueId>,
}

impl Vhost {
    pub fn exchange_ids(&self) -> impl Iterator<Item = ExchangeId> + '_ {
        self.exchanges.values().copied()
    }
    pub fn queue_ids(&self) -> impl Iterator<Item = QueueId> + '_ {
        self.queues.values().copied()
    }
    /// How many queues the vhost has (what `max-queues` counts).
    pub fn queue_count(&self) -> usize {
        self.queues.len()
    }
}

/// Why a publish could not be routed at all (as opposed to routing nowhere).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteError {
    NoExchange,
    Internal,
}

/// The pre-declared exchanges of every vhost, as RabbitMQ creates them.
pub const STANDARD_EXCHANGES: [(&str, ExchangeKind, bool); 7] = [
    ("", ExchangeKind::Direct, false),
    ("amq.direct", ExchangeKind::Direct, false),
    ("amq.fanout", ExchangeKind::Fanout, false),
    ("amq.topic", ExchangeKind::Topic, false),
    ("amq.headers", ExchangeKind::Headers, false),
    ("amq.match", ExchangeKind::Headers, false),
    ("amq.rabbitmq.trace", ExchangeKind::Topic, true),
];

/// The whole topology. See the module docs for ownership.
#[derive(Default)]
pub struct Topology {
    vhosts: IdMap<VhostId, Vhost>,
    vhost_ids: NameMap<String, VhostId>,
    exchanges: IdMap<ExchangeId, Exchange>,
    queues: IdMap<QueueId, QueueDef>,
    users: HashMap<String, User>,
    permissions: HashMap<(String, VhostId), Permissions>,
    /// Users' limits; a user without an entry has none.
    user_limits: HashMap<String, Limits>,
    policies: Vec<Policy>,
    /// How many of this node's queues each shard holds (index: owner), for
    /// balanced placement; kept as changes apply so a declare need not
    /// walk every queue.
    local_by_shard: Vec<u32>,
    /// Bumped on every change; lets shards cache lookups safely.
    version: u64,
}

impl Topology {
    pub fn version(&self) -> u64 {
        self.version
    }

    /// How many of this node's queues each shard holds (index: shard; a
    /// shard past the end holds none).
    pub fn local_queues_by_shard(&self) -> &[u32] {
        &self.local_by_shard
    }

    fn count_local(&mut self, node: u64, owner: ShardId, up: bool) {
        if node != 0 {
            return;
        }
        let i = owner as usize;
        if self.local_by_shard.len() <= i {
            self.local_by_shard.resize(i + 1, 0);
        }
        let n = &mut self.local_by_shard[i];
        *n = if up { *n + 1 } else { n.saturating_sub(1) };
    }

    pub fn vhost(&self, name: &str) -> Option<&Vhost> {
        self.vhosts.get(self.vhost_ids.get(name)?)
    }
    pub fn vhost_by_id(&self, id: VhostId) -> Option<&Vhost> {
        self.vhosts.get(&id)
    }
    pub fn vhost_name(&self, id: VhostId) -> &str {
        self.vhosts.get(&id).map(|v| v.name.as_str()).unwrap_or("?")
    }
    pub fn vhosts(&self) -> impl Iterator<Item = &Vhost> {
        self.vhosts.values()
    }

    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.get(name)
    }
    pub fn users(&self) -> impl Iterator<Item = &User> {
        self.users.values()
    }
    /// A user's permissions in a vhost.
    pub fn permissions(&self, user: &str, vhost: VhostId) -> Option<&Permissions> {
        self.permissions.get(&(user.to_string(), vhost))
    }
    /// A user's limits (empty for a user without any, or no such user).
    pub fn user_limits(&self, name: &str) -> &Limits {
        static NONE: std::sync::OnceLock<Limits> = std::sync::OnceLock::new();
        self.user_limits
            .get(name)
            .unwrap_or_else(|| NONE.get_or_init(Limits::default))
    }
    /// Every (user, limits) with limits set.
    pub fn all_user_limits(&self) -> impl Iterator<Item = (&str, &Limits)> {
        self.user_limits
            .iter()
            .filter(|(_, l)| !l.is_empty())
            .map(|(u, l)| (u.as_str(), l))
    }
    /// Every (user, vhost, permissions).
    pub fn all_permissions(&self) -> impl Iterator<Item = (&str, VhostId, &Permissions)> {
        self.permissions.iter().map(|((u, v), p)| (u.as_str(), *v, p))
    }

    pub fn policies(&self) -> impl Iterator<Item = &PolicyDef> {
        self.policies.iter().map(|p| &p.def)
    }

    /// The definition of the policy that applies to a queue (`queue`) or
    /// exchange of that name, if any.
    pub fn policy_for(&self, vhost: VhostId, name: &[u8], queue: bool) -> Option<&FieldTable> {
        self.policies
            .iter()
            .filter(|p| p.applies(vhost, name, queue))
            .max_by_key(|p| p.def.priority)
            .map(|p| &p.def.definition)
    }

    /// An exchange's alternate exchange: its argument, else its policy's.
    pub fn alternate_exchange(&self, ex: &Exchange) -> Option<Bytes> {
        let arg = |t: &FieldTable, k: &str| t.get(k).and_then(|v| v.as_bytes()).map(Bytes::copy_from_slice);
        arg(&ex.def.args, "alternate-exchange").or_else(|| {
            self.policy_for(ex.def.vhost, ex.def.name.as_bytes(), false)
                .and_then(|d| arg(d, "alternate-exchange"))
        })
    }

    pub fn exchange(&self, id: ExchangeId) -> Option<&Exchange> {
        self.exchanges.get(&id)
    }
    pub fn exchange_id(&self, vhost: VhostId, name: &[u8]) -> Option<ExchangeId> {
        self.vhost_by_id(vhost)?.exchanges.get(name).copied()
    }
    pub fn exchange_by_name(&self, vhost: VhostId, name: &[u8]) -> Option<&Exchange> {
        self.exchange(self.exchange_id(vhost, name)?)
    }
    pub fn exchanges(&self) -> impl Iterator<Item = &Exchange> {
        self.exchanges.values()
    }

    pub fn queue(&self, id: QueueId) -> Option<&QueueDef> {
        self.queues.get(&id)
    }
    pub fn queue_id(&self, vhost: VhostId, name: &[u8]) -> Option<QueueId> {
        self.vhost_by_id(vhost)?.queues.get(name).copied()
    }
    pub fn queue_by_name(&self, vhost: VhostId, name: &[u8]) -> Option<&QueueDef> {
        self.queue(self.queue_id(vhost, name)?)
    }
    pub fn queues(&self) -> impl Iterator<Item = &QueueDef> {
        self.queues.values()
    }

    /// Every binding whose destination is `dest`, as (source, key, args).
    pub fn bindings_to(&self, dest: Dest) -> Vec<(ExchangeId, ShortStr, FieldTable)> {
        let mut v = Vec::new();
        for ex in self.exchanges.values() {
            for (k, a, d) in ex.bindings.iter() {
                if d == dest {
                    v.push((ex.def.id, k.clone(), a.clone()));
                }
            }
        }
        v
    }

    /// Applies one change. Deterministic; assumes shard 0 validated it.
    pub fn apply(&mut self, change: &Change) {
        self.version += 1;
        match change {
            Change::AddVhost {
                id,
                name,
                connections,
            } => {
                self.vhost_ids.insert(name.clone(), *id);
                self.vhosts.insert(
                    *id,
                    Vhost {
                        id: *id,
                        name: name.clone(),
                        limits: None,
                        connections: connections.clone(),
                        exchanges: NameMap::default(),
                        queues: NameMap::default(),
                    },
                );
            }
            Change::DeleteVhost { id } => {
                if let Some(v) = self.vhosts.remove(id) {
                    self.vhost_ids.remove(&v.name);
                }
                self.exchanges.retain(|_, e| e.def.vhost != *id);
                self.queues.retain(|_, q| q.vhost != *id);
                self.local_by_shard.clear();
                let here: Vec<(u64, ShardId)> = self.queues.values().map(|q| (q.node, q.owner)).collect();
                for (node, owner) in here {
                    self.count_local(node, owner, true);
                }
                self.permissions.retain(|(_, v), _| v != id);
                self.policies.retain(|p| p.def.vhost != *id);
            }
            Change::DeclareExchange(def) => {
                if let Some(v) = self.vhosts.get_mut(&def.vhost) {
                    v.exchanges.insert(def.name.bytes().clone(), def.id);
                }
                self.exchanges.insert(
                    def.id,
                    Exchange {
                        bindings: Bindings::new(def.kind),
                        def: def.clone(),
                    },
                );
            }
            Change::DeleteExchange { id } => {
                if let Some(ex) = self.exchanges.remove(id) {
                    if let Some(v) = self.vhosts.get_mut(&ex.def.vhost) {
                        v.exchanges.remove(ex.def.name.as_bytes());
                    }
                    for other in self.exchanges.values_mut() {
                        other.bindings.remove_destination(Dest::Exchange(*id));
                    }
                }
            }
            Change::DeclareQueue(def) => {
                if let Some(v) = self.vhosts.get_mut(&def.vhost) {
                    v.queues.insert(def.name.bytes().clone(), def.id);
                }
                self.count_local(def.node, def.owner, true);
                if let Some(old) = self.queues.insert(def.id, def.clone()) {
                    self.count_local(old.node, old.owner, false);
                }
            }
            Change::QueueLeader { id, node } => {
                if let Some(q) = self.queues.get_mut(id) {
                    let (was, owner) = (q.node, q.owner);
                    q.node = *node;
                    self.count_local(was, owner, false);
                    self.count_local(*node, owner, true);
                }
            }
            Change::MoveQueue { id, owner, .. } => {
                if let Some(q) = self.queues.get_mut(id) {
                    let (node, was) = (q.node, q.owner);
                    q.owner = *owner;
                    self.count_local(node, was, false);
                    self.count_local(node, *owner, true);
                }
            }
            Change::QueueReplicas { id, replicas } => {
                if let Some(q) = self
                    .queues
                    .get_mut(id)
                    .filter(|q| q.is_quorum() && !replicas.is_empty())
                {
                    q.replicas = replicas.clone();
                }
            }
            Change::DeleteQueue { id } => {
                if let Some(q) = self.queues.remove(id) {
                    self.count_local(q.node, q.owner, false);
                    if let Some(v) = self.vhosts.get_mut(&q.vhost) {
                        v.queues.remove(q.name.as_bytes());
                    }
                    for ex in self.exchanges.values_mut() {
                        if ex.def.vhost == q.vhost {
                            ex.bindings.remove_destination(Dest::Queue(*id));
                        }
                    }
                }
            }
            Change::Bind {
                source,
                dest,
                key,
                args,
            } => {
                if let Some(ex) = self.exchanges.get_mut(source) {
                    ex.bindings.bind(key, args, *dest);
                }
            }
            Change::Unbind {
                source,
                dest,
                key,
                args,
            } => {
                if let Some(ex) = self.exchanges.get_mut(source) {
                    ex.bindings.unbind(key, args, *dest);
                }
            }
            Change::PutUser(u) => {
                self.users.insert(u.name.clone(), u.clone());
            }
            Change::DeleteUser { name } => {
                self.users.remove(name);
                self.permissions.retain(|(u, _), _| u != name);
                self.user_limits.remove(name);
            }
            Change::SetPermissions {
                user,
                vhost,
                configure,
                write,
                read,
            } => {
                // Validated by the control plane; an invalid pattern here
                // (a corrupted log) grants nothing rather than everything.
                let p = Permissions::new(configure, write, read)
                    .unwrap_or_else(|_| Permissions::new("", "", "").expect("empty patterns compile"));
                self.permissions.insert((user.clone(), *vhost), p);
            }
            Change::ClearPermissions { user, vhost } => {
                self.permissions.remove(&(user.clone(), *vhost));
            }
            Change::SetPolicy(def) => {
                self.policies
                    .retain(|p| !(p.def.vhost == def.vhost && p.def.name == def.name));
                self.policies.push(Policy {
                    regex: regex::bytes::Regex::new(&def.pattern).ok(),
                    def: def.clone(),
                });
            }
            Change::ClearPolicy { vhost, name } => {
                self.policies
                    .retain(|p| !(p.def.vhost == *vhost && p.def.name == *name));
            }
            Change::SetVhostLimits { vhost, limits } => {
                if let Some(v) = self.vhosts.get_mut(vhost) {
                    v.limits = limits.clone();
                }
            }
            Change::SetUserLimits { user, limits } => {
                if !self.users.contains_key(user) {
                    return;
                }
                if limits.is_empty() {
                    self.user_limits.remove(user);
                } else {
                    self.user_limits.insert(user.clone(), limits.clone());
                }
            }
        }
    }

    /// Routes a publish to queues, following exchange-to-exchange bindings
    /// (each exchange visited once, so cycles are harmless). `out` receives
    /// each matching queue once, with its owner shard. `scratch` is reused
    /// between calls to avoid allocation.
    pub fn route(
        &self,
        vhost: VhostId,
        exchange: &[u8],
        routing_key: &[u8],
        props: &[u8],
        scratch: &mut RouteScratch,
        out: &mut Vec<(QueueId, ShardId)>,
    ) -> Result<Routed, RouteError> {
        out.clear();
        let Some(v) = self.vhost_by_id(vhost) else {
            return Err(RouteError::NoExchange);
        };
        if exchange.is_empty() {
            // The default exchange: routing key = queue name.
            let mut remote = false;
            if let Some(q) = v.queues.get(routing_key).and_then(|id| self.queues.get(id)) {
                out.push((q.id, q.owner));
                remote = q.node != 0;
            }
            return Ok(Routed {
                by_key_only: true,
                remote,
            });
        }
        let Some(&root) = v.exchanges.get(exchange) else {
            return Err(RouteError::NoExchange);
        };
        let ex = &self.exchanges[&root];
        if ex.def.internal {
            return Err(RouteError::Internal);
        }
        scratch.dests.clear();
        scratch.visited.clear();
        scratch.pending.clear();
        scratch.pending.push(root);
        scratch.visited.push(root);
        // Headers are decoded only if a headers exchange is on the path.
        let mut headers: Option<Option<FieldTable>> = None;
        let mut remote = false;
        while let Some(eid) = scratch.pending.pop() {
            let Some(ex) = self.exchanges.get(&eid) else {
                continue;
            };
            let start = scratch.dests.len();
            if ex.bindings.kind() == ExchangeKind::Headers {
                let h = headers.get_or_insert_with(|| decode_headers(props));
                ex.bindings.route(routing_key, h.as_ref(), &mut scratch.dests);
            } else {
                ex.bindings.route(routing_key, None, &mut scratch.dests);
            }
            // An exchange that routes nowhere hands the message to its
            // alternate exchange (each exchange visited once: no loops).
            if scratch.dests.len() == start
                && let Some(ae) = self
                    .alternate_exchange(ex)
                    .and_then(|n| v.exchanges.get(&n[..]).copied())
                && !scratch.visited.contains(&ae)
            {
                scratch.visited.push(ae);
                scratch.pending.push(ae);
            }
            for i in start..scratch.dests.len() {
                match scratch.dests[i] {
                    Dest::Queue(q) => {
                        if let Some(def) = self.queues.get(&q) {
                            out.push((q, def.owner));
                            remote |= def.node != 0;
                        }
                    }
                    Dest::Exchange(e) => {
                        if !scratch.visited.contains(&e) {
                            scratch.visited.push(e);
                            scratch.pending.push(e);
                        }
                    }
                }
            }
        }
        // Bindings dedupe within one exchange; only exchange-to-exchange
        // routing can reach a queue twice.
        if scratch.visited.len() > 1 {
            out.sort_unstable();
            out.dedup();
        }
        Ok(Routed {
            by_key_only: headers.is_none(),
            remote,
        })
    }
}

/// How a route was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Routed {
    /// Only the exchange and routing key decided it (no headers exchange
    /// on the path): the same pair routes the same way until the topology
    /// changes, so the result may be cached.
    pub by_key_only: bool,
    /// A destination queue lives on another node of the cluster.
    pub remote: bool,
}

/// Reusable buffers for [`Topology::route`].
#[derive(Default)]
pub struct RouteScratch {
    dests: Vec<Dest>,
    visited: Vec<ExchangeId>,
    pending: Vec<ExchangeId>,
}

/// The `headers` property of raw content-header properties, if any.
pub fn decode_headers(props: &[u8]) -> Option<FieldTable> {
    let summary = crate::protocol::scan_properties(props).ok()?;
    let (start, end) = summary.headers?;
    crate::protocol::Reader::new(Bytes::copy_from_slice(props.get(start..end)?))
        .table()
        .ok()
}
