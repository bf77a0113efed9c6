//! One node's membership in a cluster (shard 0): the cluster port, the
//! metadata group's `Raft`, and the requests nodes make of each other
//! (propose, join, forget, status).
//!
//! A node that is not in a cluster still listens on the cluster port, so
//! others can join it (as RabbitMQ's distribution port does). The first
//! join makes it the seed: it starts a one-member metadata group holding
//! its own topology, then adds the joining node. The marker file
//! `cluster/member` says the data dir belongs to a cluster: at the next
//! start the topology comes from the metadata log, not the topology log.

use super::log_store::LogStore;
use super::meta::{MetaImage, MetaSink, MetaSm};
use super::net::raft::{ClusterNetwork, META_GROUP, RaftService};
use super::net::{CallError, Transport, service_fn};
use super::secret::Secret;
use super::types::{Meta, MetaCmd, MetaReply, NodeId, NodeInfo, node_id};
use crate::config::{ClusterConfig, METADATA_LOG_KEPT};
use openraft::async_runtime::WatchReceiver;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// The metadata group's Raft.
pub type MetaRaft = openraft::Raft<Meta, MetaSm>;

/// Request kinds of the cluster port served here (the Raft RPCs use 1–5).
pub const KIND_PROPOSE: u8 = 32;
pub const KIND_JOIN: u8 = 33;
pub const KIND_FORGET: u8 = 34;
pub const KIND_STATUS: u8 = 35;
pub const KIND_SET_NODE: u8 = 36;
/// Rename a stopped member: (old name, new name).
pub const KIND_RENAME: u8 = 37;
/// Answer once the metadata log's entry (an index) is applied here, and
/// every shard routes by it.
pub const KIND_META_APPLIED: u8 = 38;

/// How long a change waits for the cluster to commit it before the
/// request that made it fails.
pub const COMMIT_TIMEOUT: Duration = Duration::from_secs(5);
/// A leader whose last acknowledgement from a majority is older than this
/// (four heartbeats) takes no new entries.
const QUORUM_STALE_MS: u64 = 600;
/// Joining copies the metadata to the new node first.
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);

/// What shard 0 lends the node besides the state machine's sink.
pub trait Host: MetaSink {
    /// Stops the control plane from starting new operations; true once
    /// none is in flight (the seed's image must be all of its topology).
    fn quiesce(&self) -> bool;
    /// Makes the control plane a cluster member (changes now go through
    /// the metadata log) and returns the topology to seed the log with.
    fn enter_cluster(&self) -> MetaImage;
    /// The seed's first entry is committed: the topology log can go.
    fn seeded(&self);
    /// Seeding or joining failed: back to a node outside any cluster.
    fn leave_cluster(&self);
    /// Whether the broker application runs (for status).
    fn app_running(&self) -> bool;
    /// Times this node dropped the consumers member `node` had on its
    /// queues while `node` may have been running (unreachable for a
    /// while): that node then cancels them (see [`NodeStatus::forgot_yours`]).
    fn forgot_consumers_of(&self, _node: NodeId) -> u64 {
        0
    }
    /// The connections and channels this node holds (see [`Holds`]).
    fn holds(&self) -> Holds {
        Holds::default()
    }
}

/// A leader's answer to a proposal or a membership request.
#[derive(Debug, Serialize, Deserialize)]
enum Answer<T> {
    Done(T),
    /// Not the leader: ask it (its cluster address, when known).
    NotLeader(Option<String>),
}

/// What a node says of itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeStatus {
    pub name: String,
    pub app_running: bool,
    pub clustered: bool,
    pub leader: Option<String>,
    /// The node process's boot id (see [`Node::boot`]).
    #[serde(default)]
    pub boot: u64,
    /// Times this node dropped the asking node's consumers of its queues
    /// while that node may have been running ([`Host::forgot_consumers_of`]):
    /// a consumer the asking node started before the count last grew
    /// receives nothing more, and is cancelled there.
    #[serde(default)]
    pub forgot_yours: u64,
    /// The connections and channels it holds, for the limits the cluster
    /// shares.
    #[serde(default)]
    pub holds: Holds,
}

