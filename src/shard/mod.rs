//! The runtime: executors, listeners, connection tasks, the inter-shard
//! mesh, the syncer, timers. The only layer that uses glommio; everything
//! a shard decides is in its [`crate::hub::Hub`].

mod admin;
mod alloc;
mod balance;
pub mod batching;
mod cluster;
mod conn;
mod notify;
mod quorum;
mod replicas;
mod server;
mod shared_limits;
mod state;
mod visible;

pub use alloc::allocated;
pub use server::{ServerHandle, resident_memory, start};
pub use state::{random_salt, random_u64};
