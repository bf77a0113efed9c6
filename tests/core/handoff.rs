//! Connection hand-off: a quiet connection about to consume from (or
//! publish only to) a queue of another shard moves to that shard, keeping
//! its socket, channels and their settings.

use crate::common;
use futures_lite::StreamExt;
use lapin::BasicProperties;
use lapin::options::*;
use lapin::types::FieldTable;
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

async fn until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    for _ in 0..500 {
        if let Some(v) = f() {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

/// A connection on shard 0 with a queue `name` declared there (queues live
/// on the shard of the connection that declares them).
async fn queue_on_shard0(b: &common::Broker, name: &str) -> (lapin::Connection, lapin::Channel) {
    let setup = b.connect_on_shard(0).await;
    let ch = setup.create_channel().await.unwrap();
    ch.queue_declare(name.into(), QueueDeclareOptions::default(), FieldTable::default())
        .await
        .unwrap();
    (setup, ch)
}

async fn next_delivery(consumer: &mut lapin::Consumer) -> lapin::message::Delivery {
    tokio::time::timeout(T, consumer.next())
        .await
        .expect("delivery in time")
        .unwrap()
        .unwrap()
}

fn handoffs(b: &common::Broker) -> u64 {
    let snap = b.handle.admin().snapshot().expect("snapshot");
    snap.shards.iter().map(|s| s.handoffs).sum()
}

/// The consumer's connection lands on the queue's shard and its channels
/// keep their prefetch and confirm mode; a publisher to that queue follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_and_publisher_move_to_the_queue_and_keep_their_channels() {
    let b = common::start(2);
    let (_setup, _sch) = queue_on_shard0(&b, "hq").await;

    let cc = b.connect_on_shard(1).await;
    // Settings made before the move.
    let ch = cc.create_channel().await.unwrap();
    ch.basic_qos(5, BasicQosOptions::default()).await.unwrap();
    let confirm_ch = cc.create_channel().await.unwrap();
    confirm_ch
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let mut consumer = ch
        .basic_consume(
            "hq".into(),
            "hc".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    // Only the setup connection and the consumer remain, both on shard 0
    // (the queue's); the connections connect_on_shard opened on the way
    // are closing.
    until("the consumer on the queue's shard", || {
        let per = b.handle.connections_per_shard();
        (per[1] == 0 && per[0] == 2).then_some(())
    })
    .await;
    assert!(handoffs(&b) >= 1);

    let pc = b.connect_on_shard(1).await;
    let pch = pc.create_channel().await.unwrap();
    for i in 0..20u8 {
        pch.basic_publish(
            "".into(),
            "hq".into(),
            BasicPublishOptions::default(),
            &[i],
            BasicProperties::default(),
        )
        .await
        .unwrap();
    }
    until("the publisher on the queue's shard", || {
        let per = b.handle.connections_per_shard();
        (per[1] == 0 && per[0] == 3).then_some(())
    })
    .await;

    // Prefetch 5 still holds after the move: five deliveries, then none
    // until one is acked.
    let mut held = Vec::new();
    for i in 0..5u8 {
        let d = next_delivery(&mut consumer).await;
        assert_eq!(d.data, vec![i], "order kept across the move");
        held.push(d);
    }
    let early = tokio::time::timeout(Duration::from_millis(300), consumer.next()).await;
    assert!(early.is_err(), "a sixth delivery past prefetch 5");
    for d in held {
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    for i in 5..20u8 {
        let d = next_delivery(&mut consumer).await;
        assert_eq!(d.data, vec![i], "order kept across the move");
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    // Confirm mode set before the move still answers.
    let c = confirm_ch
        .basic_publish(
            "".into(),
            "hq".into(),
            BasicPublishOptions::default(),
            b"confirmed",
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(c.is_ack());
    let d = next_delivery(&mut consumer).await;
    assert_eq!(d.data, b"confirmed");
    d.ack(BasicAckOptions::default()).await.unwrap();
    // Nothing crossed a shard once both had moved.
    cc.close(200, "bye".into()).await.unwrap();
    pc.close(200, "bye".into()).await.unwrap();
    until("both closed", || {
        (b.handle.connections_per_shard()[0] == 1).then_some(())
    })
    .await;
}

/// A connection with an exclusive queue stays where it is (the queue is
/// tied to its id). Client-local placement: under the default (packed) it
/// would have moved to shard 0 at its first channel, before the declare.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_with_exclusive_queues_stay() {
    let b = common::start_configured(2, |c| c.queue_locator = warren::config::QueueLocator::ClientLocal);
    let (_setup, _sch) = queue_on_shard0(&b, "sq").await;
    let c = b.connect_on_shard(1).await;
    let ch = c.create_channel().await.unwrap();
    let mine = ch
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
    let _consumer = ch
        .basic_consume(
            "sq".into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    until("one connection per shard", || {
        let per = b.handle.connections_per_shard();
        (per == [1, 1]).then_some(())
    })
    .await;
    assert_eq!(handoffs(&b), 0);
    // The exclusive queue is still this connection's.
    let again = ch
        .queue_declare(
            mine.name().as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await;
    assert!(again.is_ok());
}

/// Frames pipelined behind the consume that moves a connection (the
/// client does not wait for consume-ok) are processed on the new shard,
/// in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_behind_the_move_are_processed_there() {
    let b = common::start(2);
    let (_setup, sch) = queue_on_shard0(&b, "pq").await;
    for i in 0..3u8 {
        sch.basic_publish(
            "".into(),
            "pq".into(),
            BasicPublishOptions::default(),
            &[i],
            BasicProperties::default(),
        )
        .await
        .unwrap();
    }
    let c = b.connect_on_shard(1).await;
    let ch = c.create_channel().await.unwrap();
    // nowait consume, then a get on another channel, in quick succession.
    let mut consumer = ch
        .basic_consume(
            "pq".into(),
            "pc".into(),
            BasicConsumeOptions {
                nowait: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let ch2 = c.create_channel().await.unwrap();
    let declared = tokio::time::timeout(
        T,
        ch2.queue_declare(
            "pq".into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .expect("the declare after the move is answered")
    .unwrap();
    assert_eq!(declared.consumer_count(), 1);
    for i in 0..3u8 {
        let d = next_delivery(&mut consumer).await;
        assert_eq!(d.data, vec![i]);
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    assert!(handoffs(&b) >= 1);
}

/// `--queue-locator balanced`: queues one connection declares are spread over the shards, and the
/// connections that consume from them follow, wherever they were
/// accepted: the load is shared even when the kernel put every client on
/// one shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_declared_on_one_shard_spread_and_their_consumers_follow() {
    let b = common::start_configured(2, |c| c.queue_locator = warren::config::QueueLocator::Balanced);
    let setup = b.connect_on_shard(0).await;
    let sch = setup.create_channel().await.unwrap();
    for i in 0..4 {
        sch.queue_declare(
            format!("spread{i}").as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
    let snap = b.handle.admin().snapshot().expect("snapshot");
    let on1 = snap.queues.iter().filter(|q| q.shard == 1).count();
    assert_eq!((snap.queues.len(), on1), (4, 2));
    let mut consumers = Vec::new();
    for i in 0..4 {
        let c = b.connect_on_shard(0).await;
        let ch = c.create_channel().await.unwrap();
        let consumer = ch
            .basic_consume(
                format!("spread{i}").as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        consumers.push((c, ch, consumer));
    }
    // The setup connection and two consumers on shard 0, two consumers
    // moved to shard 1 with their queues.
    until("consumers spread with their queues", || {
        (b.handle.connections_per_shard() == [3, 2]).then_some(())
    })
    .await;
    assert_eq!(handoffs(&b), 2);
    for i in 0..4u8 {
        sch.basic_publish(
            "".into(),
            format!("spread{i}").as_str().into(),
            BasicPublishOptions::default(),
            &[i],
            BasicProperties::default(),
        )
        .await
        .unwrap();
    }
    for (i, (_c, _ch, consumer)) in consumers.iter_mut().enumerate() {
        let d = next_delivery(consumer).await;
        assert_eq!(d.data, vec![i as u8]);
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
}

/// By default (`--queue-locator client-local`) a queue lives where its
/// declarer is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_local_placement_keeps_queues_with_their_declarer() {
    let b = common::start(2);
    let c = b.connect().await;
    let ch = c.create_channel().await.unwrap();
    for i in 0..4 {
        ch.queue_declare(
            format!("local{i}").as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
    let snap = b.handle.admin().snapshot().expect("snapshot");
    let shards: Vec<_> = snap.queues.iter().map(|q| q.shard).collect();
    assert_eq!(shards.len(), 4);
    assert!(shards.iter().all(|&s| s == shards[0]), "{shards:?}");
}

/// Under the default placement a new connection moves, at its first
/// `channel.open`, to the shard that takes new work (shard 0 on an idle
/// broker), before it declares anything: its exclusive queue, its
/// consumers and its publishes then all live there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_connection_moves_home_before_its_exclusive_queue() {
    let b = common::start(2);
    let c = b.connect_on_shard(1).await;
    let ch = c.create_channel().await.unwrap();
    let mine = ch
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
    until("the connection on shard 0", || {
        (b.handle.connections_per_shard()[1] == 0).then_some(())
    })
    .await;
    assert!(handoffs(&b) >= 1);
    let snap = b.handle.admin().snapshot().expect("snapshot");
    let q = snap
        .queues
        .iter()
        .find(|q| q.name == mine.name().as_str())
        .expect("the exclusive queue");
    assert_eq!(q.shard, 0, "declared after the move");
    // It works there: a message through it.
    ch.basic_publish(
        "".into(),
        mine.name().as_str().into(),
        BasicPublishOptions::default(),
        b"home",
        BasicProperties::default(),
    )
    .await
    .unwrap();
    let mut consumer = ch
        .basic_consume(
            mine.name().as_str().into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert_eq!(next_delivery(&mut consumer).await.data, b"home");
}
