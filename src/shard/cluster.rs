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
use crate::cluster::remote;
use crate::cluster::{MetaCmd, node_id};
use crate::control::Proposal;
use crate::ids::{ConnId, ConsumerRef, QueueId};
use crate::owner::ControlMsg;
use crate::owner::Forward;
use crate::owner::{Item, RemoteOp};
use crate::protocol::AmqpError;
use crate::session::Event;
use crate::storage::topolog;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// How long a restarted member waits to catch up with its cluster before
/// it serves clients anyway (its changes fail until a majority is back).
const RECOVERY_WAIT: Duration = Duration::from_secs(30);

/// A forwarded message's confirm: its channel and sequence there.
type Confirm = Option<(crate::ids::ChannelRef, u64)>;

/// How long a batch of forwarded messages may wait for its node.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);
/// Forwarded messages this node may hold for other nodes' publishers
/// (waiting for their queues' confirms); beyond it, batches are refused.
const MAX_FORWARDED_IN: usize = 100_000;
/// An event from node `from` for a local channel: an answer it waited
/// for, a consumer of a classic queue there that began (watched from now
/// on: see `cluster::asks`) or was cancelled.
fn track_answer(hub: &crate::hub::Hub, glue: &Glue, from: &str, ev: &Event) {
    let mut asks = glue.asks.borrow_mut();
    match ev {
        Event::Reply { ch, reply } => {
            let ask = asks.answered(*ch);
            if let crate::broker::request::Reply::ConsumeOk { queue, consumer } = reply
                && hub.topo.queue(*queue).is_some_and(|q| !q.is_quorum())
            {
                let node = glue.node.id_of(from).unwrap_or_else(|| node_id(from));
                let boot = ask.filter(|a| a.node == node).map_or(0, |a| a.boot);
                asks.consuming(*consumer, node, boot, *queue);
            }
        }
        Event::ConsumerCancelled { consumer } => asks.stopped(*consumer),
        _ => {}
    }
}

/// Tries of a batch of events before its node is taken as gone.
const EVENT_TRIES: u32 = 3;
/// How often a node checks the nodes that consume from its queues.
const LIVENESS_PERIOD: Duration = Duration::from_secs(2);

/// Shard 0's cluster state: the node, and the messages other nodes
/// forwarded here that wait for their confirms.
pub struct Glue {
    pub node: Rc<Node>,
    next_seq: Cell<u64>,
    /// Confirm sequence → (its batch, its place in the batch).
    waiting: RefCell<HashMap<u64, (Rc<Batch>, usize)>>,
    /// This process's boot id: another node that sees it change knows our
    /// connections are new ones.
    boot: u64,
    /// Connections of other nodes that use this node's queues.
    remote: RefCell<Remotes>,
    /// This node's quorum queue groups.
    pub quorum: Rc<super::quorum::Groups>,
    /// Local channels' requests to other nodes' queues, until answered.
    asks: RefCell<crate::cluster::asks::Asks>,
    /// Answers to metadata changes, until every member applied them.
    pub visible: Rc<super::visible::Visible>,
}

/// The stand-ins for other nodes' connections (see
/// [`ConnId::STAND_IN_BASE`]), and what their consumers hold here.
#[derive(Default)]
struct Remotes {
    next: u64,
    /// (node, its connection) → stand-in.
    by_real: HashMap<(u64, ConnId), ConnId>,
    /// Stand-in → (node, its connection).
    by_stand_in: HashMap<ConnId, (u64, ConnId)>,
    /// Each node's boot id as last seen.
    boots: HashMap<u64, u64>,
    /// Per node: times its consumers here were dropped while it may have
    /// been running (see [`forget_node`]).
    forgot: HashMap<u64, u64>,
    /// Per node: deliveries waiting for an ack (queue, seq → stand-in),
    /// and consumers.
    unacked: HashMap<u64, HashMap<(QueueId, u64), ConnId>>,
    consumers: HashMap<u64, Vec<(QueueId, ConsumerRef)>>,
    /// What keeps each stand-in: replies it waits for, its consumers, its
    /// unacked deliveries. At 0 it goes (its connection may be closed).
    holds: HashMap<ConnId, u32>,
    /// Events waiting to be sent, per node.
    outbox: HashMap<u64, Vec<remote::WireEvent>>,
    /// Settles of quorum queues whose leader could not be reached: sent
    /// to the next leader once the metadata names it (bounded per queue by
    /// [`MAX_UNSENT_SETTLES`]; past it they are dropped, and the messages
    /// delivered again).
    unsent: HashMap<QueueId, (u64, Vec<(u64, crate::broker::request::Settle)>)>,
}

const MAX_UNSENT_SETTLES: usize = 100_000;

impl Remotes {
    fn stand_in(&mut self, node: u64, real: ConnId) -> ConnId {
        if let Some(c) = self.by_real.get(&(node, real)) {
            return *c;
        }
        let c = ConnId::new(0, ConnId::STAND_IN_BASE + self.next);
        self.next += 1;
        self.by_real.insert((node, real), c);
        self.by_stand_in.insert(c, (node, real));
        c
    }

    /// The stand-in of a remote connection that still has one.
    fn existing(&self, node: u64, real: ConnId) -> Option<ConnId> {
        self.by_real.get(&(node, real)).copied()
    }

    fn hold(&mut self, c: ConnId) {
        *self.holds.entry(c).or_default() += 1;
    }

    /// One thing that kept `c` is done; the last one lets it go.
    fn release(&mut self, c: ConnId) {
        let Some(n) = self.holds.get_mut(&c) else { return };
        *n -= 1;
        if *n == 0 {
            self.holds.remove(&c);
            if let Some(real) = self.by_stand_in.remove(&c) {
                self.by_real.remove(&real);
            }
        }
    }

    /// Forgets a consumer of `node`, whichever queue it consumed from.
    fn remove_consumer_anywhere(&mut self, node: u64, cref: ConsumerRef) {
        let queue = self
            .consumers
            .get(&node)
            .and_then(|l| l.iter().find(|(_, c)| *c == cref).map(|(q, _)| *q));
        if let Some(q) = queue {
            self.remove_consumer(node, q, cref);
        }
    }