/// Connections and channels a node holds by vhost and by user (non-zero
/// counts only): vhost and user limits count them over every running
/// member, as RabbitMQ's connection and channel tracking does (see
/// [`crate::broker::limits`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holds {
    #[serde(default)]
    pub vhost_connections: BTreeMap<String, u32>,
    #[serde(default)]
    pub user_connections: BTreeMap<String, u32>,
    #[serde(default)]
    pub user_channels: BTreeMap<String, u32>,
}

impl Holds {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &Holds) {
        for (mine, theirs) in [
            (&mut self.vhost_connections, &other.vhost_connections),
            (&mut self.user_connections, &other.user_connections),
            (&mut self.user_channels, &other.user_channels),
        ] {
            for (k, n) in theirs {
                let e = mine.entry(k.clone()).or_default();
                *e = e.saturating_add(*n);
            }
        }
    }
}

/// The marker file of a data dir that belongs to a cluster.
pub fn marker(data_dir: &Path) -> PathBuf {
    data_dir.join("cluster").join("member")
}

/// The node's Raft id, kept in the data dir (`node-id`, hex) from its
/// first start, when it is derived from the name: a node renamed later
/// keeps it, and with it its place in every group and queue record.
pub fn load_or_create_id(data_dir: &Path, name: &str) -> io::Result<u64> {
    let path = data_dir.join("node-id");
    match std::fs::read_to_string(&path) {
        Ok(s) => u64::from_str_radix(s.trim(), 16)
            .ok()
            .filter(|id| *id != 0)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: not a node id", path.display()),
                )
            }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let id = node_id(name);
            let tmp = path.with_extension("tmp");
            {
                use std::io::Write;
                let mut f = std::fs::File::create(&tmp)?;
                f.write_all(format!("{id:016x}\n").as_bytes())?;
                f.sync_data()?;
            }
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(data_dir)?.sync_all()?;
            Ok(id)
        }
        Err(e) => Err(e),
    }
}

/// Whether the data dir belongs to a cluster.
pub fn is_member(data_dir: &Path) -> bool {
    marker(data_dir).exists()
}

/// Openraft settings for the metadata group: elections in about a second
/// on a LAN; a snapshot (the topology's image) every `snapshot_every`
/// entries, after which the log it covers is dropped but for the last
/// [`METADATA_LOG_KEPT`] entries. A node that restarts installs its own
/// snapshot and replays the rest; one too far behind is sent the leader's
/// (installed as a difference: see `control::install`).
fn raft_config(snapshot_every: u64) -> Arc<openraft::Config> {
    let c = openraft::Config {
        cluster_name: "warren-meta".into(),
        heartbeat_interval: 150,
        election_timeout_min: 750,
        election_timeout_max: 1500,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(snapshot_every),
        max_in_snapshot_log_to_keep: METADATA_LOG_KEPT.min(snapshot_every),
        purge_batch_size: 64,
        ..Default::default()
    };
    Arc::new(c.validate().expect("valid Raft settings"))
}

use std::sync::Arc;

/// This node in its cluster.
pub struct Node {
    pub info: NodeInfo,
    pub id: NodeId,
    dir: PathBuf,
    transport: Rc<Transport>,
    rpc: Rc<RaftService>,
    /// See [`raft_config`].
    snapshot_every: u64,
    raft: RefCell<Option<MetaRaft>>,
    host: Rc<dyn Host>,
    /// The cluster port's address (the bound one: port 0 picks one).
    pub listen_addr: SocketAddr,
    /// Random per process: a node that sees another's change knows that
    /// node restarted (its connections and consumers are new ones).
    pub boot: u64,
}

