//! Errors to closes (soft: the channel, hard: the connection), what a
//! closed channel gives back, events for channels that are gone, and
//! pipelined methods waiting for replies.

use super::*;
use crate::session::Phase;

fn declare(queue: &'static str, nowait: bool) -> Method {
    Method::QueueDeclare(QueueDeclare {
        queue: queue.into(),
        nowait,
        ..Default::default()
    })
}

fn declare_ok(queue: &'static str) -> Reply {
    Reply::QueueDeclareOk {
        name: queue.into(),
        messages: 0,
        consumers: 0,
    }
}

fn declare_ok_frame(ch: u16, queue: &'static str) -> Frame {
    m(
        ch,
        Method::QueueDeclareOk(QueueDeclareOk {
            queue: queue.into(),
            message_count: 0,
            consumer_count: 0,
        }),
    )
}

fn qos_ok(ch: u16) -> Frame {
    m(ch, Method::BasicQosOk(BasicQosOk {}))
}

fn two_channels() -> Peer {
    let mut p = Peer::open();
    p.open_channel(1);
    p.open_channel(2);
    p
}

#[test]
fn soft_error_closes_the_channel_until_close_ok() {
    let mut p = two_channels();
    p.send(1, declare("q", false));
    let e = AmqpError::not_found("no queue 'q' in vhost '/'").with_method(50, 10);
    p.reply(1, Reply::Error(e));
    let text = "NOT_FOUND - no queue 'q' in vhost '/'";
    assert_eq!(p.frames(), vec![m(1, channel_close(404, text, 50, 10))]);
    // Until close-ok, the channel's frames are ignored; others go on.
    p.send(1, Method::BasicQos(Default::default()));
    p.send(1, Method::ChannelOpen(Default::default()));
    p.send_raw(&publish_bytes(1, "", "q", NO_PROPS, b"x", 131_072));
    p.send(2, Method::BasicQos(Default::default()));
    assert_eq!(p.frames(), vec![qos_ok(2)]);
    assert_eq!(p.b.publishes(), vec![]);
    assert_eq!(p.s.channel_count(), 2);
    p.send(1, Method::ChannelCloseOk(ChannelCloseOk {}));
    assert_eq!(p.s.channel_count(), 1);
    p.open_channel(1);
    // A client closing a channel we are closing gets close-ok.
    p.send(
        1,
        Method::BasicAck(BasicAck {
            delivery_tag: 3,
            multiple: false,
        }),
    );
    p.frames();
    p.send(1, Method::ChannelClose(Default::default()));
    assert_eq!(p.frames(), vec![m(1, Method::ChannelCloseOk(ChannelCloseOk {}))]);
    p.open_channel(1);
    assert_eq!(p.s.phase(), Phase::Running);
}

#[test]
fn a_closed_channel_gives_back_its_consumers_and_deliveries() {
    let mut p = two_channels();
    let c1 = p.consume(1, "c1", false);
    let c2 = p.consume(2, "c2", false);
    p.deliver(c1, 11);
    p.deliver(c2, 21);
    p.deliver(c1, 12);
    p.frames();
    p.send(1, ack(9, false));
    assert_eq!(
        close_text(&p.frames()),
        (1, 406, "PRECONDITION_FAILED - unknown delivery tag 9".to_string())
    );
    // Consumers first, so the requeued messages do not go back to them.
    assert_eq!(
        p.calls(),
        vec![
            Call::DropConsumer(Q, c1),
            Call::Settle(Q, 11, Settle::Requeue),
            Call::Settle(Q, 12, Settle::Requeue)
        ]
    );
    // A delivery already on its way is given back too.
    p.event(delivery(c1, 13, true, true));
    assert_eq!(p.frames(), vec![]);
    assert_eq!(
        p.calls(),
        vec![Call::Settle(Q, 13, Settle::Requeue), Call::Written(Q, c1, 1)]
    );
    // Channel 2 is untouched.
    p.send(2, ack(1, false));
    assert_eq!(p.calls(), vec![Call::Settle(Q, 21, Settle::Ack)]);
}

