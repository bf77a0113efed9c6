//! The permission matrix over AMQP: every operation allowed with exactly
//! the permissions RabbitMQ asks for, and refused with 403 ACCESS_REFUSED
//! when one of them is missing (configure / write / read regexes on the
//! resources RabbitMQ checks).

use crate::common;
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use warren::admin::AdminOp;
use warren::broker::users::hash_password;

#[derive(Clone, Copy, Debug)]
enum Op {
    QueueDeclare,
    QueueDelete,
    ExchangeDeclare,
    ExchangeDelete,
    QueueBind,
    QueueUnbind,
    ExchangeBind,
    Publish,
    Get,
    Consume,
    Purge,
}

async fn run(ch: &Channel, op: Op) -> Result<(), lapin::Error> {
    let ft = FieldTable::default;
    match op {
        Op::QueueDeclare => ch
            .queue_declare("mq-new".into(), Default::default(), ft())
            .await
            .map(|_| ()),
        Op::QueueDelete => ch.queue_delete("mq".into(), Default::default()).await.map(|_| ()),
        Op::ExchangeDeclare => {
            ch.exchange_declare(
                "mx-new".into(),
                lapin::ExchangeKind::Direct,
                Default::default(),
                ft(),
            )
            .await
        }
        Op::ExchangeDelete => ch.exchange_delete("mx".into(), Default::default()).await,
        Op::QueueBind => {
            ch.queue_bind("mq".into(), "mx".into(), "k2".into(), Default::default(), ft())
                .await
        }
        Op::QueueUnbind => ch.queue_unbind("mq".into(), "mx".into(), "k".into(), ft()).await,
        Op::ExchangeBind => {
            ch.exchange_bind("mx2".into(), "mx".into(), "k".into(), Default::default(), ft())
                .await
        }
        Op::Publish => publish_confirmed(ch, "mx", "k").await,
        Op::Get => ch.basic_get("mq".into(), Default::default()).await.map(|_| ()),
        Op::Consume => ch
            .basic_consume("mq".into(), "".into(), Default::default(), ft())
            .await
            .map(|_| ()),
        Op::Purge => ch.queue_purge("mq".into(), Default::default()).await.map(|_| ()),
    }
}

