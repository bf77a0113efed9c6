//! The queue-owner service: the queues one shard owns and everything the
//! owner does to them — enqueue (with drop-head and reject-publish), store
//! writes and group-commit bookkeeping, dispatch to consumers, settles,
//! dead-lettering, flow control of publishers, TTL sweeps and `x-expires`,
//! policies, deletes, and the management plane's get and purge.
//!
//! Free of glommio and of the clock: `now` comes in as an argument, files
//! go through the stores' [`crate::storage::Disk`], and every effect on the
//! rest of the broker (an event for a connection, an item for a shard)
//! leaves through [`Effects`]. The runtime drives one owner per shard; the
//! simulation drives several, with a simulated disk and network.
//!
//! Also here: [`Item`], the shard protocol, since most of it is addressed
//! to queue owners.

mod effects;
mod item;
mod moving;
mod ops;
mod quorum;
mod service;
mod slot;

pub use effects::{Effects, QuorumProposal};
pub use item::{
    Adoption, Arrival, Batch, ControlMsg, Forward, Item, QueueOp, RemoteOp, RemoteReply, SyncWaiter,
};
pub use service::{Enqueued, Owner, OwnerConfig, SyncBatch};
pub use slot::{QueueSlot, QuorumSlot};

#[cfg(test)]
mod tests;
