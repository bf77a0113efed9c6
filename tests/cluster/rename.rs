//! Renaming a node (`rename_cluster_node`, and a node restarted under a
//! new name): it keeps its Raft id, so its classic queues, its place in
//! the metadata group and its quorum queue replicas stay its own.

use super::nodes::{
    TestNode, cluster, connect, declare_durable, drain, names, publish_confirmed, rt, start_node, wait_for,
};
use super::quorum::{debug_logs, declare_quorum, leader_of};
use warren::admin::ClusterCmd;

fn rename(admin_of: &TestNode, old: &str, new: &str) -> Result<serde_json::Value, String> {
    admin_of.h().admin().cluster(ClusterCmd::Rename {
        pairs: vec![(old.to_string(), new.to_string())],
    })
}

/// Starts a stopped node again under `name`, with its data dir and port.
fn start_as(n: &mut TestNode, name: &str) {
    n.name = name.to_string();
    n.handle = Some(start_node(&n.name, &n.dir, n.cluster_port));
    n.wait_running();
}

fn running(n: &TestNode) -> Vec<String> {
    names(&n.status(), |m| m["running"].as_bool() == Some(true))
}

#[test]
fn a_renamed_node_keeps_its_queues_and_its_replicas() {
    debug_logs();
    let root = tempfile::tempdir().unwrap();
    let mut nodes = cluster(root.path(), 3);
    let (n1, n2, n3) = (
        nodes[0].name.clone(),
        nodes[1].name.clone(),
        nodes[2].name.clone(),
    );
    rt().block_on(async {
        // A classic queue on node 3, and a quorum queue with a replica there.
        let conn = connect(&nodes[2].uri()).await;
        let ch = conn.create_channel().await.unwrap();
        declare_durable(&ch, "on-n3").await;
        let _ = conn.close(200, "bye".into()).await;
        assert_eq!(publish_confirmed(&nodes[0].uri(), "", "on-n3", "c", 50).await, 50);
        declare_quorum(&nodes[0].uri(), "qq", &[]).await;
        assert_eq!(publish_confirmed(&nodes[0].uri(), "", "qq", "q", 50).await, 50);
    });
    // A running node is not renamed; nor to a member's name.
    let e = rename(&nodes[0], &n3, "n3b@127.0.0.1").expect_err("running");
    assert!(e.contains("running"), "{e}");
    nodes[2].stop();
    // Its queue is unavailable meanwhile: RabbitMQ's 404 for a durable
    // queue whose home node is down.
    rt().block_on(async {
        let conn = connect(&nodes[0].uri()).await;
        let ch = conn.create_channel().await.unwrap();
        let passive = lapin::options::QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let e = ch
            .queue_declare("on-n3".into(), passive, lapin::types::FieldTable::default())
            .await
            .expect_err("its node is down");
        let text = format!("home node '{n3}' of durable queue 'on-n3' in vhost '/' is down or inaccessible");
        assert!(e.to_string().contains(&text), "{e}");
        let _ = conn.close(200, "bye".into()).await;
    });
    let e = rename(&nodes[0], &n3, &n2).expect_err("taken");
    assert!(e.contains("already a member"), "{e}");
    let e = rename(&nodes[0], "nobody@127.0.0.1", "x@127.0.0.1").expect_err("unknown");
    assert!(e.contains("not_a_cluster_node"), "{e}");
    rename(&nodes[0], &n3, "n3b@127.0.0.1").expect("a stopped member is renamed");
    assert_eq!(
        names(&nodes[0].status(), |_| true),
        vec![n1.clone(), n2.clone(), "n3b@127.0.0.1".to_string()]
    );
    // Started under the new name with its data, it is the same node.
    start_as(&mut nodes[2], "n3b@127.0.0.1");
    wait_for("the renamed node to run", || running(&nodes[0]).len() == 3);
    rt().block_on(async {
        let got = drain(&nodes[0].uri(), "on-n3").await;
        assert_eq!(got.len(), 50, "its classic queue, reached from node 1");
    });
    let members = {
        let snap = nodes[0].h().admin().snapshot().unwrap();
        let q = snap.queues.into_iter().find(|q| q.name == "qq").unwrap();
        let mut m = q.quorum.unwrap().members;
        m.sort();
        m
    };
    assert_eq!(members, vec![n1.clone(), n2.clone(), "n3b@127.0.0.1".to_string()]);
    // With node 2 down, node 1 and the renamed node make the quorum
    // queue's majority: confirms need the renamed node's disk.
    nodes[1].stop();
    rt().block_on(async {
        assert_eq!(publish_confirmed(&nodes[0].uri(), "", "qq", "r", 20).await, 20);
    });
    // A node restarted under a new name without the command records it
    // itself once it has caught up.
    start_as(&mut nodes[1], "n2b@127.0.0.1");
    wait_for("the node's new name to be recorded", || {
        running(&nodes[0])
            == vec![
                n1.clone(),
                "n2b@127.0.0.1".to_string(),
                "n3b@127.0.0.1".to_string(),
            ]
    });
    let leader = leader_of(&nodes[0], "qq").expect("a leader");
    let at = nodes
        .iter()
        .find(|n| n.name == leader)
        .expect("the leader is a node")
        .uri();
    rt().block_on(async {
        let got = drain(&at, "qq").await;
        assert_eq!(got.len(), 70, "every confirmed message of the quorum queue");
    });
}
