//! Direct reply-to (`amq.rabbitmq.reply-to`) in the session: the reply
//! consumer lives in its channel, requests get a name that leads back to
//! it, and replies to that name are delivered as RabbitMQ does.

use super::*;
use crate::broker::reply_to::{self, Target};
use crate::protocol::BasicProperties;

const PSEUDO: &str = "amq.rabbitmq.reply-to";

fn reply_consume(no_ack: bool, tag: &str) -> Method {
    Method::BasicConsume(BasicConsume {
        queue: PSEUDO.into(),
        consumer_tag: ShortStr::from_string_lossy(tag),
        no_ack,
        ..Default::default()
    })
}

fn asking_for_reply() -> Vec<u8> {
    BasicProperties {
        reply_to: Some(PSEUDO.into()),
        correlation_id: Some("c1".into()),
        ..Default::default()
    }
    .to_bytes()
    .to_vec()
}

fn declare(name: &str) -> Method {
    Method::QueueDeclare(QueueDeclare {
        queue: ShortStr::from_string_lossy(name),
        passive: true,
        ..Default::default()
    })
}

/// A peer with a reply consumer `r` on channel 1.
fn consuming() -> Peer {
    let mut p = Peer::open();
    p.open_channel(1);
    p.send(1, reply_consume(true, "r"));
    assert_eq!(
        p.frames(),
        vec![m(
            1,
            Method::BasicConsumeOk(BasicConsumeOk {
                consumer_tag: "r".into()
            })
        )]
    );
    p
}

/// Publishes a request asking for a reply on channel 1; returns the name
/// the broker got as its `reply-to`.
fn request(p: &mut Peer) -> ShortStr {
    p.send_raw(&publish_bytes(1, "", "rpc", &asking_for_reply(), b"req", 131_072));
    let calls = p.calls();
    let [Call::Publish(got)] = calls.as_slice() else {
        panic!("{calls:?}")
    };
    let props = BasicProperties::decode(&Bytes::copy_from_slice(&got.props)).unwrap();
    assert_eq!(props.correlation_id, Some("c1".into()));
    props.reply_to.expect("a reply-to")
}

fn reply(to: Target, body: &[u8]) -> Event {
    Event::DirectReply {
        ch: to.ch,
        key: to.key,
        msg: Message::assemble(b"", b"amq.rabbitmq.reply-to.x", NO_PROPS, body),
    }
}

fn delivered(tag: u64, body: &[u8]) -> Vec<Frame> {
    let mut v = vec![m(
        1,
        Method::BasicDeliver(BasicDeliver {
            consumer_tag: "r".into(),
            delivery_tag: tag,
            redelivered: false,
            exchange: "".into(),
            routing_key: "amq.rabbitmq.reply-to.x".into(),
        }),
    )];
    v.extend(content(1, NO_PROPS, body));
    v
}

#[test]
fn a_request_names_its_channel_and_the_reply_comes_back_to_it() {
    let mut p = consuming();
    // The consumer is the channel's own: the broker is not asked.
    assert!(p.b.requests.is_empty());
    let name = request(&mut p);
    let to = reply_to::target(name.as_bytes()).expect("a name this broker gives out");
    assert_eq!(to.ch, p.cref(1));
    p.event(reply(to, b"one"));
    p.event(reply(to, b"two"));
    let mut want = delivered(1, b"one");
    want.extend(delivered(2, b"two"));
    assert_eq!(p.frames(), want);
    // A second request gets the same name; a forged key gets nothing.
    assert_eq!(request(&mut p), name);
    p.event(reply(
        Target {
            key: [b'x'; reply_to::KEY_LEN],
            ..to
        },
        b"forged",
    ));
    assert_eq!(p.frames(), vec![]);
}

