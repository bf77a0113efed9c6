//! Shard 0's side of clustering: the node's cluster port and metadata
//! group run here; committed metadata entries go to the hub's control
//! plane, the control plane's proposals go to the cluster, and the
//! clustering commands of `warrenctl` are carried out.

use super::state::{Shard, now_ms};
use crate::admin::ClusterCmd;
use crate::cluster::forward::{self, KIND_PUBLISH};
use crate::cluster::meta::{MetaImage, MetaSink, decode_changes_on, encode_changes};
use crate::cluster::net::service_fn;
use crate::cluster::node::{Host, Node};
use crate::cluster::{MetaCmd, node_id};
use crate::control::Proposal;
use crate::owner::ControlMsg;
use crate::owner::Forward;
use crate::protocol::AmqpError;
use crate::session::Event;
use crate::storage::topolog;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// How long a restarted member waits to catch up with its cluster before
/// it serves clients anyway (its changes fail until a majority is back).
const RECOVERY_WAIT: Duration = Duration::from_secs(30);

/// How long a batch of forwarded messages may wait for its node.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);
/// Forwarded messages this node may hold for other nodes' publishers
/// (waiting for their queues' confirms); beyond it, batches are refused.
const MAX_FORWARDED_IN: usize = 100_000;

/// Shard 0's cluster state: the node, and the messages other nodes
/// forwarded here that wait for their confirms.
pub struct Glue {
    pub node: Rc<Node>,
    next_seq: Cell<u64>,
    /// Confirm sequence → (its batch, its place in the batch).
    waiting: RefCell<HashMap<u64, (Rc<Batch>, usize)>>,
}

/// The answer to one forwarded batch, filled in as its confirms come.
struct Batch {
    oks: RefCell<Vec<u8>>,
    left: Cell<usize>,
    done: RefCell<Option<futures::channel::oneshot::Sender<Vec<u8>>>>,
}

impl Batch {
    fn settle(&self, i: usize, ok: bool) {
        self.oks.borrow_mut()[i] = ok as u8;
        self.left.set(self.left.get() - 1);
        if self.left.get() == 0
            && let Some(tx) = self.done.borrow_mut().take()
        {
            let _ = tx.send(std::mem::take(&mut *self.oks.borrow_mut()));
        }
    }
}

/// What the cluster layer sees of shard 0.
struct ShardHost {
    shard: Weak<Shard>,
    me: u64,
    /// This node seeded a cluster: its first entry holds its own topology.
    seeding: Cell<bool>,
}

impl MetaSink for ShardHost {
    fn apply(&self, cmd: &MetaCmd) -> bool {
        let Some(shard) = self.shard.upgrade() else {
            return false;
        };
        let now = now_ms();
        let mine = cmd.origin == self.me;
        if mine && cmd.token == 0 && self.seeding.replace(false) {
            if let Some(c) = &mut shard.hub.borrow_mut().control {
                c.seeded(cmd.next_ids);
            }
            return true;
        }
        let changes = match decode_changes_on(&cmd.changes, self.me) {
            Ok(c) => c,
            Err(e) => {
                // Every node decodes alike: the entry is rejected everywhere.
                log::error!("a metadata entry cannot be read ({e}); skipped");
                return false;
            }
        };
        let accepted =
            shard
                .hub
                .borrow_mut()
                .replicated(mine, cmd.token, cmd.base, cmd.next_ids, changes, now);
        shard.after_step(now);
        accepted
    }

    fn image(&self) -> MetaImage {
        let Some(shard) = self.shard.upgrade() else {
            return MetaImage::default();
        };
        let hub = shard.hub.borrow();
        let changes = topolog::image(&hub.topo, true);
        let (accepted, next_ids) = match &hub.control {
            Some(c) => (c.accepted(), c.next_ids()),
            None => (0, [1, 1, 1]),
        };
        MetaImage {
            accepted,
            next_ids,
            changes: encode_changes(&changes, self.me),
        }
    }

