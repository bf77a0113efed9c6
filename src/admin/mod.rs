//! The management plane's view of the broker: a thread-safe [`Admin`]
//! handle that gathers per-shard snapshots and sends control operations to
//! the shards. Used by the HTTP API and metrics, which run on their own
//! threads beside the shards; nothing here touches the data path (a shard
//! handles admin commands in its own task when woken, like any other work).

pub mod json;
mod snapshot;

pub use snapshot::*;

use crate::broker::request::Request;
use crate::protocol::AmqpError;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Figures every shard updates and anyone may read (management, tests).
/// Touched per connection or per control operation, never per message.
#[derive(Debug, Default)]
pub struct SharedStats {
    /// Open connections, per shard.
    pub connections: Vec<AtomicUsize>,
    /// Each shard's CPU use over the last second, in thousandths of a
    /// core (the queue balancer's input).
    pub shard_cpu: Vec<std::sync::atomic::AtomicU32>,
    /// Per shard: its park-window control leaves its round slots to the
    /// other shards (it is idle or lightly loaded; `shard::batching`).
    pub round_free: Vec<AtomicBool>,
    /// Allocated memory is above the high watermark: publishers are blocked.
    pub memory_alarm: AtomicBool,
    /// Free disk space is below the limit: publishers are blocked.
    pub disk_alarm: AtomicBool,
    /// Free bytes on the data dir's file system, as last measured.
    pub disk_free: std::sync::atomic::AtomicU64,
    /// The disk free limit now (settable at run time, as RabbitMQ's
    /// `set_disk_free_limit`).
    pub disk_free_limit: std::sync::atomic::AtomicU64,
    /// The broker application is stopped (`stop_app`, or a cluster member
    /// still catching up at start): client connections are refused.
    pub app_stopped: AtomicBool,
    /// `stop_app` asked for it (a member that catches up at start leaves
    /// the app stopped then).
    pub app_stopped_by_user: AtomicBool,
}

impl SharedStats {
    /// What blocks publishers now, as `connection.blocked` says it.
    pub fn alarm_reason(&self) -> Option<&'static str> {
        use std::sync::atomic::Ordering::Relaxed;
        match (self.memory_alarm.load(Relaxed), self.disk_alarm.load(Relaxed)) {
            (false, false) => None,
            (true, false) => Some("low on memory"),
            (false, true) => Some("low on disk"),
            (true, true) => Some("low on memory and disk"),
        }
    }
}

/// How long an admin call waits for the shards before giving up.
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// A management operation on the topology, run by the control plane.
#[derive(Debug, Clone)]
pub enum AdminOp {
    /// An AMQP-equivalent request (declare, delete, bind, unbind, purge)
    /// in a vhost, checked against the user's permissions.
    Amqp {
        vhost: String,
        req: Request,
    },
    AddVhost {
        name: String,
    },
    DeleteVhost {
        name: String,
    },
    /// Creates or replaces a user. `password_hash` as RabbitMQ stores it.
    PutUser {
        name: String,
        password_hash: Vec<u8>,
        tags: Vec<String>,
    },
    DeleteUser {
        name: String,
    },
    SetPermissions {
        user: String,
        vhost: String,
        configure: String,
        write: String,
        read: String,
    },
    ClearPermissions {
        user: String,
        vhost: String,
    },
    /// Creates or replaces a policy (RabbitMQ's `set_policy`).
    SetPolicy {
        vhost: String,
        name: String,
        pattern: String,
        /// "queues", "exchanges" or "all".
        apply_to: String,
        priority: i64,
        definition: crate::protocol::FieldTable,
    },
    ClearPolicy {
        vhost: String,
        name: String,
    },
    /// Changes a vhost's limits (names and values validated before).
    VhostLimits {
        vhost: String,
        op: LimitsOp,
    },
    /// Changes a user's limits (names and values validated before).
    UserLimits {
        user: String,
        op: LimitsOp,
    },
    /// Adds cluster member `node` (its Raft id) to quorum queues' replicas
    /// (`rabbitmq-queues grow`: every queue without it, or with `even`
    /// those with an even number of replicas), or takes it out of them
    /// (`shrink`, and `forget_cluster_node`). A queue's group changes
    /// whole: all its queues have the same replicas.
    QuorumReplicas {
        node: u64,
        grow: bool,
        even: bool,
    },
    /// Moves a classic queue to another shard of this node (warren's own:
    /// RabbitMQ has no shards).
    MoveQueue {
        vhost: String,
        name: String,
        shard: crate::ids::ShardId,
    },
}

