//! Clustering: openraft's conformance suites on warren's adapters, and
//! warren's own tests of them.

mod conformance;
