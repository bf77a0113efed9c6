//! Topology request validation: turns a channel's request into the changes
//! to replicate and the reply to send, with RabbitMQ's error codes and texts.
//! Pure; runs on shard 0 only (the single writer of the topology).

use super::args;
use super::request::{Reply, Request};
use super::topology::{Change, Dest, ExchangeDef, QueueDef, Topology, quorum_group};
use super::users::{Access, refused};
use crate::ids::{ConnId, ExchangeId, QueueId, ShardId, VhostId};
use crate::protocol::{AmqpError, FieldTable, ShortStr};
use crate::routing::validate_binding_args;
use std::collections::HashSet;

/// What to do for a request.
#[derive(Debug)]
pub enum Plan {
    /// Answer now; nothing changes.
    Reply(Reply),
    /// Apply and broadcast the changes, then answer.
    Apply { changes: Vec<Change>, reply: Reply },
    /// The queue exists: its owner answers `declare-ok` with its counts.
    DeclareExisting {
        queue: QueueId,
        owner: ShardId,
        name: ShortStr,
    },
    /// Ask the owner to delete the queue if the conditions hold, then apply
    /// [`ControlPlane::delete_queue_changes`].
    DeleteQueue {
        queue: QueueId,
        owner: ShardId,
        if_unused: bool,
        if_empty: bool,
    },
}

/// Who is asking.
#[derive(Debug, Clone, Copy)]
pub struct Requester<'a> {
    pub vhost: VhostId,
    pub conn: ConnId,
    pub shard: ShardId,
    pub user: &'a str,
}

/// Checks a user's access to a resource, as RabbitMQ's channel does.
fn permit(
    topo: &Topology,
    who: &Requester<'_>,
    access: Access,
    kind: &str,
    name: &[u8],
) -> Result<(), AmqpError> {
    let ok = topo
        .permissions(who.user, who.vhost)
        .is_some_and(|p| p.allows(access, name));
    if ok {
        Ok(())
    } else {
        Err(refused(kind, name, topo.vhost_name(who.vhost), who.user))
    }
}

/// Allocator of ids and planner of changes. Shard 0 only.
#[derive(Debug)]
pub struct ControlPlane {
    next_queue: u64,
    next_exchange: u64,
    next_vhost: u32,
    /// Where quorum queues' replicas may go: this node's Raft id and every
    /// node of its cluster (itself alone outside a cluster). None: this
    /// node has no cluster port, and declares no quorum queue.
    pub quorum_nodes: Option<(u64, Vec<u64>)>,
    /// How many shards new classic queues are spread over (the least
    /// loaded one, see [`least_loaded_shard`]); 0: each goes to the shard
    /// of the connection that declares it.
    pub balance_over: usize,
    /// The shard new classic queues go to (`--queue-locator packed`, set
    /// by the balancer); None: see `balance_over`.
    pub fill: Option<ShardId>,
}

impl Default for ControlPlane {
    fn default() -> Self {
        ControlPlane {
            next_queue: 1,
            next_exchange: 1,
            next_vhost: 1,
            quorum_nodes: None,
            balance_over: 0,
            fill: None,
        }
    }
}

/// The shard for a new queue: the one holding fewest of this node's
/// queues, preferring the declarer's among equals so that a connection
/// that declares and then consumes need not move. Connections that use
/// the queue follow it there (connection hand-off), so queues spread this
/// way spread their clients' work over the shards; left with the declarer,
/// they land wherever the kernel put the setup connection.
pub fn least_loaded_shard(by_shard: &[u32], shards: usize, declarer: ShardId) -> ShardId {
    let load = |s: usize| by_shard.get(s).copied().unwrap_or(0);
    let mut best = declarer;
    for s in 0..shards {
        if load(s) < load(best as usize) {
            best = s as ShardId;
        }
    }
    best
}

/// RabbitMQ's default quorum queue size.
pub const QUORUM_DEFAULT_SIZE: usize = 3;

