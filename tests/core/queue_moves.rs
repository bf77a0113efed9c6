//! Queue moves between shards (`POST /api/warren/queues/V/Q/move`, and the
//! balancer): a queue moved while publishers, consumers and confirms are
//! in flight keeps every message, in order; moved queues survive kill -9;
//! and new queues are packed on the lowest shard.

use crate::common;
use futures_lite::StreamExt;
use lapin::BasicProperties;
use lapin::options::*;
use lapin::types::FieldTable;
use serde_json::json;
use std::time::Duration;

const AUTH: Option<(&str, &str)> = Some(("guest", "guest"));

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

/// Moves `queue` to `shard` and gives the status.
fn move_queue(base: &str, queue: &str, shard: u64) -> u16 {
    let url = format!("{base}/api/warren/queues/%2f/{queue}/move");
    common::http("POST", &url, AUTH, Some(json!({ "shard": shard }))).0
}

fn shard_of(base: &str, queue: &str) -> u64 {
    let (status, q) = common::http("GET", &format!("{base}/api/queues/%2f/{queue}"), AUTH, None);
    assert_eq!(status, 200, "{q}");
    q["warren_shard"].as_u64().expect("warren_shard")
}

/// A queue moved back and forth between two shards while a publisher with
/// confirms and a consumer with acks run: every confirmed message is
/// delivered, first deliveries in publish order, none lost, none twice
/// unless redelivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_moved_under_load_keeps_every_message_in_order() {
    const N: u32 = 3000;
    let b = common::start_with_mgmt(2);
    let base = b.base.clone();
    let setup = b.broker.connect().await;
    let sch = setup.create_channel().await.unwrap();
    sch.queue_declare("mv".into(), durable(), FieldTable::default())
        .await
        .unwrap();

    let cc = b.broker.connect().await;
    let cch = cc.create_channel().await.unwrap();
    cch.basic_qos(50, BasicQosOptions::default()).await.unwrap();
    let mut consumer = cch
        .basic_consume(
            "mv".into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let consuming = tokio::spawn(async move {
        let mut seen = vec![false; N as usize];
        let mut last_first: Option<u32> = None;
        let mut distinct = 0;
        while distinct < N {
            let d = tokio::time::timeout(Duration::from_secs(30), consumer.next())
                .await
                .expect("a delivery within 30 s")
                .unwrap()
                .unwrap();
            let i = u32::from_be_bytes(d.data[..4].try_into().unwrap());
            if !d.redelivered {
                assert!(
                    last_first.is_none_or(|l| i > l),
                    "first deliveries out of order: {i} after {last_first:?}"
                );
                last_first = Some(i);
            }
            if !seen[i as usize] {
                seen[i as usize] = true;
                distinct += 1;
            } else {
                assert!(d.redelivered, "message {i} delivered twice, not as a redelivery");
            }
            d.ack(BasicAckOptions::default()).await.unwrap();
        }
        (cc, consumer)
    });

    let pc = b.broker.connect().await;
    let pch = pc.create_channel().await.unwrap();
    pch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    let mover = {
        let base = base.clone();
        tokio::task::spawn_blocking(move || {
            let mut moves = 0;
            for to in [1, 0, 1, 0, 1, 0, 1] {
                std::thread::sleep(Duration::from_millis(60));
                assert_eq!(move_queue(&base, "mv", to), 204);
                assert_eq!(shard_of(&base, "mv"), to);
                moves += 1;
            }
            moves
        })
    };
    for batch in 0..N / 100 {
        let mut confirms = Vec::new();
        for i in batch * 100..(batch + 1) * 100 {
            let c = pch
                .basic_publish(
                    "".into(),
                    "mv".into(),
                    BasicPublishOptions::default(),
                    &i.to_be_bytes(),
                    persistent(),
                )
                .await
                .unwrap();
            confirms.push(c);
        }
        for c in confirms {
            assert!(c.await.unwrap().is_ack(), "every publish is confirmed");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(mover.await.unwrap(), 7);
    let (_cc, mut consumer) = consuming.await.expect("every message consumed");
    // The consumer is still served where the queue ended up.
    let (_, q) = common::http("GET", &format!("{base}/api/queues/%2f/mv"), AUTH, None);
    assert_eq!(q["consumers"], 1, "{q}");
    assert_eq!(q["messages"], 0, "{q}");
    pch.basic_publish(
        "".into(),
        "mv".into(),
        BasicPublishOptions::default(),
        b"last",
        persistent(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let d = tokio::time::timeout(Duration::from_secs(10), consumer.next())
        .await
        .expect("delivered")
        .unwrap()
        .unwrap();
    assert_eq!(d.data, b"last");
}

/// A transaction committed while its queue moves: the commit answers
/// once its messages are in the queue on the new shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_across_a_move_is_committed_whole() {
    let b = common::start_with_mgmt(2);
    let base = b.base.clone();
    let c = b.broker.connect().await;
    let ch = c.create_channel().await.unwrap();
    ch.queue_declare("txq".into(), durable(), FieldTable::default())
        .await
        .unwrap();
    ch.tx_select().await.unwrap();
    for round in 0..10u32 {
        for i in 0..20u32 {
            ch.basic_publish(
                "".into(),
                "txq".into(),
                BasicPublishOptions::default(),
                &(round * 20 + i).to_be_bytes(),
                persistent(),
            )
            .await
            .unwrap();
        }
        let base2 = base.clone();
        let mv = tokio::task::spawn_blocking(move || move_queue(&base2, "txq", u64::from((round + 1) % 2)));
        ch.tx_commit().await.unwrap();
        assert_eq!(mv.await.unwrap(), 204);
        let n = ch
            .queue_declare(
                "txq".into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap()
            .message_count();
        assert_eq!(n, (round + 1) * 20, "committed messages are in the queue");
    }
    // In publish order.
    for i in 0..200u32 {
        let m = ch
            .basic_get("txq".into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
            .expect("a message");
        assert_eq!(m.delivery.data, i.to_be_bytes());
    }
}

/// What cannot move is refused with the reason; a move to where the
/// queue is changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moves_that_cannot_be_made_are_refused() {
    let b = common::start_with_mgmt(2);
    let base = b.base.clone();
    let c = b.broker.connect().await;
    let ch = c.create_channel().await.unwrap();
    ch.queue_declare(
        "stay".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let excl = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert_eq!(move_queue(&base, "stay", 0), 204, "already there");
    assert_eq!(move_queue(&base, "stay", 5), 400, "no shard 5");
    assert_eq!(move_queue(&base, "nope", 1), 404);
    assert_eq!(move_queue(&base, excl.name().as_str(), 1), 400, "exclusive");
    let url = format!("{base}/api/warren/queues/%2f/stay/move");
    let (status, _) = common::http("POST", &url, AUTH, Some(json!({ "to": 1 })));
    assert_eq!(status, 400, "a body without a shard");
}

/// Confirmed persistent messages of a queue that moved are all there after
/// kill -9 (the queue starts again on the shard it was declared on, from
/// the same store).
#[test]
fn a_moved_queue_survives_kill_9() {
    let (_d, dir) = common::temp_data_dir();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let broker = common::ChildBroker::start(&dir, 2);
    let base = broker.mgmt_base();
    let uri = broker.uri.clone();
    rt.block_on(async {
        let c = common::connect(&uri).await;
        let ch = c.create_channel().await.unwrap();
        ch.queue_declare("kq".into(), durable(), FieldTable::default())
            .await
            .unwrap();
        ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
        for round in 0..4u32 {
            let mut confirms = Vec::new();
            for i in 0..100u32 {
                confirms.push(
                    ch.basic_publish(
                        "".into(),
                        "kq".into(),
                        BasicPublishOptions::default(),
                        &(round * 100 + i).to_be_bytes(),
                        persistent(),
                    )
                    .await
                    .unwrap(),
                );
            }
            let base2 = base.clone();
            let mv = tokio::task::spawn_blocking(move || move_queue(&base2, "kq", u64::from(round % 2 == 0)));
            for c in confirms {
                assert!(c.await.unwrap().is_ack());
            }
            assert_eq!(mv.await.unwrap(), 204);
        }
    });
    broker.kill9();
    let broker = common::ChildBroker::start(&dir, 2);
    let uri = broker.uri.clone();
    rt.block_on(async {
        let c = common::connect(&uri).await;
        let ch = c.create_channel().await.unwrap();
        for i in 0..400u32 {
            let m = ch
                .basic_get("kq".into(), BasicGetOptions { no_ack: true })
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("message {i} survived"));
            assert_eq!(m.delivery.data, i.to_be_bytes());
        }
        assert!(
            ch.basic_get("kq".into(), BasicGetOptions { no_ack: true })
                .await
                .unwrap()
                .is_none()
        );
    });
}
