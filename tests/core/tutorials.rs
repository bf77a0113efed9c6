//! RabbitMQ tutorial flows with the Rust clients (lapin and amqprs).

use crate::common;
use amqprs::channel::{
    BasicAckArguments, BasicConsumeArguments, BasicGetArguments, BasicPublishArguments, BasicQosArguments,
    ExchangeDeclareArguments, QueueBindArguments, QueueDeclareArguments,
};
use amqprs::connection::{Connection as AConn, OpenConnectionArguments};
use futures_lite::StreamExt;
use lapin::BasicProperties;
use lapin::options::*;
use lapin::types::FieldTable;
use std::time::Duration;

async fn amqprs_connect(b: &common::Broker) -> AConn {
    let addr = b.handle.amqp_addr();
    AConn::open(&OpenConnectionArguments::new(
        &addr.ip().to_string(),
        addr.port(),
        "guest",
        "guest",
    ))
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqprs_hello_world_work_queue_and_topics() {
    let b = common::start(2);
    let conn = amqprs_connect(&b).await;
    let ch = conn.open_channel(None).await.unwrap();
    // Hello world.
    ch.queue_declare(QueueDeclareArguments::new("hello"))
        .await
        .unwrap();
    ch.basic_publish(
        amqprs::BasicProperties::default(),
        b"Hello World!".to_vec(),
        BasicPublishArguments::new("", "hello"),
    )
    .await
    .unwrap();
    let (_tag, mut rx) = ch
        .basic_consume_rx(BasicConsumeArguments::new("hello", "").auto_ack(true).finish())
        .await
        .unwrap();
    let m = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.content.unwrap(), b"Hello World!");

    // Work queue: durable, persistent, prefetch 1, manual ack.
    let wch = conn.open_channel(None).await.unwrap();
    wch.queue_declare(QueueDeclareArguments::durable_client_named("tasks"))
        .await
        .unwrap();
    for i in 0..5u8 {
        let mut p = amqprs::BasicProperties::default();
        p.with_delivery_mode(2);
        wch.basic_publish(p, vec![i], BasicPublishArguments::new("", "tasks"))
            .await
            .unwrap();
    }
    wch.basic_qos(BasicQosArguments::new(0, 1, false)).await.unwrap();
    let (_t, mut rx) = wch
        .basic_consume_rx(BasicConsumeArguments::new("tasks", ""))
        .await
        .unwrap();
    for i in 0..5u8 {
        let m = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(m.content.unwrap(), vec![i]);
        let tag = m.deliver.unwrap().delivery_tag();
        wch.basic_ack(BasicAckArguments::new(tag, false)).await.unwrap();
    }

    // Topics.
    let tch = conn.open_channel(None).await.unwrap();
    tch.exchange_declare(ExchangeDeclareArguments::new("topic_logs", "topic"))
        .await
        .unwrap();
    let (q, _, _) = tch
        .queue_declare(QueueDeclareArguments::exclusive_server_named())
        .await
        .unwrap()
        .unwrap();
    assert!(q.starts_with("amq.gen-"));
    tch.queue_bind(QueueBindArguments::new(&q, "topic_logs", "*.critical"))
        .await
        .unwrap();
    for k in ["kern.critical", "kern.info", "a.b.critical"] {
        tch.basic_publish(
            amqprs::BasicProperties::default(),
            k.as_bytes().to_vec(),
            BasicPublishArguments::new("topic_logs", k),
        )
        .await
        .unwrap();
    }
    let mut got = None;
    for _ in 0..200 {
        if let Some(m) = tch
            .basic_get(BasicGetArguments::new(&q).no_ack(true).finish())
            .await
            .unwrap()
        {
            got = Some(m.2);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(got.unwrap(), b"kern.critical");
    conn.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lapin_rpc_and_pubsub() {
    let b = common::start(2);
    // RPC: a server answering on reply_to with the correlation id.
    let server = b.connect().await;
    let sch = server.create_channel().await.unwrap();
    sch.queue_declare("rpc_queue".into(), Default::default(), FieldTable::default())
        .await
        .unwrap();
    let mut requests = sch
        .basic_consume(
            "rpc_queue".into(),
            "".into(),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let sch2 = sch.clone();
    let srv = tokio::spawn(async move {
        while let Some(Ok(d)) = requests.next().await {
            let n: u64 = String::from_utf8_lossy(&d.data).parse().unwrap();
            let reply_to = d.properties.reply_to().clone().unwrap();
            let corr = d.properties.correlation_id().clone().unwrap();
            sch2.basic_publish(
                "".into(),
                reply_to.as_str().into(),
                Default::default(),
                (n * n).to_string().as_bytes(),
                BasicProperties::default().with_correlation_id(corr),
            )
            .await
            .unwrap();
            d.ack(Default::default()).await.unwrap();
        }
    });
    let client = b.connect().await;
    let cch = client.create_channel().await.unwrap();
    let cb = cch
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
    let mut replies = cch
        .basic_consume(
            cb.name().clone(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    for n in [3u64, 7, 12] {
        let corr = format!("c{n}");
        cch.basic_publish(
            "".into(),
            "rpc_queue".into(),
            Default::default(),
            n.to_string().as_bytes(),
            BasicProperties::default()
                .with_reply_to(cb.name().clone())
                .with_correlation_id(corr.clone().into()),
        )
        .await
        .unwrap();
        let r = tokio::time::timeout(Duration::from_secs(10), replies.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(r.properties.correlation_id().as_ref().unwrap().as_str(), corr);
        assert_eq!(r.data, (n * n).to_string().as_bytes());
    }
    srv.abort();

    // Publish/subscribe: every bound queue gets its copy.
    let ch = client.create_channel().await.unwrap();
    ch.exchange_declare(
        "logs".into(),
        lapin::ExchangeKind::Fanout,
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let mut qs = Vec::new();
    for _ in 0..3 {
        let q = ch
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
        ch.queue_bind(
            q.name().clone(),
            "logs".into(),
            "".into(),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        qs.push(q.name().clone());
    }
    ch.confirm_select(Default::default()).await.unwrap();
    ch.basic_publish(
        "logs".into(),
        "".into(),
        Default::default(),
        b"log line",
        BasicProperties::default(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    for q in qs {
        let m = ch
            .basic_get(q, BasicGetOptions { no_ack: true })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(m.delivery.data, b"log line");
    }
}