/// A quorum queue's replicas: this node first (it leads at first, as
/// RabbitMQ's `client-local` leader locator does), then `size - 1` others,
/// chosen from the queue's id so that queues spread over the cluster.
pub fn place_replicas(me: u64, nodes: &[u64], size: usize, queue: QueueId) -> Vec<u64> {
    let mut others: Vec<u64> = nodes.iter().copied().filter(|&n| n != me).collect();
    others.sort_unstable();
    others.dedup();
    let mut out = vec![me];
    if !others.is_empty() {
        let start = (queue.0 as usize) % others.len();
        others.rotate_left(start);
        out.extend(others.into_iter().take(size.saturating_sub(1)));
    }
    out
}

/// The Raft group of a new quorum queue with these replicas: queues with
/// the same replicas share one, named by their hash ([`quorum_group`]),
/// unless the group of that name has other replicas by now (its members
/// changed since): then a name no other group has.
pub fn pick_group(topo: &Topology, replicas: &[u64]) -> u32 {
    let mut salted = replicas.to_vec();
    let mut group = quorum_group(replicas);
    while topo
        .queues()
        .any(|q| q.is_quorum() && q.group == group && q.replicas != replicas)
    {
        salted.push(u64::MAX - salted.len() as u64);
        group = quorum_group(&salted);
    }
    group
}

pub fn no_queue(name: &ShortStr, vhost: &str) -> AmqpError {
    AmqpError::not_found(format!("no queue '{name}' in vhost '{vhost}'"))
}

pub fn no_exchange(name: &[u8], vhost: &str) -> AmqpError {
    AmqpError::not_found(format!(
        "no exchange '{}' in vhost '{vhost}'",
        String::from_utf8_lossy(name)
    ))
}

pub fn locked(name: &ShortStr, vhost: &str) -> AmqpError {
    AmqpError::resource_locked(format!(
        "cannot obtain exclusive access to locked queue '{name}' in vhost '{vhost}'. It could be originally declared on another connection or the exclusive property value does not match that of the original declaration."
    ))
}

fn default_exchange() -> AmqpError {
    AmqpError::access_refused("operation not permitted on the default exchange")
}

fn inequivalent(what: &str, arg: &str, name: &ShortStr, vhost: &str, got: bool, cur: bool) -> AmqpError {
    AmqpError::precondition(format!(
        "inequivalent arg '{arg}' for {what} '{name}' in vhost '{vhost}': received '{got}' but current is '{cur}'"
    ))
}

/// Checks an exclusive queue against the connection using it.
pub fn check_exclusive(q: &QueueDef, conn: ConnId, vhost: &str) -> Result<(), AmqpError> {
    match q.exclusive {
        Some(owner) if owner != conn => Err(locked(&q.name, vhost)),
        _ => Ok(()),
    }
}

impl ControlPlane {
    /// Continues id allocation after recovery.
    pub fn resume_ids(&mut self, topo: &Topology) {
        for q in topo.queues() {
            self.next_queue = self.next_queue.max(q.id.0 + 1);
        }
        for e in topo.exchanges() {
            self.next_exchange = self.next_exchange.max(e.def.id.0 + 1);
        }
        for v in topo.vhosts() {
            self.next_vhost = self.next_vhost.max(v.id.0 + 1);
        }
    }

    /// The next queue, exchange and vhost ids.
    pub fn next_ids(&self) -> [u64; 3] {
        [self.next_queue, self.next_exchange, self.next_vhost as u64]
    }

    /// Never allocates below `ids` (another node's plan used them).
    pub fn raise_ids(&mut self, ids: [u64; 3]) {
        self.next_queue = self.next_queue.max(ids[0]);
        self.next_exchange = self.next_exchange.max(ids[1]);
        self.next_vhost = self.next_vhost.max(ids[2].min(u32::MAX as u64) as u32);
    }

