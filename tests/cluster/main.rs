//! Clustering: openraft conformance suites with warren's adapters, the
//! cluster port, clusters of in-process nodes, and of processes.

mod conformance;
mod net;
mod nodes;
mod partition;
mod processes;
