//! Clustering tests: the cluster port and openraft on it.

mod net;
