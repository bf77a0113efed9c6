//! Durable storage: segment files of message records with per-segment ack
//! logs, the topology log, and the data directory's lock and version. The
//! only code that touches data files, always through a [`Disk`] (the real
//! one, or a simulated one). No async: the runtime decides when to sync and
//! does it off the reactor.

pub mod acklog;
pub mod datadir;
pub mod disk;
pub mod queue_store;
pub mod raftlog;
pub mod record;
pub mod segment;
pub mod sim_disk;
pub mod topolog;

pub use crate::ids::Loc;
pub use disk::{AppendFile, Disk, Mapped, RealDisk, Syncable};
pub use queue_store::{QueueStore, Recovered};
pub use sim_disk::SimDisk;
