//! A network partition between live nodes: every node is reached through a
//! proxy of the test's, which reads the name in each connection's hello (the
//! cluster port's handshake starts with it) and can cut one node off both
//! ways while it keeps running. The majority goes on, the cut node refuses
//! changes, and after healing it has what the majority did and nothing of
//! what it refused.

use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use warren::admin::ClusterCmd;

/// Connections through the proxies, and who is cut off.
#[derive(Default)]
struct Net {
    /// Node names cut off from every other node.
    cut: HashSet<String>,
    /// (client, server): the first node's connections to the second are
    /// cut (its requests to it fail), the other way round is not.
    cut_links: HashSet<(String, String)>,
    /// (client node, server node, its two sockets).
    conns: Vec<(String, String, TcpStream, TcpStream)>,
}

impl Net {
    fn isolate(&mut self, node: &str) {
        self.cut.insert(node.to_string());
        self.conns.retain(|(from, to, a, b)| {
            let keep = from != node && to != node;
            if !keep {
                let _ = a.shutdown(Shutdown::Both);
                let _ = b.shutdown(Shutdown::Both);
            }
            keep
        });
    }

    /// `from` can no longer reach `to`; `to` still reaches `from`.
    fn cut_link(&mut self, from: &str, to: &str) {
        self.cut_links.insert((from.to_string(), to.to_string()));
        self.conns.retain(|(f, t, a, b)| {
            let keep = !(f == from && t == to);
            if !keep {
                let _ = a.shutdown(Shutdown::Both);
                let _ = b.shutdown(Shutdown::Both);
            }
            keep
        });
    }

    fn heal(&mut self) {
        self.cut.clear();
        self.cut_links.clear();
    }
}

/// A proxy in front of `target` (a node's cluster port), named `server`.
fn proxy(net: Arc<Mutex<Net>>, server: String, target: u16) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in l.incoming() {
            let Ok(mut client) = client else { continue };
            let net = net.clone();
            let server = server.clone();
            std::thread::spawn(move || {
                // The hello: magic, version, role, nonce, then the name.
                let mut head = [0u8; 40];
                if client.read_exact(&mut head).is_err() {
                    return;
                }
                let mut name = vec![0u8; head[39] as usize];
                if client.read_exact(&mut name).is_err() {
                    return;
                }
                let from = String::from_utf8_lossy(&name).into_owned();
                {
                    let n = net.lock().unwrap();
                    if n.cut.contains(&from)
                        || n.cut.contains(&server)
                        || n.cut_links.contains(&(from.clone(), server.clone()))
                    {
                        return;
                    }
                }
                let Ok(mut up) = TcpStream::connect(("127.0.0.1", target)) else {
                    return;
                };
                if up.write_all(&head).and_then(|_| up.write_all(&name)).is_err() {
                    return;
                }
                net.lock().unwrap().conns.push((
                    from,
                    server,
                    client.try_clone().unwrap(),
                    up.try_clone().unwrap(),
                ));
                let (mut c2, mut u2) = (client.try_clone().unwrap(), up.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut u2, &mut c2);
                    let _ = c2.shutdown(Shutdown::Both);
                });
                let _ = std::io::copy(&mut client, &mut up);
                let _ = up.shutdown(Shutdown::Both);
            });
        }
    });
    port
}

fn start(name: &str, dir: &Path, cluster_port: u16, advertise: u16) -> warren::ServerHandle {
    let mut cfg = super::common::node_config(name, dir, 1, cluster_port, "partition-test");
    cfg.cluster.advertise = Some(format!("127.0.0.1:{advertise}"));
    warren::start(cfg).expect("node starts")
}

use super::common::free_port;

async fn declare(uri: &str, queue: &str) -> Result<(), String> {
    let c = Connection::connect(uri, ConnectionProperties::default())
        .await
        .map_err(|e| e.to_string())?;
    let ch = c.create_channel().await.map_err(|e| e.to_string())?;
    let r = ch
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map(|_| ())
        .map_err(|e| e.to_string());
    let _ = c.close(200, "bye".into()).await;
    r
}

