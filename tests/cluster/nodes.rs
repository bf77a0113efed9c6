//! Clusters of in-process nodes on 127.0.0.1: joining with the admin plane
//! (as `warrenctl stop_app; join_cluster; start_app` do), metadata made on
//! any node visible on all, a minority that refuses changes, a restarted
//! node that catches up, and forgetting a stopped node.

use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use warren::admin::ClusterCmd;

pub(super) const SECRET: &str = "cluster-test-secret";

/// A node of a test cluster: its name, data dir and cluster port stay the
/// same across restarts.
pub(super) struct TestNode {
    pub(super) name: String,
    pub(super) dir: PathBuf,
    pub(super) cluster_port: u16,
    pub(super) handle: Option<warren::ServerHandle>,
}

use super::common::free_port;

pub(super) fn start_node(name: &str, dir: &Path, cluster_port: u16) -> warren::ServerHandle {
    warren::start(super::common::node_config(name, dir, 2, cluster_port, SECRET)).expect("node starts")
}

impl TestNode {
    pub(super) fn new(root: &Path, i: usize) -> TestNode {
        let name = format!("n{i}@127.0.0.1");
        let dir = root.join(format!("n{i}"));
        let cluster_port = free_port();
        let handle = Some(start_node(&name, &dir, cluster_port));
        TestNode {
            name,
            dir,
            cluster_port,
            handle,
        }
    }

    pub(super) fn h(&self) -> &warren::ServerHandle {
        self.handle.as_ref().expect("running")
    }

    pub(super) fn uri(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.h().amqp_addr())
    }

    pub(super) fn status(&self) -> serde_json::Value {
        self.h().admin().cluster(ClusterCmd::Status).expect("status")
    }

    pub(super) fn join(&self, seed: &TestNode) {
        let admin = self.h().admin();
        admin.stop_app().unwrap();
        admin
            .cluster(ClusterCmd::Join {
                node: seed.name.clone(),
                addr: Some(format!("127.0.0.1:{}", seed.cluster_port)),
                ram: false,
            })
            .expect("joins");
        admin.start_app();
    }

    pub(super) fn stop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown();
        }
    }

    /// Stops and starts the node on the same ports. The old run's cluster
    /// listener may take a moment to go after shutdown: its port is tried
    /// again for up to 10 s.
    pub(super) fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let cfg = super::common::node_config(&self.name, &self.dir, 2, self.cluster_port, SECRET);
            match warren::start(cfg) {
                Ok(h) => {
                    self.handle = Some(h);
                    return;
                }
                Err(e) if e.to_string().contains("Address already in use") && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("node starts: {e}"),
            }
        }
    }

    /// Waits until the node serves clients (a restarted member first
    /// catches up with its cluster).
    pub(super) fn wait_running(&self) {
        wait_for("the node to serve clients", || self.h().admin().app_running());
    }
}

pub(super) fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `n` nodes, the others joined to the first.
pub(super) fn cluster(root: &Path, n: usize) -> Vec<TestNode> {
    let nodes: Vec<TestNode> = (1..=n).map(|i| TestNode::new(root, i)).collect();
    for node in &nodes[1..] {
        node.join(&nodes[0]);
    }
    nodes
}

pub(super) fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

pub(super) async fn connect(uri: &str) -> Connection {
    Connection::connect(uri, ConnectionProperties::default())
        .await
        .expect("connects")
}

