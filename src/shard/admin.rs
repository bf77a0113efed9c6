//! Each shard's admin task: answers snapshot requests and management
//! commands posted by the management plane's threads.

use super::state::{Shard, now_ms};
use crate::admin::json::table_to_json;
use crate::admin::*;
use crate::broker::topology::Dest;
use crate::broker::users::{Access, refused};
use crate::hub::ConnState;
use crate::owner::{ControlMsg, Effects, Item};
use crate::protocol::AmqpError;
use crate::protocol::reply;
use crate::session::Event;
use base64::Engine;
use futures_lite::AsyncReadExt;
use glommio::net::UnixStream;
use std::rc::Rc;
use std::sync::Arc;

pub async fn run(shard: Rc<Shard>, mailboxes: Arc<Vec<Mailbox>>, mut wake: UnixStream) {
    let mut buf = [0u8; 256];
    loop {
        match wake.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        // A wake-up may be Admin::stop's.
        shard.stop_notify.notify();
        for cmd in mailboxes[shard.id as usize].drain() {
            match cmd {
                AdminCmd::Snapshot(reply) => {
                    // Connections describe themselves when asked; give them
                    // a moment to run before reading what they wrote.
                    let conns: Vec<_> = shard.conns.borrow().values().cloned().collect();
                    for c in &conns {
                        c.push(Event::Describe);
                    }
                    if !conns.is_empty() {
                        glommio::timer::sleep(std::time::Duration::from_millis(2)).await;
                    }
                    let _ = reply.try_send(snapshot(&shard));
                }
                AdminCmd::CloseAll { text, reply: r } => {
                    let conns: Vec<_> = shard.conns.borrow().values().cloned().collect();
                    for c in &conns {
                        c.push(Event::ForceClose {
                            code: reply::CONNECTION_FORCED,
                            text: text.clone(),
                        });
                    }
                    let _ = r.try_send(conns.len());
                }
                AdminCmd::Cluster { cmd, reply: r } => {
                    // Joining takes a while: run it beside the admin task.
                    let shard = shard.clone();
                    glommio::spawn_local(async move {
                        let _ = r.try_send(super::cluster::handle(&shard, cmd).await);
                    })
                    .detach();
                }
                AdminCmd::Users(reply) => {
                    let _ = reply.try_send(users_of(&shard.hub.borrow().topo));
                }
                AdminCmd::CloseConnection {
                    name,
                    reason,
                    reply: r,
                } => {
                    let found = shard
                        .conns
                        .borrow()
                        .values()
                        .find(|c| c.meta.borrow().name == name)
                        .cloned();
                    if let Some(c) = &found {
                        c.push(Event::ForceClose {
                            code: reply::CONNECTION_FORCED,
                            text: format!("Closed via management plugin: {reason}"),
                        });
                    }
                    let _ = r.try_send(found.is_some());
                }
                AdminCmd::Queue {
                    user,
                    vhost,
                    queue,
                    action,
                    reply,
                } => {
                    let target = resolve_queue(&shard, &user, &vhost, &queue);
                    match target {
                        Err(e) => {
                            let _ = reply.try_send(Err(e));
                        }
                        Ok((id, owner)) => shard.hub.borrow_mut().out.to_shard(
                            owner,
                            Item::AdminQueue {
                                queue: id,
                                action,
                                reply,
                            },
                        ),
                    }
                }
                AdminCmd::Publish {
                    user,
                    vhost,
                    exchange,
                    routing_key,
                    properties,
                    payload,
                    reply,
                } => {
                    let _ = reply.try_send(publish(
                        &shard,
                        &user,
                        &vhost,
                        &exchange,
                        &routing_key,
                        &properties,
                        &payload,
                    ));
                }
                AdminCmd::Control { user, op, reply } => match &mut shard.hub.borrow_mut().control {
                    Some(c) => c.submit(ControlMsg::Admin { user, op, reply }),
                    None => {
                        let _ = reply.try_send(Err(crate::protocol::AmqpError::internal(
                            "control operations go to shard 0",
                        )));
                    }
                },
            }
        }
        shard.after_step(now_ms());
    }
}

