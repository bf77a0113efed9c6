//! Changing quorum queues' replicas: `forget_cluster_node` takes the
//! forgotten node out of them (as rabbitmqctl runs `shrink`), `grow` adds
//! a node back, `shrink` takes out a running one. Each step is checked
//! against the Raft group itself: a group that did not change its voters
//! would lose its majority when the test stops a node.

use super::nodes::{TestNode, cluster, rt, wait_for};
use super::quorum::{debug_logs, declare_quorum, get_until, publish_until_confirmed};
use warren::admin::ClusterCmd;

fn members(n: &TestNode, queue: &str) -> Vec<String> {
    let snap = n.h().admin().snapshot().expect("a snapshot");
    let q = snap
        .queues
        .into_iter()
        .find(|q| q.name == queue)
        .expect("the queue");
    q.quorum.expect("a quorum queue").members
}

/// The rows of a grow/shrink answer for `queue`: (size, result).
fn row(v: &serde_json::Value, queue: &str) -> Option<(u64, String)> {
    v.as_array()?.iter().find(|r| r["name"] == queue).map(|r| {
        (
            r["size"].as_u64().unwrap_or(0),
            r["result"].as_str().unwrap_or("").to_string(),
        )
    })
}

fn replicas(admin_of: &TestNode, node: &str, grow: bool) -> serde_json::Value {
    admin_of
        .h()
        .admin()
        .cluster(ClusterCmd::Replicas {
            node: node.to_string(),
            grow,
            even: false,
        })
        .expect("the change is made")
}

/// Every body of `tags` × `0..n`, each seen.
fn assert_all(got: &[String], tags: &[&str], n: usize) {
    let seen: std::collections::HashSet<&String> = got.iter().collect();
    for t in tags {
        for i in 0..n {
            assert!(
                seen.contains(&format!("{t}-{i}")),
                "{t}-{i} was confirmed and is lost"
            );
        }
    }
}

#[test]
fn forget_shrinks_grow_brings_a_node_back_and_shrink_takes_a_running_one_out() {
    debug_logs();
    let root = tempfile::tempdir().unwrap();
    let mut nodes = cluster(root.path(), 3);
    let (n1, n2, n3) = (
        nodes[0].name.clone(),
        nodes[1].name.clone(),
        nodes[2].name.clone(),
    );
    rt().block_on(async {
        declare_quorum(&nodes[0].uri(), "qq", &[]).await;
        assert_eq!(
            publish_until_confirmed(&nodes[0].uri(), "qq", "a", 0..50)
                .await
                .len(),
            50
        );
    });
    assert_eq!(members(&nodes[0], "qq").len(), 3);

    // Forgetting a stopped node takes it out of the queue's replicas.
    nodes[2].stop();
    let v = nodes[0]
        .h()
        .admin()
        .cluster(ClusterCmd::Forget { node: n3.clone() })
        .expect("forgotten");
    assert_eq!(row(&v["quorum_queues"], "qq"), Some((2, "ok".into())), "{v}");
    assert_eq!(members(&nodes[0], "qq"), vec![n1.clone(), n2.clone()]);

    // The node comes back with no data, joins again, and `grow` makes it a
    // replica: it catches up and votes. With node 2 stopped, the group
    // goes on with nodes 1 and 3 only if node 3 is one of its voters.
    std::fs::remove_dir_all(&nodes[2].dir).unwrap();
    nodes[2] = TestNode::new(root.path(), 3);
    nodes[2].join(&nodes[0]);
    nodes[2].wait_running();
    let v = replicas(&nodes[0], &n3, true);
    assert_eq!(row(&v, "qq"), Some((3, "ok".into())), "{v}");
    assert_eq!(members(&nodes[0], "qq"), vec![n1.clone(), n2.clone(), n3.clone()]);
    // Growing again changes nothing.
    assert_eq!(replicas(&nodes[0], &n3, true), serde_json::json!([]));
    nodes[1].stop();
    rt().block_on(async {
        assert_eq!(
            publish_until_confirmed(&nodes[0].uri(), "qq", "b", 0..50)
                .await
                .len(),
            50
        );
    });

    // Shrink the stopped node 2; then node 1, the leader, while node 1's
    // own channel publishes: node 3 takes over, and every publish node 1
    // confirmed is there (a publish routed to node 1 meanwhile is refused
    // and sent again, never confirmed and dropped).
    let v = replicas(&nodes[0], &n2, false);
    assert_eq!(row(&v, "qq"), Some((2, "ok".into())), "{v}");
    let admin1 = nodes[0].h().admin();
    let leaving = n1.clone();
    let uri1 = nodes[0].uri();
    let (confirmed, v) = rt().block_on(async {
        let publishing = publish_until_confirmed(&uri1, "qq", "c", 0..200);
        let shrinking = tokio::task::spawn_blocking(move || {
            std::thread::sleep(std::time::Duration::from_millis(100));
            admin1.cluster(ClusterCmd::Replicas {
                node: leaving,
                grow: false,
                even: false,
            })
        });
        let (confirmed, v) = tokio::join!(publishing, shrinking);
        (confirmed, v.unwrap().expect("shrunk"))
    });
    // (A batch with a refusal in it is sent again whole: some twice.)
    let confirmed: std::collections::HashSet<String> = confirmed.into_iter().collect();
    assert_eq!(confirmed.len(), 200);
    assert_eq!(row(&v, "qq"), Some((1, "ok".into())), "{v}");
    wait_for("node 3 to lead alone", || {
        members(&nodes[2], "qq") == vec![n3.clone()]
    });
    // The last replica stays.
    let v = replicas(&nodes[2], &n3, false);
    assert_eq!(
        row(&v, "qq"),
        Some((1, "error: the last node cannot be removed".into())),
        "{v}"
    );
    // Node 1 drops the group's data once its removal committed.
    let groups_on_1 = nodes[0].dir.join("quorum");
    wait_for("node 1 to delete the group's data", || {
        std::fs::read_dir(&groups_on_1).map_or(true, |mut d| d.next().is_none())
    });
    nodes[0].stop();
    rt().block_on(async {
        assert_eq!(
            publish_until_confirmed(&nodes[2].uri(), "qq", "d", 0..50)
                .await
                .len(),
            50
        );
        let got = get_until(&nodes[2].uri(), "qq", 350).await;
        assert_all(&got, &["a", "b", "d"], 50);
        assert_all(&got, &["c"], 200);
    });
}

