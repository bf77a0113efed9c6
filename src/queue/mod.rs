//! The queue engine: ready messages, consumers, round-robin dispatch with
//! prefetch, unacked tracking and requeue. Pure: no I/O, no clock. One
//! [`Queue`] is owned by exactly one shard (its owner shard).

mod consumer;
mod engine;
mod ready;

pub use consumer::{Consumer, ConsumerSpec};
pub use engine::{ConsumeError, Delivery, Queue, QueueSink, QueueStats};
pub use ready::{Entry, ReadyList};
