//! What the cluster tests share: a node's configuration on 127.0.0.1, and
//! free ports.

use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::Path;

/// A port nobody listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Node `name` on 127.0.0.1 (AMQP on a free port) with its cluster port and
/// the cluster's `secret`.
pub fn node_config(name: &str, dir: &Path, shards: usize, cluster_port: u16, secret: &str) -> warren::Config {
    let mut cfg = warren::Config {
        bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port: 0,
        shards,
        data_dir: dir.to_path_buf(),
        // A shard that panics ends the test run at once, loudly, instead
        // of leaving a test waiting on a dead shard.
        abort_on_shard_panic: true,
        ..Default::default()
    };
    cfg.cluster.node_name = name.to_string();
    cfg.cluster.bind = IpAddr::V4(Ipv4Addr::LOCALHOST);
    cfg.cluster.port = cluster_port;
    cfg.cluster.secret = Some(secret.into());
    cfg
}
