//! Clustering: openraft conformance suites with warren's adapters, the
//! cluster port, clusters of in-process nodes, and of processes.

mod common;
mod compaction;
mod conformance;
mod limits;
mod net;
mod nodes;
mod partition;
// Shared with the core tests (Python clients installed on first use);
// this crate uses only part of it.
#[allow(dead_code)]
#[path = "../core/prereq.rs"]
mod prereq;
mod processes;
mod quorum;
mod quorum_kill;
mod rename;
mod replicas;
mod reply_to;