    /// The changes that create a vhost with its standard exchanges.
    pub fn add_vhost(&mut self, topo: &Topology, name: &str) -> Option<Vec<Change>> {
        if topo.vhost(name).is_some() {
            return None;
        }
        let id = VhostId(self.next_vhost);
        self.next_vhost += 1;
        let mut changes = vec![Change::AddVhost {
            id,
            name: name.to_string(),
            connections: Default::default(),
        }];
        for (ename, kind, internal) in super::topology::STANDARD_EXCHANGES {
            changes.push(Change::DeclareExchange(ExchangeDef {
                id: self.exchange_id(),
                vhost: id,
                name: ShortStr::from_static(ename),
                kind,
                durable: true,
                auto_delete: false,
                internal,
                args: FieldTable::new(),
            }));
        }
        Some(changes)
    }

    fn exchange_id(&mut self) -> ExchangeId {
        let id = ExchangeId(self.next_exchange);
        self.next_exchange += 1;
        id
    }

    /// Plans a request with RabbitMQ's checks in RabbitMQ's order
    /// (`rabbit_channel:handle_method/6`, `rabbit_binding`): which error a
    /// client sees when several apply is part of the protocol it relies on.
    pub fn plan(&mut self, topo: &Topology, who: Requester<'_>, req: Request) -> Result<Plan, AmqpError> {
        let vname = topo.vhost_name(who.vhost).to_string();
        let v = who.vhost;
        let who = &who;
        match req {
            Request::ExchangeDeclare {
                name,
                kind,
                passive,
                durable,
                auto_delete,
                internal,
                args,
            } => {
                // Even a passive declare may not name the default exchange;
                // checked before permissions.
                if name.is_empty() {
                    return Err(default_exchange());
                }
                let existing = topo.exchange_by_name(v, name.as_bytes());
                if passive {
                    return match existing {
                        Some(_) => Ok(Plan::Reply(Reply::ExchangeDeclareOk)),
                        None => Err(no_exchange(name.as_bytes(), &vname)),
                    };
                }
                permit(topo, who, Access::Configure, "exchange", name.as_bytes())?;
                if let Some(ex) = existing {
                    let d = &ex.def;
                    if d.kind != kind {
                        return Err(AmqpError::precondition(format!(
                            "inequivalent arg 'type' for exchange '{name}' in vhost '{vname}': received '{}' but current is '{}'",
                            kind.as_str(),
                            d.kind.as_str()
                        )));
                    }
                    if d.durable != durable {
                        return Err(inequivalent(
                            "exchange", "durable", &name, &vname, durable, d.durable,
                        ));
                    }
                    if d.auto_delete != auto_delete {
                        return Err(inequivalent(
                            "exchange",
                            "auto_delete",
                            &name,
                            &vname,
                            auto_delete,
                            d.auto_delete,
                        ));
                    }
                    if d.internal != internal {
                        return Err(inequivalent(
                            "exchange", "internal", &name, &vname, internal, d.internal,
                        ));
                    }
                    args::check_exchange_equivalence(&d.args, &args, &name, &vname)?;
                    return Ok(Plan::Reply(Reply::ExchangeDeclareOk));
                }
                if name.as_bytes().starts_with(b"amq.") {
                    return Err(AmqpError::access_refused(format!(
                        "exchange name '{name}' contains reserved prefix 'amq.*'"
                    )));
                }
                // Naming an alternate exchange takes read on the new one
                // and write on the alternate.
                if let Some(ae) = args::alternate_exchange_arg(&args, &name, &vname)? {
                    permit(topo, who, Access::Read, "exchange", name.as_bytes())?;
                    permit(topo, who, Access::Write, "exchange", exchange_resource(ae))?;
                }
                args::validate_exchange_args(&args, &name, &vname)?;
                let def = ExchangeDef {
                    id: self.exchange_id(),
                    vhost: v,
                    name,
                    kind,
                    durable,
                    auto_delete,
                    internal,
                    args,
                };
                Ok(Plan::Apply {
                    changes: vec![Change::DeclareExchange(def)],
                    reply: Reply::ExchangeDeclareOk,
                })
            }
            Request::ExchangeDelete { name, if_unused } => {
                // Both refusals come before permissions and the lookup: an
                // `amq.` exchange that does not exist is refused too.
                if name.is_empty() {
                    return Err(default_exchange());
                }
                if name.as_bytes().starts_with(b"amq.") {
                    return Err(AmqpError::access_refused(format!(
                        "deletion of system exchange '{name}' in vhost '{vname}' not allowed"
                    )));
                }
                permit(topo, who, Access::Configure, "exchange", name.as_bytes())?;
                let Some(ex) = topo.exchange_by_name(v, name.as_bytes()) else {
                    return Ok(Plan::Reply(Reply::ExchangeDeleteOk));
                };
                let id = ex.def.id;
                // In use means it is the source of a binding
                // (`rabbit_binding:has_for_source`); bindings to it do not
                // count, and go with it.
                if if_unused && !ex.bindings.is_empty() {
                    return Err(AmqpError::precondition(format!(
                        "exchange '{name}' in vhost '{vname}' in use"
                    )));
                }
                let changes = self.cascade(
                    topo,
                    vec![Change::DeleteExchange { id }],
                    Dest::Exchange(id),
                    None,
                );
                Ok(Plan::Apply {
                    changes,
                    reply: Reply::ExchangeDeleteOk,
                })
            }
            Request::ExchangeBind {
                destination,
                source,
                routing_key,
                args,
            } => {
                check_binding_access(topo, who, "exchange", &destination, &source)?;
                let (src, dst) = self.e2e_ends(topo, v, &vname, &source, &destination)?;
                validate_binding_args(topo.exchange(src).expect("exists").def.kind, &args)
                    .map_err(AmqpError::precondition)?;
                let exists = topo.exchange(src).expect("exists").bindings.contains(
                    &routing_key,
                    &args,
                    Dest::Exchange(dst),
                );
                if exists {
                    return Ok(Plan::Reply(Reply::ExchangeBindOk));
                }
                Ok(Plan::Apply {
                    changes: vec![Change::Bind {
                        source: src,
                        dest: Dest::Exchange(dst),
                        key: routing_key,
                        args,
                    }],
                    reply: Reply::ExchangeBindOk,
                })
            }
            Request::ExchangeUnbind {
                destination,
                source,
                routing_key,
                args,
            } => {
                check_binding_access(topo, who, "exchange", &destination, &source)?;
                let (src, dst) = match self.e2e_ends(topo, v, &vname, &source, &destination) {
                    Ok(x) => x,
                    // RabbitMQ: unbinding something that is not there is fine.
                    Err(e) if e.code == crate::protocol::reply::NOT_FOUND => {
                        return Ok(Plan::Reply(Reply::ExchangeUnbindOk));
                    }
                    Err(e) => return Err(e),
                };
                self.unbind_plan(
                    topo,
                    src,
                    Dest::Exchange(dst),
                    routing_key,
                    args,
                    Reply::ExchangeUnbindOk,
                )
            }
            Request::QueueDeclare {
                name,
                generated,
                passive,
                durable,
                exclusive,
                auto_delete,
                args,
            } => {
                let existing = topo.queue_by_name(v, name.as_bytes());
                if generated && !passive && args::is_quorum(&args) {
                    return Err(AmqpError::precondition(
                        "Cannot declare a server-named queue for type rabbit_quorum_queue",
                    ));
                }
                if passive {
                    let q = existing.ok_or_else(|| no_queue(&name, &vname))?;
                    check_exclusive(q, who.conn, &vname)?;
                    return Ok(Plan::DeclareExisting {
                        queue: q.id,
                        owner: q.owner,
                        name,
                    });
                }
                // RabbitMQ checks the name before permissions and before
                // looking the queue up, so even redeclaring an existing
                // `amq.gen-…` queue is refused.
                if !generated && name.as_bytes().starts_with(b"amq.") {
                    return Err(AmqpError::access_refused(format!(
                        "queue name '{name}' contains reserved prefix 'amq.*'"
                    )));
                }
                permit(topo, who, Access::Configure, "queue", name.as_bytes())?;
                // An exclusive queue is never durable: it dies with its
                // connection (`Durable = durable andalso not exclusive`).
                let durable = durable && !exclusive;
                let quorum = args::is_quorum(&args);
                if let Some(q) = existing {
                    check_exclusive(q, who.conn, &vname)?;
                    if q.exclusive.is_some() != exclusive {
                        return Err(locked(&name, &vname));
                    }
                    if q.durable != durable {
                        return Err(inequivalent(
                            "queue", "durable", &name, &vname, durable, q.durable,
                        ));
                    }
                    if q.auto_delete != auto_delete {
                        return Err(inequivalent(
                            "queue",
                            "auto_delete",
                            &name,
                            &vname,
                            auto_delete,
                            q.auto_delete,
                        ));
                    }
                    args::check_queue_equivalence(&q.args, &args, &name, &vname)?;
                    return Ok(Plan::DeclareExisting {
                        queue: q.id,
                        owner: q.owner,
                        name,
                    });
                }
                // Only a new queue counts against the vhost's limit, checked
                // before its arguments (`rabbit_channel`). The control plane
                // plans one request at a time against a topology that holds
                // every queue committed before, so the count is exact.
                if let Some(vh) = topo.vhost_by_id(v)
                    && let Some(limit) = vh.limits.as_ref().and_then(|l| l.get(super::limits::MAX_QUEUES))
                    && vh.queue_count() as u64 >= limit
                {
                    return Err(super::limits::queues_reached(&name.as_str(), &vname, limit));
                }
                // Naming a dead-letter exchange takes read on the new queue
                // and write on the exchange, checked before the arguments.
                if let Some(dlx) = args::dead_letter_exchange_arg(&args, &name, &vname)? {
                    permit(topo, who, Access::Read, "queue", name.as_bytes())?;
                    permit(topo, who, Access::Write, "exchange", exchange_resource(dlx))?;
                }
                args::validate_queue_args(&args, &name, &vname)?;
                if quorum {
                    // `rabbit_queue_type_util` checks, in its order.
                    let bad = |p: &str| {
                        AmqpError::precondition(format!(
                            "invalid property '{p}' for queue '{name}' in vhost '{vname}'"
                        ))
                    };
                    if auto_delete {
                        return Err(bad("auto-delete"));
                    }
                    if exclusive {
                        return Err(bad("exclusive-owner"));
                    }
                    if !durable {
                        return Err(bad("non-durable"));
                    }
                }
                let replicas = match (&self.quorum_nodes, quorum) {
                    (_, false) => Vec::new(),
                    (Some((me, nodes)), true) => {
                        let size = args::initial_group_size(&args)
                            .map_or(QUORUM_DEFAULT_SIZE, |n| n.min(255) as usize);
                        place_replicas(*me, nodes, size, QueueId(self.next_queue))
                    }
                    (None, true) => {
                        return Err(AmqpError::precondition(format!(
                            "cannot declare quorum queue '{name}' in vhost '{vname}': this node has no cluster port (see --cluster-port)"
                        )));
                    }
                };
                let id = QueueId(self.next_queue);
                self.next_queue += 1;
                let group = if replicas.is_empty() {
                    0
                } else {
                    pick_group(topo, &replicas)
                };
                let def = QueueDef {
                    id,
                    vhost: v,
                    name: name.clone(),
                    // Quorum queues live where the cluster port and their Raft
                    // groups run.
                    owner: if quorum {
                        0
                    } else if exclusive || args::wants_client_local(&args) {
                        // An exclusive queue serves only its connection,
                        // which cannot move while it holds one.
                        who.shard
                    } else if let Some(s) = self.fill {
                        s
                    } else if self.balance_over < 2 {
                        who.shard
                    } else {
                        least_loaded_shard(topo.local_queues_by_shard(), self.balance_over, who.shard)
                    },
                    node: 0,
                    durable,
                    exclusive: exclusive.then_some(who.conn),
                    auto_delete,
                    args,
                    replicas,
                    group,
                };
                Ok(Plan::Apply {
                    changes: vec![Change::DeclareQueue(def)],
                    reply: Reply::QueueDeclareOk {
                        name,
                        messages: 0,
                        consumers: 0,
                    },
                })
            }
            Request::QueueBind {
                queue,
                exchange,
                routing_key,
                args,
            } => {
                check_binding_access(topo, who, "queue", &queue, &exchange)?;
                // The source is looked up first: with both missing, the
                // exchange is named.
                let ex = topo
                    .exchange_by_name(v, exchange.as_bytes())
                    .ok_or_else(|| no_exchange(exchange.as_bytes(), &vname))?;
                let q = topo
                    .queue_by_name(v, queue.as_bytes())
                    .ok_or_else(|| no_queue(&queue, &vname))?;
                validate_binding_args(ex.def.kind, &args).map_err(AmqpError::precondition)?;
                check_exclusive(q, who.conn, &vname)?;
                let dest = Dest::Queue(q.id);
                let exists = ex.bindings.contains(&routing_key, &args, dest);
                if exists {
                    return Ok(Plan::Reply(Reply::QueueBindOk));
                }
                Ok(Plan::Apply {
                    changes: vec![Change::Bind {
                        source: ex.def.id,
                        dest,
                        key: routing_key,
                        args,
                    }],
                    reply: Reply::QueueBindOk,
                })
            }
            Request::QueueUnbind {
                queue,
                exchange,
                routing_key,
                args,
            } => {
                check_binding_access(topo, who, "queue", &queue, &exchange)?;
                // A missing queue, exchange or binding is fine, and is
                // found out before exclusive access is checked.
                let (Some(q), Some(ex)) = (
                    topo.queue_by_name(v, queue.as_bytes()),
                    topo.exchange_by_name(v, exchange.as_bytes()),
                ) else {
                    return Ok(Plan::Reply(Reply::QueueUnbindOk));
                };
                if !ex.bindings.contains(&routing_key, &args, Dest::Queue(q.id)) {
                    return Ok(Plan::Reply(Reply::QueueUnbindOk));
                }
                check_exclusive(q, who.conn, &vname)?;
                self.unbind_plan(
                    topo,
                    ex.def.id,
                    Dest::Queue(q.id),
                    routing_key,
                    args,
                    Reply::QueueUnbindOk,
                )
            }
            Request::QueueDelete {
                queue,
                if_unused,
                if_empty,
            } => {
                permit(topo, who, Access::Configure, "queue", queue.as_bytes())?;
                let Some(q) = topo.queue_by_name(v, queue.as_bytes()) else {
                    return Ok(Plan::Reply(Reply::QueueDeleteOk { messages: 0 }));
                };
                check_exclusive(q, who.conn, &vname)?;
                if q.is_quorum() && (if_unused || if_empty) {
                    let flag = if if_unused { "if-unused" } else { "if-empty" };
                    return Err(AmqpError::not_implemented(format!(
                        "cannot delete queue '{queue}' in vhost '{vname}'. queue.delete operations with {flag} flag set are not supported by quorum queues"
                    )));
                }
                Ok(Plan::DeleteQueue {
                    queue: q.id,
                    owner: q.owner,
                    if_unused,
                    if_empty,
                })
            }
            Request::QueuePurge { .. }
            | Request::Consume { .. }
            | Request::Cancel { .. }
            | Request::Get { .. }
            | Request::Barrier => Err(AmqpError::internal("queue operation sent to the control plane")),
        }
    }