#[test]
fn hard_error_releases_every_channel() {
    let mut p = two_channels();
    let c1 = p.consume(1, "c1", false);
    let c2 = p.consume(2, "c2", false);
    p.deliver(c1, 11);
    p.deliver(c2, 21);
    p.deliver(c1, 12);
    p.frames();
    p.send(2, Method::ChannelOpen(Default::default()));
    let text = "CHANNEL_ERROR - second 'channel.open' seen";
    assert_eq!(p.frames(), vec![m(0, connection_close(504, text, 20, 10))]);
    assert_eq!(p.s.phase(), Phase::Closing);
    assert_eq!(p.s.channel_count(), 0);
    assert_eq!(
        p.calls(),
        vec![
            Call::DropConsumer(Q, c1),
            Call::Settle(Q, 11, Settle::Requeue),
            Call::Settle(Q, 12, Settle::Requeue),
            Call::DropConsumer(Q, c2),
            Call::Settle(Q, 21, Settle::Requeue),
        ]
    );
    p.events([delivery(c2, 22, true, false), confirm_for(&p, 2)]);
    assert_eq!(p.frames(), vec![]);
    assert_eq!(p.calls(), vec![Call::Settle(Q, 22, Settle::Requeue)]);
    p.send(0, Method::ConnectionCloseOk(ConnectionCloseOk {}));
    assert_eq!(p.calls(), vec![Call::ConnectionClosed(CONN)]);
}

fn confirm_for(p: &Peer, ch: u16) -> Event {
    Event::Confirm {
        ch: p.cref(ch),
        seq: 1,
        ok: true,
    }
}

/// Late events addressed to a channel that was closed (even if its number
/// was opened again) are given back, so nothing they carry is lost.
#[test]
fn events_for_a_gone_channel_are_given_back() {
    let mut p = two_channels();
    let c = p.consume(1, "c1", true);
    let old = p.cref(1);
    p.send(1, Method::ChannelClose(Default::default()));
    assert_eq!(p.frames(), vec![m(1, Method::ChannelCloseOk(ChannelCloseOk {}))]);
    assert_eq!(p.calls(), vec![Call::DropConsumer(Q, c)]);
    p.open_channel(1);
    let entry = crate::queue::Entry {
        seq: 5,
        msg: message(b"late"),
        expires_at: 0,
        loc: None,
        redelivered: false,
    };
    let late = ConsumerRef { ch: old, id: 99 };
    p.events([
        delivery(c, 1, true, true),
        delivery(c, 2, false, false),
        Event::Reply {
            ch: old,
            reply: Reply::ConsumeOk {
                queue: Q,
                consumer: late,
            },
        },
        Event::Reply {
            ch: old,
            reply: Reply::GetOk {
                queue: Q,
                entry,
                remaining: 0,
                needs_ack: true,
            },
        },
        Event::CreditRequest {
            queue: Q,
            consumer: c,
        },
        Event::ConsumerCancelled { consumer: c },
        Event::Confirm {
            ch: old,
            seq: 1,
            ok: true,
        },
    ]);
    assert_eq!(p.frames(), vec![]);
    assert_eq!(
        p.calls(),
        vec![
            Call::Settle(Q, 1, Settle::Requeue),
            Call::Written(Q, c, 1),
            Call::DropConsumer(Q, late),
            Call::Settle(Q, 5, Settle::Requeue),
        ]
    );
    // The new channel 1 was not disturbed.
    p.send(1, Method::BasicQos(Default::default()));
    assert_eq!(p.frames(), vec![qos_ok(1)]);
}