    /// Forgets what other nodes' consumers held of a queue here (its
    /// engine here stopped serving: they carry on with its new leader).
    fn forget_queue(&mut self, queue: QueueId) {
        let mut released = Vec::new();
        for u in self.unacked.values_mut() {
            u.retain(|(q, _), c| {
                let keep = *q != queue;
                if !keep {
                    released.push(*c);
                }
                keep
            });
        }
        for l in self.consumers.values_mut() {
            l.retain(|(q, c)| {
                let keep = *q != queue;
                if !keep {
                    released.push(c.ch.conn);
                }
                keep
            });
        }
        for c in released {
            self.release(c);
        }
    }

    fn remove_consumer(&mut self, node: u64, queue: QueueId, cref: ConsumerRef) {
        let Some(list) = self.consumers.get_mut(&node) else {
            return;
        };
        let before = list.len();
        list.retain(|&(q, cr)| !(q == queue && cr == cref));
        if list.len() < before {
            self.release(cref.ch.conn);
        }
    }
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
    fn apply(&self, index: u64, cmd: &MetaCmd) -> bool {
        let Some(shard) = self.shard.upgrade() else {
            return false;
        };
        shard.meta_index.set(index);
        let now = now_ms();
        let mine = cmd.origin == self.me;
        if mine && cmd.token == 0 && self.seeding.replace(false) {
            if let Some(c) = &mut shard.hub.borrow_mut().control {
                c.seeded(cmd.next_ids);
            }
            return true;
        }
        let changes = match decode_changes_on(&cmd.changes, self.me, shard.hub.borrow().nshards) {
            Ok(c) => c,
            Err(e) => {
                // Every node decodes alike: the entry is rejected everywhere
                // (its own node fails the request that made it).
                log::error!("a metadata entry cannot be read ({e}); skipped");
                if mine {
                    shard.hub.borrow_mut().propose_failed(
                        cmd.token,
                        AmqpError::internal("the change could not be read back"),
                        now,
                    );
                    shard.after_step(now);
                }
                return false;
            }
        };
        refresh_quorum_nodes(&shard);
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

    fn membership_changed(&self) {
        if let Some(shard) = self.shard.upgrade() {
            refresh_quorum_nodes(&shard);
        }
    }

    fn install(&self, image: MetaImage) {
        let Some(shard) = self.shard.upgrade() else { return };
        let changes = match decode_changes_on(&image.changes, self.me, shard.hub.borrow().nshards) {
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
                    log::info!("bringing this node's topology up to the cluster's snapshot");
                }
                c.install(&hub.topo, image.accepted, image.next_ids, changes);
            }
        }
        shard.after_step(now);
    }
}

impl Host for ShardHost {
    fn holds(&self) -> crate::cluster::node::Holds {
        let Some(shard) = self.shard.upgrade() else {
            return Default::default();
        };
        let hub = shard.hub.borrow();
        super::shared_limits::held_here(&hub.topo)
    }

    fn forgot_consumers_of(&self, node: crate::cluster::NodeId) -> u64 {
        let Some(shard) = self.shard.upgrade() else {
            return 0;
        };
        let glue = shard.cluster.borrow().clone();
        glue.map_or(0, |g| g.remote.borrow().forgot.get(&node).copied().unwrap_or(0))
    }

    fn quiesce(&self) -> bool {
        let Some(shard) = self.shard.upgrade() else {
            return false;
        };
        let mut hub = shard.hub.borrow_mut();
        match &mut hub.control {
            Some(c) => {
                c.pause(true);
                c.quiet()
            }
            None => false,
        }
    }

    fn enter_cluster(&self) -> MetaImage {
        let Some(shard) = self.shard.upgrade() else {
            return MetaImage::default();
        };
        self.seeding.set(true);
        if let Some(c) = &mut shard.hub.borrow_mut().control {
            c.enter_cluster(0, super::state::random_u64() >> 16);
        }
        self.image()
    }

    fn seeded(&self) {
        // The topology now lives in the metadata log (and its first entry
        // is committed).
        if let Some(shard) = self.shard.upgrade() {
            let _ = std::fs::remove_file(shard.cfg.data_dir.join("topology.log"));
        }
    }

    fn leave_cluster(&self) {
        self.seeding.set(false);
        if let Some(shard) = self.shard.upgrade() {
            if let Some(c) = &mut shard.hub.borrow_mut().control {
                c.leave_cluster();
            }
            shard.after_step(now_ms());
        }
    }

    fn app_running(&self) -> bool {
        self.shard
            .upgrade()
            .is_some_and(|s| !s.stats.app_stopped.load(Ordering::SeqCst))
    }
}

/// Starts this node's cluster side on shard 0. A member of a cluster
/// serves clients once it has caught up.
pub async fn start(shard: &Rc<Shard>, mailboxes: Arc<Vec<crate::admin::Mailbox>>) -> std::io::Result<()> {
    let host = Rc::new(ShardHost {
        shard: Rc::downgrade(shard),
        me: shard.cfg.cluster.node_id(),
        seeding: Cell::new(false),
    });
    let member = crate::cluster::node::is_member(&shard.cfg.data_dir);
    if member {
        shard.stats.app_stopped.store(true, Ordering::SeqCst);
        if let Some(c) = &mut shard.hub.borrow_mut().control {
            c.enter_cluster(0, super::state::random_u64() >> 16);
        }
    }
    let node = match Node::start(&shard.cfg.cluster, &shard.cfg.data_dir, host).await {
        Ok(n) => n,
        Err(e) if !member => {
            // A node outside a cluster works without its cluster port; it
            // just cannot be joined until it has one.
            log::warn!(
                "cluster port {}: {e}; this node cannot be joined (see --cluster-port)",
                shard.cfg.cluster.port
            );
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let glue = Rc::new(Glue {
        node: node.clone(),
        next_seq: Cell::new(1),
        waiting: RefCell::new(HashMap::new()),
        boot: node.boot,
        remote: RefCell::new(Remotes::default()),
        quorum: Rc::new(super::quorum::Groups::default()),
        asks: RefCell::new(crate::cluster::asks::Asks::default()),
        visible: Rc::default(),
    });
    glommio::spawn_local(watch_consuming_nodes(Rc::downgrade(shard))).detach();
    glommio::spawn_local(super::shared_limits::run(Rc::downgrade(shard))).detach();
    super::visible::start(shard, &node, &glue.visible);
    *shard.cluster.borrow_mut() = Some(glue);
    super::quorum::serve(shard, &node);
    super::replicas::serve(shard, &node);
    refresh_quorum_nodes(shard);
    // The groups of the quorum queues the metadata already holds (replayed
    // before the cluster side was up).
    let groups: Vec<(u32, Vec<u64>)> = shard
        .hub
        .borrow()
        .topo
        .queues()
        .filter(|q| q.replicas.contains(&node.id))
        .map(|q| (q.quorum_group(), q.replicas.clone()))
        .collect();
    if !groups.is_empty() {
        super::quorum::open(shard, groups);
    }
    serve(shard, &node, KIND_PUBLISH, |shard, from, body| async move {
        receive_forwarded(&shard, &from, body).await
    });
    serve(shard, &node, remote::KIND_OPS, |shard, from, body| async move {
        receive_ops(&shard, &from, body)
    });
    serve(shard, &node, remote::KIND_QUEUE_FIGURES, move |_, _, _| {
        serve_queue_figures(mailboxes.clone())
    });
    serve(
        shard,
        &node,
        remote::KIND_EVENTS,
        |shard, from, body| async move { receive_events(&shard, &from, body) },
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
            if !shard.stats.app_stopped_by_user.load(Ordering::SeqCst) {
                shard.stats.app_stopped.store(false, Ordering::SeqCst);
            }
            log::info!("node {} caught up with its cluster", node.info.name);
            // Started under a new name or address: the others learn it.
            node.announce().await;
        })
        .detach();
    }
    Ok(())
}

