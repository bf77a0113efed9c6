//! Quorum queues on in-process clusters: replicated on three nodes, any
//! node publishes and consumes, a stopped leader's queue goes on from a
//! follower with every confirmed message, delivery counts and limits.

use super::nodes::{TestNode, cluster, connect, rt};
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};

pub(super) fn quorum_args(extra: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    t.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    for (k, v) in extra {
        t.insert((*k).into(), v.clone());
    }
    t
}

pub(super) async fn declare_quorum(uri: &str, name: &str, extra: &[(&str, AMQPValue)]) {
    let conn = connect(uri).await;
    let ch = conn.create_channel().await.unwrap();
    let declare = ch.queue_declare(
        name.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        quorum_args(extra),
    );
    tokio::time::timeout(std::time::Duration::from_secs(30), declare)
        .await
        .expect("a declare-ok in time")
        .expect("declares a quorum queue");
    let _ = conn.close(200, "bye".into()).await;
}

/// Publishes `{tag}-{i}` for `i` in `range` to the default exchange with
/// confirms, each retried until confirmed (a leader change nacks some or
/// breaks the connection); returns the bodies confirmed.
pub(super) async fn publish_until_confirmed(
    uri: &str,
    queue: &str,
    tag: &str,
    range: std::ops::Range<usize>,
) -> Vec<String> {
    let mut confirmed = Vec::new();
    let mut i = range.start;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    'outer: while i < range.end {
        assert!(std::time::Instant::now() < deadline, "publishing took too long");
        let Ok(conn) = lapin::Connection::connect(uri, lapin::ConnectionProperties::default()).await else {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        };
        let ch = conn.create_channel().await.unwrap();
        ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
        while i < range.end {
            let end = (i + 50).min(range.end);
            let mut pending = Vec::new();
            for k in i..end {
                let body = format!("{tag}-{k}");
                match ch
                    .basic_publish(
                        "".into(),
                        queue.into(),
                        BasicPublishOptions::default(),
                        body.as_bytes(),
                        lapin::BasicProperties::default().with_delivery_mode(2),
                    )
                    .await
                {
                    Ok(p) => pending.push((body, p)),
                    Err(_) => continue 'outer,
                }
            }
            let mut all = true;
            for (body, p) in pending {
                match p.await {
                    Ok(c) if c.is_ack() => confirmed.push(body),
                    _ => all = false,
                }
            }
            if !all {
                // Publish the batch again (duplicates are allowed; losses
                // are not).
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
            i = end;
        }
        let _ = conn.close(200, "bye".into()).await;
    }
    confirmed
}