    fn install(&self, image: MetaImage) {
        let Some(shard) = self.shard.upgrade() else { return };
        let changes = match decode_changes_on(&image.changes, self.me) {
            Ok(c) => c,
            Err(e) => {
                log::error!("a metadata snapshot cannot be read: {e}");
                return;
            }
        };
        let now = now_ms();
        {
            let mut hub = shard.hub.borrow_mut();
            let hub = &mut *hub;
            if let Some(c) = &mut hub.control {
                if hub.topo.vhosts().next().is_some() {
                    log::warn!("replacing this node's topology by the cluster's snapshot");
                    c.reset(&hub.topo);
                }
                c.install(image.accepted, image.next_ids, changes);
            }
        }
        shard.after_step(now);
    }
}

impl Host for ShardHost {
    fn enter_cluster(&self) -> MetaImage {
        let Some(shard) = self.shard.upgrade() else {
            return MetaImage::default();
        };
        self.seeding.set(true);
        if let Some(c) = &mut shard.hub.borrow_mut().control {
            c.enter_cluster(0);
        }
        let image = self.image();
        // The topology now lives in the metadata log.
        let _ = std::fs::remove_file(shard.cfg.data_dir.join("topology.log"));
        image
    }

    fn app_running(&self) -> bool {
        self.shard
            .upgrade()
            .is_some_and(|s| !s.stats.app_stopped.load(Ordering::SeqCst))
    }
}

/// Starts this node's cluster side on shard 0. A member of a cluster
/// serves clients once it has caught up.
pub async fn start(shard: &Rc<Shard>) -> std::io::Result<()> {
    let host = Rc::new(ShardHost {
        shard: Rc::downgrade(shard),
        me: node_id(&shard.cfg.cluster.node_name),
        seeding: Cell::new(false),
    });
    let member = crate::cluster::node::is_member(&shard.cfg.data_dir);
    if member {
        shard.stats.app_stopped.store(true, Ordering::SeqCst);
        if let Some(c) = &mut shard.hub.borrow_mut().control {
            c.enter_cluster(0);
        }
    }
    let node = Node::start(&shard.cfg.cluster, &shard.cfg.data_dir, host).await?;
    let glue = Rc::new(Glue {
        node: node.clone(),
        next_seq: Cell::new(1),
        waiting: RefCell::new(HashMap::new()),
    });
    *shard.cluster.borrow_mut() = Some(glue);
    let weak = Rc::downgrade(shard);
    node.register(
        KIND_PUBLISH,
        service_fn(move |from: &str, _kind: u8, body: Vec<u8>| {
            let shard = weak.upgrade();
            let from = from.to_string();
            async move {
                let Some(shard) = shard else {
                    return Err("the node is stopping".to_string());
                };
                receive_forwarded(&shard, &from, body).await
            }
        }),
    );
    if member {
        let shard = shard.clone();
        glommio::spawn_local(async move {
            if !node.wait_for_recovery(RECOVERY_WAIT).await {
                log::warn!(
                    "no majority of the cluster answered within {} s: serving clients with the metadata this node has",
                    RECOVERY_WAIT.as_secs()
                );
            }
            let me = node.id;
            shard.hub.borrow_mut().submit_control(ControlMsg::NodeRestarted(me));
            shard.after_step(now_ms());
            shard.stats.app_stopped.store(false, Ordering::SeqCst);
            log::info!("node {} caught up with its cluster", node.info.name);
        })
        .detach();
    }
    Ok(())
}

/// Sends the control plane's proposals to the cluster (called after each
/// step of shard 0).
pub fn propose(shard: &Rc<Shard>, proposals: Vec<Proposal>) {
    let Some(node) = shard.cluster.borrow().as_ref().map(|g| g.node.clone()) else {
        let mut hub = shard.hub.borrow_mut();
        for p in proposals {
            hub.propose_failed(
                p.token,
                AmqpError::internal("this node is not in a cluster"),
                now_ms(),
            );
        }
        return;
    };
    for p in proposals {
        let cmd = MetaCmd {
            origin: node.id,
            token: p.token,
            base: p.base,
            next_ids: p.next_ids,
            changes: encode_changes(&p.changes, node.id),
        };
        let node = node.clone();
        let shard = shard.clone();
        glommio::spawn_local(async move {
            if let Err(e) = node.propose(cmd).await {
                log::warn!("a metadata change failed: {e}");
                let now = now_ms();
                shard
                    .hub
                    .borrow_mut()
                    .propose_failed(p.token, AmqpError::internal(e), now);
                shard.after_step(now);
            }
        })
        .detach();
    }
}