/// Tells the control plane which nodes quorum queues' replicas may use.
pub fn refresh_quorum_nodes(shard: &Shard) {
    let Some(node) = shard.cluster.borrow().as_ref().map(|g| g.node.clone()) else {
        return;
    };
    let ids = node.member_ids();
    if let Some(c) = &mut shard.hub.borrow_mut().control {
        c.set_quorum_nodes(node.id, ids);
    }
}

/// Serves a request kind of the cluster port on shard 0 with `handle`
/// (given the shard, the calling node's name and the body).
pub(super) fn serve<F, Fut>(shard: &Rc<Shard>, node: &Node, kind: u8, handle: F)
where
    F: Fn(Rc<Shard>, String, Vec<u8>) -> Fut + 'static,
    Fut: std::future::Future<Output = Result<Vec<u8>, String>> + 'static,
{
    let weak = Rc::downgrade(shard);
    let handle = Rc::new(handle);
    node.register(
        kind,
        service_fn(move |from: &str, _kind: u8, body: Vec<u8>| {
            let shard = weak.upgrade();
            let from = from.to_string();
            let handle = handle.clone();
            async move {
                let Some(shard) = shard else {
                    return Err("the node is stopping".to_string());
                };
                handle(shard, from, body).await
            }
        }),
    );
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
        ClusterCmd::Status => {
            let mut v = node.cluster_status().await;
            // Connections of other nodes using this node's queues now.
            if let Some(g) = shard.cluster.borrow().as_ref() {
                v["remote_connections"] = serde_json::json!(g.remote.borrow().by_stand_in.len());
            }
            Ok(v)
        }
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
                c.enter_cluster(0, super::state::random_u64() >> 16);
            }
            if let Err(e) = node.join(&addr, ram).await {
                node.abandon().await;
                if let Some(c) = &mut shard.hub.borrow_mut().control {
                    c.leave_cluster();
                }
                return Err(format!(
                    "{e} (this node's data was reset; restart it to start afresh)"
                ));
            }
            Ok(serde_json::json!({ "joined": target }))
        }
        ClusterCmd::Forget { node: name } => {
            if name == node.info.name {
                return Err(format!(
                    "{name} is this node: forget it from another node of the cluster"
                ));
            }
            let addr = member_addr(&node, &name)?;
            if node.status_of(&addr).await.is_some() {
                return Err(format!(
                    "failed_to_remove_node: {name} is running; stop it first (or use stop_app and reset on it)"
                ));
            }
            let id = node.id_of(&name);
            node.forget(&name).await?;
            // As rabbitmqctl: its quorum queue replicas go too (shrink).
            let shrunk = match id {
                Some(id) => super::replicas::change(shard, id, false, false).await?,
                None => serde_json::json!([]),
            };
            Ok(serde_json::json!({ "forgotten": name, "quorum_queues": shrunk }))
        }
        ClusterCmd::Replicas {
            node: name,
            grow,
            even,
        } => {
            if node.raft().is_none() {
                return Err("not_clustered: this node is not in a cluster".into());
            }
            let id = match node.id_of(&name) {
                Some(id) => id,
                // A forgotten node's replicas can still be taken out.
                None if !grow => crate::ids::node_id(&name),
                None => {
                    return Err(format!(
                        "not_a_cluster_node: {name} is not a member of the cluster"
                    ));
                }
            };
            super::replicas::change(shard, id, grow, even).await
        }
        ClusterCmd::Rename { pairs } => {
            // As rabbitmqctl: the renamed nodes must not run. Unlike
            // rabbitmqctl, it is run on a running member of the cluster;
            // the renamed node is then started under its new name, with
            // its data dir.
            let mut done = Vec::new();
            for (old, new) in pairs {
                if old == node.info.name {
                    return Err(format!(
                        "{old} is this node and running: stop it first, rename it from another node"
                    ));
                }
                let addr = member_addr(&node, &old)?;
                if node.status_of(&addr).await.is_some() {
                    return Err(format!("{old} is running; stop it first"));
                }
                node.rename(&old, &new).await?;
                done.push(serde_json::json!({ "from": old, "to": new }));
            }
            Ok(serde_json::json!({ "renamed": done }))
        }
        ClusterCmd::QueueFigures => Ok(queue_figures(shard, &node).await),
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

/// Asks each node serving queues of this node's topology for their
/// figures, all at once; a node that does not answer within
/// [`FIGURES_TIMEOUT`] is left out.
async fn queue_figures(shard: &Rc<Shard>, node: &Rc<Node>) -> serde_json::Value {
    let nodes: std::collections::BTreeSet<u64> = shard
        .hub
        .borrow()
        .topo
        .queues()
        .filter(|q| q.node != 0 && q.node != node.id)
        .map(|q| q.node)
        .collect();
    let asks = nodes.into_iter().filter_map(|id| node.addr_of(id)).map(|addr| {
        let node = node.clone();
        async move {
            let r = node
                .call(&addr, remote::KIND_QUEUE_FIGURES, Vec::new(), FIGURES_TIMEOUT)
                .await;
            match r.map(|b| serde_json::from_slice::<Vec<crate::admin::QueueFigures>>(&b)) {
                Ok(Ok(f)) => f,
                Ok(Err(e)) => {
                    log::warn!("queue figures from {addr} cannot be read: {e}");
                    Vec::new()
                }
                Err(e) => {
                    log::info!("no queue figures from {addr}: {e}");
                    Vec::new()
                }
            }
        }
    });
    let all: Vec<crate::admin::QueueFigures> = futures::future::join_all(asks)
        .await
        .into_iter()
        .flatten()
        .collect();
    serde_json::to_value(all).unwrap_or_default()
}