/// Takes messages with basic.get (acked) until `want` distinct bodies
/// were seen or the deadline; returns every body got, duplicates too.
pub(super) async fn get_until(uri: &str, queue: &str, want: usize) -> Vec<String> {
    let mut got = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while seen.len() < want && std::time::Instant::now() < deadline {
        let Ok(conn) = lapin::Connection::connect(uri, lapin::ConnectionProperties::default()).await else {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        };
        let ch = conn.create_channel().await.unwrap();
        loop {
            match ch
                .basic_get(queue.into(), BasicGetOptions { no_ack: false })
                .await
            {
                Ok(Some(m)) => {
                    let body = String::from_utf8(m.delivery.data.clone()).unwrap();
                    let _ = m.delivery.ack(BasicAckOptions::default()).await;
                    seen.insert(body.clone());
                    got.push(body);
                }
                Ok(None) => {
                    if std::env::var_os("WARREN_TEST_LOG").is_some() {
                        eprintln!("get_until: {} of {want}", seen.len());
                    }
                    if seen.len() >= want {
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    if std::time::Instant::now() > deadline {
                        break;
                    }
                }
                Err(e) => {
                    eprintln!("get_until: {e}");
                    break;
                }
            }
        }
        let _ = conn.close(200, "bye".into()).await;
    }
    got
}

pub(super) fn leader_of(n: &TestNode, queue: &str) -> Option<String> {
    let snap = n.h().admin().snapshot().ok()?;
    let q = snap.queues.into_iter().find(|q| q.name == queue)?;
    q.quorum?.leader
}

#[test]
fn a_quorum_queue_survives_its_leader_and_keeps_every_confirmed_message() {
    debug_logs();
    let root = tempfile::tempdir().unwrap();
    let mut nodes = cluster(root.path(), 3);
    rt().block_on(async {
        declare_quorum(&nodes[0].uri(), "qq", &[]).await;
        // Published on node 2, taken on node 3.
        let first = publish_until_confirmed(&nodes[1].uri(), "qq", "a", 0..200).await;
        assert_eq!(first.len(), 200);
        let got = get_until(&nodes[2].uri(), "qq", 200).await;
        let expect: Vec<String> = (0..200).map(|i| format!("a-{i}")).collect();
        assert_eq!(got, expect, "in order, each once");
        // 100 more, then the leader (node 1, which declared it) stops.
        let second = publish_until_confirmed(&nodes[1].uri(), "qq", "b", 0..100).await;
        assert_eq!(second.len(), 100);
    });
    let snap = nodes[0].h().admin().snapshot().unwrap();
    let q = snap.queues.iter().find(|q| q.name == "qq").unwrap();
    assert_eq!(q.quorum.as_ref().unwrap().members.len(), 3, "{:?}", q.quorum);
    nodes[0].stop();
    rt().block_on(async {
        // A follower takes over: what was confirmed is there, and more
        // can be published.
        let third = publish_until_confirmed(&nodes[1].uri(), "qq", "c", 0..100).await;
        assert_eq!(third.len(), 100);
        let got = get_until(&nodes[2].uri(), "qq", 200).await;
        let seen: std::collections::HashSet<&String> = got.iter().collect();
        for i in 0..100 {
            assert!(
                seen.contains(&format!("b-{i}")),
                "b-{i} was confirmed and is lost"
            );
            assert!(
                seen.contains(&format!("c-{i}")),
                "c-{i} was confirmed and is lost"
            );
        }
        for b in &got {
            assert!(
                b.starts_with("b-") || b.starts_with("c-"),
                "{b} was never published or taken twice"
            );
        }
    });
    let leader = leader_of(&nodes[1], "qq").expect("a leader");
    assert_ne!(leader, nodes[0].name);
    // The old leader comes back as a follower and catches up.
    nodes[0].restart();
    nodes[0].wait_running();
    rt().block_on(async {
        let n = publish_until_confirmed(&nodes[0].uri(), "qq", "d", 0..50).await;
        assert_eq!(n.len(), 50);
        let got = get_until(&nodes[0].uri(), "qq", 50).await;
        assert!(got.iter().filter(|b| b.starts_with("d-")).count() >= 50);
    });
}

struct Stderr;
impl log::Log for Stderr {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::Level::Info && m.target().starts_with("warren")
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            eprintln!("[{}] {}", r.level(), r.args());
        }
    }
    fn flush(&self) {}
}

/// `WARREN_TEST_LOG=1`: the nodes' logs on stderr (with `--nocapture`).
pub(super) fn debug_logs() {
    if std::env::var_os("WARREN_TEST_LOG").is_some() && log::set_logger(&Stderr).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
}

fn delivery_count(d: &lapin::message::Delivery) -> Option<i64> {
    let h = d.properties.headers().as_ref()?;
    match h.inner().get("x-delivery-count")? {
        AMQPValue::LongLongInt(n) => Some(*n),
        AMQPValue::LongInt(n) => Some(*n as i64),
        other => panic!("x-delivery-count as {other:?}"),
    }
}

