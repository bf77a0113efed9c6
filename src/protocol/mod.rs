//! AMQP 0-9-1 wire format with RabbitMQ's extensions. Sans-IO, zero-copy over
//! `bytes::Bytes`, and total: every input decodes or yields an [`AmqpError`].

pub mod error;
pub mod types;

pub use error::{AmqpError, Result, reply};
pub use types::{FieldTable, FieldValue, LongStr, ShortStr};