#[test]
fn channel_errors() {
    let cases: Vec<(u16, Method, Frame)> = vec![
        (
            1,
            Method::ChannelFlow(ChannelFlow { active: false }),
            m(0, connection_close(540, "NOT_IMPLEMENTED - active=false", 20, 20)),
        ),
        (
            1,
            Method::QueueBind(QueueBind {
                exchange: "amq.direct".into(),
                ..Default::default()
            }),
            m(
                1,
                channel_close(404, "NOT_FOUND - no previously declared queue", 50, 20),
            ),
        ),
        (
            1,
            Method::BasicGet(Default::default()),
            m(
                1,
                channel_close(404, "NOT_FOUND - no previously declared queue", 60, 70),
            ),
        ),
    ];
    for (ch, method, close) in cases {
        let mut p = two_channels();
        p.send(ch, method);
        assert_eq!(p.frames(), vec![close]);
    }
    // A channel never opened: 504, a connection error.
    let mut p = Peer::open();
    p.send(5, Method::BasicQos(Default::default()));
    assert_eq!(close_text(&p.frames()).1, 504);
    assert_eq!(p.s.phase(), Phase::Closing);
}

#[test]
fn channel_errors_as_rabbitmq() {
    let cases: Vec<(BytesMut, Frame)> = vec![
        (
            method_bytes(5, Method::BasicQos(Default::default())),
            m(
                0,
                connection_close(504, "CHANNEL_ERROR - expected 'channel.open'", 60, 10),
            ),
        ),
        (
            {
                let mut b = BytesMut::new();
                crate::protocol::write_header_frame(&mut b, 5, 60, 3, NO_PROPS);
                b
            },
            m(
                0,
                connection_close(
                    505,
                    "UNEXPECTED_FRAME - expected method frame, got non method frame instead",
                    0,
                    0,
                ),
            ),
        ),
        (
            method_bytes(
                1,
                Method::ExchangeDeclare(ExchangeDeclare {
                    exchange: "x".into(),
                    kind: "foo".into(),
                    ..Default::default()
                }),
            ),
            m(
                0,
                connection_close(503, "COMMAND_INVALID - invalid exchange type 'foo'", 40, 10),
            ),
        ),
    ];
    let mut wrong = Mismatches::default();
    for (i, (bytes, close)) in cases.into_iter().enumerate() {
        let mut p = two_channels();
        p.send_raw(&bytes);
        wrong.check(i, p.frames(), vec![close]);
    }
    wrong.assert_none();
}

/// Two synchronous methods in one read: the second is processed once the
/// first one's reply is in, without new input.
#[test]
fn pipelined_methods_wait_for_each_reply() {
    let mut p = two_channels();
    let mut bytes = method_bytes(1, declare("a", false));
    bytes.extend_from_slice(&method_bytes(1, declare("b", false)));
    assert_eq!(p.send_raw(&bytes), Status::Paused);
    assert_eq!(p.calls(), vec![Call::Request(1, (50, 10))]);
    assert!(p.s.is_paused() && p.s.has_unprocessed_frames());
    // More input while paused stays unread.
    assert_eq!(p.send(2, Method::BasicQos(Default::default())), Status::Paused);
    assert_eq!((p.frames(), p.calls()), (vec![], vec![]));
    assert!(!p.input.is_empty());
    p.reply(1, declare_ok("a"));
    assert_eq!(p.frames(), vec![declare_ok_frame(1, "a")]);
    assert_eq!(p.calls(), vec![], "nothing is processed inside on_event");
    assert!(!p.s.is_paused() && p.s.has_unprocessed_frames());
    assert_eq!(p.resume(), Status::Paused);
    assert!(matches!(p.last_request(), Request::QueueDeclare { name, .. } if name.as_bytes() == b"b"));
    assert!(!p.s.has_unprocessed_frames());
    p.reply(1, declare_ok("b"));
    assert_eq!(p.frames(), vec![declare_ok_frame(1, "b")]);
    assert_eq!(p.resume(), Status::NeedInput);
    assert_eq!(p.frames(), vec![qos_ok(2)]);
    assert!(p.input.is_empty());
}

