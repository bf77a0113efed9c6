//! The control plane task (shard 0 only): the single writer of the topology.
//! Requests are handled one at a time, so topology changes are serialized;
//! each change is applied here, broadcast to every shard, and answered only
//! once every shard has applied it.

use super::item::{ControlMsg, Item};
use super::state::Shard;
use crate::admin::AdminOp;
use crate::broker::control::{Plan, Requester};
use crate::broker::request::Reply;
use crate::broker::topology::Change;
use crate::ids::{ConnId, QueueId, ShardId};
use crate::protocol::AmqpError;
use crate::storage::topolog::is_durable;
use std::rc::Rc;

pub async fn run(shard: Rc<Shard>) {
    let c = shard.control.as_ref().expect("control plane runs on shard 0");
    loop {
        let msg = c.inbox.borrow_mut().pop_front();
        let Some(msg) = msg else {
            if shard.stopping.get() {
                return;
            }
            c.notify.wait().await;
            continue;
        };
        match msg {
            ControlMsg::Request { ch, vhost, user, req } => {
                let who = Requester {
                    vhost,
                    conn: ch.conn,
                    shard: ch.shard(),
                    user: &user,
                };
                let plan = {
                    let topo = shard.topo.borrow();
                    c.plane.borrow_mut().plan(&topo, who, req)
                };
                match plan {
                    Err(e) => shard.reply(ch, Reply::Error(e)),
                    Ok(Plan::Reply(r)) => shard.reply(ch, r),
                    Ok(Plan::Apply { changes, reply }) => match commit(&shard, changes).await {
                        Ok(()) => shard.reply(ch, reply),
                        Err(e) => shard.reply(ch, Reply::Error(e)),
                    },
                    Ok(Plan::DeclareExisting { queue, owner, name }) => {
                        shard.send_via(ch.shard(), owner, Item::DeclareCounts { queue, ch, name });
                    }
                    Ok(Plan::DeleteQueue {
                        queue,
                        owner,
                        if_unused,
                        if_empty,
                    }) => match owner_delete(&shard, ch.shard(), owner, queue, if_unused, if_empty).await {
                        Err(e) => shard.reply(ch, Reply::Error(e)),
                        Ok(messages) => match delete_queue(&shard, queue).await {
                            Ok(()) => shard.reply(ch, Reply::QueueDeleteOk { messages }),
                            Err(e) => shard.reply(ch, Reply::Error(e)),
                        },
                    },
                }
            }
            ControlMsg::ConnectionClosed(conn) => {
                let exclusive: Vec<(QueueId, ShardId)> = shard
                    .topo
                    .borrow()
                    .queues()
                    .filter(|q| q.exclusive == Some(conn))
                    .map(|q| (q.id, q.owner))
                    .collect();
                for (queue, owner) in exclusive {
                    let _ = owner_delete(&shard, 0, owner, queue, false, false).await;
                    let _ = delete_queue(&shard, queue).await;
                }
            }
            ControlMsg::AutoDeleted(queue) => {
                let _ = delete_queue(&shard, queue).await;
            }
            ControlMsg::Admin { user, op, reply } => {
                let r = admin_op(&shard, &user, op).await;
                let _ = reply.try_send(r);
            }
        }
        shard.after_step();
    }
}

async fn delete_queue(shard: &Rc<Shard>, queue: QueueId) -> Result<(), AmqpError> {
    let changes = {
        let topo = shard.topo.borrow();
        if topo.queue(queue).is_none() {
            return Ok(());
        }
        shard
            .control
            .as_ref()
            .expect("shard 0")
            .plane
            .borrow()
            .delete_queue_changes(&topo, queue)
    };
    commit(shard, changes).await
}

/// Asks a queue's owner to delete it (if the conditions hold) and waits for
/// the answer: the message count, or the 406 to send. The request travels
/// through shard `via` (the requesting channel's), behind its publishes.
async fn owner_delete(
    shard: &Rc<Shard>,
    via: ShardId,
    owner: ShardId,
    queue: QueueId,
    if_unused: bool,
    if_empty: bool,
) -> Result<u32, AmqpError> {
    let c = shard.control.as_ref().expect("shard 0");
    let op = c.next_op.get();
    c.next_op.set(op + 1);
    shard.send_via(
        via,
        owner,
        Item::OwnerDelete {
            op,
            queue,
            if_unused,
            if_empty,
        },
    );
    shard.after_step();
    loop {
        if let Some(r) = c.results.borrow_mut().remove(&op) {
            return r;
        }
        c.results_notify.wait().await;
    }
}

/// Persists the durable ones among `changes` (synced), then applies them
/// here and on every other shard, and waits until all have applied them.
pub async fn commit(shard: &Rc<Shard>, changes: Vec<Change>) -> Result<(), AmqpError> {
    if changes.is_empty() {
        return Ok(());
    }
    persist(shard, &changes).await?;
    shard.apply_changes(&changes);
    let c = shard.control.as_ref().expect("shard 0");
    let peers = shard.nshards - 1;
    c.acks_pending.set(peers);
    for d in 1..shard.nshards {
        shard.send(d as ShardId, Item::Topology(changes.clone()));
    }
    shard.after_step();
    while c.acks_pending.get() > 0 {
        c.acks_notify.wait().await;
    }
    Ok(())
}