fn has_queue(h: &warren::ServerHandle, name: &str) -> bool {
    h.admin()
        .snapshot()
        .unwrap()
        .queues
        .iter()
        .any(|q| q.name == name)
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Three nodes, each behind a proxy of `net`, joined through the proxies;
/// named `{prefix}1..3@127.0.0.1`.
struct Proxied {
    _root: tempfile::TempDir,
    net: Arc<Mutex<Net>>,
    names: Vec<String>,
    nodes: Vec<warren::ServerHandle>,
    uris: Vec<String>,
}

fn proxied_cluster(prefix: &str) -> Proxied {
    let root = tempfile::tempdir().unwrap();
    let net = Arc::new(Mutex::new(Net::default()));
    let names: Vec<String> = (1..=3).map(|i| format!("{prefix}{i}@127.0.0.1")).collect();
    let mut nodes = Vec::new();
    let mut proxies = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let cport = free_port();
        let pport = proxy(net.clone(), name.clone(), cport);
        nodes.push(start(
            name,
            &root.path().join(format!("{prefix}{}", i + 1)),
            cport,
            pport,
        ));
        proxies.push(pport);
    }
    for n in &nodes[1..] {
        let a = n.admin();
        a.stop_app().unwrap();
        a.cluster(ClusterCmd::Join {
            node: names[0].clone(),
            addr: Some(format!("127.0.0.1:{}", proxies[0])),
            ram: false,
        })
        .expect("joins through the proxy");
        a.start_app();
    }
    let uris = nodes
        .iter()
        .map(|h| format!("amqp://guest:guest@{}/%2f", h.amqp_addr()))
        .collect();
    Proxied {
        _root: root,
        net,
        names,
        nodes,
        uris,
    }
}

#[test]
fn a_cut_off_node_refuses_changes_and_catches_up_after_healing() {
    let Proxied {
        _root,
        net,
        names,
        nodes,
        uris,
    } = proxied_cluster("x");
    let rt = super::nodes::rt();
    rt.block_on(declare(&uris[0], "before")).unwrap();
    wait_for("the queue on x3", || has_queue(&nodes[2], "before"));

    // x3 is cut off, alive.
    net.lock().unwrap().isolate(&names[2]);
    std::thread::sleep(Duration::from_secs(3));
    let e = rt
        .block_on(declare(&uris[2], "by-the-minority"))
        .expect_err("a node cut off from the others refuses changes");
    assert!(e.contains("majority"), "{e}");
    // The majority goes on (x1 or x2 leads, whichever won the election).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match rt.block_on(declare(&uris[1], "during")) {
            Ok(()) => break,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("the majority refuses changes: {e}"),
        }
    }
    assert!(has_queue(&nodes[0], "during"));
    assert!(!has_queue(&nodes[2], "during"), "x3 is cut off");

    // Healed: x3 catches up, and what it refused does not exist anywhere.
    net.lock().unwrap().heal();
    wait_for("x3 to catch up", || has_queue(&nodes[2], "during"));
    for h in &nodes {
        assert!(!has_queue(h, "by-the-minority"));
    }
    rt.block_on(declare(&uris[2], "after"))
        .expect("x3 takes changes again");
    wait_for("the queue on x1", || has_queue(&nodes[0], "after"));
}

/// Publishes `ids` one batch at a time with confirms on `uri`; returns the
/// ids confirmed (nacks and failures are not: they may or may not be in).
async fn publish_ids(uri: &str, queue: &str, ids: impl IntoIterator<Item = u64>) -> Vec<u64> {
    let mut ok = Vec::new();
    let Ok(Ok(c)) = tokio::time::timeout(
        Duration::from_secs(3),
        Connection::connect(uri, ConnectionProperties::default()),
    )
    .await
    else {
        return ok;
    };
    let ch = c.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    let mut pending = Vec::new();
    for id in ids {
        if let Ok(p) = ch
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                id.to_string().as_bytes(),
                lapin::BasicProperties::default().with_delivery_mode(2),
            )
            .await
        {
            pending.push((id, p));
        }
    }
    for (id, p) in pending {
        if let Ok(Ok(conf)) = tokio::time::timeout(Duration::from_secs(10), p).await
            && conf.is_ack()
        {
            ok.push(id);
        }
    }
    let _ = c.close(200, "bye".into()).await;
    ok
}