/// A clustering command from the management plane.
pub async fn handle(shard: &Rc<Shard>, cmd: ClusterCmd) -> Result<serde_json::Value, String> {
    let Some(node) = shard.cluster.borrow().as_ref().map(|g| g.node.clone()) else {
        return Err("the cluster port is not running on this node".into());
    };
    match cmd {
        ClusterCmd::Status => Ok(node.cluster_status().await),
        ClusterCmd::Join {
            node: target,
            addr,
            ram,
        } => {
            if !shard.stats.app_stopped.load(Ordering::SeqCst) {
                return Err("mnesia_unexpectedly_running: stop the app first (warrenctl stop_app)".into());
            }
            if target == node.info.name {
                return Err(format!("cannot join {target}: it is this node"));
            }
            if node.is_member() {
                return Err(format!(
                    "{} is already a member of a cluster; reset it first (warrenctl reset)",
                    node.info.name
                ));
            }
            let addr = addr.unwrap_or_else(|| {
                let host = target.split_once('@').map_or(target.as_str(), |(_, h)| h);
                format!("{host}:25672")
            });
            reset_topology(shard).await;
            let _ = std::fs::remove_file(shard.cfg.data_dir.join("topology.log"));
            if let Some(c) = &mut shard.hub.borrow_mut().control {
                c.enter_cluster(0);
            }
            node.join(&addr, ram)
                .await
                .map_err(|e| format!("{e} (this node's data was reset; restart it to start afresh)"))?;
            Ok(serde_json::json!({ "joined": target }))
        }
        ClusterCmd::Forget { node: name } => {
            if name == node.info.name {
                return Err(format!(
                    "{name} is this node: forget it from another node of the cluster"
                ));
            }
            let raft = node
                .raft()
                .ok_or_else(|| "not_clustered: this node is not in a cluster".to_string())?;
            let addr = {
                use openraft::async_runtime::WatchReceiver;
                let m = raft.metrics().borrow_watched().membership_config.clone();
                m.membership()
                    .get_node(&node_id(&name))
                    .map(|n| n.addr.clone())
                    .ok_or_else(|| format!("not_a_cluster_node: {name} is not a member of the cluster"))?
            };
            if node.status_of(&addr).await.is_some() {
                return Err(format!(
                    "failed_to_remove_node: {name} is running; stop it first (or use stop_app and reset on it)"
                ));
            }
            node.forget(&name).await?;
            Ok(serde_json::json!({ "forgotten": name }))
        }
        ClusterCmd::ChangeType { ram } => {
            if !shard.stats.app_stopped.load(Ordering::SeqCst) {
                return Err("mnesia_unexpectedly_running: stop the app first (warrenctl stop_app)".into());
            }
            if !node.is_member() {
                return Err("not_clustered: a node outside a cluster is always a disc node".into());
            }
            node.set_ram(ram).await?;
            Ok(serde_json::json!({ "type": if ram { "ram" } else { "disc" } }))
        }
    }
}