/// The queue a management operation targets, checking read access.
fn resolve_queue(
    shard: &Shard,
    user: &str,
    vhost: &str,
    queue: &str,
) -> Result<(crate::ids::QueueId, crate::ids::ShardId), AmqpError> {
    let hub = shard.hub.borrow();
    let topo = &hub.topo;
    let v = topo
        .vhost(vhost)
        .ok_or_else(|| AmqpError::not_found(format!("vhost '{vhost}' not found")))?;
    let allowed = topo
        .permissions(user, v.id)
        .is_some_and(|p| p.allows(Access::Read, queue.as_bytes()));
    if !allowed {
        return Err(refused("queue", queue.as_bytes(), vhost, user));
    }
    let q = topo.queue_by_name(v.id, queue.as_bytes()).ok_or_else(|| {
        crate::broker::control::no_queue(&crate::protocol::ShortStr::from_string_lossy(queue), vhost)
    })?;
    if q.node != 0 {
        return Err(AmqpError::not_implemented(format!(
            "queue '{queue}' lives on another node of the cluster: use that node's management API"
        )));
    }
    Ok((q.id, q.owner))
}

/// Publishes like a channel would, as `user`, without confirms.
fn publish(
    shard: &Shard,
    user: &str,
    vhost: &str,
    exchange: &str,
    routing_key: &str,
    props: &crate::protocol::BasicProperties,
    payload: &[u8],
) -> Result<bool, AmqpError> {
    use crate::session::Broker;
    if exchange.len() > 255 || routing_key.len() > 255 {
        return Err(AmqpError::precondition(
            "exchange and routing key are at most 255 bytes",
        ));
    }
    let mut hub = shard.hub.borrow_mut();
    let vid = hub
        .topo
        .vhost(vhost)
        .map(|v| v.id)
        .ok_or_else(|| AmqpError::not_found(format!("vhost '{vhost}' not found")))?;
    let raw = props.to_bytes();
    let msg = crate::message::Message::assemble(exchange.as_bytes(), routing_key.as_bytes(), &raw, payload)
        .with_properties_from_raw();
    let mut state = ConnState::new(None);
    state.user = user.to_string();
    let ch = crate::ids::ChannelRef {
        conn: crate::ids::ConnId(0),
        channel: 0,
        epoch: 0,
    };
    Ok(hub
        .client(&mut state, now_ms())
        .publish(ch, vid, msg, None, false)?
        .routed)
}

/// The users and their permissions, as the management plane shows them.
fn users_of(topo: &crate::broker::topology::Topology) -> (Vec<UserInfo>, Vec<PermissionInfo>) {
    let users = topo
        .users()
        .map(|u| UserInfo {
            name: u.name.clone(),
            password_hash: base64::engine::general_purpose::STANDARD.encode(&u.password_hash),
            hashing_algorithm: crate::broker::users::HASHING_ALGORITHM,
            tags: u.tags.clone(),
            limits: topo.user_limits(&u.name).0.clone(),
        })
        .collect();
    let permissions = topo
        .all_permissions()
        .map(|(user, vhost, p)| PermissionInfo {
            user: user.to_string(),
            vhost: topo.vhost_name(vhost).to_string(),
            configure: p.configure.clone(),
            write: p.write.clone(),
            read: p.read.clone(),
        })
        .collect();
    (users, permissions)
}

