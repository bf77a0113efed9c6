//! The metadata log is compacted: after `metadata_snapshot_every` entries
//! a node snapshots its topology and drops the log it covers. A node that
//! was down meanwhile catches up from the leader's snapshot, and keeps
//! the messages of the queues it serves; a node restarted with its own
//! snapshot comes back with the whole topology.

use super::nodes::{
    SECRET, TestNode, connect, declare_durable, passive_declare, publish_confirmed, rt, wait_for,
};
use super::quorum::declare_quorum;
use lapin::options::*;
use lapin::types::FieldTable;
use std::path::Path;

const EVERY: u64 = 30;

fn start(n: &mut TestNode) {
    let mut cfg = super::common::node_config(&n.name, &n.dir, 2, n.cluster_port, SECRET);
    cfg.cluster.metadata_snapshot_every = EVERY;
    n.handle = Some(warren::start(cfg).expect("node starts"));
}

fn node(root: &Path, i: usize) -> TestNode {
    let mut n = TestNode {
        name: format!("c{i}@127.0.0.1"),
        dir: root.join(format!("c{i}")),
        cluster_port: super::common::free_port(),
        handle: None,
    };
    start(&mut n);
    n
}

/// The node's metadata log index named `what` (applied, snapshot, purged).
fn log_index(n: &TestNode, what: &str) -> Option<u64> {
    n.status()["metadata_log"][what].as_u64()
}

async fn exchange_exists(uri: &str, name: &str) -> bool {
    let conn = connect(uri).await;
    let ch = conn.create_channel().await.unwrap();
    let ok = ch
        .exchange_declare(
            name.into(),
            lapin::ExchangeKind::Direct,
            ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .is_ok();
    let _ = conn.close(200, "bye".into()).await;
    ok
}

async fn ready(uri: &str, queue: &str) -> u32 {
    passive_declare(uri, queue)
        .await
        .expect("the queue exists")
        .message_count()
}

pub(super) async fn declare_exchange(ch: &lapin::Channel, name: &str) {
    ch.exchange_declare(
        name.into(),
        lapin::ExchangeKind::Direct,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
}

#[test]
fn a_node_behind_the_compacted_log_catches_up_from_a_snapshot_and_keeps_its_messages() {
    super::quorum::debug_logs();
    let root = tempfile::tempdir().unwrap();
    let mut nodes: Vec<TestNode> = (1..=3).map(|i| node(root.path(), i)).collect();
    for n in &nodes[1..] {
        n.join(&nodes[0]);
    }
    let behind = rt().block_on(async {
        // A classic queue served by node 3, with messages, bound to an
        // exchange.
        let u3 = nodes[2].uri();
        let conn = connect(&u3).await;
        let ch = conn.create_channel().await.unwrap();
        declare_durable(&ch, "keep").await;
        declare_exchange(&ch, "x-keep").await;
        ch.queue_bind(
            "keep".into(),
            "x-keep".into(),
            "k".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        let _ = conn.close(200, "bye".into()).await;
        assert_eq!(publish_confirmed(&u3, "x-keep", "k", "m", 20).await, 20);
        log_index(&nodes[2], "applied").expect("node 3 applied entries")
    });
    nodes[2].stop();

    rt().block_on(async {
        let u1 = nodes[0].uri();
        let conn = connect(&u1).await;
        let ch = conn.create_channel().await.unwrap();
        // Many more changes than a snapshot's worth: exchanges made, half
        // of them deleted again, bindings added.
        for i in 0..(3 * EVERY) {
            declare_exchange(&ch, &format!("e{i}")).await;
        }
        for i in 0..(3 * EVERY / 2) {
            ch.exchange_delete(format!("e{i}").as_str().into(), ExchangeDeleteOptions::default())
                .await
                .unwrap();
        }
        ch.queue_bind(
            "keep".into(),
            "x-keep".into(),
            "k2".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        let _ = conn.close(200, "bye".into()).await;
        // A quorum queue with a replica on node 3, made while it is down.
        declare_quorum(&u1, "qq", &[]).await;
    });
    // The running nodes dropped the entries node 3 would need: it can only
    // catch up from a snapshot.
    wait_for("the metadata log to be compacted past node 3", || {
        nodes[..2]
            .iter()
            .all(|n| log_index(n, "purged").is_some_and(|p| p > behind))
    });

    start(&mut nodes[2]);
    nodes[2].wait_running();
    let applied = log_index(&nodes[0], "applied").unwrap();
    wait_for("node 3 to catch up", || {
        log_index(&nodes[2], "applied").is_some_and(|a| a >= applied)
    });
    assert!(
        log_index(&nodes[2], "snapshot").is_some_and(|s| s > behind),
        "node 3 holds a snapshot past where it stopped: {}",
        nodes[2].status()["metadata_log"]
    );
    rt().block_on(async {
        let u3 = nodes[2].uri();
        // The topology is the cluster's ...
        for i in [0, 3 * EVERY / 2 - 1] {
            assert!(!exchange_exists(&u3, &format!("e{i}")).await, "e{i} was deleted");
        }
        for i in [3 * EVERY / 2, 3 * EVERY - 1] {
            assert!(exchange_exists(&u3, &format!("e{i}")).await, "e{i} exists");
        }
        // ... and the queue node 3 serves kept its messages.
        assert_eq!(ready(&u3, "keep").await, 20);
        assert_eq!(
            publish_confirmed(&nodes[0].uri(), "x-keep", "k2", "n", 5).await,
            5
        );
        assert_eq!(ready(&u3, "keep").await, 25);
    });
    // Node 3's replica of the quorum queue made while it was down works:
    // with node 2 stopped, confirms need it.
    nodes[1].stop();
    rt().block_on(async {
        assert_eq!(publish_confirmed(&nodes[0].uri(), "", "qq", "q", 10).await, 10);
    });
    // A node restarted from its own snapshot and log has it all too.
    nodes[0].stop();
    start(&mut nodes[1]);
    start(&mut nodes[0]);
    nodes[0].wait_running();
    rt().block_on(async {
        let u1 = nodes[0].uri();
        assert!(exchange_exists(&u1, &format!("e{}", 3 * EVERY - 1)).await);
        assert!(!exchange_exists(&u1, "e0").await);
        assert_eq!(ready(&u1, "keep").await, 25);
        // Once its group has a leader again.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while ready(&u1, "qq").await != 10 {
            assert!(
                std::time::Instant::now() < deadline,
                "qq: {}",
                ready(&u1, "qq").await
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    });
}