/// Deletes this node's whole topology (and so its queues' data), waiting
/// until every shard has applied it.
async fn reset_topology(shard: &Rc<Shard>) {
    {
        let mut hub = shard.hub.borrow_mut();
        let hub = &mut *hub;
        if let Some(c) = &mut hub.control {
            c.reset(&hub.topo);
        }
    }
    shard.after_step(now_ms());
    for _ in 0..400 {
        if shard.hub.borrow().control.as_ref().is_none_or(|c| c.is_idle()) {
            break;
        }
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
}

/// Sends messages for queues on other nodes there, one batch per node, and
/// gives their publishers the confirms those nodes send back (a batch that
/// cannot be delivered is nacked whole: its messages may or may not have
/// been enqueued, as with any nack).
pub fn forward(shard: &Rc<Shard>, forwards: Vec<Forward>) {
    let node = shard.cluster.borrow().as_ref().map(|g| g.node.clone());
    let mut by_node: Vec<(u64, Vec<u8>, Vec<Option<(crate::ids::ChannelRef, u64)>>)> = Vec::new();
    for f in forwards {
        let i = match by_node.iter().position(|b| b.0 == f.node) {
            Some(i) => i,
            None => {
                by_node.push((f.node, Vec::new(), Vec::new()));
                by_node.len() - 1
            }
        };
        forward::encode(&mut by_node[i].1, f.queue, &f.msg);
        by_node[i].2.push(f.confirm);
    }
    for (target, body, confirms) in by_node {
        let shard = shard.clone();
        let node = node.clone();
        glommio::spawn_local(async move {
            let addr = node.as_ref().and_then(|n| n.addr_of(target));
            let oks = match (&node, addr) {
                (Some(node), Some(addr)) => match node.call(&addr, KIND_PUBLISH, body, FORWARD_TIMEOUT).await
                {
                    Ok(oks) if oks.len() == confirms.len() => oks,
                    Ok(_) => {
                        log::warn!("node {addr} answered a forwarded batch with the wrong count");
                        Vec::new()
                    }
                    Err(e) => {
                        log::warn!("cannot forward {} message(s) to {addr}: {e}", confirms.len());
                        Vec::new()
                    }
                },
                _ => {
                    log::warn!(
                        "no address for cluster node {target:x}: {} message(s) nacked",
                        confirms.len()
                    );
                    Vec::new()
                }
            };
            let now = now_ms();
            {
                let mut hub = shard.hub.borrow_mut();
                for (i, c) in confirms.into_iter().enumerate() {
                    if let Some((ch, seq)) = c {
                        let ok = oks.get(i).is_some_and(|&b| b == 1);
                        hub.send_event(ch.conn, Event::Confirm { ch, seq, ok });
                    }
                }
            }
            shard.after_step(now);
        })
        .detach();
    }
}

/// A batch another node forwarded: each message goes to its queue's
/// owner here; the answer waits for every confirm.
async fn receive_forwarded(shard: &Rc<Shard>, from: &str, body: Vec<u8>) -> Result<Vec<u8>, String> {
    let msgs = forward::decode(bytes::Bytes::from(body)).map_err(|e| e.to_string())?;
    let glue = shard
        .cluster
        .borrow()
        .clone()
        .ok_or_else(|| "the node is stopping".to_string())?;
    if glue.waiting.borrow().len() + msgs.len() > MAX_FORWARDED_IN {
        log::warn!(
            "refusing {} message(s) forwarded by {from}: too many waiting",
            msgs.len()
        );
        return Ok(vec![0; msgs.len()]);
    }
    let (tx, rx) = futures::channel::oneshot::channel();
    let batch = Rc::new(Batch {
        oks: RefCell::new(vec![1; msgs.len()]),
        left: Cell::new(msgs.len()),
        done: RefCell::new(Some(tx)),
    });
    if msgs.is_empty() {
        return Ok(Vec::new());
    }
    let now = now_ms();
    {
        let mut hub = shard.hub.borrow_mut();
        for (i, (queue, msg)) in msgs.into_iter().enumerate() {
            let seq = glue.next_seq.get();
            glue.next_seq.set(seq + 1);
            if hub.forwarded(queue, msg, seq) {
                glue.waiting.borrow_mut().insert(seq, (batch.clone(), i));
            } else {
                // Not here (deleted meanwhile): as RabbitMQ does for a
                // queue deleted under a publisher, confirmed and dropped.
                batch.settle(i, true);
            }
        }
    }
    shard.after_step(now);
    rx.await
        .map_err(|_| "the node stopped before confirming".to_string())
}

/// An event for [`crate::ids::ConnId::FORWARDED`]: a confirm of a message
/// another node forwarded (anything else, such as flow control, does not
/// apply to it).
pub fn forwarded_event(shard: &Rc<Shard>, ev: Event) {
    let Event::Confirm { seq, ok, .. } = ev else {
        return;
    };
    let glue = shard.cluster.borrow().clone();
    let Some(glue) = glue else { return };
    let entry = glue.waiting.borrow_mut().remove(&seq);
    if let Some((batch, i)) = entry {
        batch.settle(i, ok);
    }
}
