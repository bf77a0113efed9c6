//! warren: a RabbitMQ-compatible AMQP 0-9-1 broker, thread-per-core on io_uring.
//!
//! The modules are layered as README.md's "Layers" table says (the one
//! statement of it; `tests/layers.rs` checks the imports against it).

pub mod admin;
pub mod broker;
pub mod cluster;
pub mod config;
pub mod control;
#[doc(hidden)]
pub mod fuzzing;
pub mod hub;
pub mod ids;
pub mod message;
pub mod mgmt;
pub mod owner;
pub mod protocol;
pub mod queue;
pub mod routing;
pub mod session;
pub mod shard;
pub mod sim;
pub mod storage;
pub mod tls;

pub use config::{Config, Limits};
pub use shard::{ServerHandle, start};
