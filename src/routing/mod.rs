//! Exchanges and bindings: pure routing tables, replicated on every shard.
//!
//! Each exchange owns a [`Bindings`] table; every shard holds a full copy and
//! routes its own publishes without a hop. The control plane (shard 0)
//! validates a binding with [`validate_binding_args`], then broadcasts the
//! same `bind`/`unbind` to every copy. Nothing here does I/O, locks or
//! awaits.
//!
//! Behaviour follows RabbitMQ 3.x (`rabbit_exchange_type_{direct,fanout,
//! topic,headers}`, `rabbit_binding`); the subtle cases are noted where they
//! are implemented and were checked against a live RabbitMQ 3.10.8.

mod args;
mod bindings;
mod erlang;
mod group;
mod headers;
mod kind;
pub mod topic;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

pub use bindings::Bindings;
pub use headers::headers_match;
pub use kind::ExchangeKind;
pub use topic::{TopicScratch, TopicTrie};

use crate::protocol::FieldTable;

/// Checks a binding's arguments as RabbitMQ's exchange type does before
/// binding (`validate_binding/2`); run by the control plane before it
/// broadcasts a bind. `Err` carries the text of the 406
/// PRECONDITION_FAILED that RabbitMQ closes the channel with, without the
/// `PRECONDITION_FAILED - ` prefix. Only headers exchanges check anything:
/// `x-match`, if present, must be the longstr `all`, `any`, `all-with-x` or
/// `any-with-x`.
pub fn validate_binding_args(kind: ExchangeKind, args: &FieldTable) -> Result<(), String> {
    match kind {
        ExchangeKind::Headers => headers::validate(args),
        ExchangeKind::Direct | ExchangeKind::Fanout | ExchangeKind::Topic => Ok(()),
    }
}
