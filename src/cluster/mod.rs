//! Clustering: several warren nodes sharing one broker. The Raft engine is
//! openraft (pinned); this module holds warren's adapters around it: the
//! runtime (glommio), the log storage (files in the data dir), the network
//! (the cluster port, authenticated with the shared secret), and the
//! metadata group's state machine, which hands committed topology changes
//! to shard 0's control plane.
//!
//! Runs on shard 0 of every node: the metadata group is one Raft group.

pub mod asks;
pub mod forward;
pub mod log_store;
pub mod meta;
pub mod net;
pub mod node;
pub mod quorum;
pub mod remote;
pub mod rt;
pub mod secret;
pub mod snapshot_file;
pub mod types;
pub mod wire;

pub use log_store::LogStore;
pub use types::{Meta, MetaCmd, MetaReply, NodeId, NodeInfo, node_id};

#[cfg(test)]
mod tests {
    /// Each request kind of the cluster port names one service: a kind
    /// registered twice would silently replace the first.
    #[test]
    fn request_kinds_are_distinct() {
        use super::net::raft::*;
        use super::node::*;
        let mut kinds = vec![
            KIND_APPEND,
            KIND_VOTE,
            KIND_PRE_VOTE,
            KIND_SNAPSHOT,
            KIND_TRANSFER_LEADER,
            KIND_PROPOSE,
            KIND_JOIN,
            KIND_FORGET,
            KIND_STATUS,
            KIND_SET_NODE,
            KIND_RENAME,
            KIND_META_APPLIED,
            super::forward::KIND_PUBLISH,
            super::remote::KIND_OPS,
            super::remote::KIND_EVENTS,
            super::remote::KIND_QUEUE_FIGURES,
            super::quorum::KIND_QUORUM_PROPOSE,
            super::quorum::KIND_QUORUM_LEFT,
        ];
        let n = kinds.len();
        kinds.sort_unstable();
        kinds.dedup();
        assert_eq!(kinds.len(), n, "a request kind is used twice");
    }
}
