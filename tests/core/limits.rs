//! Operating-system limits the broker must not trip over.

use crate::common::{self, ChildBroker};
use std::time::Duration;

/// Started with a soft limit of 1024 descriptors (a common default),
/// warren raises it to the hard limit: 1 100 idle sockets do not stop it
/// from accepting an AMQP client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_low_soft_fd_limit_is_raised_at_start() {
    let (_d, dir) = common::temp_data_dir();
    let b = ChildBroker::start_with_fd_limit(&dir, 1024).expect("warren starts");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", b.pid())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a limit on open files");
    let v: Vec<&str> = line.split_whitespace().collect();
    let (soft, hard) = (v[3], v[4]);
    assert_eq!(soft, hard, "soft limit raised to the hard one: {line}");
    let addr: std::net::SocketAddr = b
        .uri
        .trim_start_matches("amqp://guest:guest@")
        .trim_end_matches("/%2f")
        .parse()
        .unwrap();
    let mut idle = Vec::new();
    for _ in 0..1100 {
        idle.push(std::net::TcpStream::connect(addr).expect("connects"));
    }
    let c = tokio::time::timeout(Duration::from_secs(20), common::connect(&b.uri))
        .await
        .expect("an AMQP client is still accepted");
    let ch = c.create_channel().await.unwrap();
    ch.queue_declare("fd".into(), Default::default(), Default::default())
        .await
        .unwrap();
    drop(idle);
}