    /// The two exchanges of an exchange-to-exchange binding; the source is
    /// named when both are missing (`rabbit_binding`). The default exchange
    /// was refused before.
    fn e2e_ends(
        &self,
        topo: &Topology,
        v: VhostId,
        vname: &str,
        source: &ShortStr,
        destination: &ShortStr,
    ) -> Result<(ExchangeId, ExchangeId), AmqpError> {
        let src = topo
            .exchange_id(v, source.as_bytes())
            .ok_or_else(|| no_exchange(source.as_bytes(), vname))?;
        let dst = topo
            .exchange_id(v, destination.as_bytes())
            .ok_or_else(|| no_exchange(destination.as_bytes(), vname))?;
        Ok((src, dst))
    }

    fn unbind_plan(
        &self,
        topo: &Topology,
        source: ExchangeId,
        dest: Dest,
        key: ShortStr,
        args: FieldTable,
        reply: Reply,
    ) -> Result<Plan, AmqpError> {
        let ex = topo.exchange(source).expect("exists");
        let exists = ex.bindings.contains(&key, &args, dest);
        if !exists {
            return Ok(Plan::Reply(reply));
        }
        let mut changes = vec![Change::Unbind {
            source,
            dest,
            key: key.clone(),
            args: args.clone(),
        }];
        if ex.def.auto_delete && ex.bindings.len() == 1 {
            changes = self.cascade(
                topo,
                {
                    changes.push(Change::DeleteExchange { id: source });
                    changes
                },
                Dest::Exchange(source),
                None,
            );
        }
        Ok(Plan::Apply { changes, reply })
    }

