//! Durable storage: segment files of message records with per-segment ack
//! logs, the topology log, and the data directory's lock and version. The
//! only code that touches data files. No async: the runtime decides when
//! to sync and does it off the reactor.

pub mod acklog;
pub mod datadir;
pub mod queue_store;
pub mod record;
pub mod segment;
pub mod topolog;

pub use crate::ids::Loc;
pub use queue_store::{QueueStore, Recovered};