/// What a change of limits does, as RabbitMQ's commands and API do it.
#[derive(Debug, Clone, PartialEq)]
pub enum LimitsOp {
    /// Replaces them all (`set_vhost_limits`, the `vhost-limits` parameter).
    Set(crate::broker::limits::Limits),
    /// Sets these over the others (`set_user_limits`, a PUT of one limit).
    Merge(crate::broker::limits::Limits),
    /// Removes one (a DELETE of one limit, `clear_user_limits U NAME`).
    Remove(String),
    /// Removes them all (`clear_vhost_limits`, `clear_user_limits U all`);
    /// a vhost without limits refuses (RabbitMQ's "Parameter does not
    /// exist").
    Clear,
}

/// What `/api/queues/…/get` does with the messages it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GetMode {
    /// Read, then put back (RabbitMQ's `ack_requeue_true`).
    Requeue,
    /// Read and remove (`ack_requeue_false`, `reject_requeue_false`).
    Remove,
}

/// A queue operation from the management plane.
#[derive(Debug, Clone)]
pub enum QueueAction {
    Purge,
    Get { count: u32, mode: GetMode },
}

/// A message read by [`Admin::get`], as the management API shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PeekedMessage {
    pub payload: Vec<u8>,
    pub payload_bytes: usize,
    pub redelivered: bool,
    pub exchange: String,
    pub routing_key: String,
    /// Messages left in the queue after this one.
    pub message_count: u32,
    pub properties: serde_json::Value,
}

/// The answer to a [`QueueAction`].
#[derive(Debug, Clone)]
pub enum QueueResult {
    Purged(u32),
    Messages(Vec<PeekedMessage>),
}

/// A command for one shard.
pub enum AdminCmd {
    /// Shard 0 resolves the queue and forwards to its owner.
    Queue {
        user: String,
        vhost: String,
        queue: String,
        action: QueueAction,
        reply: SyncSender<Result<QueueResult, AmqpError>>,
    },
    /// Publish as `user` (routed on the receiving shard); answers whether
    /// the message reached a queue.
    Publish {
        user: String,
        vhost: String,
        exchange: String,
        routing_key: String,
        properties: Box<crate::protocol::BasicProperties>,
        payload: Vec<u8>,
        reply: SyncSender<Result<bool, AmqpError>>,
    },
    Snapshot(SyncSender<ShardSnapshot>),
    /// Shard 0 only: the users and their permissions (to authenticate a
    /// management request before any other work).
    Users(SyncSender<(Vec<UserInfo>, Vec<PermissionInfo>)>),
    /// Close a connection (by its name) with 320 CONNECTION_FORCED.
    CloseConnection {
        name: String,
        reason: String,
        reply: SyncSender<bool>,
    },
    /// Shard 0 only: a topology change as `user` (permissions checked).
    Control {
        user: String,
        op: AdminOp,
        reply: SyncSender<Result<(), AmqpError>>,
    },
    /// Close every client connection with 320 CONNECTION_FORCED and this
    /// text (`stop_app`); answers how many were closed.
    CloseAll {
        text: String,
        reply: SyncSender<usize>,
    },
    /// Shard 0 only: membership and the application's state.
    Cluster {
        cmd: ClusterCmd,
        reply: SyncSender<Result<serde_json::Value, String>>,
    },
}

/// What `warrenctl`'s clustering commands ask of a node (rabbitmqctl's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterCmd {
    /// Members, their types, which run, the leader (JSON).
    Status,
    /// Join the cluster `node` belongs to (this node's app must be stopped;
    /// its own data is reset). `addr`: where `node`'s cluster port is, when
    /// not its host on the default port.
    Join {
        node: String,
        addr: Option<String>,
        ram: bool,
    },
    /// Remove `node` (which must not be running) from the cluster.
    Forget { node: String },
    /// Record this node as a disc or RAM node.
    ChangeType { ram: bool },
    /// Rename members (old name, new name) that are not running.
    Rename { pairs: Vec<(String, String)> },
    /// The figures of the queues other nodes serve, asked of them (a JSON
    /// array of [`QueueFigures`]).
    QueueFigures,
    /// `rabbitmq-queues grow NODE all|even` (`grow`) or `shrink NODE`: a
    /// JSON array of the queues changed, each with its new size and
    /// result.
    Replicas { node: String, grow: bool, even: bool },
}

/// One shard's admin mailbox. The shard drains it when woken (the
/// runtime supplies the wake-up: a byte on a socket its admin task awaits).
pub struct Mailbox {
    queue: Mutex<VecDeque<AdminCmd>>,
    wake: Box<dyn Fn() + Send + Sync>,
}

impl Mailbox {
    pub fn new(wake: impl Fn() + Send + Sync + 'static) -> Self {
        Mailbox {
            queue: Mutex::new(VecDeque::new()),
            wake: Box::new(wake),
        }
    }

