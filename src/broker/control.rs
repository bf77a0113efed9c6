//! Topology request validation: turns a channel's request into the changes
//! to replicate and the reply to send, with RabbitMQ's error codes and texts.
//! Pure; runs on shard 0 only (the single writer of the topology).

use super::args;
use super::request::{Reply, Request};
use super::topology::{Change, Dest, ExchangeDef, QueueDef, Topology};
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
}

impl Default for ControlPlane {
    fn default() -> Self {
        ControlPlane {
            next_queue: 1,
            next_exchange: 1,
            next_vhost: 1,
        }
    }
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

    pub fn plan(&mut self, topo: &Topology, who: Requester<'_>, req: Request) -> Result<Plan, AmqpError> {
        let vname = topo.vhost_name(who.vhost).to_string();
        let v = who.vhost;
        check_access(topo, &who, &req)?;
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
                // Even a passive declare may not name the default exchange.
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
                if name.is_empty() {
                    return Err(default_exchange());
                }
                let Some(ex) = topo.exchange_by_name(v, name.as_bytes()) else {
                    return Ok(Plan::Reply(Reply::ExchangeDeleteOk));
                };
                if name.as_bytes().starts_with(b"amq.") {
                    return Err(AmqpError::access_refused(format!(
                        "deletion of system exchange '{name}' in vhost '{vname}' not allowed"
                    )));
                }
                let id = ex.def.id;
                if if_unused && (!ex.bindings.is_empty() || !topo.bindings_to(Dest::Exchange(id)).is_empty())
                {
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
                // RabbitMQ checks the name before looking the queue up, so
                // even redeclaring an existing `amq.gen-…` queue is refused.
                if !passive && !generated && name.as_bytes().starts_with(b"amq.") {
                    return Err(AmqpError::access_refused(format!(
                        "queue name '{name}' contains reserved prefix 'amq.*'"
                    )));
                }
                if let Some(q) = topo.queue_by_name(v, name.as_bytes()) {
                    check_exclusive(q, who.conn, &vname)?;
                    if !passive {
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
                    }
                    return Ok(Plan::DeclareExisting {
                        queue: q.id,
                        owner: q.owner,
                        name,
                    });
                }
                if passive {
                    return Err(no_queue(&name, &vname));
                }
                args::validate_queue_args(&args, &name, &vname)?;
                let id = QueueId(self.next_queue);
                self.next_queue += 1;
                let def = QueueDef {
                    id,
                    vhost: v,
                    name: name.clone(),
                    owner: who.shard,
                    durable,
                    exclusive: exclusive.then_some(who.conn),
                    auto_delete,
                    args,
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
                let q = topo
                    .queue_by_name(v, queue.as_bytes())
                    .ok_or_else(|| no_queue(&queue, &vname))?;
                if exchange.is_empty() {
                    return Err(default_exchange());
                }
                let ex = topo
                    .exchange_by_name(v, exchange.as_bytes())
                    .ok_or_else(|| no_exchange(exchange.as_bytes(), &vname))?;
                check_exclusive(q, who.conn, &vname)?;
                validate_binding_args(ex.def.kind, &args).map_err(AmqpError::precondition)?;
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
                if exchange.is_empty() {
                    return Err(default_exchange());
                }
                let Some(q) = topo.queue_by_name(v, queue.as_bytes()) else {
                    return Ok(Plan::Reply(Reply::QueueUnbindOk));
                };
                check_exclusive(q, who.conn, &vname)?;
                let Some(ex) = topo.exchange_by_name(v, exchange.as_bytes()) else {
                    return Ok(Plan::Reply(Reply::QueueUnbindOk));
                };
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
                let Some(q) = topo.queue_by_name(v, queue.as_bytes()) else {
                    return Ok(Plan::Reply(Reply::QueueDeleteOk { messages: 0 }));
                };
                check_exclusive(q, who.conn, &vname)?;
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

    #[allow(clippy::too_many_arguments)]
    fn e2e_ends(
        &self,
        topo: &Topology,
        v: VhostId,
        vname: &str,
        source: &ShortStr,
        destination: &ShortStr,
    ) -> Result<(ExchangeId, ExchangeId), AmqpError> {
        if source.is_empty() || destination.is_empty() {
            return Err(default_exchange());
        }
        let dst = topo
            .exchange_id(v, destination.as_bytes())
            .ok_or_else(|| no_exchange(destination.as_bytes(), vname))?;
        let src = topo
            .exchange_id(v, source.as_bytes())
            .ok_or_else(|| no_exchange(source.as_bytes(), vname))?;
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

/// The permission checks RabbitMQ makes for each request (`rabbit_channel`):
/// declare and delete need configure; binding needs write on the
/// destination and read on the source.
fn check_access(topo: &Topology, who: &Requester<'_>, req: &Request) -> Result<(), AmqpError> {
    let ex = |n: &ShortStr| -> Vec<u8> {
        if n.is_empty() {
            b"amq.default".to_vec()
        } else {
            n.as_bytes().to_vec()
        }
    };
    match req {
        Request::ExchangeDeclare {
            name, passive: false, ..
        }
        | Request::ExchangeDelete { name, .. } => permit(topo, who, Access::Configure, "exchange", &ex(name)),
        Request::QueueDeclare {
            name, passive: false, ..
        }
        | Request::QueueDelete { queue: name, .. } => {
            permit(topo, who, Access::Configure, "queue", name.as_bytes())
        }
        Request::ExchangeBind {
            destination, source, ..
        }
        | Request::ExchangeUnbind {
            destination, source, ..
        } => {
            permit(topo, who, Access::Write, "exchange", &ex(destination))?;
            permit(topo, who, Access::Read, "exchange", &ex(source))
        }
        Request::QueueBind { queue, exchange, .. } | Request::QueueUnbind { queue, exchange, .. } => {
            permit(topo, who, Access::Write, "queue", queue.as_bytes())?;
            permit(topo, who, Access::Read, "exchange", &ex(exchange))
        }
        _ => Ok(()),
    }
}
