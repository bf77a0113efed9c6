//! The Raft types of the metadata group: what its log carries, what a node
//! is, and how a node's name becomes its Raft id.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A node's Raft id: derived from its name (see [`node_id`]), so every
/// node computes the same id for a name without asking anyone.
pub type NodeId = u64;

/// What the cluster knows of a node (kept in the Raft membership).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// `warren@host`, as `--node-name` set it.
    pub name: String,
    /// Where its cluster port listens (`host:port`).
    pub addr: String,
    /// A RAM node (`join_cluster --ram`): kept for rabbitmqctl's output;
    /// every warren node keeps the metadata log on disk.
    pub ram: bool,
}

/// One entry of the metadata log: changes planned by one node against the
/// topology as it was at `base`.
///
/// Any node plans its own requests (it has the whole topology), and every
/// node applies the log in order. A command planned against an older
/// topology than the one it meets when applied (`base` is not the current
/// [`MetaCmd::base`] count of accepted commands) is rejected by every node
/// alike, and its node plans the request again: optimistic concurrency, so
/// no request ever needs to travel to the leader, only the planned bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaCmd {
    /// The node that planned it, and the token of its operation there.
    pub origin: NodeId,
    pub token: u64,
    /// How many commands had been accepted when it was planned.
    pub base: u64,
    /// The planner's next queue, exchange and vhost ids after the changes.
    pub next_ids: [u64; 3],
    /// The changes, encoded as topology-log records
    /// (`storage::topolog::encode`, each prefixed by its length).
    pub changes: Vec<u8>,
}

impl fmt::Display for MetaCmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "meta(origin={:x} token={} base={} {} bytes)",
            self.origin,
            self.token,
            self.base,
            self.changes.len()
        )
    }
}

/// What applying a [`MetaCmd`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaReply {
    /// False: planned against an older topology; plan it again.
    pub accepted: bool,
}

openraft::declare_raft_types!(
    /// The metadata group's types.
    pub Meta:
        D = MetaCmd,
        R = MetaReply,
        NodeId = NodeId,
        Node = NodeInfo,
        AsyncRuntime = super::rt::GlommioRuntime,
);

pub use crate::ids::node_id;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_are_stable_and_distinct() {
        assert_eq!(node_id("warren@a"), node_id("warren@a"));
        assert_ne!(node_id("warren@a"), node_id("warren@b"));
        assert_ne!(node_id(""), 0);
    }

    #[test]
    fn commands_round_trip_through_postcard() {
        let c = MetaCmd {
            origin: 7,
            token: 3,
            base: 11,
            next_ids: [5, 6, 2],
            changes: vec![1, 2, 3],
        };
        let b = postcard::to_stdvec(&c).unwrap();
        assert_eq!(postcard::from_bytes::<MetaCmd>(&b).unwrap(), c);
    }
}