    fn post(&self, cmd: AdminCmd) {
        self.queue.lock().expect("admin mailbox").push_back(cmd);
        (self.wake)();
    }

    /// Takes every pending command (called by the shard).
    pub fn drain(&self) -> Vec<AdminCmd> {
        self.queue.lock().expect("admin mailbox").drain(..).collect()
    }
}

/// A handle on a running broker for management. Cheap to clone; `Send`.
#[derive(Clone)]
pub struct Admin {
    mailboxes: Arc<Vec<Mailbox>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    /// The data dir (for display; never written through this handle).
    pub data_dir: std::path::PathBuf,
    pub amqp_addr: std::net::SocketAddr,
    /// The AMQPS listener, when TLS is on.
    pub amqps_addr: Option<std::net::SocketAddr>,
    pub started: std::time::SystemTime,
    /// Connection counts and the memory alarm, kept by the shards.
    pub stats: Arc<SharedStats>,
    /// The broker's configuration (read-only).
    pub config: Arc<crate::config::Config>,
    /// Snapshots taken (each asks every shard).
    snapshots: Arc<std::sync::atomic::AtomicU64>,
}

/// Every shard's snapshot of this node (no other node is asked).
pub fn gather(mailboxes: &[Mailbox]) -> Result<Vec<ShardSnapshot>, String> {
    let mut rxs = Vec::new();
    for m in mailboxes {
        let (tx, rx) = sync_channel(1);
        m.post(AdminCmd::Snapshot(tx));
        rxs.push(rx);
    }
    let mut parts = Vec::new();
    for rx in rxs {
        parts.push(wait(rx).ok_or("a shard did not answer in time")?);
    }
    Ok(parts)
}

fn wait<T>(rx: Receiver<T>) -> Option<T> {
    rx.recv_timeout(ADMIN_TIMEOUT).ok()
}

impl Admin {
    pub fn new(
        mailboxes: Vec<Mailbox>,
        amqp_addr: std::net::SocketAddr,
        stop: Arc<std::sync::atomic::AtomicBool>,
        stats: Arc<SharedStats>,
        config: Arc<crate::config::Config>,
        started: std::time::SystemTime,
    ) -> Self {
        Admin {
            mailboxes: Arc::new(mailboxes),
            stop,
            data_dir: config.data_dir.clone(),
            amqp_addr,
            amqps_addr: None,
            started,
            stats,
            config,
            snapshots: Default::default(),
        }
    }

    /// Asks the broker to stop (clients get 320 CONNECTION_FORCED).
    pub fn stop(&self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Idle shards sleep; wake them to see it.
        for m in self.mailboxes.iter() {
            (m.wake)();
        }
    }

