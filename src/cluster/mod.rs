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