async fn persist(shard: &Rc<Shard>, changes: &[Change]) -> Result<(), AmqpError> {
    let c = shard.control.as_ref().expect("shard 0");
    let file = {
        let topo = shard.topo.borrow();
        let durable: Vec<&Change> = changes.iter().filter(|ch| is_durable(&topo, ch)).collect();
        if durable.is_empty() {
            return Ok(());
        }
        let mut log = c.log.borrow_mut();
        let Some(log) = log.as_mut() else {
            return Ok(());
        };
        log.append(&durable).map_err(|e| {
            log::error!("cannot write the topology log: {e}");
            AmqpError::internal(format!("cannot write the topology log: {e}"))
        })?;
        log.file()
    };
    glommio::executor()
        .spawn_blocking(move || file.sync())
        .await
        .map_err(|e| {
            log::error!("cannot sync the topology log: {e}");
            AmqpError::internal(format!("cannot sync the topology log: {e}"))
        })
}

fn vhost_id(shard: &Shard, name: &str) -> Result<crate::ids::VhostId, AmqpError> {
    shard
        .topo
        .borrow()
        .vhost(name)
        .map(|v| v.id)
        .ok_or_else(|| AmqpError::not_found(format!("vhost '{name}' not found")))
}

/// A management operation, serialized with every other topology change.
async fn admin_op(shard: &Rc<Shard>, user: &str, op: AdminOp) -> Result<(), AmqpError> {
    let c = shard.control.as_ref().expect("shard 0");
    match op {
        AdminOp::Amqp { vhost, req } => {
            let who = Requester {
                vhost: vhost_id(shard, &vhost)?,
                conn: ConnId(0),
                shard: 0,
                user,
            };
            let plan = {
                let topo = shard.topo.borrow();
                c.plane.borrow_mut().plan(&topo, who, req)?
            };
            match plan {
                Plan::Reply(Reply::Error(e)) => Err(e),
                Plan::Reply(_) | Plan::DeclareExisting { .. } => Ok(()),
                Plan::Apply { changes, .. } => commit(shard, changes).await,
                Plan::DeleteQueue {
                    queue,
                    owner,
                    if_unused,
                    if_empty,
                } => {
                    owner_delete(shard, 0, owner, queue, if_unused, if_empty).await?;
                    delete_queue(shard, queue).await
                }
            }
        }
        AdminOp::AddVhost { name } => {
            if name.is_empty() || name.len() > 255 {
                return Err(AmqpError::precondition("invalid vhost name"));
            }
            let changes = c.plane.borrow_mut().add_vhost(&shard.topo.borrow(), &name);
            match changes {
                Some(changes) => commit(shard, changes).await,
                None => Ok(()),
            }
        }
        AdminOp::DeleteVhost { name } => {
            let id = vhost_id(shard, &name)?;
            commit(shard, vec![Change::DeleteVhost { id }]).await
        }
        AdminOp::PutUser {
            name,
            password_hash,
            tags,
        } => {
            if name.is_empty() {
                return Err(AmqpError::precondition("user names cannot be empty"));
            }
            let u = crate::broker::users::User {
                name,
                password_hash,
                tags,
            };
            commit(shard, vec![Change::PutUser(u)]).await
        }
        AdminOp::DeleteUser { name } => {
            if shard.topo.borrow().user(&name).is_none() {
                return Err(AmqpError::not_found(format!("user '{name}' not found")));
            }
            commit(shard, vec![Change::DeleteUser { name }]).await
        }
        AdminOp::SetPermissions {
            user: who,
            vhost,
            configure,
            write,
            read,
        } => {
            let id = vhost_id(shard, &vhost)?;
            if shard.topo.borrow().user(&who).is_none() {
                return Err(AmqpError::not_found(format!("user '{who}' not found")));
            }
            crate::broker::users::Permissions::new(&configure, &write, &read)
                .map_err(AmqpError::precondition)?;
            commit(
                shard,
                vec![Change::SetPermissions {
                    user: who,
                    vhost: id,
                    configure,
                    write,
                    read,
                }],
            )
            .await
        }
        AdminOp::SetPolicy {
            vhost,
            name,
            pattern,
            apply_to,
            priority,
            definition,
        } => {
            let id = vhost_id(shard, &vhost)?;
            if name.is_empty() {
                return Err(AmqpError::precondition("policy names cannot be empty"));
            }
            if !matches!(apply_to.as_str(), "queues" | "exchanges" | "all") {
                return Err(AmqpError::precondition(format!(
                    "invalid apply-to value '{apply_to}': expected queues, exchanges or all"
                )));
            }
            regex::Regex::new(&pattern)
                .map_err(|e| AmqpError::precondition(format!("invalid pattern '{pattern}': {e}")))?;
            crate::broker::args::validate_policy(&definition).map_err(AmqpError::precondition)?;
            let def = crate::broker::topology::PolicyDef {
                vhost: id,
                name,
                pattern,
                apply_to,
                priority,
                definition,
            };
            commit(shard, vec![Change::SetPolicy(def)]).await
        }
        AdminOp::ClearPolicy { vhost, name } => {
            let id = vhost_id(shard, &vhost)?;
            let exists = shard
                .topo
                .borrow()
                .policies()
                .any(|p| p.vhost == id && p.name == name);
            if !exists {
                return Err(AmqpError::not_found(format!(
                    "policy '{name}' not found in vhost '{vhost}'"
                )));
            }
            commit(shard, vec![Change::ClearPolicy { vhost: id, name }]).await
        }
        AdminOp::ClearPermissions { user: who, vhost } => {
            let id = vhost_id(shard, &vhost)?;
            commit(shard, vec![Change::ClearPermissions { user: who, vhost: id }]).await
        }
    }
}
