//! Every limit and tunable in one place, with defaults that match RabbitMQ's
//! where a client would notice.

use std::net::{IpAddr, Ipv6Addr};
use std::path::PathBuf;
use std::time::Duration;

/// Broker configuration. Built once at start and shared read-only by every shard.
#[derive(Debug, Clone)]
pub struct Config {
    /// AMQP listening address; port 0 picks an ephemeral port (tests).
    pub bind: IpAddr,
    pub port: u16,
    /// Number of shards (pinned executors). 0 = one per available core.
    pub shards: usize,
    pub data_dir: PathBuf,
    pub limits: Limits,
    /// Default vhost and user created on first start, as RabbitMQ does.
    pub default_vhost: String,
    pub default_user: String,
    pub default_pass: String,
    /// Users that may only connect from the local machine (RabbitMQ's
    /// `loopback_users`, `guest` by default).
    pub loopback_users: Vec<String>,
    /// Move a connection that is about to consume from (or publish only
    /// to) queues of one other shard to that shard, at a quiet point, so
    /// its messages do not cross shards.
    pub connection_handoff: bool,
    /// End the process (abort) when a shard's thread panics, instead of
    /// running on without the shard: its connections and queues would be
    /// gone while the others still take clients. Off by default (an
    /// embedding decides); the `warren` binary sets it, for a supervisor to
    /// restart the node (what was confirmed is on disk or in its quorum
    /// queues' logs), and so do the tests' brokers, to fail at once.
    pub abort_on_shard_panic: bool,
    /// Which shard a new classic queue goes to (see [`QueueLocator`]).
    pub queue_locator: QueueLocator,
    /// The longest a shard that goes to sleep may hold its wake-up to
    /// collect more events (socket input, other shards' items, disk
    /// completions) into one batch; an event later than the window after
    /// the shard slept wakes it at once. Each shard measures which window
    /// pays under its load and runs on it: none, a third or all of
    /// this (see `shard::batching`). Zero turns batching off: every first
    /// event wakes the shard. Needs Linux 6.12+.
    pub park_batching: Duration,
    /// AMQPS: a second listener that speaks AMQP inside TLS.
    pub tls: Option<TlsListener>,
    /// This node's name and cluster port (used once it is in a cluster).
    pub cluster: ClusterConfig,
}

/// Which shard of this node a new classic queue lives on; named after
/// RabbitMQ's `queue_leader_locator`, which chooses among nodes the same
/// way. A queue's `x-queue-master-locator: client-local` argument keeps it
/// with its declarer either way; exclusive queues always stay there.
///
/// `ClientLocal` is the default because spreading does not pay below
/// saturation: measured with lapin (perf/clients, README), two half-busy
/// shards cost 1.6-2.5x the CPU per message of one busy shard (each wakes
/// as often as one busy shard does), and a fanout over queues on both
/// shards crosses for every message. Spreading pays once one shard is
/// saturated, which `Balanced` makes predictable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueLocator {
    /// The shard of the connection that declares it.
    ClientLocal,
    /// The shard holding fewest queues (the declarer's among equals); the
    /// connections that use it then move there (needs connection hand-off,
    /// without which this acts as `ClientLocal`).
    Balanced,
    /// By load (see `hub::balance`): the lowest shard with CPU to spare,
    /// and queues move off a shard that stays busy while another idles.
    /// Needs connection hand-off (without it: `ClientLocal`).
    Packed,
}

impl std::str::FromStr for QueueLocator {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "client-local" => Ok(QueueLocator::ClientLocal),
            "balanced" => Ok(QueueLocator::Balanced),
            "packed" => Ok(QueueLocator::Packed),
            _ => Err(format!("'{s}': expected packed, client-local or balanced")),
        }
    }
}

/// How this node is known to, and talks with, the other nodes of a cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// `warren@host` (RabbitMQ's `rabbit@host`); `--node-name`.
    pub node_name: String,
    /// Where the cluster port listens; port 0 (the library's default)
    /// picks an ephemeral port. The `warren` binary's default is 25672,
    /// RabbitMQ's distribution port.
    pub bind: IpAddr,
    pub port: u16,
    /// The address other nodes reach this one at (`host:port`); by default
    /// the node name's host and the cluster port.
    pub advertise: Option<String>,
    /// The shared secret (`--cluster-secret`); `None`: the cookie file
    /// `cluster.cookie` in the data dir, created on first use.
    pub secret: Option<String>,
    /// The node's Raft id: set at start from the data dir (`node-id`,
    /// written on first start from the name then), so it survives a
    /// rename. 0: derived from `node_name`.
    pub id: u64,
    /// Metadata entries applied since the last snapshot that make the next
    /// one; the log a snapshot covers is then dropped, but for the last
    /// [`METADATA_LOG_KEPT`] entries.
    pub metadata_snapshot_every: u64,
}

/// Metadata log entries kept behind a snapshot: a follower that lags less
/// catches up from the log, not from a whole snapshot.
pub const METADATA_LOG_KEPT: u64 = 1_000;

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            node_name: format!("warren@{}", hostname()),
            bind: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            port: 0,
            advertise: None,
            secret: None,
            id: 0,
            metadata_snapshot_every: 10_000,
        }
    }
}

impl ClusterConfig {
    /// The node's Raft id (see [`ClusterConfig::id`]).
    pub fn node_id(&self) -> u64 {
        if self.id != 0 {
            self.id
        } else {
            crate::ids::node_id(&self.node_name)
        }
    }

    /// The host part of the node name.
    pub fn host(&self) -> &str {
        self.node_name.split_once('@').map_or("localhost", |(_, h)| h)
    }
}

/// This machine's short host name, as Erlang's default node names use it.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let name = if rc == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        "localhost".to_string()
    };
    name.split('.').next().unwrap_or("localhost").to_string()
}

