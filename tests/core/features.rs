//! Queue features that need more than one client can show: policies set
//! through the management handle, and what survives a restart.

use crate::common;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};
use std::time::Duration;
use warren::admin::AdminOp;

async fn get_body(ch: &Channel, q: &str) -> Option<Vec<u8>> {
    for _ in 0..300 {
        if let Some(m) = ch
            .basic_get(q.into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            return Some(m.delivery.data);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

fn table(pairs: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert((*k).into(), v.clone());
    }
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_apply_and_arguments_win() {
    let b = common::start(2);
    let admin = b.handle.admin();
    let c = b.connect().await;
    let ch = c.create_channel().await.unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    ch.exchange_declare(
        "pol-dlx".into(),
        lapin::ExchangeKind::Fanout,
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_declare("pol-dlq".into(), Default::default(), FieldTable::default())
        .await
        .unwrap();
    ch.queue_bind(
        "pol-dlq".into(),
        "pol-dlx".into(),
        "".into(),
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_declare("pol.a".into(), Default::default(), FieldTable::default())
        .await
        .unwrap();
    // An argument beats the policy's value.
    ch.queue_declare(
        "pol.b".into(),
        Default::default(),
        table(&[("x-message-ttl", AMQPValue::LongInt(600_000))]),
    )
    .await
    .unwrap();
    let mut def = warren::protocol::FieldTable::new();
    def.insert("message-ttl".into(), warren::protocol::FieldValue::I64(50));
    def.insert(
        "dead-letter-exchange".into(),
        warren::protocol::FieldValue::from("pol-dlx"),
    );
    admin
        .control(
            "guest",
            AdminOp::SetPolicy {
                vhost: "/".into(),
                name: "short".into(),
                pattern: "^pol\\.".into(),
                apply_to: "queues".into(),
                priority: 1,
                definition: def,
            },
        )
        .unwrap();
    for q in ["pol.a", "pol.b"] {
        ch.basic_publish(
            "".into(),
            q.into(),
            Default::default(),
            q.as_bytes(),
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    assert_eq!(
        get_body(&ch, "pol-dlq").await.unwrap(),
        b"pol.a",
        "the policy's TTL and DLX apply"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        get_body(&ch, "pol.b").await.unwrap(),
        b"pol.b",
        "the queue's own TTL wins"
    );
    admin
        .control(
            "guest",
            AdminOp::ClearPolicy {
                vhost: "/".into(),
                name: "short".into(),
            },
        )
        .unwrap();
    ch.basic_publish(
        "".into(),
        "pol.a".into(),
        Default::default(),
        b"kept",
        BasicProperties::default(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        get_body(&ch, "pol.a").await.unwrap(),
        b"kept",
        "no TTL once the policy is gone"
    );
    let bad = admin.control(
        "guest",
        AdminOp::SetPolicy {
            vhost: "/".into(),
            name: "bad".into(),
            pattern: "(".into(),
            apply_to: "queues".into(),
            priority: 0,
            definition: Default::default(),
        },
    );
    assert_eq!(bad.unwrap_err().code, 406);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_priority_and_dead_letter_settings_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let persistent = |p: u8| BasicProperties::default().with_delivery_mode(2).with_priority(p);
    {
        let h = common::start_in(dir.path(), 2);
        let c = common::connect(&common::uri_of(&h)).await;
        let ch = c.create_channel().await.unwrap();
        ch.confirm_select(Default::default()).await.unwrap();
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        let dx = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        ch.exchange_declare(
            "r-dlx".into(),
            lapin::ExchangeKind::Fanout,
            dx,
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.queue_declare("r-dlq".into(), durable, FieldTable::default())
            .await
            .unwrap();
        ch.queue_bind(
            "r-dlq".into(),
            "r-dlx".into(),
            "".into(),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.queue_declare(
            "r-prio".into(),
            durable,
            table(&[("x-max-priority", AMQPValue::ShortShortUInt(5))]),
        )
        .await
        .unwrap();
        ch.queue_declare(
            "r-ttl".into(),
            durable,
            table(&[
                ("x-message-ttl", AMQPValue::LongInt(400)),
                ("x-dead-letter-exchange", AMQPValue::LongString("r-dlx".into())),
            ]),
        )
        .await
        .unwrap();
        for (body, p) in [(&b"low"[..], 1u8), (b"high", 5), (b"mid", 3)] {
            ch.basic_publish(
                "".into(),
                "r-prio".into(),
                Default::default(),
                body,
                persistent(p),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        }
        ch.basic_publish(
            "".into(),
            "r-ttl".into(),
            Default::default(),
            b"will expire",
            persistent(0),
        )
        .await
        .unwrap()
        .await
        .unwrap();
        h.shutdown();
    }
    // Down for longer than the TTL: the message expires after the restart
    // and is dead-lettered then.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let h = common::start_in(dir.path(), 2);
    let c = common::connect(&common::uri_of(&h)).await;
    let ch = c.create_channel().await.unwrap();
    let order: Vec<Vec<u8>> = [0, 1, 2].iter().map(|_| Vec::new()).collect();
    let mut got = order;
    for slot in got.iter_mut() {
        *slot = get_body(&ch, "r-prio").await.unwrap();
    }
    assert_eq!(
        got,
        vec![b"high".to_vec(), b"mid".to_vec(), b"low".to_vec()],
        "priorities survive"
    );
    assert_eq!(
        get_body(&ch, "r-dlq").await.unwrap(),
        b"will expire",
        "TTL and DLX survive"
    );
}
