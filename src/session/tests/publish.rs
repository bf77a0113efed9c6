//! Publish assembly: `basic.publish` + content header + body frames into
//! the message the broker receives, however the bytes arrive, and the
//! errors on the way.

use super::*;
use crate::protocol::BasicProperties;
use crate::protocol::write_header_frame;
use crate::session::Phase;

fn props(p: BasicProperties) -> Vec<u8> {
    let mut out = BytesMut::new();
    p.encode(&mut out);
    out.to_vec()
}

fn opened(cfg: SessionConfig, frame_max: u32) -> Peer {
    let mut p = Peer::open_with(cfg, CLIENT_CAPS, 2047, frame_max, 0);
    p.open_channel(1);
    p.open_channel(2);
    p
}

#[test]
fn properties_reach_the_broker() {
    let rich = BasicProperties {
        content_type: Some("text/plain".into()),
        delivery_mode: Some(2),
        priority: Some(5),
        expiration: Some("60000".into()),
        user_id: Some("guest".into()),
        ..Default::default()
    };
    let cases = [
        (NO_PROPS.to_vec(), false, 0, Message::NO_EXPIRATION),
        (props(rich), true, 5, 60_000),
        (
            props(BasicProperties {
                expiration: Some("0".into()),
                ..Default::default()
            }),
            false,
            0,
            0,
        ),
    ];
    for (raw, persistent, priority, expiration) in cases {
        let mut p = opened(cfg(), 131_072);
        p.send_raw(&publish_bytes(1, "amq.direct", "key", &raw, b"hello", 131_072));
        let want = Published {
            props: raw.clone(),
            persistent,
            priority,
            expiration,
            ..Published::plain(1, "amq.direct", "key", b"hello")
        };
        assert_eq!(p.calls(), vec![Call::Publish(want)]);
        assert_eq!(p.frames(), vec![]);
    }
}

/// The bytes of a publish with a two-frame body, then one with an empty
/// body, on channel 1; and what the broker must receive.
fn two_publishes() -> (BytesMut, Vec<Published>) {
    let raw = props(BasicProperties {
        message_id: Some("id-1".into()),
        ..Default::default()
    });
    let body: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    let mut bytes = publish_bytes(1, "ex", "rk", &raw, &body, 4096);
    bytes.extend_from_slice(&publish_bytes(1, "", "empty", NO_PROPS, b"", 4096));
    let first = Published {
        props: raw,
        ..Published::plain(1, "ex", "rk", &body)
    };
    (bytes, vec![first, Published::plain(1, "", "empty", b"")])
}

#[test]
fn publish_split_at_every_byte_offset() {
    let (bytes, want) = two_publishes();
    for at in 0..=bytes.len() {
        let mut p = opened(cfg(), 4096);
        p.send_raw(&bytes[..at]);
        assert_eq!(p.send_raw(&bytes[at..]), Status::NeedInput);
        assert_eq!(p.b.publishes(), want, "split at {at}");
        assert!(p.input.is_empty());
    }
}

#[test]
fn publish_fed_one_byte_at_a_time() {
    let (bytes, want) = two_publishes();
    let mut p = opened(cfg(), 4096);
    for b in bytes.iter() {
        p.send_raw(&[*b]);
    }
    assert_eq!(p.b.publishes(), want);
    assert_eq!(p.frames(), vec![]);
}

/// Content frames of different channels may interleave.
#[test]
fn multi_frame_bodies_interleaved_across_channels() {
    let mut p = opened(cfg(), 4096);
    let big: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
    let one = publish_bytes(1, "", "big", NO_PROPS, &big, 4096);
    let two = publish_bytes(2, "", "small", NO_PROPS, b"x", 4096);
    // ch1's method, header and first body frame; all of ch2; the rest of ch1.
    let cut = method_bytes(1, publish_method("", "big", false)).len() + (7 + 14 + 1) + 4096;
    let mut bytes = BytesMut::from(&one[..cut]);
    bytes.extend_from_slice(&two);
    bytes.extend_from_slice(&one[cut..]);
    p.send_raw(&bytes);
    assert_eq!(
        p.b.publishes(),
        vec![
            Published::plain(2, "", "small", b"x"),
            Published::plain(1, "", "big", &big)
        ]
    );
}

#[test]
fn mandatory_unroutable_publish_is_returned() {
    let mut p = opened(cfg(), 131_072);
    p.b.outcomes.push_back(Ok(PublishOutcome::default()));
    let mut bytes = method_bytes(1, publish_method("amq.direct", "nowhere", true));
    write_content(&mut bytes, 1, 60, NO_PROPS, b"lost", 131_072);
    p.send_raw(&bytes);
    assert_eq!(
        p.b.publishes(),
        vec![Published::plain(1, "amq.direct", "nowhere", b"lost")]
    );
    let mut want = vec![m(
        1,
        Method::BasicReturn(BasicReturn {
            reply_code: 312,
            reply_text: "NO_ROUTE".into(),
            exchange: "amq.direct".into(),
            routing_key: "nowhere".into(),
        }),
    )];
    want.extend(content(1, NO_PROPS, b"lost"));
    assert_eq!(p.frames(), want);
}