/// How long a node's queue figures are waited for (a management request
/// waits for them).
const FIGURES_TIMEOUT: Duration = Duration::from_secs(2);

/// This node's figures for the queues it serves, for another node's
/// management plane: gathered from every shard off the reactor (the
/// shards answer through their admin tasks).
async fn serve_queue_figures(mailboxes: Arc<Vec<crate::admin::Mailbox>>) -> Result<Vec<u8>, String> {
    let parts = glommio::executor()
        .spawn_blocking(move || crate::admin::gather(&mailboxes))
        .await?;
    let figures: Vec<crate::admin::QueueFigures> = parts
        .iter()
        .flat_map(|p| &p.queues)
        .filter(|q| q.home.is_none())
        .map(crate::admin::QueueFigures::of)
        .collect();
    serde_json::to_vec(&figures).map_err(|e| e.to_string())
}

/// The cluster address of the member named `name`.
fn member_addr(node: &Node, name: &str) -> Result<String, String> {
    if node.raft().is_none() {
        return Err("not_clustered: this node is not in a cluster".into());
    }
    node.id_of(name)
        .and_then(|id| node.addr_of(id))
        .ok_or_else(|| format!("not_a_cluster_node: {name} is not a member of the cluster"))
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
    let mut by_node: Vec<(u64, Vec<u8>, Vec<Confirm>)> = Vec::new();
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

/// Sends what local channels do to queues on other nodes there, in order,
/// one batch per node. An operation that cannot be delivered fails its
/// channel's request; settles and flow control are lost with the node
/// (which requeues what it delivered when it notices).
pub fn send_ops(shard: &Rc<Shard>, ops: Vec<(u64, QueueId, RemoteOp)>) {
    let Some(glue) = shard.cluster.borrow().clone() else {
        return;
    };
    type Asking = Vec<(crate::ids::ChannelRef, QueueId, crate::protocol::ShortStr)>;
    type Resuming = Vec<(crate::ids::ConsumerRef, QueueId)>;
    type Settles = Vec<(QueueId, u64, crate::broker::request::Settle)>;
    let mut by_node: Vec<(u64, Vec<remote::OpFor>, Asking, Resuming, Settles)> = Vec::new();
    let quorum: HashSet<QueueId> = {
        let hub = shard.hub.borrow();
        ops.iter()
            .filter(|(_, q, op)| {
                matches!(op, RemoteOp::Settle { .. }) && hub.topo.queue(*q).is_some_and(|d| d.is_quorum())
            })
            .map(|(_, q, _)| *q)
            .collect()
    };
    for (node, queue, op) in ops {
        let i = match by_node.iter().position(|b| b.0 == node) {
            Some(i) => i,
            None => {
                by_node.push((node, Vec::new(), Vec::new(), Vec::new(), Vec::new()));
                by_node.len() - 1
            }
        };
        let op = match op {
            // A resumption waits for no reply: if it cannot be sent, its
            // consumer is cancelled.
            RemoteOp::Queue {
                name,
                ch,
                op: op @ crate::owner::QueueOp::Resume { .. },
            } => {
                if let crate::owner::QueueOp::Resume { spec, .. } = &op {
                    by_node[i].3.push((spec.cref, queue));
                }
                remote::Op::of_queue_op(&name, ch, &op)
            }
            RemoteOp::Queue { name, ch, op } => {
                if let crate::owner::QueueOp::Cancel(consumer) = &op {
                    glue.asks.borrow_mut().stopped(*consumer);
                }
                by_node[i].2.push((ch, queue, name.clone()));
                remote::Op::of_queue_op(&name, ch, &op)
            }
            RemoteOp::Settle { seq, how } => {
                if quorum.contains(&queue) {
                    by_node[i].4.push((queue, seq, how));
                }
                remote::Op::Settle {
                    seq,
                    how: remote::settle_code(how),
                }
            }
            RemoteOp::Written { consumer, n } => remote::Op::Written {
                consumer: consumer.into(),
                n,
            },
            RemoteOp::Credit { consumer, n } => remote::Op::Credit {
                consumer: consumer.into(),
                n,
            },
            RemoteOp::Drop { consumer } => {
                glue.asks.borrow_mut().stopped(consumer);
                remote::Op::Drop {
                    consumer: consumer.into(),
                }
            }
            RemoteOp::ReplyName { name, ch, key, vhost } => {
                by_node[i].2.push((ch, queue, name.clone()));
                remote::Op::ReplyName {
                    name: name.as_str().into_owned(),
                    ch: ch.into(),
                    key,
                    vhost,
                }
            }
        };
        by_node[i].1.push(remote::OpFor { queue: queue.0, op });
    }
    let now = now_ms();
    for (target, ops, asking, resuming, settles) in by_node {
        {
            let mut asks = glue.asks.borrow_mut();
            for (ch, queue, name) in &asking {
                asks.asked(*ch, target, *queue, name.clone(), now);
            }
        }
        let shard = shard.clone();
        let node = glue.node.clone();
        let body = postcard::to_stdvec(&remote::OpsBatch { boot: glue.boot, ops });
        let glue = glue.clone();
        glommio::spawn_local(async move {
            let addr = node.addr_of(target);
            let result = match (addr, body) {
                (Some(addr), Ok(body)) => node
                    .call(&addr, remote::KIND_OPS, body, FORWARD_TIMEOUT)
                    .await
                    .map_err(|e| format!("{addr}: {e}")),
                (None, _) => Err(format!("no address for cluster node {target:x}")),
                (_, Err(e)) => Err(e.to_string()),
            };
            match result {
                // The node's boot id: its requests die with this run.
                Ok(boot) => {
                    let boot = boot.try_into().map_or(0, u64::from_le_bytes);
                    glue.asks
                        .borrow_mut()
                        .taken(target, boot, asking.iter().map(|(ch, _, _)| *ch));
                }
                Err(e) => {
                    log::warn!("cannot send queue operations to another node: {e}");
                    let now = now_ms();
                    {
                        let mut hub = shard.hub.borrow_mut();
                        let node_name = node
                            .info_of(target)
                            .map_or_else(|| format!("{target:x}"), |i| i.name);
                        let mut asks = glue.asks.borrow_mut();
                        for (ch, queue, name) in asking {
                            // Unless given up already (see `check_asks`).
                            if asks.answered(ch).is_some() {
                                let reply = node_down(&hub, &node_name, queue, &name);
                                hub.send_event(ch.conn, Event::Reply { ch, reply });
                            }
                        }
                        drop(asks);
                        for (consumer, queue) in resuming {
                            let claimed = None;
                            hub.send_event(
                                consumer.ch.conn,
                                Event::Resumed {
                                    consumer,
                                    queue,
                                    claimed,
                                },
                            );
                        }
                        keep_settles(&mut hub, &glue, target, settles);
                    }
                    shard.after_step(now);
                }
            }
        })
        .detach();
    }
}

/// RabbitMQ's answer for a queue whose node is down: a channel error, the
/// connection goes on.
fn node_down(
    hub: &crate::hub::Hub,
    node_name: &str,
    queue: QueueId,
    name: &crate::protocol::ShortStr,
) -> crate::broker::request::Reply {
    if crate::broker::reply_to::is_reply_name(name.as_bytes()) {
        // A declare of a reply name of a node that is down: its reply
        // consumer is gone with it (the ask does not keep the vhost).
        return crate::broker::request::Reply::Error(crate::broker::control::no_queue(name, "/"));
    }
    let vhost = hub
        .topo
        .queue(queue)
        .map_or_else(|| "/".to_string(), |q| hub.topo.vhost_name(q.vhost).to_string());
    crate::broker::request::Reply::Error(AmqpError::not_found(format!(
        "home node '{node_name}' of durable queue '{name}' in vhost '{vhost}' is down or inaccessible"
    )))
}

/// Gives up the requests owed by nodes that restarted since they took
/// them, or that missed checks in a row (see [`crate::cluster::asks`]).
async fn check_asks(shard: &Rc<Shard>, glue: &Glue) {
    let before = now_ms().saturating_sub(LIVENESS_PERIOD.as_millis() as u64);
    let owing = glue.asks.borrow().owing(before);
    // Every node owing answers is asked at once: a round takes one
    // status call's time however many nodes are gone.
    let checks = futures::future::join_all(owing.into_iter().map(|node| async move {
        use crate::cluster::asks::Check;
        let check = match glue.node.addr_of(node) {
            Some(addr) => match glue.node.status_of(&addr).await {
                Some(st) => Check::Up {
                    boot: st.boot,
                    forgot: st.forgot_yours,
                },
                None => Check::Unreachable,
            },
            None => Check::Unreachable,
        };
        (node, check)
    }))
    .await;
    for (node, check) in checks {
        let lost = glue.asks.borrow_mut().checked(node, check, before);
        if lost.asks.is_empty() && lost.consumers.is_empty() {
            continue;
        }
        let node_name = glue
            .node
            .info_of(node)
            .map_or_else(|| format!("{node:x}"), |i| i.name);
        log::warn!(
            "cluster node {node_name} restarted or is gone: {} request(s) of channels here go unanswered, \
             {} consumer(s) here of its queues are cancelled",
            lost.asks.len(),
            lost.consumers.len()
        );
        let mut drops = Vec::new();
        {
            let mut hub = shard.hub.borrow_mut();
            for (ch, ask) in lost.asks {
                let reply = node_down(&hub, &node_name, ask.queue, &ask.name);
                hub.send_event(ch.conn, Event::Reply { ch, reply });
            }
            for (consumer, node, queue) in lost.consumers {
                hub.send_event(consumer.ch.conn, Event::ConsumerCancelled { consumer });
                // A node that was only unreachable may still hold it.
                drops.push((node, queue, RemoteOp::Drop { consumer }));
            }
        }
        if !drops.is_empty() {
            send_ops(shard, drops);
        }
        shard.after_step(now_ms());
    }
}

/// Settles of quorum queues that could not reach `dead` (their leader, as
/// the sender knew it): where the metadata names another leader already,
/// they go there; the others wait for it (see [`resend_settles`]). A
/// replicated queue's sequences name the same message on every replica.
fn keep_settles(
    hub: &mut crate::hub::Hub,
    glue: &Glue,
    dead: u64,
    settles: Vec<(QueueId, u64, crate::broker::request::Settle)>,
) {
    let mut r = glue.remote.borrow_mut();
    for (queue, seq, how) in settles {
        match hub.topo.queue(queue).map(|d| d.node) {
            None => {}
            Some(n) if n != dead => hub.to_queue(queue, Item::Settle { queue, seq, how }),
            Some(_) => {
                let (_, kept) = r.unsent.entry(queue).or_insert((dead, Vec::new()));
                if kept.len() < MAX_UNSENT_SETTLES {
                    kept.push((seq, how));
                }
            }
        }
    }
}

/// Settles of a quorum queue this node stopped serving before its group
/// took them: they go to the leader the metadata names next.
pub fn keep_failed_settles(hub: &mut crate::hub::Hub, shard: &Rc<Shard>, queue: QueueId, seqs: Vec<u64>) {
    let Some(glue) = shard.cluster.borrow().clone() else {
        return;
    };
    let ack = crate::broker::request::Settle::Ack;
    keep_settles(hub, &glue, 0, seqs.into_iter().map(|s| (queue, s, ack)).collect());
}

/// The metadata names new leaders for these queues: the settles kept for
/// them go there.
pub fn resend_settles(shard: &Rc<Shard>, queues: &[QueueId]) {
    let Some(glue) = shard.cluster.borrow().clone() else {
        return;
    };
    let mut kept = Vec::new();
    {
        let mut r = glue.remote.borrow_mut();
        if r.unsent.is_empty() {
            return;
        }
        for q in queues {
            if let Some((_, v)) = r.unsent.remove(q) {
                kept.push((*q, v));
            }
        }
    }
    if kept.is_empty() {
        return;
    }
    // After this step: the step that applied the record is still running.
    let shard = shard.clone();
    glommio::spawn_local(async move {
        let now = now_ms();
        {
            let mut hub = shard.hub.borrow_mut();
            for (queue, v) in kept {
                for (seq, how) in v {
                    hub.to_queue(queue, Item::Settle { queue, seq, how });
                }
            }
        }
        shard.after_step(now);
    })
    .detach();
}

/// Another node's channels act on queues here: each operation goes to the
/// queue's owner as from a local stand-in of the remote connection.
fn receive_ops(shard: &Rc<Shard>, from: &str, body: Vec<u8>) -> Result<Vec<u8>, String> {
    let batch: remote::OpsBatch = postcard::from_bytes(&body).map_err(|e| format!("bad ops batch: {e}"))?;
    let glue = shard.cluster.borrow().clone().ok_or("the node is stopping")?;
    let from_node = glue.node.id_of(from).unwrap_or_else(|| node_id(from));
    let seen = glue.remote.borrow().boots.get(&from_node).copied();
    if seen.is_some_and(|b| b != batch.boot) {
        log::info!("node {from} restarted: dropping its consumers here");
        forget_node(shard, &glue, from_node, false);
    }
    glue.remote.borrow_mut().boots.insert(from_node, batch.boot);
    let now = now_ms();
    {
        let mut hub = shard.hub.borrow_mut();
        let mut r = glue.remote.borrow_mut();
        let me = hub.owner.node();
        for remote::OpFor { queue, op } in batch.ops {
            let queue = QueueId(queue);
            if let remote::Op::ReplyName { name, ch, key, vhost } = &op {
                // A declare of one of this node's reply names: live while
                // its reply consumer is (RabbitMQ answers one consumer).
                let stand_in = r.stand_in(from_node, ch.conn());
                r.hold(stand_in);
                let name = crate::protocol::ShortStr::from_string_lossy(name);
                let reply = if hub.replies.contains(key) {
                    crate::broker::request::Reply::QueueDeclareOk {
                        name,
                        messages: 0,
                        consumers: 1,
                    }
                } else {
                    crate::broker::request::Reply::Error(crate::broker::control::no_queue(&name, vhost))
                };
                hub.send_event(
                    stand_in,
                    Event::Reply {
                        ch: ch.on(stand_in),
                        reply,
                    },
                );
                continue;
            }
            // A quorum queue's operations are taken wherever it has a
            // replica: the sender may know of a new leader (this node)
            // before this node has applied the record.
            let here = |q: &&crate::broker::topology::QueueDef| {
                q.node == 0 || (q.is_quorum() && q.replicas.contains(&me))
            };
            let Some(owner) = hub.topo.queue(queue).filter(here).map(|q| q.owner) else {
                // Not here (deleted meanwhile): a request is answered as
                // for a missing queue (a cancel, as done).
                if let Some(real) = op.real_conn() {
                    let stand_in = r.stand_in(from_node, real);
                    r.hold(stand_in);
                    if let Some((name, ch, qop)) = op.queue_op(stand_in) {
                        if let crate::owner::QueueOp::Resume { spec, .. } = qop {
                            let (consumer, claimed) = (spec.cref, None);
                            hub.send_event(
                                stand_in,
                                Event::Resumed {
                                    consumer,
                                    queue,
                                    claimed,
                                },
                            );
                            continue;
                        }
                        let reply = match qop {
                            crate::owner::QueueOp::Cancel(consumer) => {
                                crate::broker::request::Reply::CancelOk { consumer }
                            }
                            // The sender's metadata has it: this node has not
                            // applied its declaration yet (it is new, empty).
                            crate::owner::QueueOp::Counts => crate::broker::request::Reply::QueueDeclareOk {
                                name,
                                messages: 0,
                                consumers: 0,
                            },
                            _ => crate::broker::request::Reply::Error(crate::broker::control::no_queue(
                                &name, "?",
                            )),
                        };
                        hub.send_event(stand_in, Event::Reply { ch, reply });
                    }
                }
                continue;
            };
            let item = match &op {
                remote::Op::Settle { seq, how } => {
                    let Some(how) = remote::settle_of(*how) else {
                        continue;
                    };
                    if let Some(c) = r
                        .unacked
                        .get_mut(&from_node)
                        .and_then(|u| u.remove(&(queue, *seq)))
                    {
                        r.release(c);
                    }
                    Item::Settle {
                        queue,
                        seq: *seq,
                        how,
                    }
                }
                // Flow control and drops for a consumer that no longer has
                // a stand-in here (dropped, or its node forgotten): moot.
                remote::Op::Written { consumer, n } => {
                    let Some(c) = r.existing(from_node, consumer.0.conn()) else {
                        continue;
                    };
                    Item::Written {
                        queue,
                        consumer: consumer.on(c),
                        n: *n,
                    }
                }
                remote::Op::Credit { consumer, n } => {
                    let Some(c) = r.existing(from_node, consumer.0.conn()) else {
                        continue;
                    };
                    Item::Credit {
                        queue,
                        consumer: consumer.on(c),
                        n: *n,
                    }
                }
                remote::Op::Drop { consumer } => {
                    let Some(c) = r.existing(from_node, consumer.0.conn()) else {
                        continue;
                    };
                    let cref = consumer.on(c);
                    r.remove_consumer(from_node, queue, cref);
                    Item::DropConsumer {
                        queue,
                        consumer: cref,
                    }
                }
                other => {
                    let real = match other {
                        remote::Op::Consume { consumer, .. }
                        | remote::Op::Cancel { consumer, .. }
                        | remote::Op::Resume { consumer, .. } => consumer.0.conn(),
                        remote::Op::Get { ch, .. }
                        | remote::Op::Purge { ch, .. }
                        | remote::Op::Counts { ch, .. } => ch.conn(),
                        _ => unreachable!("handled above"),
                    };
                    let c = r.stand_in(from_node, real);
                    let Some((name, ch, qop)) = other.queue_op(c) else {
                        continue;
                    };
                    // Held until its reply passes (stand_in_event).
                    r.hold(c);
                    Item::QueueOp {
                        queue,
                        name,
                        ch,
                        op: qop,
                    }
                }
            };
            hub.out_to_shard(owner, item);
        }
    }
    shard.after_step(now);
    // The sender learns which run of this node took its requests.
    Ok(glue.boot.to_le_bytes().to_vec())
}

/// These queues' engines here stopped serving (see `Remotes::forget_queue`).
pub fn forget_queues(shard: &Rc<Shard>, queues: &[QueueId]) {
    let Some(glue) = shard.cluster.borrow().clone() else {
        return;
    };
    let mut r = glue.remote.borrow_mut();
    for q in queues {
        r.forget_queue(*q);
    }
}

/// An event for a stand-in: kept for its node (sent by [`flush_events`]).
pub fn stand_in_event(shard: &Rc<Shard>, conn: ConnId, ev: Event) {
    let Some(glue) = shard.cluster.borrow().clone() else {
        return;
    };
    let mut r = glue.remote.borrow_mut();
    let Some(&(node, real)) = r.by_stand_in.get(&conn) else {
        // Its node was forgotten (gone or restarted): what the owner sent
        // since goes back to the queue.
        drop(r);
        shard.hub.borrow_mut().orphan(ev);
        return;
    };
    use crate::broker::request::Reply;
    match &ev {
        Event::Deliver(d) if d.needs_ack => {
            r.unacked.entry(node).or_default().insert((d.queue, d.seq), conn);
            r.hold(conn);
        }
        Event::ConsumerCancelled { consumer } => {
            r.remove_consumer_anywhere(node, *consumer);
        }
        // The answer to a resumption (held since the operation came): a
        // consumer taken over holds its stand-in, as do the deliveries
        // it took along.
        Event::Resumed {
            consumer,
            queue,
            claimed,
        } => {
            if let Some(claimed) = claimed {
                let known = r
                    .consumers
                    .get(&node)
                    .is_some_and(|l| l.contains(&(*queue, *consumer)));
                if !known {
                    r.consumers.entry(node).or_default().push((*queue, *consumer));
                    r.hold(conn);
                }
                for seq in claimed {
                    if r.unacked
                        .entry(node)
                        .or_default()
                        .insert((*queue, *seq), conn)
                        .is_none()
                    {
                        r.hold(conn);
                    }
                }
            }
            r.release(conn);
        }
        _ => {}
    }
    let w = remote::wire_event(&ev, real);
    if let Event::Reply { reply, .. } = &ev {
        // The reply a queue operation waited for.
        match reply {
            Reply::ConsumeOk { queue, consumer } => {
                r.consumers.entry(node).or_default().push((*queue, *consumer));
                r.hold(conn);
            }
            Reply::CancelOk { consumer } => {
                r.remove_consumer_anywhere(node, *consumer);
            }
            Reply::GetOk {
                queue,
                entry,
                needs_ack: true,
                ..
            } => {
                r.unacked
                    .entry(node)
                    .or_default()
                    .insert((*queue, entry.seq), conn);
                r.hold(conn);
            }
            _ => {}
        }
        r.release(conn);
    }
    if let Some(w) = w {
        r.outbox.entry(node).or_default().push(w);
    }
}

/// Sends replies to other nodes' direct reply-to consumers, one batch per
/// node. A reply is not kept or retried (it has no queue, as RabbitMQ's
/// has none): one that cannot be sent is dropped, as a reply to a gone
/// consumer is, and its node is not taken as gone for it.
pub fn send_replies(shard: &Rc<Shard>, replies: Vec<crate::owner::RemoteReply>) {
    let Some(glue) = shard.cluster.borrow().clone() else {
        return;
    };
    /// What a mandatory reply needs back: its publisher, confirm and copy.
    type Mandatory = (
        crate::ids::ChannelRef,
        Option<(crate::ids::ChannelRef, u64)>,
        crate::message::Message,
    );
    type Batch = (Vec<remote::WireEvent>, Vec<(u32, Mandatory)>);
    let mut by_node: HashMap<u64, Batch> = HashMap::new();
    for r in replies {
        let (events, mandatory) = by_node.entry(r.node).or_default();
        if let Some(returner) = r.returner {
            mandatory.push((events.len() as u32, (returner, r.confirm, r.msg.clone())));
        }
        events.push(remote::WireEvent::DirectReply {
            ch: r.ch.into(),
            key: r.key,
            msg: (&r.msg).into(),
        });
    }
    for (target, (events, mandatory)) in by_node {
        let addr = glue.node.addr_of(target);
        let glue = glue.clone();
        let shard = shard.clone();
        glommio::spawn_local(async move {
            let sent = match (addr, postcard::to_stdvec(&events)) {
                (Some(addr), Ok(body)) => glue
                    .node
                    .call(&addr, remote::KIND_EVENTS, body, FORWARD_TIMEOUT)
                    .await
                    .map_err(|e| format!("{addr}: {e}")),
                (None, _) => Err(format!("unknown cluster node {target:x}")),
                (_, Err(e)) => Err(e.to_string()),
            };
            // The replies that found no reply consumer there (a node that
            // cannot be reached: all of them).
            let gone: Vec<u32> = match &sent {
                Ok(body) => postcard::from_bytes(body).unwrap_or_default(),
                Err(e) => {
                    log::debug!("{} direct replies dropped: {e}", events.len());
                    (0..events.len() as u32).collect()
                }
            };
            if mandatory.is_empty() {
                return;
            }
            let now = now_ms();
            {
                let mut hub = shard.hub.borrow_mut();
                for (i, (ch, confirm, msg)) in mandatory {
                    if gone.contains(&i) {
                        hub.send_event(ch.conn, Event::Returned { ch, msg });
                    }
                    if let Some((ch, seq)) = confirm {
                        hub.send_event(ch.conn, Event::Confirm { ch, seq, ok: true });
                    }
                }
            }
            shard.after_step(now);
        })
        .detach();
    }
}

/// Sends the events kept for other nodes, one batch per node. A node that
/// cannot be reached is taken as gone: what its consumers held here is
/// requeued and its consumers dropped.
pub fn flush_events(shard: &Rc<Shard>) {
    let Some(glue) = shard.cluster.borrow().clone() else {
        return;
    };
    let batches: Vec<(u64, Vec<remote::WireEvent>)> = glue.remote.borrow_mut().outbox.drain().collect();
    for (target, events) in batches {
        let shard = shard.clone();
        let glue = glue.clone();
        glommio::spawn_local(async move {
            let addr = glue.node.addr_of(target);
            let body = postcard::to_stdvec(&events);
            let mut result = Err(String::new());
            // A few tries before the node is taken as gone: a lost batch
            // would leave its deliveries with nobody.
            for attempt in 0..EVENT_TRIES {
                if attempt > 0 {
                    glommio::timer::sleep(Duration::from_millis(500)).await;
                }
                result = match (&addr, &body) {
                    (Some(addr), Ok(body)) => glue
                        .node
                        .call(addr, remote::KIND_EVENTS, body.clone(), FORWARD_TIMEOUT)
                        .await
                        .map(|_| ())
                        .map_err(|e| format!("{addr}: {e}")),
                    (None, _) => Err(format!("no address for cluster node {target:x}")),
                    (_, Err(e)) => Err(e.to_string()),
                };
                if result.is_ok() {
                    break;
                }
            }
            if let Err(e) = result {
                log::warn!(
                    "cannot send events to a consuming node ({e}): requeueing what its consumers held"
                );
                forget_node(&shard, &glue, target, true);
                shard.after_step(now_ms());
            }
        })
        .detach();
    }
}

/// Every [`LIVENESS_PERIOD`], asks each node that consumes from this
/// node's queues whether it is there; one that missed two checks in a row
/// is taken as gone (what its consumers held is requeued).
async fn watch_consuming_nodes(shard: Weak<Shard>) {
    let mut missed: HashMap<u64, u32> = HashMap::new();
    loop {
        glommio::timer::sleep(LIVENESS_PERIOD).await;
        let Some(shard) = shard.upgrade() else { return };
        let Some(glue) = shard.cluster.borrow().clone() else {
            return;
        };
        refresh_quorum_nodes(&shard);
        check_asks(&shard, &glue).await;
        let nodes: std::collections::BTreeSet<u64> = {
            let r = glue.remote.borrow();
            r.consumers
                .iter()
                .filter(|(_, c)| !c.is_empty())
                .map(|(n, _)| *n)
                .chain(r.unacked.iter().filter(|(_, u)| !u.is_empty()).map(|(n, _)| *n))
                .collect()
        };
        missed.retain(|n, _| nodes.contains(n));
        let statuses = futures::future::join_all(nodes.into_iter().map(|node| {
            let glue = glue.clone();
            async move {
                let status = match glue.node.addr_of(node) {
                    Some(addr) => glue.node.status_of(&addr).await,
                    None => None,
                };
                (node, status)
            }
        }))
        .await;
        for (node, status) in statuses {
            // A node that restarted (a new boot id) dropped its
            // connections: what its consumers held here is requeued at
            // once, even if it never sends anything here again.
            let seen = glue.remote.borrow().boots.get(&node).copied();
            if let Some(st) = &status
                && st.boot != 0
                && seen.is_some_and(|b| b != st.boot)
            {
                log::info!("cluster node {node:x} restarted: requeueing what its consumers held here");
                missed.remove(&node);
                forget_node(&shard, &glue, node, false);
                glue.remote.borrow_mut().boots.insert(node, st.boot);
                shard.after_step(now_ms());
                continue;
            }
            let up = status.is_some();
            let m = missed.entry(node).or_default();
            *m = if up { 0 } else { *m + 1 };
            if !up {
                log::info!("cluster node {node:x} missed a liveness check ({m} in a row)");
            }
            if *m >= 2 {
                log::warn!("cluster node {node:x} is gone: requeueing what its consumers held here");
                missed.remove(&node);
                forget_node(&shard, &glue, node, true);
                shard.after_step(now_ms());
            }
        }
    }
}

/// Drops another node's consumers here and requeues what they held.
///
/// `maybe_alive`: the node only missed checks, or events could not reach
/// it; it may still be running, its consumers waiting for deliveries that
/// will not come. It is counted ([`crate::cluster::node::NodeStatus::forgot_yours`]): that node
/// sees the count grow at its next check of this one and cancels them
/// (`basic.cancel`, as RabbitMQ tells consumers whose queue's node it
/// lost). A node that restarted has no such consumers left.
fn forget_node(shard: &Rc<Shard>, glue: &Glue, node: u64, maybe_alive: bool) {
    let (unacked, consumers) = {
        let mut r = glue.remote.borrow_mut();
        let stand_ins: Vec<ConnId> = r
            .by_real
            .iter()
            .filter(|((n, _), _)| *n == node)
            .map(|(_, c)| *c)
            .collect();
        for c in &stand_ins {
            r.holds.remove(c);
            if let Some(real) = r.by_stand_in.remove(c) {
                r.by_real.remove(&real);
            }
        }
        r.outbox.remove(&node);
        let consumers = r.consumers.remove(&node).unwrap_or_default();
        if maybe_alive && !consumers.is_empty() {
            *r.forgot.entry(node).or_default() += 1;
        }
        (r.unacked.remove(&node).unwrap_or_default(), consumers)
    };
    let mut hub = shard.hub.borrow_mut();
    for (queue, consumer) in consumers {
        if let Some(owner) = hub.topo.queue(queue).map(|q| q.owner) {
            hub.out_to_shard(owner, Item::DropConsumer { queue, consumer });
        }
    }
    for ((queue, seq), _) in unacked {
        if let Some(owner) = hub.topo.queue(queue).map(|q| q.owner) {
            hub.out_to_shard(
                owner,
                Item::Settle {
                    queue,
                    seq,
                    how: crate::broker::request::Settle::Requeue,
                },
            );
        }
    }
}

/// Events another node's queues sent for this node's channels.
fn receive_events(shard: &Rc<Shard>, from: &str, body: Vec<u8>) -> Result<Vec<u8>, String> {
    let events: Vec<remote::WireEvent> =
        postcard::from_bytes(&body).map_err(|e| format!("bad events batch: {e}"))?;
    let glue = shard.cluster.borrow().clone();
    let now = now_ms();
    // Direct replies to no live reply consumer (by their index): the
    // sender returns the mandatory ones.
    let mut gone: Vec<u32> = Vec::new();
    {
        let mut hub = shard.hub.borrow_mut();
        let nshards = hub.nshards;
        for (i, w) in events.into_iter().enumerate() {
            if let remote::WireEvent::DirectReply { key, .. } = &w
                && !hub.replies.contains(key)
            {
                gone.push(i as u32);
                continue;
            }
            if let Some((conn, ev)) = w.event()
                && (conn.shard() as usize) < nshards
            {
                if let Some(glue) = &glue {
                    track_answer(&hub, glue, from, &ev);
                }
                hub.send_event(conn, ev);
            }
        }
    }
    shard.after_step(now);
    postcard::to_stdvec(&gone).map_err(|e| e.to_string())
}