#[test]
fn returns_count_deliveries_and_the_limit_dead_letters() {
    use futures::StreamExt;
    debug_logs();
    let root = tempfile::tempdir().unwrap();
    let nodes = cluster(root.path(), 3);
    rt().block_on(async {
        let conn = connect(&nodes[0].uri()).await;
        let ch = conn.create_channel().await.unwrap();
        ch.exchange_declare(
            "dlx".into(),
            lapin::ExchangeKind::Fanout,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.queue_declare(
            "dlq".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.queue_bind(
            "dlq".into(),
            "dlx".into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        let _ = conn.close(200, "bye".into()).await;
        declare_quorum(
            &nodes[0].uri(),
            "poison",
            &[
                ("x-delivery-limit", AMQPValue::LongInt(2)),
                ("x-dead-letter-exchange", AMQPValue::LongString("dlx".into())),
            ],
        )
        .await;
        let sent = publish_until_confirmed(&nodes[0].uri(), "poison", "p", 0..1).await;
        assert_eq!(sent, vec!["p-0".to_string()]);

        // basic.get shows the count even at 0 (as RabbitMQ does).
        let conn = connect(&nodes[1].uri()).await;
        let ch = conn.create_channel().await.unwrap();
        let m = ch
            .basic_get("poison".into(), BasicGetOptions { no_ack: false })
            .await
            .unwrap()
            .expect("a message");
        assert_eq!(delivery_count(&m.delivery), Some(0));
        m.delivery
            .nack(BasicNackOptions {
                requeue: true,
                ..Default::default()
            })
            .await
            .unwrap();

        // Consumed on node 2 (the queue leads on node 1): each return
        // counts; the third is over the limit.
        let mut consumer = ch
            .basic_consume(
                "poison".into(),
                "c".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let mut counts = Vec::new();
        for _ in 0..2 {
            let d = tokio::time::timeout(std::time::Duration::from_secs(10), consumer.next())
                .await
                .expect("redelivered")
                .unwrap()
                .unwrap();
            assert!(d.redelivered);
            counts.push(delivery_count(&d));
            d.nack(BasicNackOptions {
                requeue: true,
                ..Default::default()
            })
            .await
            .unwrap();
        }
        assert_eq!(counts, vec![Some(1), Some(2)]);
        let more = tokio::time::timeout(std::time::Duration::from_secs(1), consumer.next()).await;
        assert!(more.is_err(), "delivered past its limit");
        let _ = conn.close(200, "bye".into()).await;

        // Dead-lettered with reason delivery_limit.
        let conn = connect(&nodes[0].uri()).await;
        let ch = conn.create_channel().await.unwrap();
        let mut dead = None;
        for _ in 0..100 {
            dead = ch
                .basic_get("dlq".into(), BasicGetOptions { no_ack: true })
                .await
                .unwrap();
            if dead.is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let dead = dead.expect("dead-lettered");
        assert_eq!(dead.delivery.data, b"p-0");
        let h = dead.delivery.properties.headers().as_ref().unwrap();
        assert_eq!(
            h.inner().get("x-first-death-reason"),
            Some(&AMQPValue::LongString("delivery_limit".into()))
        );
        let q = ch
            .queue_declare(
                "poison".into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        assert_eq!(q.message_count(), 0);
        let _ = conn.close(200, "bye".into()).await;
    });
}

#[test]
fn consumers_continue_on_the_new_leader_after_the_old_one_stops() {
    use futures::StreamExt;
    debug_logs();
    let root = tempfile::tempdir().unwrap();
    let mut nodes = cluster(root.path(), 3);
    let uri3 = nodes[2].uri();
    let uri2 = nodes[1].uri();
    rt().block_on(async {
        declare_quorum(&nodes[0].uri(), "work", &[]).await;
        let sent = publish_until_confirmed(&uri2, "work", "w", 0..300).await;
        assert_eq!(sent.len(), 300);
    });
    // A consumer on node 3 (prefetch 10) acks 100, then holds 10 unacked
    // while node 1 (the leader) stops. As in RabbitMQ, it is not
    // cancelled: the same consumer, on the same channel, goes on receiving
    // from the new leader; the 10 it held are acked after the failover and
    // are not delivered again; in the end the queue is empty.
    let rt = rt();
    rt.block_on(async {
        let conn = connect(&uri3).await;
        let ch = conn.create_channel().await.unwrap();
        ch.basic_qos(10, BasicQosOptions::default()).await.unwrap();
        let mut consumer = ch
            .basic_consume(
                "work".into(),
                "c1".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let mut seen = std::collections::HashMap::<String, u32>::new();
        while seen.len() < 100 {
            let d = consumer.next().await.unwrap().unwrap();
            *seen
                .entry(String::from_utf8(d.data.clone()).unwrap())
                .or_default() += 1;
            d.ack(BasicAckOptions::default()).await.unwrap();
        }
        let mut held = Vec::new();
        while held.len() < 10 {
            let d = consumer.next().await.unwrap().unwrap();
            *seen
                .entry(String::from_utf8(d.data.clone()).unwrap())
                .or_default() += 1;
            held.push(d);
        }
        let held_bodies: Vec<String> = held
            .iter()
            .map(|d| String::from_utf8(d.data.clone()).unwrap())
            .collect();
        // Stop the leader from a blocking thread, while this consumer runs.
        let n1 = nodes[0].handle.take().unwrap();
        let stopper = std::thread::spawn(move || n1.shutdown());
        // Nothing more comes until the held ones are acked (prefetch 10).
        let quiet = tokio::time::timeout(std::time::Duration::from_secs(1), consumer.next()).await;
        assert!(quiet.is_err(), "a delivery beyond the prefetch: {quiet:?}");
        let stopper = tokio::task::spawn_blocking(move || stopper.join().unwrap());
        stopper.await.unwrap();
        // The new leader takes over (elected, then recorded in the
        // metadata): once node 3 knows it, the held deliveries are acked
        // there (acks sent to the stopped leader would be lost, and the
        // consumer would stay at its prefetch).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            assert!(std::time::Instant::now() < deadline, "no new leader recorded");
            let l2 = leader_of(&nodes[2], "work");
            if l2.is_some() && l2 != Some(nodes[0].name.clone()) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        for d in held {
            d.ack(BasicAckOptions::default()).await.unwrap();
        }
        while seen.len() < 300 {
            assert!(std::time::Instant::now() < deadline, "only {} of 300", seen.len());
            match tokio::time::timeout(std::time::Duration::from_secs(5), consumer.next()).await {
                Ok(Some(Ok(d))) => {
                    *seen
                        .entry(String::from_utf8(d.data.clone()).unwrap())
                        .or_default() += 1;
                    d.ack(BasicAckOptions::default()).await.unwrap();
                }
                Ok(None) => panic!("the consumer was cancelled"),
                Ok(Some(Err(e))) => panic!("the consumer failed: {e}"),
                Err(_) => panic!("the consumer stalled at {} of 300", seen.len()),
            }
        }
        assert!(ch.status().connected(), "the channel stayed open");
        for i in 0..300 {
            assert!(seen.contains_key(&format!("w-{i}")), "w-{i} lost");
        }
        for b in &held_bodies {
            assert_eq!(seen[b], 1, "{b}, held across the failover, came again");
        }
        // Every ack reached the new leader: nothing is left there (a
        // passive declare counts on the queue's leader only).
        let leader = leader_of(&nodes[2], "work").expect("a leader");
        let at = nodes.iter().find(|n| n.name == leader).expect("a node").uri();
        let probe_conn = connect(&at).await;
        let probe = probe_conn.create_channel().await.unwrap();
        loop {
            assert!(std::time::Instant::now() < deadline, "messages left in the queue");
            let q = probe
                .queue_declare(
                    "work".into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
                .unwrap();
            if q.message_count() == 0 {
                assert_eq!(q.consumer_count(), 1);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        let _ = probe_conn.close(200, "bye".into()).await;
        let _ = conn.close(200, "bye".into()).await;
    });
}

/// Quorum queues share a Raft group per replica set: one declared for a
/// set whose group has a leader already gets its declare-ok at once, and
/// takes confirmed publishes.
#[test]
fn a_queue_of_a_group_with_a_leader_is_declared_and_confirms() {
    debug_logs();
    let root = tempfile::tempdir().unwrap();
    let nodes = cluster(root.path(), 3);
    let names = ["q0", "q1", "q2", "q3"];
    rt().block_on(async {
        for (i, q) in names.iter().enumerate() {
            declare_quorum(&nodes[0].uri(), q, &[]).await;
            let sent = publish_until_confirmed(&nodes[0].uri(), q, q, 0..20).await;
            assert_eq!(sent.len(), 20, "queue {i}");
        }
    });
    // Four queues over three nodes: two of them have the same replicas,
    // in the same order, so one group.
    let snap = nodes[0].h().admin().snapshot().unwrap();
    let members = |name: &str| {
        let q = snap.queues.iter().find(|q| q.name == name).expect("the queue");
        q.quorum.as_ref().expect("a quorum queue").members.clone()
    };
    let sets: std::collections::HashSet<Vec<String>> = names.iter().map(|q| members(q)).collect();
    assert!(
        sets.len() < names.len(),
        "every queue in a group of its own: {sets:?}"
    );
}

/// As RabbitMQ: `tx.commit-ok` comes once the queue's majority has the
/// commit's publishes; a commit that the queue cannot take (its majority
/// is down) fails with 406 "partial tx completion" instead of answering
/// ok for messages that are not there.
#[test]
fn a_transaction_commits_once_a_majority_has_its_publishes() {
    debug_logs();
    let root = tempfile::tempdir().unwrap();
    let mut nodes = cluster(root.path(), 3);
    let uri2 = nodes[1].uri();
    rt().block_on(async {
        declare_quorum(&nodes[0].uri(), "txq", &[]).await;
        let conn = connect(&uri2).await;
        let ch = conn.create_channel().await.unwrap();
        ch.tx_select().await.unwrap();
        for i in 0..10 {
            ch.basic_publish(
                "".into(),
                "txq".into(),
                BasicPublishOptions::default(),
                format!("t-{i}").as_bytes(),
                lapin::BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .unwrap();
        }
        ch.tx_commit().await.expect("commit-ok");
        let _ = conn.close(200, "bye".into()).await;
        let got = get_until(&nodes[2].uri(), "txq", 10).await;
        assert_eq!(got.len(), 10, "{got:?}");
    });
    // Node 2 alone: its replica cannot reach a majority.
    for i in [0, 2] {
        nodes[i].handle.take().unwrap().shutdown();
    }
    rt().block_on(async {
        let conn = connect(&uri2).await;
        let ch = conn.create_channel().await.unwrap();
        ch.tx_select().await.unwrap();
        ch.basic_publish(
            "".into(),
            "txq".into(),
            BasicPublishOptions::default(),
            b"lost",
            lapin::BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap();
        let r = tokio::time::timeout(std::time::Duration::from_secs(30), ch.tx_commit())
            .await
            .expect("the commit is answered");
        let e = r.expect_err("a commit without a majority fails");
        let text = e.to_string();
        assert!(text.contains("partial tx completion"), "{text}");
        let _ = conn.close(200, "bye".into()).await;
    });
}