fn header_bytes(ch: u16, class: u16, size: u64) -> BytesMut {
    let mut out = BytesMut::new();
    write_header_frame(&mut out, ch, class, size, NO_PROPS);
    out
}

fn body_bytes(ch: u16, body: &[u8]) -> BytesMut {
    let mut out = BytesMut::new();
    crate::protocol::write_body_frames(&mut out, ch, body, 0);
    out
}

fn cat(parts: &[BytesMut]) -> BytesMut {
    let mut out = BytesMut::new();
    for p in parts {
        out.extend_from_slice(p);
    }
    out
}

/// Content out of place is a connection error (as RabbitMQ: hard).
#[test]
fn content_framing_errors_close_the_connection() {
    let publish = || method_bytes(1, publish_method("", "q", false));
    let immediate = method_bytes(
        1,
        Method::BasicPublish(BasicPublish {
            immediate: true,
            ..Default::default()
        }),
    );
    let no_method = "UNEXPECTED_FRAME - expected method frame, got non method frame instead";
    let cases: Vec<(BytesMut, Method)> = vec![
        (header_bytes(1, 60, 3), connection_close(505, no_method, 0, 0)),
        (body_bytes(1, b"abc"), connection_close(505, no_method, 0, 0)),
        (
            cat(&[publish(), header_bytes(1, 60, 3), body_bytes(1, b"abcde")]),
            connection_close(
                501,
                "FRAME_ERROR - content body exceeds the declared size 3",
                0,
                0,
            ),
        ),
        (
            cat(&[
                publish(),
                header_bytes(1, 60, 5),
                body_bytes(1, b"ab"),
                body_bytes(1, b"cdef"),
            ]),
            connection_close(
                501,
                "FRAME_ERROR - content body exceeds the declared size 5",
                0,
                0,
            ),
        ),
        (
            cat(&[immediate, header_bytes(1, 60, 0)]),
            connection_close(540, "NOT_IMPLEMENTED - immediate=true", 60, 40),
        ),
    ];
    for (bytes, close) in cases {
        let mut p = opened(cfg(), 131_072);
        p.send_raw(&bytes);
        assert_eq!(p.frames(), vec![m(0, close)]);
        assert_eq!(p.b.publishes(), vec![]);
        assert_eq!(p.s.phase(), Phase::Closing);
    }
}

#[test]
fn method_in_the_middle_of_content_is_505() {
    let mut p = opened(cfg(), 131_072);
    p.send_raw(&publish_bytes(1, "", "q", NO_PROPS, b"fine", 131_072));
    let mut bytes = method_bytes(1, publish_method("", "q", false));
    bytes.extend_from_slice(&method_bytes(1, Method::BasicQos(Default::default())));
    p.send_raw(&bytes);
    let frames = p.frames();
    let [
        Frame::Method {
            channel: 0,
            method: Method::ConnectionClose(c),
        },
    ] = &frames[..]
    else {
        panic!("{frames:?}")
    };
    assert_eq!(c.reply_code, 505);
    let text =
        "UNEXPECTED_FRAME - expected content header for class 60, got non content header frame instead";
    assert_eq!(c.reply_text.to_string(), text);
    assert_eq!(p.b.publishes(), vec![Published::plain(1, "", "q", b"fine")]);
}

/// RabbitMQ 3.10.8 names `basic.publish` (60, 40) for every interrupted
/// content, and says which frame it expected.
#[test]
fn interrupted_content_as_rabbitmq() {
    let publish = || method_bytes(1, publish_method("", "q", false));
    let qos = || method_bytes(1, Method::BasicQos(Default::default()));
    let body = "UNEXPECTED_FRAME - expected content body, got non content body frame instead";
    let cases: Vec<(BytesMut, &str)> = vec![
        (
            cat(&[publish(), qos()]),
            "UNEXPECTED_FRAME - expected content header for class 60, got non content header frame instead",
        ),
        (
            cat(&[publish(), header_bytes(1, 50, 5)]),
            "UNEXPECTED_FRAME - expected content header for class 60, got one for class 50 instead",
        ),
        (
            cat(&[publish(), header_bytes(1, 60, 5), body_bytes(1, b"ab"), qos()]),
            body,
        ),
        (
            cat(&[
                publish(),
                header_bytes(1, 60, 5),
                body_bytes(1, b"ab"),
                header_bytes(1, 60, 5),
            ]),
            body,
        ),
    ];
    let mut wrong = Mismatches::default();
    for (i, (bytes, text)) in cases.into_iter().enumerate() {
        let mut p = opened(cfg(), 131_072);
        p.send_raw(&bytes);
        wrong.check(i, p.frames(), vec![m(0, connection_close(505, text, 60, 40))]);
    }
    wrong.assert_none();
}

