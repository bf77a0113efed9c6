//! Clustering: openraft conformance suites with warren's adapters, the
//! cluster port, clusters of in-process nodes, and of processes.

mod common;
mod compaction;
mod conformance;
mod limits;
mod net;
mod nodes;
mod partition;
mod processes;
mod quorum;
mod quorum_kill;
mod rename;
mod replicas;
mod reply_to;