pub(super) fn names(status: &serde_json::Value, f: impl Fn(&serde_json::Value) -> bool) -> Vec<String> {
    let mut v: Vec<String> = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| f(n))
        .map(|n| n["name"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

pub(super) async fn queue_exists(uri: &str, name: &str) -> bool {
    passive_declare(uri, name).await.is_some()
}

/// A passive `queue.declare` on its own connection: the queue's counts,
/// or None if it does not exist.
pub(super) async fn passive_declare(uri: &str, name: &str) -> Option<lapin::Queue> {
    let conn = connect(uri).await;
    let ch = conn.create_channel().await.unwrap();
    let q = ch
        .queue_declare(
            name.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .ok();
    let _ = conn.close(200, "bye".into()).await;
    q
}

#[test]
fn three_nodes_form_a_cluster_and_share_metadata() {
    let root = tempfile::tempdir().unwrap();
    let nodes = cluster(root.path(), 3);
    let all: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
    for n in &nodes {
        let s = n.status();
        assert_eq!(s["clustered"], true);
        assert_eq!(names(&s, |_| true), all, "{s}");
        assert_eq!(names(&s, |m| m["running"] == true), all, "{s}");
        assert_eq!(names(&s, |m| m["type"] == "disc"), all, "{s}");
    }
    rt().block_on(async {
        // Made on node 2 ...
        let conn = connect(&nodes[1].uri()).await;
        let ch = conn.create_channel().await.unwrap();
        ch.exchange_declare(
            "orders".into(),
            lapin::ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.queue_declare(
            "orders.eu".into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.queue_bind(
            "orders.eu".into(),
            "orders".into(),
            "eu.#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        // ... is seen on nodes 1 and 3.
        for n in [&nodes[0], &nodes[2]] {
            assert!(queue_exists(&n.uri(), "orders.eu").await, "queue on {}", n.name);
            let snap = n.h().admin().snapshot().unwrap();
            let b = snap
                .bindings
                .iter()
                .find(|b| b.source == "orders" && b.destination == "orders.eu");
            assert!(b.is_some(), "binding on {}", n.name);
        }
        let _ = conn.close(200, "bye".into()).await;
    });
    // A user and a vhost made on node 3 through the admin plane.
    let admin3 = nodes[2].h().admin();
    admin3
        .control("guest", warren::admin::AdminOp::AddVhost { name: "shop".into() })
        .unwrap();
    // Committed by a majority when the call returns; applied by every
    // node soon after.
    for n in &nodes {
        wait_for("the vhost on every node", || {
            let snap = n.h().admin().snapshot().unwrap();
            snap.vhosts.iter().any(|v| v.name == "shop")
        });
    }
}

#[test]
fn concurrent_declares_on_every_node_make_every_queue_once() {
    let root = tempfile::tempdir().unwrap();
    let nodes = cluster(root.path(), 3);
    let uris: Vec<String> = nodes.iter().map(|n| n.uri()).collect();
    rt().block_on(async {
        let mut tasks = Vec::new();
        for (i, uri) in uris.iter().enumerate() {
            let uri = uri.clone();
            tasks.push(tokio::spawn(async move {
                let conn = connect(&uri).await;
                let ch = conn.create_channel().await.unwrap();
                for q in 0..15 {
                    // Every node also declares the same shared queues.
                    for name in [format!("n{i}-q{q}"), format!("shared-{q}")] {
                        ch.queue_declare(
                            name.as_str().into(),
                            QueueDeclareOptions {
                                durable: true,
                                ..Default::default()
                            },
                            FieldTable::default(),
                        )
                        .await
                        .unwrap();
                    }
                }
                let _ = conn.close(200, "bye".into()).await;
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    for n in &nodes {
        let snap = n.h().admin().snapshot().unwrap();
        let mut qs: Vec<&str> = snap.queues.iter().map(|q| q.name.as_str()).collect();
        qs.sort();
        let total = qs.len();
        qs.dedup();
        assert_eq!(total, qs.len(), "no queue twice on {}", n.name);
        assert_eq!(total, 3 * 15 + 15, "every queue on {}", n.name);
    }
}

#[test]
fn a_minority_refuses_changes_and_a_restarted_node_catches_up() {
    let root = tempfile::tempdir().unwrap();
    let mut nodes = cluster(root.path(), 3);
    // Node 3 goes down; the majority goes on.
    nodes[2].stop();
    rt().block_on(async {
        let conn = connect(&nodes[0].uri()).await;
        let ch = conn.create_channel().await.unwrap();
        ch.queue_declare(
            "made-while-n3-was-down".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("two of three nodes make a majority");
        let _ = conn.close(200, "bye".into()).await;
    });
    // Node 2 goes down too: node 1 alone refuses changes (once it has
    // noticed: a change made in the first moments of a partition may still
    // be committed later, as with any Raft store).
    nodes[1].stop();
    std::thread::sleep(Duration::from_secs(2));
    rt().block_on(async {
        let conn = connect(&nodes[0].uri()).await;
        let ch = conn.create_channel().await.unwrap();
        let r = ch
            .queue_declare(
                "made-by-a-minority".into(),
                QueueDeclareOptions::default(),
                FieldTable::default(),
            )
            .await;
        let e = r.expect_err("one node of three cannot change the metadata");
        assert!(e.to_string().contains("majority"), "{e}");
    });
    // Both come back with their data: node 3 catches up on what it missed.
    nodes[1].restart();
    nodes[2].restart();
    nodes[1].wait_running();
    nodes[2].wait_running();
    rt().block_on(async {
        assert!(queue_exists(&nodes[2].uri(), "made-while-n3-was-down").await);
        assert!(!queue_exists(&nodes[2].uri(), "made-by-a-minority").await);
        // And the cluster takes changes again, from any node.
        let conn = connect(&nodes[2].uri()).await;
        let ch = conn.create_channel().await.unwrap();
        ch.queue_declare(
            "after-healing".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        let _ = conn.close(200, "bye".into()).await;
        assert!(queue_exists(&nodes[0].uri(), "after-healing").await);
    });
}

#[test]
fn forget_cluster_node_removes_a_stopped_node_and_refuses_a_running_one() {
    let root = tempfile::tempdir().unwrap();
    let mut nodes = cluster(root.path(), 3);
    let admin1 = nodes[0].h().admin();
    let e = admin1
        .cluster(ClusterCmd::Forget {
            node: nodes[2].name.clone(),
        })
        .expect_err("a running node is not forgotten");
    assert!(e.contains("running"), "{e}");
    nodes[2].stop();
    admin1
        .cluster(ClusterCmd::Forget {
            node: nodes[2].name.clone(),
        })
        .expect("a stopped node is forgotten");
    let s = nodes[0].status();
    assert_eq!(
        names(&s, |_| true),
        vec![nodes[0].name.clone(), nodes[1].name.clone()]
    );
    // Two nodes left, both needed: changes still go through.
    rt().block_on(async {
        let conn = connect(&nodes[1].uri()).await;
        let ch = conn.create_channel().await.unwrap();
        ch.queue_declare(
            "after-forget".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        let _ = conn.close(200, "bye".into()).await;
    });
}

#[test]
fn joining_needs_a_stopped_app_and_resets_the_joining_node() {
    let root = tempfile::tempdir().unwrap();
    let a = TestNode::new(root.path(), 1);
    let b = TestNode::new(root.path(), 2);
    rt().block_on(async {
        let conn = connect(&b.uri()).await;
        let ch = conn.create_channel().await.unwrap();
        ch.queue_declare(
            "only-on-b".into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
        let _ = conn.close(200, "bye".into()).await;
    });
    let e = b
        .h()
        .admin()
        .cluster(ClusterCmd::Join {
            node: a.name.clone(),
            addr: Some(format!("127.0.0.1:{}", a.cluster_port)),
            ram: false,
        })
        .expect_err("the app must be stopped");
    assert!(e.contains("stop_app"), "{e}");
    b.join(&a);
    b.wait_running();
    rt().block_on(async {
        assert!(
            !queue_exists(&b.uri(), "only-on-b").await,
            "b's own data was reset"
        );
        assert!(!queue_exists(&a.uri(), "only-on-b").await);
    });
    // The seed's default user still logs in on the joined node.
    let s = b.status();
    assert_eq!(names(&s, |_| true), vec![a.name.clone(), b.name.clone()]);
}

pub(super) async fn declare_durable(ch: &lapin::Channel, name: &str) {
    ch.queue_declare(
        name.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
}

/// Publishes `n` persistent messages `{tag}-{i}` with confirms, waiting for
/// every confirm; returns how many were acked.
pub(super) async fn publish_confirmed(uri: &str, exchange: &str, key: &str, tag: &str, n: usize) -> usize {
    let conn = connect(uri).await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    let mut pending = Vec::new();
    for i in 0..n {
        let body = format!("{tag}-{i}");
        pending.push(
            ch.basic_publish(
                exchange.into(),
                key.into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                lapin::BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .unwrap(),
        );
    }
    let mut acked = 0;
    for p in pending {
        if p.await.unwrap().is_ack() {
            acked += 1;
        }
    }
    let _ = conn.close(200, "bye".into()).await;
    acked
}

/// Takes every message of `queue` (on the queue's own node) with
/// basic.get until it is empty.
pub(super) async fn drain(uri: &str, queue: &str) -> Vec<String> {
    let conn = connect(uri).await;
    let ch = conn.create_channel().await.unwrap();
    let mut out = Vec::new();
    while let Some(m) = ch
        .basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        out.push(String::from_utf8(m.delivery.data.clone()).unwrap());
    }
    let _ = conn.close(200, "bye".into()).await;
    out
}

#[test]
fn publishes_on_any_node_reach_a_queue_on_another_and_are_confirmed() {
    let root = tempfile::tempdir().unwrap();
    let nodes = cluster(root.path(), 3);
    rt().block_on(async {
        // The queue lives on node 1 (declared there).
        let conn = connect(&nodes[0].uri()).await;
        let ch = conn.create_channel().await.unwrap();
        declare_durable(&ch, "on-n1").await;
        let _ = conn.close(200, "bye".into()).await;
        // Its declaration reaches the others before they publish.
        for n in &nodes[1..] {
            let uri = n.uri();
            let deadline = Instant::now() + Duration::from_secs(10);
            while !queue_exists(&uri, "on-n1").await {
                assert!(Instant::now() < deadline);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let (u2, u3) = (nodes[1].uri(), nodes[2].uri());
        let (a, b) = tokio::join!(
            publish_confirmed(&u2, "", "on-n1", "n2", 300),
            publish_confirmed(&u3, "", "on-n1", "n3", 300),
        );
        assert_eq!((a, b), (300, 300), "every message confirmed");
        // A passive declare on another node counts on the queue's node.
        let conn = connect(&u3).await;
        let ch = conn.create_channel().await.unwrap();
        let q = ch
            .queue_declare(
                "on-n1".into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        assert_eq!((q.message_count(), q.consumer_count()), (600, 0));
        // So do the management plane's figures (asked of the queue's node),
        // with a consumer on node 2 counted there.
        let conn2 = connect(&u2).await;
        let ch2 = conn2.create_channel().await.unwrap();
        ch2.basic_qos(5, BasicQosOptions::default()).await.unwrap();
        let _consumer = ch2
            .basic_consume(
                "on-n1".into(),
                "c".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let figures = |n: &TestNode| {
            let s = n.h().admin().snapshot().unwrap();
            let q = s.queue("/", "on-n1").expect("listed").clone();
            (q.messages_ready, q.messages_unacknowledged, q.consumers, q.home)
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = (figures(&nodes[2]), figures(&nodes[0]));
            let want = ((595, 5, 1, Some(nodes[0].name.clone())), (595, 5, 1, None));
            if got == want {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "figures on node 3 and node 1: {got:?}, want {want:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = conn2.close(200, "bye".into()).await;
        let _ = conn.close(200, "bye".into()).await;
        // What the consumer held goes back before the queue is drained.
        let deadline = Instant::now() + Duration::from_secs(10);
        while figures(&nodes[0]) != (600, 0, 0, None) {
            assert!(Instant::now() < deadline, "node 1: {:?}", figures(&nodes[0]));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let got = drain(&nodes[0].uri(), "on-n1").await;
        assert_eq!(got.len(), 600);
        for tag in ["n2", "n3"] {
            let mine: Vec<&String> = got.iter().filter(|m| m.starts_with(tag)).collect();
            let want: Vec<String> = (0..300).map(|i| format!("{tag}-{i}")).collect();
            assert_eq!(mine.len(), 300);
            assert!(
                mine.iter().zip(&want).all(|(a, b)| *a == b),
                "{tag}'s messages in order"
            );
        }
    });
}

#[test]
fn a_fanout_reaches_queues_on_every_node() {
    let root = tempfile::tempdir().unwrap();
    let nodes = cluster(root.path(), 3);
    rt().block_on(async {
        for (i, n) in nodes.iter().enumerate() {
            let conn = connect(&n.uri()).await;
            let ch = conn.create_channel().await.unwrap();
            if i == 0 {
                ch.exchange_declare(
                    "everywhere".into(),
                    lapin::ExchangeKind::Fanout,
                    ExchangeDeclareOptions::default(),
                    FieldTable::default(),
                )
                .await
                .unwrap();
            }
            let q = format!("fan-{i}");
            declare_durable(&ch, &q).await;
            ch.queue_bind(
                q.as_str().into(),
                "everywhere".into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
            let _ = conn.close(200, "bye".into()).await;
        }
        // Published on node 2 once it has every binding.
        wait_for_async(|| async {
            nodes[1]
                .h()
                .admin()
                .snapshot()
                .unwrap()
                .bindings
                .iter()
                .filter(|b| b.source == "everywhere")
                .count()
                == 3
        })
        .await;
        assert_eq!(
            publish_confirmed(&nodes[1].uri(), "everywhere", "", "f", 50).await,
            50
        );
        for (i, n) in nodes.iter().enumerate() {
            let got = drain(&n.uri(), &format!("fan-{i}")).await;
            assert_eq!(got.len(), 50, "queue on {}", n.name);
        }
    });
}

pub(super) async fn wait_for_async<F, Fut>(mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn a_consumer_on_one_node_takes_a_queue_of_another() {
    use futures::StreamExt;
    let root = tempfile::tempdir().unwrap();
    let nodes = cluster(root.path(), 3);
    rt().block_on(async {
        let conn1 = connect(&nodes[0].uri()).await;
        let ch1 = conn1.create_channel().await.unwrap();
        declare_durable(&ch1, "work").await;
        let _ = conn1.close(200, "bye".into()).await;
        let u1 = nodes[0].uri();
        assert_eq!(publish_confirmed(&u1, "", "work", "m", 500).await, 500);
        // Consumed on node 2, acked one by one, prefetch 50.
        let u2 = nodes[1].uri();
        wait_for_async(|| queue_exists(&u2, "work")).await;
        let conn2 = connect(&u2).await;
        let ch2 = conn2.create_channel().await.unwrap();
        ch2.basic_qos(50, BasicQosOptions::default()).await.unwrap();
        let mut consumer = ch2
            .basic_consume(
                "work".into(),
                "c2".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        for i in 0..500 {
            let d = tokio::time::timeout(Duration::from_secs(10), consumer.next())
                .await
                .expect("a delivery in time")
                .unwrap()
                .unwrap();
            assert_eq!(d.data, format!("m-{i}").into_bytes(), "in order");
            d.ack(BasicAckOptions::default()).await.unwrap();
        }
        // basic.get from node 3 sees it empty once the acks are in.
        let u3 = nodes[2].uri();
        wait_for_async(|| async { drain(&u3, "work").await.is_empty() }).await;
        // A cancelled remote consumer gets nothing more: what is published
        // after stays in the queue on node 1.
        ch2.basic_cancel("c2".into(), BasicCancelOptions::default())
            .await
            .unwrap();
        assert_eq!(publish_confirmed(&u1, "", "work", "after-cancel", 5).await, 5);
        wait_for_async(|| async {
            let snap = nodes[0].h().admin().snapshot().unwrap();
            snap.queues
                .iter()
                .any(|q| q.name == "work" && q.messages_ready == 5 && q.consumers == 0)
        })
        .await;
        assert_eq!(drain(&u1, "work").await.len(), 5);
        let _ = conn2.close(200, "bye".into()).await;
        // Unacked deliveries of a remote consumer come back when its
        // connection closes.
        assert_eq!(publish_confirmed(&u1, "", "work", "r", 10).await, 10);
        let conn3 = connect(&u3).await;
        let ch3 = conn3.create_channel().await.unwrap();
        let mut c3 = ch3
            .basic_consume(
                "work".into(),
                "c3".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        for _ in 0..10 {
            tokio::time::timeout(Duration::from_secs(10), c3.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
        }
        let _ = conn3.close(200, "bye".into()).await;
        wait_for_async(|| async {
            let snap = nodes[0].h().admin().snapshot().unwrap();
            snap.queues
                .iter()
                .any(|q| q.name == "work" && q.messages_ready == 10)
        })
        .await;
        let got = drain(&u1, "work").await;
        assert_eq!(got.len(), 10, "requeued on the queue's node");
        // Nothing of the closed remote connections stays on node 1.
        wait_for_async(|| async { nodes[0].status()["remote_connections"] == 0 }).await;
    });
}

#[test]
fn what_a_lost_node_consumed_unacked_comes_back() {
    use futures::StreamExt;
    let root = tempfile::tempdir().unwrap();
    let mut nodes = cluster(root.path(), 3);
    let (u1, u2) = (nodes[0].uri(), nodes[1].uri());
    rt().block_on(async {
        let conn1 = connect(&u1).await;
        let ch1 = conn1.create_channel().await.unwrap();
        declare_durable(&ch1, "held").await;
        let _ = conn1.close(200, "bye".into()).await;
        assert_eq!(publish_confirmed(&u1, "", "held", "h", 10).await, 10);
        wait_for_async(|| queue_exists(&u2, "held")).await;
        let conn2 = connect(&u2).await;
        let ch2 = conn2.create_channel().await.unwrap();
        let mut c = ch2
            .basic_consume(
                "held".into(),
                "c".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        for _ in 0..10 {
            tokio::time::timeout(Duration::from_secs(10), c.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
        }
        std::mem::forget(conn2);
    });
    // Node 2 goes, its consumer's ten deliveries unacked.
    nodes[1].stop();
    let admin = nodes[0].h().admin();
    wait_for("the deliveries to be requeued on node 1", || {
        let snap = admin.snapshot().unwrap();
        snap.queues
            .iter()
            .any(|q| q.name == "held" && q.messages_ready == 10 && q.consumers == 0)
    });
}

/// Waits (at most 20 s) for the broker to cancel `c`: its stream ends.
/// Deliveries before that are acked and counted.
pub(super) async fn cancelled(c: &mut lapin::Consumer) -> usize {
    use futures::StreamExt;
    let mut got = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(20), c.next()).await {
            Ok(None) => return got,
            Ok(Some(Ok(d))) => {
                got += 1;
                d.ack(BasicAckOptions::default()).await.unwrap();
            }
            Ok(Some(Err(e))) => panic!("the consumer failed instead of being cancelled: {e}"),
            Err(_) => panic!("no basic.cancel in 20 s"),
        }
    }
}

pub(super) async fn consume(uri: &str, queue: &str) -> (Connection, lapin::Consumer) {
    let conn = connect(uri).await;
    let ch = conn.create_channel().await.unwrap();
    let c = ch
        .basic_consume(
            queue.into(),
            "c".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    (conn, c)
}

#[test]
fn a_consumer_of_a_classic_queue_whose_node_restarts_or_goes_is_cancelled() {
    let root = tempfile::tempdir().unwrap();
    let mut nodes = cluster(root.path(), 3);
    let u2 = nodes[1].uri();
    let rt = rt();
    rt.block_on(async {
        let conn = connect(&nodes[0].uri()).await;
        let ch = conn.create_channel().await.unwrap();
        declare_durable(&ch, "cq").await;
        let _ = conn.close(200, "bye".into()).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !queue_exists(&u2, "cq").await {
            assert!(Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    // Its node restarts: the consumer on node 2 is told (RabbitMQ's
    // consumer cancel notification), and may consume again.
    let (conn, mut c) = rt.block_on(consume(&u2, "cq"));
    nodes[0].restart();
    nodes[0].wait_running();
    rt.block_on(async {
        assert_eq!(cancelled(&mut c).await, 0);
        assert!(conn.status().connected(), "the connection goes on");
        let _ = conn.close(200, "bye".into()).await;
    });
    // Its node goes: the same.
    let (conn, mut c) = rt.block_on(consume(&u2, "cq"));
    rt.block_on(async {
        assert_eq!(publish_confirmed(&nodes[0].uri(), "", "cq", "m", 3).await, 3);
    });
    nodes[0].stop();
    rt.block_on(async {
        assert_eq!(cancelled(&mut c).await, 3);
        let _ = conn.close(200, "bye".into()).await;
    });
}

/// As with RabbitMQ, whose metadata transactions commit on every running
/// node: once a declare or bind is answered, every running node routes by
/// it. A publish on another node right after the answer is not dropped as
/// unroutable (and then confirmed, which would lose it).
#[test]
fn a_change_answered_on_one_node_already_routes_on_every_other() {
    let root = tempfile::tempdir().unwrap();
    let nodes = cluster(root.path(), 3);
    rt().block_on(async {
        let c1 = connect(&nodes[0].uri()).await;
        let ch1 = c1.create_channel().await.unwrap();
        let mut publishers = Vec::new();
        for n in &nodes[1..] {
            let c = connect(&n.uri()).await;
            let ch = c.create_channel().await.unwrap();
            ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
            publishers.push((c, ch));
        }
        let publish = |ch: &lapin::Channel, exchange: &str, key: &str| {
            let (ch, exchange, key) = (ch.clone(), exchange.to_string(), key.to_string());
            async move {
                ch.basic_publish(
                    exchange.as_str().into(),
                    key.as_str().into(),
                    BasicPublishOptions::default(),
                    b"m",
                    lapin::BasicProperties::default().with_delivery_mode(2),
                )
                .await
                .unwrap()
                .await
                .unwrap()
                .is_ack()
            }
        };
        super::compaction::declare_exchange(&ch1, "fresh-x").await;
        for i in 0..15 {
            let q = format!("fresh-{i}");
            declare_durable(&ch1, &q).await;
            for (_, ch) in &publishers {
                assert!(publish(ch, "", &q).await);
            }
            ch1.queue_bind(
                q.as_str().into(),
                "fresh-x".into(),
                q.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
            for (_, ch) in &publishers {
                assert!(publish(ch, "fresh-x", &q).await);
            }
        }
        for i in 0..15 {
            let q = format!("fresh-{i}");
            let got = passive_declare(&nodes[0].uri(), &q).await.expect("exists");
            assert_eq!(
                got.message_count(),
                4,
                "{q}: confirmed publishes on nodes 2 and 3 right after its declare and bind"
            );
        }
        for (c, _) in publishers {
            let _ = c.close(200, "bye".into()).await;
        }
        let _ = c1.close(200, "bye".into()).await;
    });
}