fn snapshot(shard: &Shard) -> ShardSnapshot {
    // Read on the shard's own thread (the admin task runs there).
    let switches = super::state::context_switches();
    let hub = shard.hub.borrow();
    let topo = &hub.topo;
    let vname = |v| topo.vhost_name(v).to_string();
    let mut s = ShardSnapshot {
        shard: shard.id,
        ..Default::default()
    };
    let conn_names: Vec<(crate::ids::ConnId, String)> = shard
        .conns
        .borrow()
        .iter()
        .map(|(id, c)| (*id, c.meta.borrow().name.clone()))
        .collect();
    let cluster_node = shard.cluster.borrow().as_ref().map(|g| g.node.clone());
    // The node serving a queue when it is another one (see QueueInfo::home).
    let home = |node: u64| {
        (node != 0).then(|| {
            cluster_node
                .as_ref()
                .and_then(|n| n.info_of(node))
                .map_or_else(|| format!("{node:x}"), |i| i.name)
        })
    };
    for slot in hub.owner.queues() {
        let Some(def) = topo.queue(slot.q.id) else {
            continue;
        };
        let q = &slot.q;
        let quorum = slot
            .quorum
            .as_ref()
            .map(|qs| super::quorum::describe(shard, qs.group, &def.replicas));
        // A follower's engine is empty: its figures are the replicated
        // state's (a leader's engine holds the same).
        let (ready, ready_bytes) = match &slot.quorum {
            Some(qs) if !qs.active => super::quorum::held(shard, qs.group, def.id),
            _ => (q.ready_count() as u64, q.ready_bytes()),
        };
        s.queues.push(QueueInfo {
            vhost: vname(def.vhost),
            name: def.name.as_str().into_owned(),
            durable: def.durable,
            auto_delete: def.auto_delete,
            exclusive: def.exclusive.is_some(),
            owner: def.exclusive.map(|c| format!("{c:?}")),
            arguments: table_to_json(&def.args),
            shard: shard.id,
            messages_ready: ready,
            messages_unacknowledged: q.unacked_count() as u64,
            message_bytes_ready: ready_bytes,
            message_bytes_unacknowledged: q.unacked_bytes(),
            consumers: q.consumer_count() as u64,
            disk_bytes: slot.store.as_ref().map_or(0, |st| st.disk_bytes()),
            counters: QueueCounters {
                published: q.stats.published,
                delivered: q.stats.delivered,
                acked: q.stats.acked,
                redelivered: q.stats.redelivered,
                get: q.stats.get,
            },
            quorum,
            // A quorum queue this node follows: its leader has the figures.
            home: slot
                .quorum
                .as_ref()
                .filter(|qs| !qs.active)
                .and_then(|_| home(def.node)),
        });
    }
    // Queues whose home is another node of the cluster: listed by shard 0,
    // with figures asked of their node (`Admin::snapshot`).
    if shard.id == 0 {
        for def in topo
            .queues()
            .filter(|q| q.node != 0 && hub.owner.queue(q.id).is_none())
        {
            s.queues.push(QueueInfo {
                vhost: vname(def.vhost),
                name: def.name.as_str().into_owned(),
                durable: def.durable,
                auto_delete: def.auto_delete,
                exclusive: def.exclusive.is_some(),
                owner: None,
                arguments: table_to_json(&def.args),
                shard: def.owner,
                messages_ready: 0,
                messages_unacknowledged: 0,
                message_bytes_ready: 0,
                message_bytes_unacknowledged: 0,
                consumers: 0,
                disk_bytes: 0,
                counters: QueueCounters::default(),
                quorum: def
                    .is_quorum()
                    .then(|| super::quorum::describe(shard, def.quorum_group(), &def.replicas)),
                home: home(def.node),
            });
        }
    }
    for c in shard.conns.borrow().values() {
        let m = c.meta.borrow();
        s.connections.push(ConnectionInfo {
            name: m.name.clone(),
            shard: shard.id,
            peer_host: m.peer.map_or(String::new(), |p| p.ip().to_string()),
            peer_port: m.peer.map_or(0, |p| p.port()),
            host: m.local.map_or(String::new(), |p| p.ip().to_string()),
            port: m.local.map_or(0, |p| p.port()),
            user: m.user.clone(),
            vhost: m.vhost.clone(),
            state: m.state,
            channels: m.channels.len() as u64,
            connected_at_ms: m.connected_at_ms,
            frame_max: m.frame_max,
            heartbeat: m.heartbeat,
            client_properties: m.client_properties.clone(),
            recv_oct: m.recv_oct,
            send_oct: m.send_oct,
            published: m.published,
            delivered: m.delivered,
            confirmed: m.confirmed,
            auth_mechanism: m.auth_mechanism,
            tls: m.tls.clone(),
        });
        for ch in &m.channels {
            s.channels.push(ChannelInfo {
                connection: m.name.clone(),
                number: ch.number,
                user: m.user.clone(),
                vhost: m.vhost.clone(),
                prefetch_count: ch.prefetch,
                global_prefetch_count: ch.global_prefetch,
                messages_unacknowledged: ch.unacked as u64,
                confirm: ch.confirm,
                transactional: ch.transactional,
                consumer_count: ch.consumers.len() as u64,
            });
            for x in &ch.consumers {
                let (vhost, queue) = topo.queue(x.queue).map_or((m.vhost.clone(), String::new()), |q| {
                    (vname(q.vhost), q.name.as_str().into_owned())
                });
                s.consumers.push(ConsumerInfo {
                    vhost,
                    queue,
                    consumer_tag: x.tag.as_str().into_owned(),
                    connection: m.name.clone(),
                    channel: ch.number,
                    ack_required: !x.no_ack,
                    exclusive: x.exclusive,
                    prefetch_count: x.prefetch,
                });
            }
        }
    }
    // Exclusive queues name their owner connection as RabbitMQ does.
    for q in &mut s.queues {
        if let Some(owner) = &q.owner
            && let Some((_, n)) = conn_names.iter().find(|(id, _)| format!("{id:?}") == *owner)
        {
            q.owner = Some(n.clone());
        }
    }
    let st = shard.sync_stats.borrow();
    s.stats = ShardStats {
        shard: shard.id,
        routed: hub.routed,
        outbox_items: hub.out.items.iter().map(|b| b.len() as u64).sum(),
        ring_items: shard.ring_items.get(),
        ring_batches: shard.ring_batches.get(),
        handoffs: shard.handoffs.get(),
        replies_dropped: shard.replies_dropped.get(),
        wakeups: switches.0,
        preemptions: switches.1,
        park_batching: (shard.park_window_us.get() > 0) as u64,
        park_window_us: shard.park_window_us.get(),
        fsyncs: st.fsyncs,
        fsync_files: st.files,
        fsync_waiters: st.waiters,
        fsync_latency_us: [
            st.latency.value_at_quantile(0.5),
            st.latency.value_at_quantile(0.99),
            st.latency.max(),
        ],
        fsync_latency_buckets: crate::admin::FSYNC_BUCKETS_US
            .iter()
            .map(|&le| st.latency.count_between(0, le))
            .collect(),
        fsync_latency_sum_us: (st.latency.mean() * st.latency.len() as f64) as u64,
    };
    if shard.id == 0 {
        for v in topo.vhosts() {
            s.vhosts.push(VhostInfo {
                name: v.name.clone(),
                limits: v.limits.as_ref().map(|l| l.0.clone()),
            });
        }
        (s.users, s.permissions) = users_of(topo);
        for p in topo.policies() {
            s.policies.push(PolicyInfo {
                vhost: vname(p.vhost),
                name: p.name.clone(),
                pattern: p.pattern.clone(),
                apply_to: p.apply_to.clone(),
                priority: p.priority,
                definition: table_to_json(&p.definition),
            });
        }
        for x in topo.exchanges() {
            let d = &x.def;
            s.exchanges.push(ExchangeInfo {
                vhost: vname(d.vhost),
                name: d.name.as_str().into_owned(),
                kind: d.kind.as_str(),
                durable: d.durable,
                auto_delete: d.auto_delete,
                internal: d.internal,
                arguments: table_to_json(&d.args),
            });
            for (key, args, dest) in x.bindings.iter() {
                let (destination, destination_type) = match dest {
                    Dest::Queue(q) => (topo.queue(q).map(|q| q.name.as_str().into_owned()), "queue"),
                    Dest::Exchange(e) => (
                        topo.exchange(e).map(|e| e.def.name.as_str().into_owned()),
                        "exchange",
                    ),
                };
                let Some(destination) = destination else { continue };
                s.bindings.push(BindingInfo {
                    vhost: vname(d.vhost),
                    source: d.name.as_str().into_owned(),
                    destination,
                    destination_type,
                    routing_key: key.as_str().into_owned(),
                    arguments: table_to_json(args),
                });
            }
        }
    }
    s
}
