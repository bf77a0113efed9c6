//! What the management plane sees of the broker, per shard and merged.

use serde::Serialize;
use serde_json::Value;

#[derive(Debug, Clone, Serialize)]
pub struct VhostInfo {
    pub name: String,
    /// The vhost's limits parameter, if set (possibly empty).
    pub limits: Option<std::collections::BTreeMap<String, i64>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct UserInfo {
    pub name: String,
    /// Base64 of salt ‖ SHA-256(salt ‖ password), as RabbitMQ exports it.
    pub password_hash: String,
    pub hashing_algorithm: &'static str,
    pub tags: Vec<String>,
    pub limits: std::collections::BTreeMap<String, i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PermissionInfo {
    pub user: String,
    pub vhost: String,
    pub configure: String,
    pub write: String,
    pub read: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PolicyInfo {
    pub vhost: String,
    pub name: String,
    pub pattern: String,
    #[serde(rename = "apply-to")]
    pub apply_to: String,
    pub priority: i64,
    pub definition: Value,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExchangeInfo {
    pub vhost: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: Value,
}

#[derive(Debug, Clone, Serialize)]
pub struct BindingInfo {
    pub vhost: String,
    pub source: String,
    pub destination: String,
    /// "queue" or "exchange".
    pub destination_type: &'static str,
    pub routing_key: String,
    pub arguments: Value,
}

/// Counters of a queue since it was declared (or the broker started).
#[derive(Debug, Clone, Copy, Default, Serialize, serde::Deserialize)]
pub struct QueueCounters {
    pub published: u64,
    pub delivered: u64,
    pub acked: u64,
    pub redelivered: u64,
    pub get: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct QueueInfo {
    pub vhost: String,
    pub name: String,
    pub durable: bool,
    pub auto_delete: bool,
    pub exclusive: bool,
    /// Name of the owning connection of an exclusive queue.
    pub owner: Option<String>,
    pub arguments: Value,
    /// The shard that owns the queue.
    pub shard: u16,
    pub messages_ready: u64,
    pub messages_unacknowledged: u64,
    pub message_bytes_ready: u64,
    pub message_bytes_unacknowledged: u64,
    pub consumers: u64,
    /// Segment files on disk (durable queues).
    pub disk_bytes: u64,
    pub counters: QueueCounters,
    /// A quorum queue's replication: its leader and members (node names).
    pub quorum: Option<QuorumInfo>,
    /// The node that serves the queue (its home, or a quorum queue's
    /// leader) when it is another one; its figures are asked of it
    /// ([`QueueFigures`]).
    pub home: Option<String>,
}

/// A queue's figures as its own node reports them to the others.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct QueueFigures {
    pub vhost: String,
    pub name: String,
    pub messages_ready: u64,
    pub messages_unacknowledged: u64,
    pub message_bytes_ready: u64,
    pub message_bytes_unacknowledged: u64,
    pub consumers: u64,
    pub disk_bytes: u64,
    pub counters: QueueCounters,
}

impl QueueFigures {
    pub fn of(q: &QueueInfo) -> QueueFigures {
        QueueFigures {
            vhost: q.vhost.clone(),
            name: q.name.clone(),
            messages_ready: q.messages_ready,
            messages_unacknowledged: q.messages_unacknowledged,
            message_bytes_ready: q.message_bytes_ready,
            message_bytes_unacknowledged: q.message_bytes_unacknowledged,
            consumers: q.consumers,
            disk_bytes: q.disk_bytes,
            counters: q.counters,
        }
    }

    /// Shows these figures in the queue's row.
    pub fn fill(&self, q: &mut QueueInfo) {
        q.messages_ready = self.messages_ready;
        q.messages_unacknowledged = self.messages_unacknowledged;
        q.message_bytes_ready = self.message_bytes_ready;
        q.message_bytes_unacknowledged = self.message_bytes_unacknowledged;
        q.consumers = self.consumers;
        q.disk_bytes = self.disk_bytes;
        q.counters = self.counters;
    }
}

/// What the management plane shows of a quorum queue.
#[derive(Debug, Clone, Default, Serialize)]
pub struct QuorumInfo {
    pub leader: Option<String>,
    pub members: Vec<String>,
    /// Members this node can reach now.
    pub online: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConsumerInfo {
    pub vhost: String,
    pub queue: String,
    pub consumer_tag: String,
    pub connection: String,
    pub channel: u16,
    pub ack_required: bool,
    pub exclusive: bool,
    pub prefetch_count: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChannelInfo {
    pub connection: String,
    pub number: u16,
    pub user: String,
    pub vhost: String,
    pub prefetch_count: u32,
    pub global_prefetch_count: u32,
    pub messages_unacknowledged: u64,
    pub confirm: bool,
    pub transactional: bool,
    pub consumer_count: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConnectionInfo {
    /// As RabbitMQ names it: "peer:port -> local:port".
    pub name: String,
    pub shard: u16,
    pub peer_host: String,
    pub peer_port: u16,
    /// The broker's end of the connection.
    pub host: String,
    pub port: u16,
    pub user: String,
    pub vhost: String,
    /// handshake, running, closing.
    pub state: &'static str,
    pub channels: u64,
    pub connected_at_ms: u64,
    pub frame_max: u32,
    pub heartbeat: u16,
    pub client_properties: Value,
    pub recv_oct: u64,
    pub send_oct: u64,
    pub published: u64,
    pub delivered: u64,
    pub confirmed: u64,
    /// "PLAIN", "AMQPLAIN" or "EXTERNAL" ("" before login).
    pub auth_mechanism: &'static str,
    pub tls: Option<crate::tls::Peer>,
}

/// Figures of one shard (warren's own, beside RabbitMQ's).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ShardStats {
    pub shard: u16,
    /// Messages routed by this shard's connections.
    pub routed: u64,
    /// Items waiting in this shard's outboxes to other shards.
    pub outbox_items: u64,
    /// Items this shard sent to other shards (cross-shard hops), and the
    /// ring pushes that carried them.
    pub ring_items: u64,
    pub ring_batches: u64,
    /// Connections this shard handed over to the shard of their queue.
    pub handoffs: u64,
    /// Direct replies dropped by the shard's connections (their client
    /// was not reading).
    pub replies_dropped: u64,
    /// Times the shard's thread went to sleep and was woken (voluntary
    /// context switches), and was preempted (involuntary).
    pub wakeups: u64,
    pub preemptions: u64,
    /// 1 while this shard's parks batch their wake-ups (`--park-batch-us`).
    pub park_batching: u64,
    /// How long the shard's parks may hold their wake-up now, µs (chosen
    /// by the control among off and fractions of `--park-batch-us`).
    pub park_window_us: u64,
    pub fsyncs: u64,
    /// Files covered by fsyncs, summed (divide by `fsyncs` for the mean batch).
    pub fsync_files: u64,
    /// Confirms and barriers released by fsyncs, summed.
    pub fsync_waiters: u64,
    /// fsync latency percentiles, microseconds: p50, p99, max.
    pub fsync_latency_us: [u64; 3],
    /// Cumulative fsync counts at [`FSYNC_BUCKETS_US`] (Prometheus buckets).
    pub fsync_latency_buckets: Vec<u64>,
    /// Sum of fsync latencies, microseconds.
    pub fsync_latency_sum_us: u64,
}

/// Upper bounds, in microseconds, of the fsync latency histogram's buckets.
pub const FSYNC_BUCKETS_US: [u64; 12] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 100_000, 1_000_000, 10_000_000,
];

/// One shard's answer to a snapshot request.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ShardSnapshot {
    pub shard: u16,
    pub queues: Vec<QueueInfo>,
    pub connections: Vec<ConnectionInfo>,
    pub channels: Vec<ChannelInfo>,
    pub consumers: Vec<ConsumerInfo>,
    pub stats: ShardStats,
    /// The topology (shard 0's answer carries it; others leave it empty).
    pub vhosts: Vec<VhostInfo>,
    pub users: Vec<UserInfo>,
    pub permissions: Vec<PermissionInfo>,
    pub policies: Vec<PolicyInfo>,
    pub exchanges: Vec<ExchangeInfo>,
    pub bindings: Vec<BindingInfo>,
}

/// The whole broker.
#[derive(Debug, Clone, Serialize)]
pub struct BrokerSnapshot {
    pub version: &'static str,
    pub started_ms: u64,
    pub shards: Vec<ShardStats>,
    pub vhosts: Vec<VhostInfo>,
    pub users: Vec<UserInfo>,
    pub permissions: Vec<PermissionInfo>,
    pub policies: Vec<PolicyInfo>,
    pub exchanges: Vec<ExchangeInfo>,
    pub bindings: Vec<BindingInfo>,
    pub queues: Vec<QueueInfo>,
    pub connections: Vec<ConnectionInfo>,
    pub channels: Vec<ChannelInfo>,
    pub consumers: Vec<ConsumerInfo>,
}

impl QueueCounters {
    pub fn add(&mut self, o: &QueueCounters) {
        self.published += o.published;
        self.delivered += o.delivered;
        self.acked += o.acked;
        self.redelivered += o.redelivered;
        self.get += o.get;
    }
}

impl BrokerSnapshot {
    pub fn merge(parts: Vec<ShardSnapshot>, started: std::time::SystemTime) -> BrokerSnapshot {
        let mut b = BrokerSnapshot {
            version: env!("CARGO_PKG_VERSION"),
            started_ms: started
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            shards: Vec::new(),
            vhosts: Vec::new(),
            users: Vec::new(),
            permissions: Vec::new(),
            policies: Vec::new(),
            exchanges: Vec::new(),
            bindings: Vec::new(),
            queues: Vec::new(),
            connections: Vec::new(),
            channels: Vec::new(),
            consumers: Vec::new(),
        };
        for p in parts {
            b.shards.push(p.stats);
            b.vhosts.extend(p.vhosts);
            b.users.extend(p.users);
            b.permissions.extend(p.permissions);
            b.policies.extend(p.policies);
            b.exchanges.extend(p.exchanges);
            b.bindings.extend(p.bindings);
            b.queues.extend(p.queues);
            b.connections.extend(p.connections);
            b.channels.extend(p.channels);
            b.consumers.extend(p.consumers);
        }
        b.vhosts.sort_by(|a, c| a.name.cmp(&c.name));
        b.users.sort_by(|a, c| a.name.cmp(&c.name));
        b.permissions
            .sort_by(|a, c| (&a.user, &a.vhost).cmp(&(&c.user, &c.vhost)));
        b.policies
            .sort_by(|a, c| (&a.vhost, &a.name).cmp(&(&c.vhost, &c.name)));
        b.exchanges
            .sort_by(|a, c| (&a.vhost, &a.name).cmp(&(&c.vhost, &c.name)));
        b.queues
            .sort_by(|a, c| (&a.vhost, &a.name).cmp(&(&c.vhost, &c.name)));
        b.connections.sort_by(|a, c| a.name.cmp(&c.name));
        b
    }

    pub fn queue(&self, vhost: &str, name: &str) -> Option<&QueueInfo> {
        self.queues.iter().find(|q| q.vhost == vhost && q.name == name)
    }

    /// Shows the figures other nodes gave for the queues they serve.
    pub fn fill_remote(&mut self, figures: &[QueueFigures]) {
        let by_name: std::collections::HashMap<(&str, &str), &QueueFigures> = figures
            .iter()
            .map(|f| ((f.vhost.as_str(), f.name.as_str()), f))
            .collect();
        for q in self.queues.iter_mut().filter(|q| q.home.is_some()) {
            if let Some(f) = by_name.get(&(q.vhost.as_str(), q.name.as_str())) {
                f.fill(q);
            }
        }
    }
}