/// Refusals of a message close its channel (soft errors); the rest of the
/// content is ignored, and other channels go on.
#[test]
fn message_refusals_close_the_channel() {
    let with = |p: BasicProperties| props(p);
    let expiring = |e: &'static str| {
        with(BasicProperties {
            expiration: Some(e.into()),
            ..Default::default()
        })
    };
    let cases: Vec<(Vec<u8>, usize, &str)> = vec![
        (
            with(BasicProperties {
                user_id: Some("bob".into()),
                ..Default::default()
            }),
            3,
            "PRECONDITION_FAILED - user_id property set to 'bob' but authenticated user was 'guest'",
        ),
        (
            expiring("abc"),
            3,
            "PRECONDITION_FAILED - invalid expiration 'abc': no_integer",
        ),
        (
            expiring(""),
            3,
            "PRECONDITION_FAILED - invalid expiration '': no_integer",
        ),
        (
            NO_PROPS.to_vec(),
            11,
            "PRECONDITION_FAILED - message size 11 is larger than configured max size 10",
        ),
    ];
    for (raw, size, text) in cases {
        let mut p = opened(
            SessionConfig {
                max_message_size: 10,
                ..cfg()
            },
            131_072,
        );
        let mut bytes = publish_bytes(1, "", "q", &raw, &vec![b'x'; size], 131_072);
        bytes.extend_from_slice(&publish_bytes(1, "", "q", NO_PROPS, b"x", 131_072));
        bytes.extend_from_slice(&publish_bytes(2, "", "q", NO_PROPS, &[b'y'; 10], 131_072));
        p.send_raw(&bytes);
        assert_eq!(p.frames(), vec![m(1, channel_close(406, text, 60, 40))], "{text}");
        assert_eq!(p.b.publishes(), vec![Published::plain(2, "", "q", &[b'y'; 10])]);
        assert_eq!(p.s.phase(), Phase::Running);
    }
}

#[test]
fn broker_refusing_a_publish_closes_the_channel() {
    let mut p = opened(cfg(), 131_072);
    p.b.outcomes
        .push_back(Err(AmqpError::not_found("no exchange 'nope' in vhost '/'")));
    p.send_raw(&publish_bytes(1, "nope", "q", NO_PROPS, b"x", 131_072));
    let text = "NOT_FOUND - no exchange 'nope' in vhost '/'";
    assert_eq!(p.frames(), vec![m(1, channel_close(404, text, 60, 40))]);
}

#[test]
fn expiration_errors_as_rabbitmq() {
    let cases = [
        (
            "-1",
            "PRECONDITION_FAILED - invalid expiration '-1': {value_negative,-1}",
        ),
        (
            "12x",
            "PRECONDITION_FAILED - invalid expiration '12x': {leftover_string,\"x\"}",
        ),
    ];
    let mut wrong = Mismatches::default();
    for (e, text) in cases {
        let mut p = opened(cfg(), 131_072);
        let raw = props(BasicProperties {
            expiration: Some(e.into()),
            ..Default::default()
        });
        p.send_raw(&publish_bytes(1, "", "q", &raw, b"", 131_072));
        wrong.check(e, p.frames(), vec![m(1, channel_close(406, text, 60, 40))]);
    }
    wrong.assert_none();
}

/// A frame over the negotiated `frame_max` is a connection error, worded
/// as RabbitMQ words it; the frames before it were already processed.
#[test]
fn frame_over_the_negotiated_frame_max_is_501() {
    let mut p = opened(cfg(), 4096);
    let mut bytes = publish_bytes(1, "", "q", NO_PROPS, b"before", 4096);
    // A payload of frame_max bytes is accepted (clients get the 8 bytes
    // of framing wrong); one more is not.
    bytes.extend_from_slice(&method_bytes(1, publish_method("", "q", false)));
    bytes.extend_from_slice(&header_bytes(1, 60, 4096 + 4097));
    bytes.extend_from_slice(&body_bytes(1, &[1; 4096]));
    bytes.extend_from_slice(&body_bytes(1, &[2; 4097]));
    bytes.extend_from_slice(&publish_bytes(1, "", "q", NO_PROPS, b"after", 4096));
    assert_eq!(p.send_raw(&bytes), Status::NeedInput);
    let text = "FRAME_ERROR - type 3, all octets = <<>>: {frame_too_large,4097,4088}";
    assert_eq!(p.frames(), vec![m(0, connection_close(501, text, 0, 0))]);
    assert_eq!(p.b.publishes(), vec![Published::plain(1, "", "q", b"before")]);
    assert_eq!(p.s.phase(), Phase::Closing);
    assert!(p.input.is_empty(), "nothing after a bad frame is read");
}

