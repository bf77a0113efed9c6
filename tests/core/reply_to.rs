//! Direct reply-to (`amq.rabbitmq.reply-to`) with lapin: replies reach
//! the requesting channel across shards, and an RPC client, which holds
//! no queue, moves to its server's shard before its first request.

use crate::common;
use futures_lite::StreamExt;
use lapin::BasicProperties;
use lapin::options::*;
use lapin::types::{FieldTable, ShortString};
use std::time::Duration;

const T: Duration = Duration::from_secs(10);
const PSEUDO: &str = "amq.rabbitmq.reply-to";

/// An RPC server on `c`: answers `n` requests from queue `q` with
/// "re:" + the request, on the request's reply-to.
async fn serve(c: &lapin::Connection, q: &str, n: usize) {
    let ch = c.create_channel().await.unwrap();
    ch.queue_declare(q.into(), QueueDeclareOptions::default(), FieldTable::default())
        .await
        .unwrap();
    let mut requests = ch
        .basic_consume(
            q.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    tokio::spawn(async move {
        for _ in 0..n {
            let d = requests.next().await.unwrap().unwrap();
            let to = d.properties.reply_to().clone().expect("a reply-to");
            assert!(to.as_str().starts_with("amq.rabbitmq.reply-to."), "{to}");
            let mut body = b"re:".to_vec();
            body.extend_from_slice(&d.data);
            let props = BasicProperties::default()
                .with_correlation_id(d.properties.correlation_id().clone().unwrap_or_default());
            ch.basic_publish("".into(), to.as_str().into(), Default::default(), &body, props)
                .await
                .unwrap();
            d.ack(BasicAckOptions::default()).await.unwrap();
        }
    });
}

/// `n` requests in order from `c` to queue `q`, each waiting for its
/// reply; checks every reply and its correlation id.
async fn call(c: &lapin::Connection, q: &str, n: usize) {
    let ch = c.create_channel().await.unwrap();
    let mut replies = ch
        .basic_consume(
            PSEUDO.into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    for i in 0..n {
        let props = BasicProperties::default()
            .with_reply_to(ShortString::from(PSEUDO))
            .with_correlation_id(ShortString::from(format!("c{i}")));
        ch.basic_publish(
            "".into(),
            q.into(),
            Default::default(),
            format!("{i}").as_bytes(),
            props,
        )
        .await
        .unwrap();
        let d = tokio::time::timeout(T, replies.next())
            .await
            .expect("a reply in time")
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
        assert!(d.routing_key.as_str().starts_with("amq.rabbitmq.reply-to."));
    }
}

fn handoffs(b: &common::Broker) -> u64 {
    let snap = b.handle.admin().snapshot().expect("snapshot");
    snap.shards.iter().map(|s| s.handoffs).sum()
}

/// Connections fixed to their shards: the reply crosses from the server's
/// shard to the client's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_cross_shards_to_the_requesting_channel() {
    let b = common::start_fixed(2);
    let server = b.connect_on_shard(0).await;
    serve(&server, "rpc-x", 50).await;
    let client = b.connect_on_shard(1).await;
    call(&client, "rpc-x", 50).await;
    assert_eq!(handoffs(&b), 0);
}

/// With hand-off on, the client (no queue of its own) moves to the shard
/// of the server's queue before its first request, so requests and
/// replies stay on one shard; it stays there once its reply name is out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rpc_client_moves_to_its_servers_shard() {
    let b = common::start(2);
    let server = b.connect_on_shard(0).await;
    serve(&server, "rpc-h", 20).await;
    let client = b.connect_on_shard(1).await;
    call(&client, "rpc-h", 20).await;
    assert_eq!(handoffs(&b), 1);
    assert_eq!(b.handle.connections_per_shard(), [2, 0]);
}
