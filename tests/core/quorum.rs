//! A quorum queue on a single node (a one-replica group, as RabbitMQ
//! declares one on a single node): confirmed messages survive `kill -9`,
//! in order, and what was acked before the crash stays acked unless the
//! ack was still on its way.

use super::common::{self, ChildBroker};
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use std::collections::HashSet;

fn quorum() -> FieldTable {
    let mut t = FieldTable::default();
    t.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_quorum_queue_survives_kill_9() {
    let (_tmp, data) = common::temp_data_dir();
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let acked: HashSet<String>;
    {
        let broker = ChildBroker::start_with(&data, 2, 0, &["--cluster-port", "0"]).expect("starts");
        let conn = common::connect(&broker.uri).await;
        let ch = conn.create_channel().await.unwrap();
        ch.queue_declare("qq1".into(), durable, quorum()).await.unwrap();
        ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
        let mut pending = Vec::new();
        for i in 0..500 {
            pending.push(
                ch.basic_publish(
                    "".into(),
                    "qq1".into(),
                    BasicPublishOptions::default(),
                    format!("m-{i:04}").as_bytes(),
                    lapin::BasicProperties::default(),
                )
                .await
                .unwrap(),
            );
        }
        for p in pending {
            assert!(p.await.unwrap().is_ack(), "a single replica confirms");
        }
        // Take 100 and ack them, and one more left unacked.
        let c2 = conn.create_channel().await.unwrap();
        let mut got = HashSet::new();
        for _ in 0..100 {
            let m = c2
                .basic_get("qq1".into(), BasicGetOptions { no_ack: false })
                .await
                .unwrap()
                .expect("a message");
            got.insert(String::from_utf8(m.delivery.data.clone()).unwrap());
            m.delivery.ack(BasicAckOptions::default()).await.unwrap();
        }
        let held = c2
            .basic_get("qq1".into(), BasicGetOptions { no_ack: false })
            .await
            .unwrap()
            .expect("a message");
        assert_eq!(held.delivery.data, b"m-0100");
        // Let the acks reach the log before the crash (they are proposed
        // at the end of each turn and committed right after).
        let q = ch.queue_declare("qq1".into(), durable, quorum()).await.unwrap();
        assert_eq!(q.message_count(), 399);
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        acked = got;
        drop(broker); // kill -9
    }
    let broker = ChildBroker::start_with(&data, 2, 0, &["--cluster-port", "0"]).expect("restarts");
    let conn = common::connect(&broker.uri).await;
    let ch = conn.create_channel().await.unwrap();
    let mut back = Vec::new();
    for _ in 0..100 {
        let q = ch
            .queue_declare(
                "qq1".into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        if q.message_count() >= 400 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    while let Some(m) = ch
        .basic_get("qq1".into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        back.push((
            String::from_utf8(m.delivery.data.clone()).unwrap(),
            m.delivery.redelivered,
        ));
    }
    let bodies: Vec<&String> = back.iter().map(|(b, _)| b).collect();
    let expect: Vec<String> = (100..500).map(|i| format!("m-{i:04}")).collect();
    assert_eq!(
        bodies,
        expect.iter().collect::<Vec<_>>(),
        "every confirmed, unacked message, in order"
    );
    for (b, _) in &back {
        assert!(!acked.contains(b), "{b} was acked and came back");
    }
}

/// As RabbitMQ, where both go through the queue's log: a `basic.get`
/// right after publishes on the same channel finds them, although a
/// quorum queue takes a message only once its group committed it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_right_after_a_publish_finds_it() {
    let (_tmp, data) = common::temp_data_dir();
    let broker = ChildBroker::start_with(&data, 2, 0, &["--cluster-port", "0"]).expect("starts");
    let conn = common::connect(&broker.uri).await;
    let ch = conn.create_channel().await.unwrap();
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare("qq-get".into(), durable, quorum())
        .await
        .unwrap();
    for round in 0..10 {
        let bodies: Vec<String> = (0..=round % 3).map(|i| format!("g-{round}-{i}")).collect();
        for b in &bodies {
            ch.basic_publish(
                "".into(),
                "qq-get".into(),
                BasicPublishOptions::default(),
                b.as_bytes(),
                lapin::BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .unwrap();
        }
        for b in &bodies {
            let got = ch
                .basic_get("qq-get".into(), BasicGetOptions { no_ack: true })
                .await
                .unwrap()
                .map(|m| String::from_utf8_lossy(&m.delivery.data).into_owned());
            assert_eq!(got.as_deref(), Some(b.as_str()), "round {round}");
        }
    }
    let empty = ch
        .basic_get("qq-get".into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap();
    assert!(empty.is_none());
}
