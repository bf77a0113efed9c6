use crate::common;
use futures_lite::StreamExt;
use lapin::BasicProperties;
use lapin::options::*;
use lapin::types::FieldTable;

/// Publish on shard A to a queue owned by shard B, consumed on shard C
/// (queues live on the shard of the connection that declared them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_route_consume_across_three_shards() {
    let b = common::start_fixed(3);
    let (pa, qb, cc) = (
        b.connect_on_shard(0).await,
        b.connect_on_shard(1).await,
        b.connect_on_shard(2).await,
    );
    let owner = qb.create_channel().await.unwrap();
    owner
        .queue_declare("xq".into(), QueueDeclareOptions::default(), FieldTable::default())
        .await
        .unwrap();
    owner
        .exchange_declare(
            "xx".into(),
            lapin::ExchangeKind::Topic,
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    owner
        .queue_bind(
            "xq".into(),
            "xx".into(),
            "k.#".into(),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();

    let cons = cc.create_channel().await.unwrap();
    cons.basic_qos(10, BasicQosOptions::default()).await.unwrap();
    let mut consumer = cons
        .basic_consume(
            "xq".into(),
            "c".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();

    let publ = pa.create_channel().await.unwrap();
    publ.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for i in 0..500u32 {
        let c = publ
            .basic_publish(
                "xx".into(),
                "k.a".into(),
                BasicPublishOptions::default(),
                &i.to_be_bytes(),
                BasicProperties::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(c.is_ack());
    }
    for i in 0..500u32 {
        let d = tokio::time::timeout(std::time::Duration::from_secs(10), consumer.next())
            .await
            .expect("delivery in time")
            .unwrap()
            .unwrap();
        assert_eq!(d.data, i.to_be_bytes(), "FIFO across shards");
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    // Everything acked: the queue's owner agrees.
    let q = owner
        .queue_declare(
            "xq".into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert_eq!(q.message_count(), 0);
    assert_eq!(q.consumer_count(), 1);
}

/// Unacked deliveries to a consumer on another shard come back, marked
/// redelivered, when its connection closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_consumer_close_requeues() {
    let b = common::start_fixed(2);
    let (a, c) = (b.connect_on_shard(0).await, b.connect_on_shard(1).await);
    let ch = a.create_channel().await.unwrap();
    ch.queue_declare("rq".into(), QueueDeclareOptions::default(), FieldTable::default())
        .await
        .unwrap();
    for i in 0..5u8 {
        ch.basic_publish(
            "".into(),
            "rq".into(),
            Default::default(),
            &[i],
            BasicProperties::default(),
        )
        .await
        .unwrap();
    }
    let cch = c.create_channel().await.unwrap();
    let mut consumer = cch
        .basic_consume(
            "rq".into(),
            "c".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let t = std::time::Duration::from_secs(10);
    for i in 0..5u8 {
        let d = tokio::time::timeout(t, consumer.next())
            .await
            .expect("delivered")
            .unwrap()
            .unwrap();
        assert_eq!(d.data, vec![i]);
        assert!(!d.redelivered);
    }
    tokio::time::timeout(t, c.close(200, "bye".into()))
        .await
        .expect("closed")
        .unwrap();
    for i in 0..5u8 {
        let mut tries = 0;
        let m = loop {
            if let Some(m) = ch
                .basic_get("rq".into(), BasicGetOptions { no_ack: true })
                .await
                .unwrap()
            {
                break m;
            }
            tries += 1;
            assert!(tries < 2000, "message {i} never came back");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        };
        assert_eq!(m.delivery.data, vec![i]);
        assert!(m.delivery.redelivered);
    }
}
