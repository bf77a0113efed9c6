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

/// The request another client published to queue `q` (taken with
/// `basic.get` once it has arrived).
async fn request_in(ch: &lapin::Channel, q: &str) -> lapin::message::BasicGetMessage {
    let deadline = std::time::Instant::now() + T;
    loop {
        if let Some(m) = ch
            .basic_get(q.into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            return m;
        }
        assert!(std::time::Instant::now() < deadline, "no request");
        tokio::time::sleep(Duration::from_millis(20)).await;
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

/// A client that stops reading: replies to it pile up in its connection
/// only up to the cap (4 × the write buffer's high mark), then are dropped
/// and counted (`warren_shard_direct_replies_dropped_total`), and the
/// server that publishes them is not held up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_to_a_client_that_does_not_read_are_dropped_and_counted() {
    use bytes::BytesMut;
    use warren::protocol::methods::{BasicConsume, BasicPublish, Method};
    use warren::protocol::{BasicProperties as Props, ShortStr, write_content, write_method_frame};

    let b = common::start_with_mgmt(1);
    let server = b.broker.connect().await;
    let sch = server.create_channel().await.unwrap();
    sch.queue_declare(
        "rpc-d".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    // The client: a reply consumer and one request, then it reads nothing.
    let t = crate::raw::Target {
        addr: b.broker.handle.amqp_addr(),
        _broker: None,
    };
    let mut c = tokio::task::spawn_blocking(move || {
        let mut c = crate::raw::Raw::open(&t, 0);
        c.open_channel(1);
        c.send_method(
            1,
            Method::BasicConsume(BasicConsume {
                queue: ShortStr::from_static(PSEUDO),
                no_ack: true,
                ..Default::default()
            }),
        );
        assert!(matches!(c.method(), Some(Method::BasicConsumeOk(_))));
        let mut out = BytesMut::new();
        write_method_frame(
            &mut out,
            1,
            &Method::BasicPublish(BasicPublish {
                routing_key: ShortStr::from_static("rpc-d"),
                ..Default::default()
            }),
        );
        let mut props = BytesMut::new();
        Props {
            reply_to: Some(ShortStr::from_static(PSEUDO)),
            ..Default::default()
        }
        .encode(&mut props);
        write_content(&mut out, 1, 60, &props, b"req", 131_072);
        c.send(&out);
        c
    })
    .await
    .unwrap();
    let got = request_in(&sch, "rpc-d").await;
    let to = got.delivery.properties.reply_to().clone().expect("a reply-to");
    // 48 MiB of replies: more than the sockets' buffers and the cap hold.
    let body = vec![b'r'; 256 * 1024];
    for _ in 0..192 {
        sch.basic_publish(
            "".into(),
            to.as_str().into(),
            Default::default(),
            &body,
            BasicProperties::default(),
        )
        .await
        .unwrap();
    }
    // The server's connection was not held up: its next method is
    // answered (and its publishes before it were handled).
    sch.queue_declare(
        "after".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let dropped = || {
        let snap = b.broker.handle.admin().snapshot().expect("snapshot");
        snap.shards.iter().map(|s| s.replies_dropped).sum::<u64>()
    };
    let deadline = std::time::Instant::now() + T;
    while dropped() == 0 {
        assert!(std::time::Instant::now() < deadline, "no reply was dropped");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The client reads again: every large reply that was kept, then a
    // small one sent after them (sent again until one gets through: it is
    // dropped too while the client's output is still over the cap).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = stop.clone();
    let reader = tokio::task::spawn_blocking(move || {
        let mut large = 0u64;
        loop {
            match c.frame() {
                Some(warren::protocol::Frame::Header { header, .. }) if header.body_size == 3 => break,
                Some(warren::protocol::Frame::Header { .. }) => large += 1,
                Some(_) => {}
                None => panic!("the connection ended after {large} replies"),
            }
        }
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        large
    });
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        assert!(
            std::time::Instant::now() < deadline + T,
            "no end marker came through"
        );
        sch.basic_publish(
            "".into(),
            to.as_str().into(),
            Default::default(),
            b"end",
            BasicProperties::default(),
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let kept = reader.await.unwrap();
    // Replies reach the client's connection in the order the server sent
    // them: every large one was kept or dropped before the first marker.
    assert!(kept < 192, "all {kept} large replies kept");
    let (s, text) = common::http_text("GET", &format!("{}/metrics", b.base), None, None);
    assert_eq!(s, 200);
    let n: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("warren_shard_direct_replies_dropped_total{shard=\"0\"} "))
        .expect("the metric")
        .parse()
        .unwrap();
    // Dropped markers count too.
    assert!(n >= 192 - kept, "{n} dropped, {kept} of 192 kept");
}

/// A mandatory reply to a live reply consumer is delivered; once that
/// consumer is cancelled, a mandatory reply to its name comes back
/// (`basic.return` 312 NO_ROUTE) instead of vanishing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mandatory_reply_to_an_ended_consumer_is_returned() {
    let b = common::start(1);
    let client = b.connect().await;
    let cch = client.create_channel().await.unwrap();
    let no_ack = BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    let mut replies = cch
        .basic_consume(PSEUDO.into(), "rc".into(), no_ack, FieldTable::default())
        .await
        .unwrap();
    let server = b.connect().await;
    let sch = server.create_channel().await.unwrap();
    sch.queue_declare(
        "rpc-m".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    sch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    cch.basic_publish(
        "".into(),
        "rpc-m".into(),
        Default::default(),
        b"req",
        BasicProperties::default().with_reply_to(ShortString::from(PSEUDO)),
    )
    .await
    .unwrap();
    let request = request_in(&sch, "rpc-m").await;
    let to = request
        .delivery
        .properties
        .reply_to()
        .clone()
        .expect("a reply-to");
    let mandatory = BasicPublishOptions {
        mandatory: true,
        ..Default::default()
    };
    let reply = |body: &'static [u8]| {
        let (sch, to) = (sch.clone(), to.clone());
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
    let d = tokio::time::timeout(T, replies.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(d.data, b"first");
    cch.basic_cancel("rc".into(), BasicCancelOptions::default())
        .await
        .unwrap();
    let c = reply(b"second").await;
    let back = c.take_message().expect("returned");
    assert_eq!(back.reply_code, 312);
    assert_eq!(back.reply_text.as_str(), "NO_ROUTE");
    assert_eq!(back.delivery.data, b"second");
}
