//! Integration tests of warren's own guarantees: cross-shard paths,
//! durability across restarts and kill -9.

mod admin;
mod alarms;
mod clients;
mod common;
mod compat;
mod cross_shard;
mod disk_full;
mod durability;
mod features;
mod handoff;
mod limits;
mod mgmt;
mod permissions;
mod pika;
mod prereq;
mod queue_moves;
mod quorum;
mod raw;
mod reply_to;
mod tls;
mod tutorials;
mod ui;
mod vhost_limits;
mod warrenctl;
mod wire;
