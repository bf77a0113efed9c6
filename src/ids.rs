//! Identifiers shared by every layer. All are small `Copy` values so they
//! cross shards for free.

use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

/// Index of a shard (one pinned executor).
pub type ShardId = u16;

/// A queue, unique for the broker's lifetime (never reused, even after
/// deletion, so a stale reference can never hit a newer queue).
#[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct QueueId(pub u64);

/// An exchange, unique for the broker's lifetime.
#[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct ExchangeId(pub u64);

/// A virtual host.
#[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct VhostId(pub u32);

/// A client connection. The owning shard is in the top 16 bits, so any shard
/// can route to a connection without a lookup.
#[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl ConnId {
    /// A connection no shard of this node has: the owner of an exclusive
    /// queue declared on another node of the cluster.
    pub const ELSEWHERE: ConnId = ConnId(u64::MAX);
    /// On shard 0: the publisher of messages other nodes of the cluster
    /// forward here (their confirms go to the cluster glue, not a socket).
    pub const FORWARDED: ConnId = ConnId((1 << 48) - 2);
    /// On shard 0, ids from here on stand for connections of other nodes
    /// that consume from this node's queues.
    pub const STAND_IN_BASE: u64 = 1 << 47;

    /// A stand-in for a connection of another node (see
    /// [`ConnId::STAND_IN_BASE`]).
    pub fn is_stand_in(self) -> bool {
        self.shard() == 0 && self.0 >= Self::STAND_IN_BASE && self != Self::FORWARDED
    }

    pub fn new(shard: ShardId, seq: u64) -> Self {
        debug_assert!(seq < 1 << 48);
        ConnId(((shard as u64) << 48) | (seq & ((1 << 48) - 1)))
    }
    pub fn shard(self) -> ShardId {
        (self.0 >> 48) as ShardId
    }
}

impl fmt::Debug for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn{}.{}", self.shard(), self.0 & ((1 << 48) - 1))
    }
}

/// One incarnation of a channel of a connection. `epoch` changes each time
/// a channel number is opened, so late events addressed to a closed channel
/// never reach a new channel that reuses its number.
#[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct ChannelRef {
    pub conn: ConnId,
    pub channel: u16,
    pub epoch: u32,
}

impl ChannelRef {
    pub fn shard(self) -> ShardId {
        self.conn.shard()
    }
}

/// A consumer: its channel plus the channel-local consumer number (consumer
/// tags are strings; queues and shards pass this number instead).
#[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct ConsumerRef {
    pub ch: ChannelRef,
    pub id: u32,
}

impl ConsumerRef {
    pub fn shard(self) -> ShardId {
        self.ch.shard()
    }
}

/// Where a stored message lives on disk: segment id (high 32 bits) and
/// offset. Set only for persistent messages on durable queues.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Loc(std::num::NonZeroU64);

impl Loc {
    pub fn new(segment: u64, offset: u32) -> Loc {
        assert!(
            segment != 0 && segment <= u32::MAX as u64,
            "segment ids are 1..=u32::MAX"
        );
        Loc(std::num::NonZeroU64::new((segment << 32) | offset as u64).expect("segment ids start at 1"))
    }
    pub fn segment(self) -> u64 {
        self.0.get() >> 32
    }
    pub fn offset(self) -> u32 {
        self.0.get() as u32
    }
}

/// Hasher for keys that are already well distributed or sequential integers
/// (sequence numbers, ids): one multiply instead of SipHash on the hot path.
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ b as u64).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }
    fn write_u64(&mut self, n: u64) {
        // Fibonacci hashing: sequential ids spread over the whole table.
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    fn write_u32(&mut self, n: u32) {
        self.write_u64(n as u64)
    }
    fn write_u16(&mut self, n: u16) {
        self.write_u64(n as u64)
    }
}

pub type IdBuildHasher = BuildHasherDefault<IdHasher>;

/// Maps keyed by names that clients choose (queues, exchanges, vhosts): a
/// fast hash with a per-map random seed, so chosen names cannot flood a
/// bucket.
pub type NameMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub type IdMap<K, V> = std::collections::HashMap<K, V, IdBuildHasher>;

/// The Raft id of a cluster node's name: the first 8 bytes of its SHA-256,
/// never 0 (0 means "this node" in a queue's home). Every node computes the
/// same id for a name without asking anyone.
pub fn node_id(name: &str) -> u64 {
    use sha2::Digest;
    let h = sha2::Sha256::digest(name.as_bytes());
    let id = u64::from_be_bytes(h[..8].try_into().expect("8 bytes"));
    id.max(1)
}