/// More interrupted content: a body where the header must come, a header
/// with a weight (RabbitMQ requires 0).
#[test]
fn misplaced_content_names_basic_publish() {
    let publish = || method_bytes(1, publish_method("", "q", false));
    let header =
        "UNEXPECTED_FRAME - expected content header for class 60, got non content header frame instead";
    let weighted = {
        let mut b = header_bytes(1, 60, 0);
        b[10] = 1; // the weight's low octet
        b
    };
    let cases: Vec<(BytesMut, &str)> = vec![
        (cat(&[publish(), body_bytes(1, b"ab")]), header),
        (cat(&[publish(), weighted]), header),
    ];
    let mut wrong = Mismatches::default();
    for (i, (bytes, text)) in cases.into_iter().enumerate() {
        let mut p = opened(cfg(), 131_072);
        p.send_raw(&bytes);
        wrong.check(i, p.frames(), vec![m(0, connection_close(505, text, 60, 40))]);
    }
    wrong.assert_none();
}

/// RabbitMQ reads an expiration with `string:to_integer`: one sign is
/// allowed, leading zeros too, and at most ten years.
#[test]
fn expirations_rabbitmq_takes_and_refuses() {
    for (e, ms) in [("+12", 12), ("-0", 0), ("007", 7)] {
        let mut p = opened(cfg(), 131_072);
        let raw = props(BasicProperties {
            expiration: Some(e.into()),
            ..Default::default()
        });
        p.send_raw(&publish_bytes(1, "", "q", &raw, b"", 131_072));
        assert_eq!(p.frames(), vec![], "{e}");
        assert_eq!(p.b.publishes()[0].expiration, ms, "{e}");
    }
    let mut p = opened(cfg(), 131_072);
    let raw = props(BasicProperties {
        expiration: Some("315360000001".into()),
        ..Default::default()
    });
    p.send_raw(&publish_bytes(1, "", "q", &raw, b"", 131_072));
    let text = "PRECONDITION_FAILED - invalid expiration '315360000001': {value_too_large,315360000001}";
    assert_eq!(p.frames(), vec![m(1, channel_close(406, text, 60, 40))]);
}

/// Under a resource alarm a connection is blocked at its next
/// `basic.publish`, however its bodies arrive: nothing of it (or of what
/// follows) reaches the broker, the client that supports it gets
/// `connection.blocked`, and all of it goes through once the alarm
/// clears (RabbitMQ's order; issue 13: unfinished bodies on several
/// channels were read without limit).
#[test]
fn an_alarm_blocks_at_the_next_publish_until_it_clears() {
    let mut p = opened(cfg(), 131_072);
    p.s.set_alarm(Some("low on memory"));
    // Not publishing yet: nothing is said.
    assert_eq!(p.frames(), vec![]);
    let mut input = BytesMut::new();
    input.extend_from_slice(&publish_bytes(1, "", "q", NO_PROPS, b"one", 131_072));
    input.extend_from_slice(&method_bytes(2, publish_method("", "q", false)));
    assert_eq!(p.send_raw(&input), Status::Paused);
    assert_eq!(p.calls(), vec![]);
    let blocked = p.frames();
    assert!(
        matches!(
            &blocked[..],
            [Frame::Method {
                channel: 0,
                method: Method::ConnectionBlocked(_)
            }]
        ),
        "{blocked:?}"
    );
    assert!(p.s.is_paused());
    // More input is not processed either.
    let [head, body] = &content(2, NO_PROPS, b"two")[..] else {
        unreachable!()
    };
    let bytes = |f: &Frame| {
        let mut b = BytesMut::new();
        f.encode(&mut b);
        b
    };
    assert_eq!(p.send_raw(&bytes(head)), Status::Paused);
    assert_eq!(p.calls(), vec![]);

    p.s.set_alarm(None);
    let unblocked = p.frames();
    assert!(
        matches!(
            &unblocked[..],
            [Frame::Method {
                channel: 0,
                method: Method::ConnectionUnblocked(_)
            }]
        ),
        "{unblocked:?}"
    );
    p.resume();
    p.send_raw(&bytes(body));
    let published: Vec<_> = p.b.publishes().into_iter().map(|x| (x.ch, x.body)).collect();
    assert_eq!(published, vec![(1, b"one".to_vec()), (2, b"two".to_vec())]);
}