/// Where AMQPS listens and with what.
#[derive(Debug, Clone)]
pub struct TlsListener {
    /// RabbitMQ's `listeners.ssl.default` is 5671; 0 picks an ephemeral port.
    pub port: u16,
    pub options: TlsOptions,
}

/// Certificates and client-certificate rules, as RabbitMQ's `ssl_options`.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// PEM certificate chain, the server's own certificate first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA certificates that client certificates are verified against.
    pub ca: Option<PathBuf>,
    /// Ask clients for a certificate and verify it (`verify_peer`); needs `ca`.
    pub verify_peer: bool,
    /// Refuse clients without a certificate (`fail_if_no_peer_cert`).
    pub fail_if_no_peer_cert: bool,
    /// Which part of a client certificate names the user for the
    /// EXTERNAL mechanism (RabbitMQ's `ssl_cert_login_from`).
    pub cert_login_from: CertLogin,
}

/// RabbitMQ's `ssl_cert_login_from`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CertLogin {
    /// The whole subject, as RabbitMQ formats it ("CN=alice,O=example").
    #[default]
    DistinguishedName,
    /// The subject's common name only.
    CommonName,
}

/// See `Config::park_batching`: measured in `perf/clients` (README).
pub const DEFAULT_PARK_BATCHING: Duration = Duration::from_micros(1000);

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            port: 5672,
            shards: 0,
            data_dir: PathBuf::from("./warren-data"),
            limits: Limits::default(),
            default_vhost: "/".into(),
            default_user: "guest".into(),
            default_pass: "guest".into(),
            loopback_users: vec!["guest".into()],
            connection_handoff: true,
            abort_on_shard_panic: false,
            queue_locator: QueueLocator::Packed,
            park_batching: DEFAULT_PARK_BATCHING,
            tls: None,
            cluster: ClusterConfig::default(),
        }
    }
}

/// Protocol and resource limits. Every buffer, queue and channel in warren is
/// bounded by one of these.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest frame we accept and offer in `connection.tune` (RabbitMQ: 131072).
    pub frame_max: u32,
    /// Channels per connection offered in `connection.tune` (RabbitMQ: 2047).
    pub channel_max: u16,
    /// Heartbeat interval offered in `connection.tune` (RabbitMQ: 60 s).
    pub heartbeat: Duration,
    /// Largest message body accepted (RabbitMQ 3.x default: 128 MiB).
    pub max_message_size: u64,
    /// Time allowed from TCP accept to `connection.open` (RabbitMQ: 10 s).
    pub handshake_timeout: Duration,
    /// Bytes of unprocessed input a connection may hold before it stops reading.
    pub read_buffer: usize,
    /// Bytes of pending output after which a connection stops reading input
    /// (its own publishes would only grow the backlog) and consumers pause.
    pub write_buffer_high: usize,
    /// Deliveries in flight (sent by a queue but not yet written to the socket)
    /// per consumer that has no prefetch bound (no-ack, or prefetch 0).
    pub consumer_window: u32,
    /// Capacity, in batches, of each inter-shard ring.
    pub ring_capacity: usize,
    /// Items held for one destination shard before its senders stop reading.
    pub outbox_high: usize,
    /// Messages held in a transaction before `tx.commit` (RabbitMQ has no
    /// limit; unbounded growth is not acceptable here).
    pub tx_max_messages: usize,
    /// Body bytes held in a transaction before `tx.commit`.
    pub tx_max_bytes: usize,
    /// Unconfirmed publishes per channel before the channel stops reading.
    pub max_unconfirmed: usize,
    /// Ready messages a queue with consumers may hold before the
    /// connections publishing to it are paused (resumed at half): keeps
    /// publishers to the consumers' pace instead of growing the backlog
    /// without bound, as RabbitMQ's flow control does.
    pub flow_backlog: usize,
    /// Resident memory above which publishing connections are blocked
    /// (RabbitMQ's `vm_memory_high_watermark`, 40% of RAM by default).
    pub memory_high_watermark: u64,
    /// Free disk space (on the data dir's file system) below which
    /// publishing connections are blocked (RabbitMQ's `disk_free_limit`,
    /// 50 MB by default).
    pub disk_free_limit: u64,
    /// How long a delivery may stay unacked (RabbitMQ's `consumer_timeout`,
    /// 30 minutes by default); zero disables it.
    pub consumer_timeout: Duration,
    /// Size of a message segment file (a larger message gets its own).
    pub segment_size: usize,
    /// How long a sync may wait for more writes to cover (group commit).
    /// Zero syncs as soon as the current step's writes are done.
    pub fsync_interval: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            frame_max: 131_072,
            channel_max: 2047,
            heartbeat: Duration::from_secs(60),
            max_message_size: 128 * 1024 * 1024,
            handshake_timeout: Duration::from_secs(10),
            read_buffer: 256 * 1024,
            write_buffer_high: 4 * 1024 * 1024,
            consumer_window: 2048,
            ring_capacity: 1024,
            outbox_high: 16 * 1024,
            tx_max_messages: 1_000_000,
            tx_max_bytes: 512 * 1024 * 1024,
            max_unconfirmed: 1_000_000,
            flow_backlog: 100_000,
            consumer_timeout: Duration::from_secs(30 * 60),
            memory_high_watermark: physical_memory() / 5 * 2,
            disk_free_limit: 50_000_000,
            segment_size: 8 * 1024 * 1024,
            fsync_interval: Duration::from_micros(500),
        }
    }
}

/// Physical memory in bytes (1 GiB if it cannot be read).
pub fn physical_memory() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let (pages, page) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    if pages > 0 && page > 0 {
        pages as u64 * page as u64
    } else {
        1 << 30
    }
}
