//! The queue engine: ready messages, consumers, round-robin dispatch with
//! prefetch, unacked tracking and requeue. Pure: no I/O, no clock. One
//! [`Queue`] is owned by exactly one shard (its owner shard).

mod config;
mod consumer;
mod engine;
mod ready;

pub use config::{DeadReason, Overflow, QueueConfig};
pub use consumer::{Consumer, ConsumerSpec};
pub use engine::{Admit, ConsumeError, Delivery, Queue, QueueSink, QueueStats};
pub use ready::{Entry, ReadyList};