    /// True once the broker has been asked to stop.
    pub fn stopping(&self) -> bool {
        self.stop.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn mailboxes(&self) -> Arc<Vec<Mailbox>> {
        self.mailboxes.clone()
    }

    pub fn shards(&self) -> usize {
        self.mailboxes.len()
    }

    /// The whole broker's state, gathered from every shard. Counts are as
    /// of when each shard answered (shards answer independently).
    /// Queues served by other nodes of a cluster show the figures those
    /// nodes give (asked at once; a node that does not answer leaves its
    /// queues' figures at 0).
    pub fn snapshot(&self) -> Result<BrokerSnapshot, String> {
        self.snapshots.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut b = BrokerSnapshot::merge(gather(&self.mailboxes)?, self.started);
        if b.queues.iter().any(|q| q.home.is_some())
            && let Ok(v) = self.cluster(ClusterCmd::QueueFigures)
            && let Ok(figures) = serde_json::from_value::<Vec<QueueFigures>>(v)
        {
            b.fill_remote(&figures);
        }
        Ok(b)
    }

    /// Stops the broker application (`stop_app`): new connections are
    /// refused and every client connection is closed; the node stays up
    /// (management, the cluster port). Returns the connections closed.
    pub fn stop_app(&self) -> Result<usize, String> {
        self.stats
            .app_stopped_by_user
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.stats
            .app_stopped
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let mut rxs = Vec::new();
        for m in self.mailboxes.iter() {
            let (tx, rx) = sync_channel(1);
            m.post(AdminCmd::CloseAll {
                text: "broker forced connection closure with reason 'shutdown'".into(),
                reply: tx,
            });
            rxs.push(rx);
        }
        let mut closed = 0;
        for rx in rxs {
            closed += wait(rx).ok_or("a shard did not answer in time")?;
        }
        Ok(closed)
    }

    /// Starts the broker application again (`start_app`).
    pub fn start_app(&self) {
        self.stats
            .app_stopped_by_user
            .store(false, std::sync::atomic::Ordering::SeqCst);
        self.stats
            .app_stopped
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether the broker application runs (accepts clients).
    pub fn app_running(&self) -> bool {
        !self.stats.app_stopped.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// A clustering command, run by shard 0 (a join can take a while: the
    /// cluster copies its metadata to the new node first).
    pub fn cluster(&self, cmd: ClusterCmd) -> Result<serde_json::Value, String> {
        let (tx, rx) = sync_channel(1);
        self.mailboxes[0].post(AdminCmd::Cluster { cmd, reply: tx });
        rx.recv_timeout(Duration::from_secs(60))
            .map_err(|_| "the node did not answer in time".to_string())?
    }

    /// Changes the disk free limit (RabbitMQ's `set_disk_free_limit`).
    pub fn set_disk_free_limit(&self, bytes: u64) {
        self.stats
            .disk_free_limit
            .store(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    /// How many snapshots were taken so far.
    pub fn snapshots_taken(&self) -> u64 {
        self.snapshots.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The users and their permissions, from shard 0's replica only.
    pub fn users(&self) -> Result<(Vec<UserInfo>, Vec<PermissionInfo>), String> {
        let (tx, rx) = sync_channel(1);
        self.mailboxes[0].post(AdminCmd::Users(tx));
        wait(rx).ok_or_else(|| "shard 0 did not answer in time".to_string())
    }

    /// Runs a topology operation as `user`.
    pub fn control(&self, user: &str, op: AdminOp) -> Result<(), AmqpError> {
        let (tx, rx) = sync_channel(1);
        self.mailboxes[0].post(AdminCmd::Control {
            user: user.to_string(),
            op,
            reply: tx,
        });
        wait(rx).unwrap_or_else(|| Err(AmqpError::internal("the control plane did not answer in time")))
    }

    /// Purges a queue as `user` (read permission); returns the count.
    pub fn purge(&self, user: &str, vhost: &str, queue: &str) -> Result<u32, AmqpError> {
        match self.queue_action(user, vhost, queue, QueueAction::Purge)? {
            QueueResult::Purged(n) => Ok(n),
            QueueResult::Messages(_) => Err(AmqpError::internal("unexpected answer")),
        }
    }

    /// Reads up to `count` messages from a queue as `user`.
    pub fn get(
        &self,
        user: &str,
        vhost: &str,
        queue: &str,
        count: u32,
        mode: GetMode,
    ) -> Result<Vec<PeekedMessage>, AmqpError> {
        match self.queue_action(user, vhost, queue, QueueAction::Get { count, mode })? {
            QueueResult::Messages(m) => Ok(m),
            QueueResult::Purged(_) => Err(AmqpError::internal("unexpected answer")),
        }
    }

    fn queue_action(
        &self,
        user: &str,
        vhost: &str,
        queue: &str,
        action: QueueAction,
    ) -> Result<QueueResult, AmqpError> {
        let (tx, rx) = sync_channel(1);
        self.mailboxes[0].post(AdminCmd::Queue {
            user: user.to_string(),
            vhost: vhost.to_string(),
            queue: queue.to_string(),
            action,
            reply: tx,
        });
        wait(rx).unwrap_or_else(|| Err(AmqpError::internal("the queue's shard did not answer in time")))
    }

    /// Publishes a message as `user`; returns whether it was routed.
    pub fn publish(
        &self,
        user: &str,
        vhost: &str,
        exchange: &str,
        routing_key: &str,
        properties: crate::protocol::BasicProperties,
        payload: Vec<u8>,
    ) -> Result<bool, AmqpError> {
        let (tx, rx) = sync_channel(1);
        self.mailboxes[0].post(AdminCmd::Publish {
            user: user.to_string(),
            vhost: vhost.to_string(),
            exchange: exchange.to_string(),
            routing_key: routing_key.to_string(),
            properties: Box::new(properties),
            payload,
            reply: tx,
        });
        wait(rx).unwrap_or_else(|| Err(AmqpError::internal("the shard did not answer in time")))
    }

    /// Closes the named connection; false if no shard has it.
    pub fn close_connection(&self, name: &str, reason: &str) -> bool {
        let mut rxs = Vec::new();
        for m in self.mailboxes.iter() {
            let (tx, rx) = sync_channel(1);
            m.post(AdminCmd::CloseConnection {
                name: name.to_string(),
                reason: reason.to_string(),
                reply: tx,
            });
            rxs.push(rx);
        }
        let mut found = false;
        for rx in rxs {
            found |= wait(rx).unwrap_or(false);
        }
        found
    }
}
