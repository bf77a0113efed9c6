//! The control plane task (shard 0 only): the single writer of the topology.
//! Requests are handled one at a time, so topology changes are serialized;
//! each change is applied here, broadcast to every shard, and answered only
//! once every shard has applied it.

use super::item::{ControlMsg, Item};
use super::state::Shard;
use crate::broker::control::{Plan, Requester};
use crate::broker::request::Reply;
use crate::broker::topology::Change;
use crate::ids::{QueueId, ShardId};
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
                        shard.send(owner, Item::DeclareCounts { queue, ch, name });
                    }
                    Ok(Plan::DeleteQueue {
                        queue,
                        owner,
                        if_unused,
                        if_empty,
                    }) => match owner_delete(&shard, owner, queue, if_unused, if_empty).await {
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
                    let _ = owner_delete(&shard, owner, queue, false, false).await;
                    let _ = delete_queue(&shard, queue).await;
                }
            }
            ControlMsg::AutoDeleted(queue) => {
                let _ = delete_queue(&shard, queue).await;
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
/// the answer: the message count, or the 406 to send.
async fn owner_delete(
    shard: &Rc<Shard>,
    owner: ShardId,
    queue: QueueId,
    if_unused: bool,
    if_empty: bool,
) -> Result<u32, AmqpError> {
    let c = shard.control.as_ref().expect("shard 0");
    let op = c.next_op.get();
    c.next_op.set(op + 1);
    shard.send(
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
        .spawn_blocking(move || file.sync_data())
        .await
        .map_err(|e| {
            log::error!("cannot sync the topology log: {e}");
            AmqpError::internal(format!("cannot sync the topology log: {e}"))
        })
}