/// aiormq's shape: nowait declare and bind, then qos, in one write.
#[test]
fn nowait_methods_then_qos() {
    let mut p = two_channels();
    let mut bytes = method_bytes(1, declare("q", true));
    bytes.extend_from_slice(&method_bytes(
        1,
        Method::QueueBind(QueueBind {
            queue: "q".into(),
            exchange: "amq.direct".into(),
            routing_key: "q".into(),
            nowait: true,
            ..Default::default()
        }),
    ));
    bytes.extend_from_slice(&method_bytes(1, Method::BasicQos(Default::default())));
    assert_eq!(p.send_raw(&bytes), Status::Paused);
    p.reply(1, declare_ok("q"));
    assert_eq!(p.frames(), vec![]);
    assert_eq!(p.resume(), Status::Paused);
    p.reply(1, Reply::QueueBindOk);
    assert_eq!(p.frames(), vec![]);
    assert_eq!(p.resume(), Status::NeedInput);
    assert_eq!(p.frames(), vec![qos_ok(1)]);
    assert_eq!(
        p.calls(),
        vec![Call::Request(1, (50, 10)), Call::Request(1, (50, 20))]
    );
}

/// A confirmed publish on one channel behind a declare on another, in one
/// write: the publish waits, then its confirm comes.
#[test]
fn publish_behind_a_declare_on_another_channel() {
    let mut p = two_channels();
    p.send(1, Method::ConfirmSelect(ConfirmSelect { nowait: true }));
    let mut bytes = method_bytes(2, declare("q", false));
    bytes.extend_from_slice(&publish_bytes(1, "", "nowhere", NO_PROPS, b"x", 131_072));
    p.send_raw(&bytes);
    assert_eq!(p.b.publishes(), vec![]);
    p.reply(2, declare_ok("q"));
    p.resume();
    assert_eq!(p.frames(), vec![declare_ok_frame(2, "q"), m(1, ack(1, false))]);
    assert_eq!(
        p.b.publishes(),
        vec![Published {
            confirm: Some(1),
            ..Published::plain(1, "", "nowhere", b"x")
        }]
    );
}

/// Frames behind a request that fails go with its channel.
#[test]
fn frames_behind_a_failed_request_are_dropped_with_the_channel() {
    let mut p = two_channels();
    let mut bytes = method_bytes(1, declare("a", false));
    bytes.extend_from_slice(&method_bytes(1, declare("b", false)));
    bytes.extend_from_slice(&method_bytes(2, Method::BasicQos(Default::default())));
    p.send_raw(&bytes);
    let e = AmqpError::resource_locked("cannot obtain exclusive access to locked queue 'a' in vhost '/'")
        .with_method(50, 10);
    p.reply(1, Reply::Error(e));
    assert!(!p.s.is_paused());
    assert_eq!(p.resume(), Status::NeedInput);
    let text = "RESOURCE_LOCKED - cannot obtain exclusive access to locked queue 'a' in vhost '/'";
    assert_eq!(
        p.frames(),
        vec![m(1, channel_close(405, text, 50, 10)), qos_ok(2)]
    );
    assert_eq!(p.calls(), vec![Call::Request(1, (50, 10))]);
}

/// RabbitMQ's word for an exchange type it lacks depends on whether the
/// name is an atom of its node (see `erl::bad_exchange_type`): made-up
/// names are "unknown".
#[test]
fn unknown_exchange_type() {
    let mut p = two_channels();
    p.send(
        1,
        Method::ExchangeDeclare(ExchangeDeclare {
            exchange: "x".into(),
            kind: "nosuch".into(),
            ..Default::default()
        }),
    );
    let text = "COMMAND_INVALID - unknown exchange type 'nosuch'";
    assert_eq!(p.frames(), vec![m(0, connection_close(503, text, 40, 10))]);
}

/// A body on a channel never opened: RabbitMQ expects a method first.
#[test]
fn content_on_an_unopened_channel_is_505() {
    let mut p = two_channels();
    let mut b = BytesMut::new();
    crate::protocol::write_body_frames(&mut b, 5, b"ab", 0);
    p.send_raw(&b);
    let text = "UNEXPECTED_FRAME - expected method frame, got non method frame instead";
    assert_eq!(p.frames(), vec![m(0, connection_close(505, text, 0, 0))]);
}
