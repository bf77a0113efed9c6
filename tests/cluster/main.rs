//! Clustering: openraft conformance suites with warren's adapters, the
//! cluster port, and clusters of nodes.

mod conformance;
mod net;
mod nodes;
