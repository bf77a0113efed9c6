//! warren: a RabbitMQ-compatible AMQP 0-9-1 broker, thread-per-core on io_uring.
//!
//! Layers (each depends only on those above it; see README "Architecture"):
//! `protocol` → `session` / `routing` → `queue` → `storage` → `shard` (the only
//! user of glommio).

pub mod admin;
pub mod broker;
pub mod config;
pub mod control;
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

pub use config::{Config, Limits};
pub use shard::{ServerHandle, start};