/// A channel on a node that holds no replica reads its own publishes: a
/// `basic.get` right after publishes forwarded to the leader finds them
/// (the forward and the get travel in order to the leader, whose get
/// waits for what was proposed before it).
#[test]
fn a_get_on_a_node_without_a_replica_finds_what_it_just_published() {
    debug_logs();
    let root = tempfile::tempdir().unwrap();
    let nodes = cluster(root.path(), 3);
    rt().block_on(async {
        declare_quorum(
            &nodes[0].uri(),
            "qq2",
            &[("x-quorum-initial-group-size", lapin::types::AMQPValue::LongInt(2))],
        )
        .await;
    });
    let held = members(&nodes[0], "qq2");
    assert_eq!(held.len(), 2);
    let outside = nodes
        .iter()
        .find(|n| !held.contains(&n.name))
        .expect("a node without a replica");
    let follower = nodes
        .iter()
        .find(|n| held[1..].contains(&n.name))
        .expect("a follower");
    for (tag, node) in [("outside", outside), ("follower", follower)] {
        gets_find_publishes(tag, node);
    }
}

fn gets_find_publishes(tag: &str, node: &TestNode) {
    use lapin::options::*;
    rt().block_on(async {
        let conn = super::nodes::connect(&node.uri()).await;
        let ch = conn.create_channel().await.unwrap();
        for round in 0..10 {
            let bodies: Vec<String> = (0..=round % 3).map(|i| format!("g-{round}-{i}")).collect();
            for b in &bodies {
                ch.basic_publish(
                    "".into(),
                    "qq2".into(),
                    BasicPublishOptions::default(),
                    b.as_bytes(),
                    lapin::BasicProperties::default().with_delivery_mode(2),
                )
                .await
                .unwrap();
            }
            for b in &bodies {
                let got = ch
                    .basic_get("qq2".into(), BasicGetOptions { no_ack: true })
                    .await
                    .unwrap()
                    .map(|m| String::from_utf8_lossy(&m.delivery.data).into_owned());
                assert_eq!(got.as_deref(), Some(b.as_str()), "{tag}: round {round}");
            }
        }
        let _ = conn.close(200, "bye".into()).await;
    });
}
