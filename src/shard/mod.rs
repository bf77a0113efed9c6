//! The runtime: executors, listeners, connection tasks, the inter-shard
//! mesh and the control plane task. The only layer that uses glommio.

mod admin;
mod conn;
mod control;
mod ctx;
mod item;
mod notify;
mod server;
mod state;

pub use server::{ServerHandle, SharedStats, start};
