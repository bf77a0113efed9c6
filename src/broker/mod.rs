//! Broker model shared by every shard: the replicated topology, the
//! requests channels make, and the control-plane rules that validate them.
//! Pure: no I/O.

pub mod args;
pub mod control;
pub mod deadletter;
pub mod limits;
pub mod reply_to;
pub mod request;
#[cfg(test)]
mod tests;
pub mod topology;
pub mod users;