#[test]
fn a_cancelled_reply_consumer_gets_nothing_more() {
    let mut p = consuming();
    let to = reply_to::target(request(&mut p).as_bytes()).unwrap();
    p.send(
        1,
        Method::BasicCancel(BasicCancel {
            consumer_tag: "r".into(),
            nowait: false,
        }),
    );
    assert_eq!(
        p.frames(),
        vec![m(
            1,
            Method::BasicCancelOk(BasicCancelOk {
                consumer_tag: "r".into()
            })
        )]
    );
    p.event(reply(to, b"late"));
    assert_eq!(p.frames(), vec![]);
    p.send_raw(&publish_bytes(1, "", "rpc", &asking_for_reply(), b"req", 131_072));
    assert_eq!(
        the_close(&p.frames()),
        (
            1,
            406,
            "PRECONDITION_FAILED - fast reply consumer does not exist".into(),
            60,
            40
        )
    );
}

#[test]
fn rabbitmqs_refusals() {
    let mut p = Peer::open();
    p.open_channel(1);
    p.send(1, reply_consume(false, ""));
    assert_eq!(
        the_close(&p.frames()),
        (
            1,
            406,
            "PRECONDITION_FAILED - reply consumer cannot acknowledge".into(),
            60,
            20
        )
    );
    let mut p = consuming();
    p.send(1, reply_consume(true, "other"));
    assert_eq!(
        the_close(&p.frames()),
        (
            1,
            406,
            "PRECONDITION_FAILED - reply consumer already set".into(),
            60,
            20
        )
    );
    // Asking for a reply on a channel without the consumer.
    let mut p = consuming();
    p.open_channel(2);
    p.send_raw(&publish_bytes(2, "", "rpc", &asking_for_reply(), b"req", 131_072));
    assert_eq!(
        the_close(&p.frames()),
        (
            2,
            406,
            "PRECONDITION_FAILED - fast reply consumer does not exist".into(),
            60,
            40
        )
    );
    // The reply consumer's tag is taken for the channel's other consumers.
    let mut p = consuming();
    p.send(
        1,
        Method::BasicConsume(BasicConsume {
            queue: "q".into(),
            consumer_tag: "r".into(),
            ..Default::default()
        }),
    );
    assert_eq!(
        the_close(&p.frames()),
        (
            0,
            530,
            "NOT_ALLOWED - attempt to reuse consumer tag 'r'".into(),
            60,
            20
        )
    );
}

#[test]
fn declares_answer_for_the_pseudo_queue_and_live_names() {
    let mut p = consuming();
    let ok = |q: &str| {
        vec![m(
            1,
            Method::QueueDeclareOk(QueueDeclareOk {
                queue: ShortStr::from_string_lossy(q),
                message_count: 0,
                consumer_count: 1,
            }),
        )]
    };
    p.send(1, declare(PSEUDO));
    assert_eq!(p.frames(), ok(PSEUDO));
    let name = request(&mut p);
    p.send(1, declare(name.as_str().as_ref()));
    assert_eq!(p.frames(), ok(name.as_str().as_ref()));
    p.send(1, declare("amq.rabbitmq.reply-to.garbage"));
    assert_eq!(
        the_close(&p.frames()),
        (
            1,
            404,
            "NOT_FOUND - no queue 'amq.rabbitmq.reply-to.garbage' in vhost '/'".into(),
            50,
            10
        )
    );
    assert!(p.b.requests.is_empty());
}

#[test]
fn replies_to_a_client_that_does_not_read_are_dropped_past_the_limit() {
    let mut p = Peer::open_with(
        SessionConfig {
            reply_output_max: 0,
            ..cfg()
        },
        CLIENT_CAPS,
        2047,
        131_072,
        0,
    );
    p.open_channel(1);
    p.send(1, reply_consume(true, "r"));
    p.frames();
    let to = reply_to::target(request(&mut p).as_bytes()).unwrap();
    // One batch: the first reply fills the output, the second is dropped.
    p.events([reply(to, b"one"), reply(to, b"two")]);
    assert_eq!(p.frames(), delivered(1, b"one"));
    assert_eq!(p.s.stats.replies_dropped, 1);
}