/// (operation, permissions that allow it, permissions that each lack one
/// thing it needs). Permissions are (configure, write, read).
type Perm = (&'static str, &'static str, &'static str);

const MATRIX: &[(Op, Perm, &[Perm])] = &[
    (Op::QueueDeclare, ("^mq-new$", "", ""), &[("^mx", ".*", ".*")]),
    (Op::QueueDelete, ("^mq$", "", ""), &[("^mx$", ".*", ".*")]),
    (Op::ExchangeDeclare, ("^mx-new$", "", ""), &[("^mq", ".*", ".*")]),
    (Op::ExchangeDelete, ("^mx$", "", ""), &[("^mq$", ".*", ".*")]),
    // bind: write on the queue, read on the exchange
    (
        Op::QueueBind,
        ("", "^mq$", "^mx$"),
        &[("", "^mx$", "^mx$"), ("", "^mq$", "^mq$"), (".*", "", "")],
    ),
    (
        Op::QueueUnbind,
        ("", "^mq$", "^mx$"),
        &[("", "^mx$", "^mx$"), ("", "^mq$", "^mq$")],
    ),
    // exchange-to-exchange: write on the destination, read on the source
    (
        Op::ExchangeBind,
        ("", "^mx2$", "^mx$"),
        &[("", "^mx$", "^mx$"), ("", "^mx2$", "^mx2$")],
    ),
    // publish: write on the exchange
    (Op::Publish, ("", "^mx$", ""), &[(".*", "^mq$", ".*")]),
    // get, consume, purge: read on the queue
    (Op::Get, ("", "", "^mq$"), &[(".*", ".*", "^mx$")]),
    (Op::Consume, ("", "", "^mq$"), &[(".*", ".*", "^mx$")]),
    (Op::Purge, ("", "", "^mq$"), &[(".*", ".*", "^mx$")]),
];

/// Creates user `name` (password `pw`) with no permissions.
fn add_user(admin: &warren::admin::Admin, name: &str) {
    admin
        .control(
            "guest",
            AdminOp::PutUser {
                name: name.into(),
                password_hash: hash_password(b"pw", [1, 2, 3, 4]),
                tags: vec![],
            },
        )
        .unwrap();
}

/// Sets `user`'s (configure, write, read) permissions on `/`.
fn set_permissions(admin: &warren::admin::Admin, user: &str, p: Perm) {
    admin
        .control(
            "guest",
            AdminOp::SetPermissions {
                user: user.into(),
                vhost: "/".into(),
                configure: p.0.into(),
                write: p.1.into(),
                read: p.2.into(),
            },
        )
        .unwrap()
}

/// Publishes with confirms; a refused publish closes the channel, and the
/// round trip after it makes sure the close has arrived.
async fn publish_confirmed(ch: &Channel, exchange: &str, key: &str) -> Result<(), lapin::Error> {
    ch.confirm_select(Default::default()).await?;
    ch.basic_publish(
        exchange.into(),
        key.into(),
        Default::default(),
        b"x",
        Default::default(),
    )
    .await?
    .await?;
    ch.basic_qos(1, Default::default()).await
}

async fn setup(guest: &Connection) {
    let ch = guest.create_channel().await.unwrap();
    let ft = FieldTable::default;
    let _ = ch.queue_delete("mq-new".into(), Default::default()).await;
    let _ = ch.exchange_delete("mx-new".into(), Default::default()).await;
    ch.queue_declare("mq".into(), Default::default(), ft())
        .await
        .unwrap();
    for x in ["mx", "mx2"] {
        ch.exchange_declare(x.into(), lapin::ExchangeKind::Direct, Default::default(), ft())
            .await
            .unwrap();
    }
    ch.queue_bind("mq".into(), "mx".into(), "k".into(), Default::default(), ft())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_checks_the_permissions_rabbitmq_checks() {
    let b = common::start(2);
    let admin = b.handle.admin();
    add_user(&admin, "m");
    let guest = b.connect().await;
    let uri = format!("amqp://m:pw@{}/%2f", b.handle.amqp_addr());
    for (op, allow, refuse) in MATRIX {
        for (perm, expect_ok) in std::iter::once((allow, true)).chain(refuse.iter().map(|p| (p, false))) {
            setup(&guest).await;
            set_permissions(&admin, "m", *perm);
            let c = common::connect(&uri).await;
            let ch = c.create_channel().await.unwrap();
            let r = run(&ch, *op).await;
            match (expect_ok, r) {
                (true, Ok(())) => {}
                (false, Err(e)) => {
                    let s = e.to_string();
                    assert!(
                        s.contains("ACCESS_REFUSED") && s.contains("refused for user 'm'"),
                        "{op:?} with {perm:?}: {s}"
                    );
                }
                (true, Err(e)) => panic!("{op:?} with {perm:?} was refused: {e}"),
                (false, Ok(())) => panic!("{op:?} with {perm:?} was allowed"),
            }
            // The connection survives a refusal: it is a channel error.
            assert!(
                c.status().connected(),
                "{op:?}: a 403 must not close the connection"
            );
            let _ = c.close(200, "done".into()).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_exchange_and_amq_names() {
    let b = common::start(1);
    let admin = b.handle.admin();
    add_user(&admin, "w");
    set_permissions(&admin, "w", (".*", "^q$", ".*"));
    let c = common::connect(&format!("amqp://w:pw@{}/%2f", b.handle.amqp_addr())).await;
    let ch = c.create_channel().await.unwrap();
    ch.queue_declare("q".into(), Default::default(), FieldTable::default())
        .await
        .unwrap();
    // Publishing to the default exchange needs write on `amq.default`.
    let e = publish_confirmed(&ch, "", "q").await.unwrap_err();
    assert!(
        e.to_string()
            .contains("access to exchange 'amq.default' in vhost '/' refused for user 'w'"),
        "{e}"
    );
}
