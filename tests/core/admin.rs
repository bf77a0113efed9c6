//! The management handle: snapshots, users, vhosts, permissions, closing
//! connections — and the permission checks they drive over AMQP.

use crate::common;
use lapin::BasicProperties;
use lapin::options::*;
use lapin::types::FieldTable;
use std::time::Duration;
use warren::admin::AdminOp;
use warren::broker::request::Request;
use warren::broker::users::hash_password;

async fn until<T>(mut f: impl FnMut() -> Option<T>) -> T {
    for _ in 0..500 {
        if let Some(v) = f() {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not reached in 5 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_shows_queues_connections_channels_consumers() {
    let b = common::start(2);
    let admin = b.handle.admin();
    let c = b.connect().await;
    let ch = c.create_channel().await.unwrap();
    ch.queue_declare(
        "snapq".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    for _ in 0..3 {
        ch.basic_publish(
            "".into(),
            "snapq".into(),
            Default::default(),
            b"x",
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    let ch2 = c.create_channel().await.unwrap();
    ch2.basic_qos(1, Default::default()).await.unwrap();
    let _consumer = ch2
        .basic_consume(
            "snapq".into(),
            "the-consumer".into(),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let snap = until(|| {
        let s = admin.snapshot().unwrap();
        let ready = s
            .queue("/", "snapq")
            .is_some_and(|q| q.messages_unacknowledged == 1);
        let described = s.channels.len() >= 2;
        (ready && described).then_some(s)
    })
    .await;
    let q = snap.queue("/", "snapq").unwrap();
    assert_eq!(
        (q.messages_ready, q.messages_unacknowledged, q.consumers),
        (2, 1, 1)
    );
    assert_eq!(q.counters.published, 3);
    assert_eq!(snap.connections.len(), 1);
    let conn = &snap.connections[0];
    assert_eq!(
        (conn.user.as_str(), conn.vhost.as_str(), conn.state),
        ("guest", "/", "running")
    );
    assert!(conn.name.contains(" -> "), "{}", conn.name);
    let cons = snap
        .consumers
        .iter()
        .find(|x| x.consumer_tag == "the-consumer")
        .unwrap();
    assert_eq!(
        (cons.queue.as_str(), cons.ack_required, cons.prefetch_count),
        ("snapq", true, 1)
    );
    assert!(
        snap.exchanges
            .iter()
            .any(|x| x.name == "amq.topic" && x.kind == "topic")
    );
    assert!(
        snap.users
            .iter()
            .any(|u| u.name == "guest" && u.tags == ["administrator"])
    );
    assert!(!snap.users[0].password_hash.contains("guest"), "never plain text");
    // Closing through the management plane reaches the client.
    assert!(admin.close_connection(&conn.name, "test"));
    until(|| (!c.status().connected()).then_some(())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_vhosts_and_permissions_are_enforced() {
    let b = common::start(2);
    let admin = b.handle.admin();
    admin
        .control("guest", AdminOp::AddVhost { name: "v1".into() })
        .unwrap();
    admin
        .control(
            "guest",
            AdminOp::PutUser {
                name: "bob".into(),
                password_hash: hash_password(b"pw", [9, 8, 7, 6]),
                tags: vec![],
            },
        )
        .unwrap();
    let addr = b.handle.amqp_addr();
    let uri = |u: &str, p: &str, v: &str| format!("amqp://{u}:{p}@{addr}/{v}");
    // No permissions on v1 yet: 530 on connection.open.
    let err = lapin::Connection::connect(&uri("bob", "pw", "v1"), Default::default())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("NOT_ALLOWED") || err.to_string().contains("530"),
        "{err}"
    );
    let err = lapin::Connection::connect(&uri("bob", "bad", "v1"), Default::default())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("ACCESS_REFUSED") || err.to_string().contains("403"),
        "{err}"
    );
    admin
        .control(
            "guest",
            AdminOp::SetPermissions {
                user: "bob".into(),
                vhost: "v1".into(),
                configure: "^bob-".into(),
                write: "^(bob-|amq\\.default)".into(),
                read: "^bob-".into(),
            },
        )
        .unwrap();
    let c = lapin::Connection::connect(&uri("bob", "pw", "v1"), Default::default())
        .await
        .unwrap();
    let ch = c.create_channel().await.unwrap();
    ch.queue_declare("bob-q".into(), Default::default(), FieldTable::default())
        .await
        .unwrap();
    let e = ch
        .queue_declare("other".into(), Default::default(), FieldTable::default())
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("access to queue 'other' in vhost 'v1' refused for user 'bob'"),
        "{e}"
    );
    let ch = c.create_channel().await.unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    ch.basic_publish(
        "".into(),
        "bob-q".into(),
        Default::default(),
        b"ok",
        BasicProperties::default(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    // The refusal closes the channel: the pending confirm fails with it
    // (a method sent meanwhile could only see the channel closing).
    let e = ch
        .basic_publish(
            "amq.topic".into(),
            "x".into(),
            Default::default(),
            b"no",
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("access to exchange 'amq.topic' in vhost 'v1' refused"),
        "{e}"
    );
    // Vhosts are isolated: bob-q does not exist in "/".
    let g = b.connect().await;
    let gch = g.create_channel().await.unwrap();
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    assert!(
        gch.queue_declare("bob-q".into(), passive, FieldTable::default())
            .await
            .is_err()
    );
    // Admin requests are checked against the caller's permissions too.
    let e = admin
        .control(
            "bob",
            AdminOp::Amqp {
                vhost: "v1".into(),
                req: Request::ExchangeDeclare {
                    name: "nope".into(),
                    kind: warren::routing::ExchangeKind::Direct,
                    passive: false,
                    durable: false,
                    auto_delete: false,
                    internal: false,
                    args: Default::default(),
                },
            },
        )
        .unwrap_err();
    assert_eq!(e.code, 403);
    // Deleting the user closes its connections.
    admin
        .control("guest", AdminOp::DeleteUser { name: "bob".into() })
        .unwrap();
    until(|| (!c.status().connected()).then_some(())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_get_and_purge_through_the_management_plane() {
    let b = common::start(2);
    let admin = b.handle.admin();
    // The queue lives on whichever shard the declaring connection is on;
    // the management plane finds it.
    let c = b.connect_on_shard(1).await;
    let ch = c.create_channel().await.unwrap();
    ch.queue_declare(
        "mq".into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    let props =
        warren::admin::json::json_to_props(&serde_json::json!({"delivery_mode": 2, "headers": {"k": "v"}}))
            .unwrap();
    assert!(
        admin
            .publish("guest", "/", "", "mq", props.clone(), b"one".to_vec())
            .unwrap()
    );
    assert!(
        admin
            .publish("guest", "/", "", "mq", props, b"two".to_vec())
            .unwrap()
    );
    assert!(
        !admin
            .publish(
                "guest",
                "/",
                "amq.direct",
                "nowhere",
                Default::default(),
                b"x".to_vec()
            )
            .unwrap()
    );
    let peek = until(|| {
        let m = admin
            .get("guest", "/", "mq", 5, warren::admin::GetMode::Requeue)
            .unwrap();
        (m.len() == 2).then_some(m)
    })
    .await;
    assert_eq!(peek[0].payload, b"one");
    assert_eq!(peek[0].message_count, 1);
    assert_eq!(peek[0].properties["headers"]["k"], "v");
    // Requeued: still there, now redelivered.
    let again = admin
        .get("guest", "/", "mq", 1, warren::admin::GetMode::Remove)
        .unwrap();
    assert!(again[0].redelivered);
    assert_eq!(admin.purge("guest", "/", "mq").unwrap(), 1);
    let e = admin
        .get("guest", "/", "missing", 1, warren::admin::GetMode::Remove)
        .unwrap_err();
    assert_eq!(e.code, 404);
}