#[test]
fn a_quorum_queue_leader_cut_off_refuses_and_the_majority_goes_on() {
    super::quorum::debug_logs();
    let Proxied {
        _root,
        net,
        names,
        nodes,
        uris,
    } = proxied_cluster("y");
    let rt = super::nodes::rt();
    let leader_of = |h: &warren::ServerHandle| {
        h.admin()
            .snapshot()
            .ok()
            .and_then(|s| s.queues.into_iter().find(|q| q.name == "qp"))
            .and_then(|q| q.quorum)
            .and_then(|q| q.leader)
    };
    let mut confirmed: HashSet<u64> = HashSet::new();
    rt.block_on(async {
        let c = Connection::connect(&uris[0], ConnectionProperties::default())
            .await
            .unwrap();
        let ch = c.create_channel().await.unwrap();
        let mut args = FieldTable::default();
        args.insert(
            "x-queue-type".into(),
            lapin::types::AMQPValue::LongString("quorum".into()),
        );
        ch.queue_declare(
            "qp".into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            args,
        )
        .await
        .unwrap();
        let _ = c.close(200, "bye".into()).await;
        // (A new group's first election can take a few tries on a loaded
        // machine: what is nacked meanwhile is sent again.)
        let deadline = Instant::now() + Duration::from_secs(30);
        while confirmed.len() < 200 {
            assert!(
                Instant::now() < deadline,
                "only {} of 200 confirmed",
                confirmed.len()
            );
            let missing: Vec<u64> = (0..200).filter(|id| !confirmed.contains(id)).collect();
            confirmed.extend(publish_ids(&uris[0], "qp", missing).await);
        }
    });
    let first = leader_of(&nodes[0]).expect("a leader");
    let l = names.iter().position(|n| *n == first).unwrap();
    let other = (l + 1) % 3;

    // The leader is cut off, alive: what it is sent is not confirmed; the
    // other two elect a leader and confirm what they are sent.
    net.lock().unwrap().isolate(&names[l]);
    std::thread::sleep(Duration::from_secs(2));
    let minority = rt.block_on(publish_ids(&uris[l], "qp", 1000..1050));
    assert!(minority.is_empty(), "a cut-off leader confirmed {minority:?}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut next = 2000;
    while confirmed.len() < 400 {
        assert!(Instant::now() < deadline, "the majority confirms nothing");
        let got = rt.block_on(publish_ids(&uris[other], "qp", next..next + 50));
        next += 50;
        confirmed.extend(got);
    }
    let new_leader = leader_of(&nodes[other]).expect("a leader");
    assert_ne!(new_leader, first);

    // Healed: the old leader follows; every confirmed message is there,
    // consumed from it, and nothing that was never published.
    net.lock().unwrap().heal();
    rt.block_on(async {
        use futures::StreamExt;
        let mut seen: HashSet<u64> = HashSet::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !confirmed.is_subset(&seen) {
            assert!(
                Instant::now() < deadline,
                "{} confirmed messages never came back",
                confirmed.difference(&seen).count()
            );
            let Ok(c) = Connection::connect(&uris[l], ConnectionProperties::default()).await else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            let ch = c.create_channel().await.unwrap();
            let Ok(mut consumer) = ch
                .basic_consume(
                    "qp".into(),
                    "".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
            else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            while let Ok(Some(Ok(d))) = tokio::time::timeout(Duration::from_secs(2), consumer.next()).await {
                let id: u64 = std::str::from_utf8(&d.data).unwrap().parse().unwrap();
                assert!(
                    id < 200 || (1000..1050).contains(&id) || (2000..next).contains(&id),
                    "{id} was never published"
                );
                seen.insert(id);
                let _ = d.ack(BasicAckOptions::default()).await;
            }
            let _ = c.close(200, "bye".into()).await;
        }
    });
}

/// A queue's node that cannot reach a consuming node (one way of the link
/// cut) takes it as gone and drops its consumers there. The consuming node
/// still reaches the queue's node: at its next check it learns its
/// consumers were dropped and cancels them, so the client gets a
/// `basic.cancel` rather than waiting for deliveries that will not come.
#[test]
fn consumers_dropped_by_a_queue_node_that_could_not_reach_them_are_cancelled() {
    let Proxied {
        _root,
        net,
        names,
        nodes: _nodes,
        uris,
    } = proxied_cluster("y");
    let rt = super::nodes::rt();
    rt.block_on(async {
        declare(&uris[0], "on-y1").await.unwrap();
        let (conn, mut c) = super::nodes::consume(&uris[1], "on-y1").await;
        assert_eq!(publish_ids(&uris[0], "on-y1", 0..3).await.len(), 3);
        use futures::StreamExt;
        for _ in 0..3 {
            let d = tokio::time::timeout(Duration::from_secs(10), c.next())
                .await
                .expect("a delivery")
                .unwrap()
                .unwrap();
            d.ack(BasicAckOptions::default()).await.unwrap();
        }
        // y1 can no longer reach y2; y2 still reaches y1.
        net.lock().unwrap().cut_link(&names[0], &names[1]);
        assert_eq!(super::nodes::cancelled(&mut c).await, 0);
        assert!(conn.status().connected(), "only the consumer is cancelled");
        net.lock().unwrap().heal();
        let _ = conn.close(200, "bye".into()).await;
    });
}
