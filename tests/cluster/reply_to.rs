//! Direct reply-to across nodes: an RPC client on one node, its server
//! and the request queue on another; replies go back over the cluster
//! port to the client's channel.

use super::nodes::{cluster, connect, queue_exists, rt, wait_for_async};
use futures::StreamExt;
use lapin::BasicProperties;
use lapin::options::*;
use lapin::types::{FieldTable, ShortString};
use std::time::Duration;

#[test]
fn replies_reach_a_client_on_another_node() {
    let root = tempfile::tempdir().unwrap();
    let nodes = cluster(root.path(), 2);
    rt().block_on(async {
        // The server and its queue on node 1.
        let server = connect(&nodes[0].uri()).await;
        let sch = server.create_channel().await.unwrap();
        sch.queue_declare(
            "rpc".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        let mut requests = sch
            .basic_consume(
                "rpc".into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        tokio::spawn(async move {
            while let Some(Ok(d)) = requests.next().await {
                let to = d.properties.reply_to().clone().expect("a reply-to");
                let props = BasicProperties::default()
                    .with_correlation_id(d.properties.correlation_id().clone().unwrap_or_default());
                let mut body = b"re:".to_vec();
                body.extend_from_slice(&d.data);
                sch.basic_publish("".into(), to.as_str().into(), Default::default(), &body, props)
                    .await
                    .unwrap();
                d.ack(BasicAckOptions::default()).await.unwrap();
            }
        });
        // The client on node 2.
        let u2 = nodes[1].uri();
        wait_for_async(|| queue_exists(&u2, "rpc")).await;
        let client = connect(&u2).await;
        let ch = client.create_channel().await.unwrap();
        let mut replies = ch
            .basic_consume(
                "amq.rabbitmq.reply-to".into(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        for i in 0..20 {
            let props = BasicProperties::default()
                .with_reply_to(ShortString::from("amq.rabbitmq.reply-to"))
                .with_correlation_id(ShortString::from(format!("c{i}")));
            ch.basic_publish(
                "".into(),
                "rpc".into(),
                Default::default(),
                format!("{i}").as_bytes(),
                props,
            )
            .await
            .unwrap();
            let d = tokio::time::timeout(Duration::from_secs(10), replies.next())
                .await
                .expect("a reply from the other node in time")
                .unwrap()
                .unwrap();
            assert_eq!(d.data, format!("re:{i}").into_bytes());
            assert_eq!(
                d.properties
                    .correlation_id()
                    .as_ref()
                    .map(|s| s.as_str().to_string()),
                Some(format!("c{i}"))
            );
        }
        let _ = client.close(200, "bye".into()).await;
        let _ = server.close(200, "bye".into()).await;
    });
}

/// An RPC pair across two nodes, up to the reply name: a server channel
/// on node 1 with queue `queue`, a client channel on node 2 consuming
/// `amq.rabbitmq.reply-to` (tag "rc"), and the name node 2 gave the
/// client's request, as the server reads it.
struct Pair {
    server: lapin::Connection,
    sch: lapin::Channel,
    client: lapin::Connection,
    ch: lapin::Channel,
    replies: lapin::Consumer,
    name: String,
}

async fn pair(nodes: &[super::nodes::TestNode], queue: &str) -> Pair {
    let server = connect(&nodes[0].uri()).await;
    let sch = server.create_channel().await.unwrap();
    sch.queue_declare(
        queue.into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let u2 = nodes[1].uri();
    wait_for_async(|| queue_exists(&u2, queue)).await;
    let client = connect(&u2).await;
    let ch = client.create_channel().await.unwrap();
    let no_ack = BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    let replies = ch
        .basic_consume(
            "amq.rabbitmq.reply-to".into(),
            "rc".into(),
            no_ack,
            FieldTable::default(),
        )
        .await
        .unwrap();
    let props = BasicProperties::default().with_reply_to(ShortString::from("amq.rabbitmq.reply-to"));
    ch.basic_publish("".into(), queue.into(), Default::default(), b"req", props)
        .await
        .unwrap();
    let mut name = None;
    for _ in 0..100 {
        if let Some(m) = sch
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            name = m.delivery.properties.reply_to().clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let name = name.expect("the request").as_str().to_string();
    assert!(name.starts_with("amq.rabbitmq.reply-to."), "{name}");
    Pair {
        server,
        sch,
        client,
        ch,
        replies,
        name,
    }
}

/// A passive declare of a reply name given out by another node is
/// answered by that node: declare-ok with one consumer while the reply
/// consumer lives, 404 once it ended (as RabbitMQ answers on one node).
#[test]
fn a_declare_of_another_nodes_reply_name_asks_that_node() {
    let root = tempfile::tempdir().unwrap();
    let nodes = cluster(root.path(), 2);
    rt().block_on(async {
        let p = pair(&nodes, "rpc2").await;
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let q = p
            .sch
            .queue_declare(p.name.as_str().into(), passive, FieldTable::default())
            .await
            .expect("a live reply name is declared");
        assert_eq!((q.message_count(), q.consumer_count()), (0, 1));
        // The reply consumer ends: the name leads nowhere.
        drop(p.replies);
        p.ch.basic_cancel("rc".into(), BasicCancelOptions::default())
            .await
            .unwrap();
        let e = p
            .sch
            .queue_declare(p.name.as_str().into(), passive, FieldTable::default())
            .await
            .expect_err("a dead reply name is not found");
        assert!(e.to_string().contains("NOT_FOUND"), "{e}");
        let _ = p.client.close(200, "bye".into()).await;
        let _ = p.server.close(200, "bye".into()).await;
    });
}

/// A mandatory reply to a reply name of another node: delivered and not
/// returned while its reply consumer lives; once that consumer ended, the
/// node it names says so and the publisher gets `basic.return` 312
/// NO_ROUTE, ahead of the confirm (as for a name of its own node).
#[test]
fn a_mandatory_reply_to_another_nodes_ended_consumer_is_returned() {
    let root = tempfile::tempdir().unwrap();
    let nodes = cluster(root.path(), 2);
    rt().block_on(async {
        let mut p = pair(&nodes, "rpc3").await;
        p.sch
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        let mandatory = BasicPublishOptions {
            mandatory: true,
            ..Default::default()
        };
        let reply = |body: &'static [u8]| {
            let (sch, to) = (p.sch.clone(), p.name.clone());
            async move {
                sch.basic_publish(
                    "".into(),
                    to.as_str().into(),
                    mandatory,
                    body,
                    BasicProperties::default(),
                )
                .await
                .unwrap()
                .await
                .unwrap()
            }
        };
        let c = reply(b"first").await;
        assert!(
            c.is_ack() && c.take_message().is_none(),
            "delivered, not returned"
        );
        let d = tokio::time::timeout(Duration::from_secs(10), p.replies.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(d.data, b"first");
        p.ch.basic_cancel("rc".into(), BasicCancelOptions::default())
            .await
            .unwrap();
        let c = reply(b"second").await;
        assert!(c.is_ack());
        let back = c.take_message().expect("returned");
        assert_eq!(back.reply_code, 312);
        assert_eq!(back.reply_text.as_str(), "NO_ROUTE");
        assert_eq!(back.delivery.data, b"second");
        let _ = p.client.close(200, "bye".into()).await;
        let _ = p.server.close(200, "bye".into()).await;
    });
}