impl Node {
    /// Starts the cluster port; opens the metadata group if the data dir
    /// belongs to a cluster.
    pub async fn start(cfg: &ClusterConfig, data_dir: &Path, host: Rc<dyn Host>) -> io::Result<Rc<Node>> {
        let secret = match &cfg.secret {
            Some(s) => s
                .parse::<Secret>()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("--cluster-secret: {e}")))?,
            None => Secret::load_or_create(data_dir)?,
        };
        let transport = Transport::new(&cfg.node_name, secret);
        let listen_addr = transport.listen(SocketAddr::new(cfg.bind, cfg.port))?;
        let addr = cfg
            .advertise
            .clone()
            .unwrap_or_else(|| format!("{}:{}", cfg.host(), listen_addr.port()));
        let rpc = RaftService::new();
        rpc.serve_on(&transport);
        let node = Rc::new(Node {
            info: NodeInfo {
                name: cfg.node_name.clone(),
                addr,
                ram: false,
            },
            id: cfg.node_id(),
            dir: data_dir.join("cluster"),
            transport,
            rpc,
            raft: RefCell::new(None),
            host,
            listen_addr,
            boot: rand::random::<u64>() | 1,
            snapshot_every: cfg.metadata_snapshot_every.max(1),
        });
        node.serve();
        if is_member(data_dir) {
            node.open_raft().await?;
        }
        log::info!(
            "node {} (cluster port {}, reached at {})",
            node.info.name,
            node.listen_addr,
            node.info.addr
        );
        Ok(node)
    }

    fn serve(self: &Rc<Self>) {
        let me = Rc::downgrade(self);
        let service = service_fn(move |from: &str, kind: u8, body: Vec<u8>| {
            let me = me.clone();
            let from = from.to_string();
            async move {
                let Some(me) = me.upgrade() else {
                    return Err("the node is stopping".to_string());
                };
                me.handle(&from, kind, body).await
            }
        });
        for kind in [
            KIND_PROPOSE,
            KIND_JOIN,
            KIND_FORGET,
            KIND_STATUS,
            KIND_SET_NODE,
            KIND_RENAME,
        ] {
            self.transport.register(kind, service.clone());
        }
    }

    async fn handle(&self, from: &str, kind: u8, body: Vec<u8>) -> Result<Vec<u8>, String> {
        let bad = |e: postcard::Error| format!("bad request: {e}");
        match kind {
            KIND_PROPOSE => {
                let cmd: MetaCmd = postcard::from_bytes(&body).map_err(bad)?;
                let a = self.propose_here(cmd).await?;
                postcard::to_stdvec(&a).map_err(|e| e.to_string())
            }
            KIND_JOIN => {
                let (id, info): (NodeId, NodeInfo) = postcard::from_bytes(&body).map_err(bad)?;
                if info.name != from {
                    return Err(format!("{from} asked to join as {}", info.name));
                }
                let a = self.add_member(id, info).await?;
                postcard::to_stdvec(&a).map_err(|e| e.to_string())
            }
            KIND_FORGET => {
                let name: String = postcard::from_bytes(&body).map_err(bad)?;
                let a = self.remove_member(&name).await?;
                postcard::to_stdvec(&a).map_err(|e| e.to_string())
            }
            KIND_STATUS => serde_json::to_vec(&self.status_here(self.id_of(from))).map_err(|e| e.to_string()),
            KIND_SET_NODE => {
                let (id, info): (NodeId, NodeInfo) = postcard::from_bytes(&body).map_err(bad)?;
                if info.name != from {
                    return Err(format!("{from} asked to change {}", info.name));
                }
                let a = self.set_node(id, info).await?;
                postcard::to_stdvec(&a).map_err(|e| e.to_string())
            }
            KIND_RENAME => {
                let (old, new): (String, String) = postcard::from_bytes(&body).map_err(bad)?;
                let a = self.rename_member(&old, &new).await?;
                postcard::to_stdvec(&a).map_err(|e| e.to_string())
            }
            _ => Err(format!("unknown request kind {kind}")),
        }
    }

    async fn open_raft(&self) -> io::Result<MetaRaft> {
        if let Some(r) = self.raft.borrow().clone() {
            return Ok(r);
        }
        let meta_dir = self.dir.join("meta");
        std::fs::create_dir_all(&meta_dir)?;
        let log = LogStore::<Meta>::open(&meta_dir.join("log"))?;
        let sm = MetaSm::open(meta_dir.clone(), self.host.clone())?;
        let net = ClusterNetwork::<Meta>::new(self.transport.clone(), META_GROUP, self.id);
        let raft = MetaRaft::new(self.id, raft_config(self.snapshot_every), net, log, sm)
            .await
            .map_err(|e| io::Error::other(format!("cannot start the metadata group: {e}")))?;
        self.rpc.add_group(META_GROUP, raft.clone());
        *self.raft.borrow_mut() = Some(raft.clone());
        Ok(raft)
    }

    fn write_marker(&self) -> io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let path = self.dir.join("member");
        std::fs::write(&path, format!("{}\n", self.info.name))?;
        std::fs::File::open(&path)?.sync_all()?;
        std::fs::File::open(&self.dir)?.sync_all()
    }

    /// Serves another request kind on the cluster port.
    pub fn register(&self, kind: u8, service: Rc<dyn super::net::Service>) {
        self.transport.register(kind, service);
    }

    /// A request to another node (by its cluster address).
    pub async fn call(
        &self,
        addr: &str,
        kind: u8,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, CallError> {
        self.transport.call(addr, kind, body, timeout).await
    }

    /// The cluster address of member `id`.
    pub fn addr_of(&self, id: NodeId) -> Option<String> {
        let raft = self.raft()?;
        let m = raft.metrics().borrow_watched().membership_config.clone();
        m.membership().get_node(&id).map(|n| n.addr.clone())
    }

    /// The cluster port.
    pub fn transport(&self) -> Rc<Transport> {
        self.transport.clone()
    }

    /// The Raft RPC service of every group of this node.
    pub fn rpc(&self) -> Rc<RaftService> {
        self.rpc.clone()
    }

    /// What the metadata membership knows of node `id` (this node's own
    /// info outside a cluster).
    pub fn info_of(&self, id: NodeId) -> Option<NodeInfo> {
        if id == self.id {
            return Some(self.info.clone());
        }
        let raft = self.raft()?;
        let m = raft.metrics().borrow_watched().membership_config.clone();
        m.membership().get_node(&id).cloned()
    }

    /// The Raft id of the member named `name`, if there is one.
    pub fn id_of(&self, name: &str) -> Option<NodeId> {
        if name == self.info.name {
            return Some(self.id);
        }
        let raft = self.raft()?;
        let m = raft.metrics().borrow_watched().membership_config.clone();
        m.membership()
            .nodes()
            .find(|(_, n)| n.name == name)
            .map(|(id, _)| *id)
    }

    /// The Raft ids of the cluster's nodes (this node alone outside one).
    pub fn member_ids(&self) -> Vec<NodeId> {
        match self.raft() {
            Some(raft) => {
                let m = raft.metrics().borrow_watched().membership_config.clone();
                m.membership().nodes().map(|(id, _)| *id).collect()
            }
            None => vec![self.id],
        }
    }

    /// The other members, with their cluster addresses.
    pub fn peers(&self) -> Vec<(NodeId, String)> {
        let Some(raft) = self.raft() else {
            return Vec::new();
        };
        let m = raft.metrics().borrow_watched().membership_config.clone();
        m.membership()
            .nodes()
            .filter(|(id, _)| **id != self.id)
            .map(|(id, n)| (*id, n.addr.clone()))
            .collect()
    }

    /// Waits (up to `timeout`) until this node applied the metadata log up
    /// to `index`; false if it did not in time.
    pub async fn applied_at_least(&self, index: u64, timeout: Duration) -> bool {
        let Some(raft) = self.raft() else { return false };
        raft.wait(Some(timeout))
            .applied_index_at_least(Some(index), "a change another node made")
            .await
            .is_ok()
    }

    /// The metadata group, if this node is in a cluster.
    pub fn raft(&self) -> Option<MetaRaft> {
        self.raft.borrow().clone()
    }

    pub fn is_member(&self) -> bool {
        self.raft.borrow().is_some()
    }

    /// Waits (up to `timeout`) until this node's topology is at least what
    /// it was before a restart and the cluster has a leader; false if it
    /// could not tell in time (no majority reachable).
    pub async fn wait_for_recovery(&self, timeout: Duration) -> bool {
        let Some(raft) = self.raft() else { return true };
        raft.wait_for_recovery(Some(timeout)).await.is_ok()
    }

    /// The leader's id and cluster address, as this node knows them.
    fn leader(&self) -> Option<(NodeId, String)> {
        let raft = self.raft()?;
        let m = raft.metrics().borrow_watched().clone();
        let id = m.current_leader?;
        let addr = m.membership_config.membership().get_node(&id)?.addr.clone();
        Some((id, addr))
    }

    /// Appends `cmd` to the metadata log through the leader, waiting for
    /// the commit (at most [`COMMIT_TIMEOUT`]). The entry comes back to
    /// this node's control plane through the state machine; this only
    /// reports a failure to commit.
    pub async fn propose(&self, cmd: MetaCmd) -> Result<MetaReply, String> {
        let body = postcard::to_stdvec(&cmd).map_err(|e| e.to_string())?;
        self.at_leader(KIND_PROPOSE, body, || self.propose_here(cmd.clone()))
            .await
    }

    /// Runs a request on the leader: here (`here`) if this node leads,
    /// else sent there as `kind` with `body`, following redirects and
    /// waiting out elections, for at most [`COMMIT_TIMEOUT`].
    async fn at_leader<T, F, Fut>(&self, kind: u8, body: Vec<u8>, here: F) -> Result<T, String>
    where
        T: serde::de::DeserializeOwned,
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<Answer<T>, String>>,
    {
        let deadline = Instant::now() + COMMIT_TIMEOUT;
        let mut target: Option<String> = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(no_majority());
            }
            let to = target.take().or_else(|| {
                self.leader()
                    .map(|(id, a)| if id == self.id { String::new() } else { a })
            });
            let answer = match to {
                None => {
                    glommio::timer::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                Some(a) if a.is_empty() => here().await?,
                Some(a) => match self.transport.call(&a, kind, body.clone(), left).await {
                    Ok(b) => postcard::from_bytes(&b).map_err(|e| e.to_string())?,
                    Err(CallError::Remote(e)) => return Err(e),
                    Err(e) => {
                        log::debug!("request {kind} to {a}: {e}");
                        glommio::timer::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            match answer {
                Answer::Done(r) => return Ok(r),
                Answer::NotLeader(addr) => {
                    target = addr;
                    if target.is_none() {
                        glommio::timer::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }
    }

    /// `Some(NotLeader)` unless this node leads the metadata group.
    fn redirect<T>(&self) -> Option<Answer<T>> {
        match self.leader() {
            Some((l, _)) if l == self.id => None,
            Some((_, a)) => Some(Answer::NotLeader(Some(a))),
            None => Some(Answer::NotLeader(None)),
        }
    }

    /// Proposes on this node, if it leads.
    async fn propose_here(&self, cmd: MetaCmd) -> Result<Answer<MetaReply>, String> {
        let Some(raft) = self.raft() else {
            return Err("this node is not in a cluster".into());
        };
        // A leader that has not heard from a majority lately (a partition
        // isolated it) refuses before appending: an entry appended here
        // could still be committed after the partition heals, long after
        // its client was told it failed.
        {
            let m = raft.metrics().borrow_watched().clone();
            if m.current_leader == Some(self.id)
                && m.last_quorum_acked
                    .as_ref()
                    .is_none_or(|at| at.elapsed() > Duration::from_millis(QUORUM_STALE_MS))
            {
                return Err(no_majority());
            }
        }
        match glommio::timer::timeout(COMMIT_TIMEOUT, async { Ok(raft.client_write(cmd).await) }).await {
            Err(_) => Err(no_majority()),
            Ok(Ok(resp)) => Ok(Answer::Done(*resp.response())),
            Ok(Err(e)) => match e.forward_to_leader() {
                Some(f) => Ok(Answer::NotLeader(f.leader_node.as_ref().map(|n| n.addr.clone()))),
                None => Err(format!("the metadata store refused the change: {e}")),
            },
        }
    }

    /// The leader side of a join: seeds the cluster if this node is not in
    /// one yet, then adds `info` as a learner (it catches up) and makes it
    /// a voter.
    /// Answers the leader's last log index once the node is a voter: the
    /// joining node serves nothing before it has applied that far.
    async fn add_member(&self, id: NodeId, info: NodeInfo) -> Result<Answer<u64>, String> {
        if id == self.id || info.name == self.info.name {
            return Err("a node cannot join itself".into());
        }
        if self.id_of(&info.name).is_some_and(|other| other != id) {
            return Err(format!("another member is named {}", info.name));
        }
        if !self.is_member() {
            self.seed().await?;
        }
        let raft = self.raft().expect("a member");
        if let Some(r) = self.redirect() {
            return Ok(r);
        }
        log::info!("node {} joins the cluster (at {})", info.name, info.addr);
        let work = async {
            raft.add_learner(id, info.clone(), true)
                .await
                .map_err(|e| e.to_string())?;
            let r = raft
                .change_membership(openraft::ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(r.log_id().index())
        };
        match glommio::timer::timeout(JOIN_TIMEOUT, async { Ok(work.await) }).await {
            Ok(Ok(index)) => Ok(Answer::Done(index)),
            Ok(Err(e)) => Err(format!("cannot add {}: {e}", info.name)),
            Err(_) => Err(format!("cannot add {}: timed out", info.name)),
        }
    }

    /// Makes this node a one-member cluster whose log starts with its
    /// topology.
    async fn seed(&self) -> Result<(), String> {
        let deadline = Instant::now() + COMMIT_TIMEOUT;
        while !self.host.quiesce() {
            if Instant::now() >= deadline {
                self.host.leave_cluster();
                return Err("this node's control plane did not settle: try again".into());
            }
            glommio::timer::sleep(Duration::from_millis(5)).await;
        }
        let image = self.host.enter_cluster();
        let r = self.seed_with(image).await;
        match &r {
            Ok(()) => self.host.seeded(),
            Err(_) => {
                self.abandon().await;
                self.host.leave_cluster();
            }
        }
        r
    }

    async fn seed_with(&self, image: MetaImage) -> Result<(), String> {
        self.write_marker().map_err(|e| e.to_string())?;
        let raft = self.open_raft().await.map_err(|e| e.to_string())?;
        raft.initialize(BTreeMap::from([(self.id, self.info.clone())]))
            .await
            .map_err(|e| format!("cannot start the cluster: {e}"))?;
        let cmd = MetaCmd {
            origin: self.id,
            token: 0,
            base: 0,
            next_ids: image.next_ids,
            changes: image.changes,
        };
        let deadline = Instant::now() + COMMIT_TIMEOUT;
        loop {
            match self.propose_here(cmd.clone()).await? {
                Answer::Done(_) => break,
                Answer::NotLeader(_) if Instant::now() < deadline => {
                    glommio::timer::sleep(Duration::from_millis(20)).await;
                }
                Answer::NotLeader(_) => {
                    return Err("this node did not become the leader of its new cluster".into());
                }
            }
        }
        log::info!("node {} started a cluster", self.info.name);
        Ok(())
    }

    /// The joining side: asks `target` (a member's cluster address) to add
    /// this node. This node's data must have been reset before.
    pub async fn join(&self, target: &str, ram: bool) -> Result<(), String> {
        if self.is_member() {
            return Err(format!("{} is already a member of a cluster", self.info.name));
        }
        let mut info = self.info.clone();
        info.ram = ram;
        self.write_marker().map_err(|e| e.to_string())?;
        if let Err(e) = self.open_raft().await {
            let _ = std::fs::remove_file(self.dir.join("member"));
            return Err(e.to_string());
        }
        let body = postcard::to_stdvec(&(self.id, &info)).map_err(|e| e.to_string())?;
        let mut to = target.to_string();
        for _ in 0..10 {
            let answer: Answer<u64> = match self
                .transport
                .call(&to, KIND_JOIN, body.clone(), JOIN_TIMEOUT)
                .await
            {
                Ok(b) => postcard::from_bytes(&b).map_err(|e| e.to_string())?,
                Err(e) => return Err(format!("cannot reach {to}: {e}")),
            };
            match answer {
                Answer::Done(index) => {
                    // Joined: the cluster's metadata (users among it) is
                    // applied here before the app may start again.
                    if let Some(raft) = self.raft() {
                        let _ = raft
                            .wait(Some(JOIN_TIMEOUT))
                            .applied_index_at_least(Some(index), "joined")
                            .await;
                    }
                    return Ok(());
                }
                Answer::NotLeader(Some(a)) => to = a,
                Answer::NotLeader(None) => glommio::timer::sleep(Duration::from_millis(200)).await,
            }
        }
        Err("the cluster has no leader".into())
    }

    /// Removes `name` from the cluster (through the leader).
    pub async fn forget(&self, name: &str) -> Result<(), String> {
        let body = postcard::to_stdvec(&name.to_string()).map_err(|e| e.to_string())?;
        self.at_leader(KIND_FORGET, body, || self.remove_member(name))
            .await
    }

    /// Records this node as a RAM (or disc) node in the membership.
    pub async fn set_ram(&self, ram: bool) -> Result<(), String> {
        let mut info = self.info.clone();
        info.ram = ram;
        let body = postcard::to_stdvec(&(self.id, &info)).map_err(|e| e.to_string())?;
        self.at_leader(KIND_SET_NODE, body, || self.set_node(self.id, info.clone()))
            .await
    }

    /// Renames a member that is not running (`rename_cluster_node`): its
    /// id stays, so its place in every group and queue record does; the
    /// node must then be started under the new name, with its data.
    pub async fn rename(&self, old: &str, new: &str) -> Result<(), String> {
        let body = postcard::to_stdvec(&(old.to_string(), new.to_string())).map_err(|e| e.to_string())?;
        self.at_leader(KIND_RENAME, body, || self.rename_member(old, new))
            .await
    }

    async fn rename_member(&self, old: &str, new: &str) -> Result<Answer<()>, String> {
        if self.raft().is_none() {
            return Err("not_clustered: this node is not in a cluster".into());
        }
        if let Some(r) = self.redirect() {
            return Ok(r);
        }
        let Some(id) = self.id_of(old) else {
            return Err(format!(
                "not_a_cluster_node: {old} is not a member of the cluster"
            ));
        };
        if self.id_of(new).is_some() {
            return Err(format!("{new} is already a member of the cluster"));
        }
        let mut info = self.info_of(id).expect("a member");
        info.name = new.to_string();
        self.set_node(id, info).await
    }

    /// A member started under a new name, or reached at a new address,
    /// records it (through the leader), retrying until it holds: other
    /// nodes know members by the membership's names and addresses.
    pub async fn announce(&self) {
        loop {
            let Some(known) = self.raft().and_then(|raft| {
                let m = raft.metrics().borrow_watched().membership_config.clone();
                m.membership().get_node(&self.id).cloned()
            }) else {
                return;
            };
            if known.name == self.info.name && known.addr == self.info.addr {
                return;
            }
            let mut info = self.info.clone();
            info.ram = known.ram;
            log::info!(
                "this node was {} at {}: recording it as {} at {}",
                known.name,
                known.addr,
                info.name,
                info.addr
            );
            let body = postcard::to_stdvec(&(self.id, &info)).map_err(|e| e.to_string());
            let r = match body {
                Ok(body) => {
                    self.at_leader(KIND_SET_NODE, body, || self.set_node(self.id, info.clone()))
                        .await
                }
                Err(e) => Err(e),
            };
            match r {
                // Applied here a moment later.
                Ok(()) => glommio::timer::sleep(Duration::from_millis(200)).await,
                Err(e) => {
                    log::warn!("cannot record this node's new name or address yet: {e}");
                    glommio::timer::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    async fn set_node(&self, id: NodeId, info: NodeInfo) -> Result<Answer<()>, String> {
        let Some(raft) = self.raft() else {
            return Err("this node is not in a cluster".into());
        };
        if let Some(r) = self.redirect() {
            return Ok(r);
        }
        match glommio::timer::timeout(COMMIT_TIMEOUT, async {
            Ok(raft
                .change_membership(
                    openraft::ChangeMembers::SetNodes(BTreeMap::from([(id, info)])),
                    false,
                )
                .await)
        })
        .await
        {
            Ok(Ok(_)) => Ok(Answer::Done(())),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(no_majority()),
        }
    }

    async fn remove_member(&self, name: &str) -> Result<Answer<()>, String> {
        let Some(raft) = self.raft() else {
            return Err("this node is not in a cluster".into());
        };
        if let Some(r) = self.redirect() {
            return Ok(r);
        }
        let Some(id) = self.id_of(name) else {
            return Err(format!("{name} is not a member of the cluster"));
        };
        let m = raft.metrics().borrow_watched().membership_config.clone();
        if id == self.id {
            return Err(format!("{name} leads the cluster and is running: stop it first"));
        }
        let work = async {
            if m.membership().voter_ids().any(|v| v == id) {
                raft.change_membership(openraft::ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            raft.change_membership(openraft::ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(())
        };
        match glommio::timer::timeout(COMMIT_TIMEOUT, async { Ok(work.await) }).await {
            Ok(Ok(())) => Ok(Answer::Done(())),
            Ok(Err(e)) => Err(format!("cannot remove {name}: {e}")),
            Err(_) => Err(no_majority()),
        }
    }

    /// This node's status, as told to `asking` (a member, if known).
    fn status_here(&self, asking: Option<NodeId>) -> NodeStatus {
        NodeStatus {
            name: self.info.name.clone(),
            app_running: self.host.app_running(),
            clustered: self.is_member(),
            leader: self.leader().and_then(|(id, _)| self.name_of(id)),
            boot: self.boot,
            forgot_yours: asking.map_or(0, |n| self.host.forgot_consumers_of(n)),
            holds: self.host.holds(),
        }
    }

    fn name_of(&self, id: NodeId) -> Option<String> {
        let raft = self.raft()?;
        let m = raft.metrics().borrow_watched().membership_config.clone();
        m.membership().get_node(&id).map(|n| n.name.clone())
    }

    /// Asks a member how it is (None: unreachable).
    pub async fn status_of(&self, addr: &str) -> Option<NodeStatus> {
        let b = self
            .transport
            .call(addr, KIND_STATUS, Vec::new(), Duration::from_secs(1))
            .await
            .ok()?;
        serde_json::from_slice(&b).ok()
    }

    /// The cluster as this node sees it, for `cluster_status` and
    /// `/api/nodes`: every member with its type and whether it runs.
    pub async fn cluster_status(&self) -> serde_json::Value {
        let mut nodes = Vec::new();
        let leader = self.leader().and_then(|(id, _)| self.name_of(id));
        match self.raft() {
            None => nodes.push(serde_json::json!({
                "name": self.info.name, "type": "disc", "running": true,
                "app_running": self.host.app_running(), "voter": true,
            })),
            Some(raft) => {
                let m = raft.metrics().borrow_watched().membership_config.clone();
                let voters: BTreeSet<NodeId> = m.membership().voter_ids().collect();
                let members: Vec<(NodeId, NodeInfo)> =
                    m.membership().nodes().map(|(id, n)| (*id, n.clone())).collect();
                for (id, n) in members {
                    let (running, app) = if id == self.id {
                        (true, self.host.app_running())
                    } else {
                        match self.status_of(&n.addr).await {
                            Some(s) => (true, s.app_running),
                            None => (false, false),
                        }
                    };
                    nodes.push(serde_json::json!({
                        "name": n.name, "type": if n.ram { "ram" } else { "disc" },
                        "running": running, "app_running": app, "voter": voters.contains(&id),
                        "cluster_addr": n.addr,
                    }));
                }
            }
        }
        serde_json::json!({
            "node": self.info.name,
            "cluster_port": self.listen_addr.port(),
            "clustered": self.is_member(),
            "leader": leader,
            "nodes": nodes,
            "metadata_log": self.metadata_log(),
        })
    }

    /// This node's metadata log: the last entry applied, the last one a
    /// snapshot covers, and the last one dropped (indexes; null: none).
    pub fn metadata_log(&self) -> serde_json::Value {
        let Some(raft) = self.raft() else {
            return serde_json::Value::Null;
        };
        let m = raft.metrics().borrow_watched().clone();
        let index = |l: Option<&openraft::alias::LogIdOf<Meta>>| l.map(|l| l.index());
        serde_json::json!({
            "applied": index(m.last_applied.as_ref()),
            "snapshot": index(m.snapshot.as_ref()),
            "purged": index(m.purged.as_ref()),
        })
    }

    /// Leaves the cluster this node was entering (a failed seed or join):
    /// the metadata group stops and its files and the marker go.
    pub async fn abandon(&self) {
        let raft = self.raft.borrow_mut().take();
        if let Some(r) = raft {
            let _ = r.shutdown().await;
        }
        self.rpc.remove_group(META_GROUP);
        let _ = std::fs::remove_file(self.dir.join("member"));
        let _ = std::fs::remove_dir_all(self.dir.join("meta"));
    }

    /// Stops the metadata group and the cluster port.
    pub async fn shutdown(&self) {
        let raft = self.raft.borrow_mut().take();
        if let Some(r) = raft {
            let _ = r.shutdown().await;
        }
        self.rpc.remove_group(META_GROUP);
        self.transport.shutdown();
    }
}

fn no_majority() -> String {
    "timed out waiting for a majority of the cluster to accept the change (is a majority of the nodes reachable?)".into()
}