    /// The changes that delete a queue, plus auto-delete exchanges that lose
    /// their last binding because of it.
    pub fn delete_queue_changes(&self, topo: &Topology, id: QueueId) -> Vec<Change> {
        self.cascade(topo, vec![Change::DeleteQueue { id }], Dest::Queue(id), None)
    }

    /// Extends `changes` (which remove `gone`) with the deletion of every
    /// auto-delete exchange left without bindings, transitively.
    fn cascade(
        &self,
        topo: &Topology,
        mut changes: Vec<Change>,
        gone: Dest,
        _hint: Option<()>,
    ) -> Vec<Change> {
        let mut removed: HashSet<Dest> = HashSet::new();
        removed.insert(gone);
        loop {
            let mut more = Vec::new();
            for ex in topo.exchanges() {
                let d = Dest::Exchange(ex.def.id);
                if !ex.def.auto_delete || removed.contains(&d) || ex.bindings.is_empty() {
                    continue;
                }
                let lost = ex.bindings.iter().any(|(_, _, x)| removed.contains(&x));
                let left = ex
                    .bindings
                    .iter()
                    .filter(|(_, _, x)| !removed.contains(x))
                    .count();
                if lost && left == 0 {
                    more.push(ex.def.id);
                }
            }
            if more.is_empty() {
                return changes;
            }
            for id in more {
                removed.insert(Dest::Exchange(id));
                changes.push(Change::DeleteExchange { id });
            }
        }
    }
}

/// The name permissions see for an exchange: the default exchange is
/// `amq.default` (`rabbit_access_control`).
fn exchange_resource(name: &[u8]) -> &[u8] {
    if name.is_empty() { b"amq.default" } else { name }
}

/// The checks of a bind or unbind before anything is looked up, in
/// RabbitMQ's order (`rabbit_channel:binding_action`): write on the
/// destination, then neither end the default exchange, then read on the
/// source.
fn check_binding_access(
    topo: &Topology,
    who: &Requester<'_>,
    dest_kind: &str,
    destination: &ShortStr,
    source: &ShortStr,
) -> Result<(), AmqpError> {
    let dest_name = match dest_kind {
        "exchange" => exchange_resource(destination.as_bytes()),
        _ => destination.as_bytes(),
    };
    permit(topo, who, Access::Write, dest_kind, dest_name)?;
    if (dest_kind == "exchange" && destination.is_empty()) || source.is_empty() {
        return Err(default_exchange());
    }
    permit(topo, who, Access::Read, "exchange", source.as_bytes())
}
