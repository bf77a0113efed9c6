//! Protocol header, start/tune/open, refusals before `connection.open`,
//! channel numbers and `channel_max`, and the connection close handshake.

use super::*;
use crate::session::Phase;
use bytes::BufMut;

const REFUSED: &str =
    "Login was refused using authentication mechanism PLAIN. For details see the broker logfile.";

fn amqplain(user: &str, password: &str) -> Bytes {
    let mut b = BytesMut::new();
    for (k, v) in [("LOGIN", user), ("PASSWORD", password)] {
        crate::protocol::put_shortstr(&mut b, k.as_bytes());
        b.put_u8(b'S');
        crate::protocol::put_longstr(&mut b, v.as_bytes());
    }
    b.freeze()
}

/// A session that got the header and `start-ok`.
fn started(cfg: SessionConfig, caps: &[&str]) -> Peer {
    let mut p = Peer::new(cfg);
    p.send_raw(&PROTOCOL_HEADER);
    p.send(0, start_ok(caps, "PLAIN", plain("guest", "guest")));
    p.frames();
    p.b.calls.clear();
    p
}

#[test]
fn protocol_header_gets_connection_start() {
    let mut p = Peer::new(cfg());
    // Half a header: nothing yet.
    assert_eq!(p.send_raw(&PROTOCOL_HEADER[..5]), Status::NeedInput);
    assert_eq!(p.frames(), vec![]);
    assert_eq!(p.s.phase(), Phase::Header);
    assert_eq!(p.send_raw(&PROTOCOL_HEADER[5..]), Status::NeedInput);
    assert_eq!(p.s.phase(), Phase::Start);
    let frames = p.frames();
    let [
        Frame::Method {
            channel: 0,
            method: Method::ConnectionStart(s),
        },
    ] = &frames[..]
    else {
        panic!("{frames:?}")
    };
    assert_eq!((s.version_major, s.version_minor), (0, 9));
    assert_eq!(s.mechanisms.as_bytes(), b"PLAIN AMQPLAIN");
    assert_eq!(s.locales.as_bytes(), b"en_US");
    let caps: FieldTable = [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "connection.blocked",
        "consumer_priorities",
        "authentication_failure_close",
        "per_consumer_qos",
    ]
    .into_iter()
    .map(|k| (ShortStr::from_static(k), FieldValue::Bool(true)))
    .collect();
    assert_eq!(
        s.server_properties.get("capabilities"),
        Some(&FieldValue::Table(caps))
    );
    assert_eq!(
        s.server_properties.get("product"),
        Some(&FieldValue::LongStr("warren".into()))
    );
    assert_eq!(p.b.calls, vec![]);
}

#[test]
fn login_mechanisms_get_tune() {
    let cases: &[(&'static str, Bytes)] = &[
        ("PLAIN", plain("guest", "guest")),
        ("PLAIN", Bytes::from_static(b"admin\0guest\0guest")),
        ("AMQPLAIN", amqplain("guest", "guest")),
    ];
    for (mech, response) in cases {
        let mut p = Peer::new(cfg());
        p.send_raw(&PROTOCOL_HEADER);
        p.frames();
        assert_eq!(
            p.send(0, start_ok(CLIENT_CAPS, mech, response.clone())),
            Status::NeedInput
        );
        assert_eq!(
            p.b.calls,
            vec![Call::Login("guest".into(), Some(b"guest".to_vec()))],
            "{mech}"
        );
        assert_eq!(
            p.frames(),
            vec![m(
                0,
                Method::ConnectionTune(ConnectionTune {
                    channel_max: 2047,
                    frame_max: 131_072,
                    heartbeat: 60
                })
            )],
            "{mech}"
        );
        assert_eq!(p.s.phase(), Phase::Tune);
    }
}

#[test]
fn bad_protocol_header_gets_ours_back() {
    let cases: &[&[u8]] = &[
        b"AMQP\x01\x01\x00\x0a",
        b"AMQP\x00\x00\x09\x02",
        b"GET / HTTP/1.1\r\n\r\n",
        // Not a prefix of the header: answered at once, without waiting
        // for 8 bytes.
        b"GE",
    ];
    for input in cases {
        let mut p = Peer::new(cfg());
        assert_eq!(p.send_raw(input), Status::Close, "{input:?}");
        assert_eq!(&p.s.output()[..], &PROTOCOL_HEADER[..], "{input:?}");
        assert_eq!(p.s.phase(), Phase::Closed);
        assert_eq!(p.b.calls, vec![]);
    }
}

#[test]
fn refused_login_with_and_without_authentication_failure_close() {
    let text = format!("ACCESS_REFUSED - {REFUSED}");
    for notify in [false, true] {
        let mut p = Peer::new(cfg());
        p.b.login = Err(AmqpError::access_refused(REFUSED));
        p.send_raw(&PROTOCOL_HEADER);
        p.frames();
        let caps: &[&str] = if notify {
            &["authentication_failure_close"]
        } else {
            &[]
        };
        let st = p.send(0, start_ok(caps, "PLAIN", plain("guest", "wrong")));
        assert_eq!(
            p.b.calls,
            vec![Call::Login("guest".into(), Some(b"wrong".to_vec()))]
        );
        if notify {
            // RabbitMQ says why, then waits for close-ok.
            assert_eq!(st, Status::NeedInput);
            assert_eq!(p.frames(), vec![m(0, connection_close(403, &text, 0, 0))]);
            assert_eq!(p.s.phase(), Phase::Closing);
            assert_eq!(
                p.send(0, Method::ConnectionCloseOk(ConnectionCloseOk {})),
                Status::Close
            );
        } else {
            // Otherwise it just closes the socket.
            assert_eq!(st, Status::Close);
            assert_eq!(p.frames(), vec![]);
        }
        assert_eq!(p.s.phase(), Phase::Closed);
        assert_eq!(p.s.close_reason.as_deref(), Some(&text[..]));
    }
}

#[test]
fn malformed_responses_are_refused_without_asking_the_broker() {
    let cases: &[(&'static str, Bytes, &str)] = &[
        ("PLAIN", Bytes::from_static(b"guest"), "ACCESS_REFUSED"),
        ("AMQPLAIN", Bytes::from_static(b"\x05LOGIN"), "ACCESS_REFUSED"),
        ("EXTERNAL", Bytes::new(), "COMMAND_INVALID"),
    ];
    for (mech, response, code) in cases {
        let mut p = Peer::new(cfg());
        p.send_raw(&PROTOCOL_HEADER);
        p.frames();
        assert_eq!(p.send(0, start_ok(&[], mech, response.clone())), Status::Close);
        assert_eq!(p.frames(), vec![], "{mech}");
        assert_eq!(p.b.calls, vec![], "{mech}");
        assert!(p.s.close_reason.as_deref().unwrap().starts_with(code), "{mech}");
    }
}

/// RabbitMQ 3.10 closes the socket without a frame when `tune-ok` is out
/// of bounds; the 530 is only logged.
#[test]
fn tune_ok_out_of_bounds_closes_silently() {
    // (server channel_max, client channel_max, client frame_max, refusal)
    let cases: &[(u16, u16, u32, Option<&str>)] = &[
        (2047, 2047, 131_072, None),
        (2047, 10, 4096, None),
        (0, 0, 131_072, None),
        (
            2047,
            0,
            131_072,
            Some("NOT_ALLOWED - channel_max=0 > 2047 max channels"),
        ),
        (
            2047,
            2048,
            131_072,
            Some("NOT_ALLOWED - channel_max=2048 > 2047 max channels"),
        ),
        (
            2047,
            10,
            1024,
            Some("NOT_ALLOWED - frame_max=1024 < 4096 min size"),
        ),
        (
            2047,
            10,
            131_073,
            Some("NOT_ALLOWED - frame_max=131073 > 131072 max size"),
        ),
        (2047, 10, 0, Some("NOT_ALLOWED - frame_max=0 > 131072 max size")),
    ];
    for &(server, channel_max, frame_max, refusal) in cases {
        let mut p = started(
            SessionConfig {
                channel_max: server,
                ..cfg()
            },
            CLIENT_CAPS,
        );
        let st = p.send(0, tune_ok(channel_max, frame_max, 0));
        assert_eq!(p.frames(), vec![], "{channel_max} {frame_max}");
        match refusal {
            None => {
                assert_eq!(st, Status::NeedInput);
                assert_eq!(p.s.phase(), Phase::Open);
                assert_eq!(p.s.frame_max(), frame_max);
            }
            Some(reason) => {
                assert_eq!(st, Status::Close);
                assert_eq!(p.s.phase(), Phase::Closed);
                assert_eq!(p.s.close_reason.as_deref(), Some(reason));
            }
        }
    }
}

#[test]
fn channel_max_zero_on_both_sides_is_unlimited() {
    let mut p = Peer::open_with(
        SessionConfig {
            channel_max: 0,
            ..cfg()
        },
        CLIENT_CAPS,
        0,
        131_072,
        0,
    );
    for n in 1..=3000 {
        p.send(n, Method::ChannelOpen(Default::default()));
    }
    assert_eq!(p.frames().len(), 3000);
    assert_eq!(p.s.channel_count(), 3000);
    assert_eq!(p.s.phase(), Phase::Running);
}

#[test]
fn connection_open_to_a_refused_vhost_is_530() {
    let text = "access to vhost 'nope' refused for user 'guest'";
    let mut p = started(cfg(), CLIENT_CAPS);
    p.send(0, tune_ok(2047, 131_072, 0));
    p.b.vhost = Err(AmqpError::not_allowed(text));
    assert_eq!(p.send(0, open("nope")), Status::NeedInput);
    assert_eq!(p.b.calls, vec![Call::OpenVhost("guest".into(), "nope".into())]);
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
    assert_eq!(c.reply_code, 530);
    assert_eq!(c.reply_text.to_string(), format!("NOT_ALLOWED - {text}"));
    assert_eq!(p.s.phase(), Phase::Closing);
    assert_eq!(p.s.vhost(), None);
}

#[test]
fn connection_open_refusal_names_the_method() {
    let mut p = started(cfg(), CLIENT_CAPS);
    p.send(0, tune_ok(2047, 131_072, 0));
    p.b.vhost = Err(AmqpError::not_allowed("vhost nope not found"));
    p.send(0, open("nope"));
    assert_eq!(
        p.frames(),
        vec![m(
            0,
            connection_close(530, "NOT_ALLOWED - vhost nope not found", 10, 40)
        )]
    );
}

#[test]
fn methods_before_open() {
    // Before tune-ok the peer is not trusted: the socket just closes.
    let cases: Vec<(u16, Method)> = vec![
        (0, tune_ok(2047, 131_072, 0)),
        (0, open("/")),
        (1, Method::ChannelOpen(Default::default())),
    ];
    for (ch, method) in cases {
        let mut p = Peer::new(cfg());
        p.send_raw(&PROTOCOL_HEADER);
        p.frames();
        assert_eq!(p.send(ch, method.clone()), Status::Close, "{method:?}");
        assert_eq!(p.frames(), vec![], "{method:?}");
        assert_eq!(p.s.phase(), Phase::Closed);
        assert_eq!(p.s.channel_count(), 0);
    }
    // After tune-ok, a channel used before connection.open closes the
    // connection with a connection.close.
    let mut p = started(cfg(), CLIENT_CAPS);
    p.send(0, tune_ok(2047, 131_072, 0));
    p.send(1, Method::ChannelOpen(Default::default()));
    let frames = p.frames();
    assert!(
        matches!(
            &frames[..],
            [Frame::Method {
                channel: 0,
                method: Method::ConnectionClose(_)
            }]
        ),
        "{frames:?}"
    );
    assert_eq!(p.s.phase(), Phase::Closing);
    assert_eq!(p.s.channel_count(), 0);
}

/// What RabbitMQ 3.10.8 answers to connection-level protocol errors.
#[test]
fn connection_level_errors_as_rabbitmq() {
    let running = "CHANNEL_ERROR - unexpected method in connection state running";
    let cases: Vec<(BytesMut, Method)> = vec![
        (
            method_bytes(0, Method::BasicQos(Default::default())),
            connection_close(504, running, 60, 10),
        ),
        (
            method_bytes(0, tune_ok(10, 131_072, 0)),
            connection_close(504, running, 10, 31),
        ),
        (
            method_bytes(0, Method::ConnectionCloseOk(ConnectionCloseOk {})),
            connection_close(504, running, 10, 51),
        ),
        (
            BytesMut::from(&[8, 0, 1, 0, 0, 0, 0, 0xCE][..]),
            connection_close(505, "UNEXPECTED_FRAME - type 8, all octets = <<>>", 0, 0),
        ),
        (
            BytesMut::from(&[7, 0, 0, 0, 0, 0, 0, 0xCE][..]),
            connection_close(
                501,
                "FRAME_ERROR - type 7, all octets = <<>>: unknown_frame",
                0,
                0,
            ),
        ),
    ];
    let mut wrong = Mismatches::default();
    for (input, close) in cases {
        let mut p = Peer::open();
        p.send_raw(&input);
        wrong.check(&input[..], p.frames(), vec![m(0, close)]);
    }
    let mut p = started(cfg(), CLIENT_CAPS);
    p.send(0, tune_ok(2047, 131_072, 0));
    p.send(1, Method::ChannelOpen(Default::default()));
    let text = "UNEXPECTED_FRAME - type 1, all octets = <<0,20,0,10,0>>";
    wrong.check(
        "channel.open before connection.open",
        p.frames(),
        vec![m(0, connection_close(505, text, 0, 0))],
    );
    wrong.assert_none();
}

#[test]
fn any_channel_number_may_be_opened() {
    let mut p = Peer::open();
    for n in [1, 255, 256, 2047, 2048, 65535] {
        p.open_channel(n);
    }
    assert_eq!(p.s.channel_count(), 6);
    // A channel number is reusable once closed.
    p.send(65535, Method::ChannelClose(Default::default()));
    assert_eq!(
        p.frames(),
        vec![m(65535, Method::ChannelCloseOk(ChannelCloseOk {}))]
    );
    p.open_channel(65535);
    assert_eq!(p.s.channel_count(), 6);
}

#[test]
fn channel_max_limits_how_many_are_open() {
    let mut p = Peer::open_with(cfg(), CLIENT_CAPS, 3, 131_072, 0);
    p.open_channel(1);
    p.open_channel(2);
    // A closed channel no longer counts.
    p.send(2, Method::ChannelClose(Default::default()));
    assert_eq!(p.frames(), vec![m(2, Method::ChannelCloseOk(ChannelCloseOk {}))]);
    for n in [300, 65000] {
        p.open_channel(n);
    }
    p.send(8, Method::ChannelOpen(Default::default()));
    let text = "NOT_ALLOWED - number of channels opened (3) has reached the negotiated channel_max (3)";
    assert_eq!(p.frames(), vec![m(0, connection_close(530, text, 0, 0))]);
    assert_eq!(p.s.phase(), Phase::Closing);
    assert_eq!(p.s.channel_count(), 0);
}

/// The user's channel limit (the broker's answer to `open_channel`) is
/// checked after `channel_max`, closes the connection with 530 and no
/// method (`rabbit_reader:create_channel`), and a channel holds its place
/// until it is gone: after `close-ok`, or with its connection.
#[test]
fn user_channel_limit_closes_the_connection_and_channels_hold_their_place() {
    let count = crate::broker::limits::Counter::default();
    let mut p = Peer::open_with(cfg(), CLIENT_CAPS, 3, 131_072, 0);
    p.b.channels = Some((count.clone(), 2));
    p.open_channel(1);
    p.open_channel(2);
    assert_eq!(count.count(), 2);
    // Closing: still open until close-ok.
    p.send(2, Method::ChannelClose(Default::default()));
    assert_eq!(p.frames(), vec![m(2, Method::ChannelCloseOk(ChannelCloseOk {}))]);
    assert_eq!(count.count(), 1);
    p.open_channel(3);
    p.send(4, Method::ChannelOpen(Default::default()));
    let text = "NOT_ALLOWED - number of channels opened for user 'guest' has reached the maximum allowed user limit of (2)";
    assert_eq!(p.frames(), vec![m(0, connection_close(530, text, 0, 0))]);
    assert_eq!(p.s.phase(), Phase::Closing);
    assert_eq!(count.count(), 0, "the connection's channels are gone");
    // channel_max first: at both limits, its text.
    let count = crate::broker::limits::Counter::default();
    let mut p = Peer::open_with(cfg(), CLIENT_CAPS, 1, 131_072, 0);
    p.b.channels = Some((count.clone(), 1));
    p.open_channel(1);
    p.send(2, Method::ChannelOpen(Default::default()));
    let text = "NOT_ALLOWED - number of channels opened (1) has reached the negotiated channel_max (1)";
    assert_eq!(p.frames(), vec![m(0, connection_close(530, text, 0, 0))]);
}

/// The client's close gets close-ok and everything is given back at once;
/// the session lingers until the client hangs up, answering each further
/// close and ignoring everything else.
#[test]
fn client_close_gets_close_ok_then_lingers() {
    let mut p = Peer::open();
    p.open_channel(1);
    let c = p.consume(1, "c1", false);
    p.deliver(c, 10);
    p.frames();
    let close = || {
        Method::ConnectionClose(ConnectionClose {
            reply_code: 200,
            reply_text: "bye".into(),
            ..Default::default()
        })
    };
    let mut two = method_bytes(0, close());
    two.extend_from_slice(&method_bytes(0, close()));
    assert_eq!(p.send_raw(&two), Status::NeedInput);
    let close_ok = m(0, Method::ConnectionCloseOk(ConnectionCloseOk {}));
    assert_eq!(p.frames(), vec![close_ok.clone(), close_ok.clone()]);
    assert_eq!(p.s.phase(), Phase::Lingering);
    assert_eq!(
        p.calls(),
        vec![
            Call::DropConsumer(Q, c),
            Call::Settle(Q, 10, Settle::Requeue),
            Call::ConnectionClosed(CONN)
        ]
    );
    p.send(1, Method::BasicQos(Default::default()));
    p.send(2, Method::ChannelOpen(Default::default()));
    p.send_raw(&publish_bytes(1, "", "q", NO_PROPS, b"x", 131_072));
    assert_eq!(p.frames(), vec![]);
    p.send(0, close());
    assert_eq!(p.frames(), vec![close_ok]);
    let linger = p.s.poll_timeout().unwrap();
    p.s.handle_timeout(linger, &mut p.b);
    assert_eq!(p.s.phase(), Phase::Closed);
    assert_eq!(p.s.close_reason.as_deref(), Some("client closed"));
    assert_eq!(p.calls(), vec![], "connection_closed is reported once");
}

#[test]
fn server_close_waits_for_close_ok() {
    let mut p = Peer::open();
    p.open_channel(1);
    p.send(1, Method::ChannelOpen(Default::default()));
    let text = "CHANNEL_ERROR - second 'channel.open' seen";
    assert_eq!(p.frames(), vec![m(0, connection_close(504, text, 20, 10))]);
    assert_eq!(p.s.phase(), Phase::Closing);
    // Everything but the close handshake is ignored.
    p.send(2, Method::ChannelOpen(Default::default()));
    p.send(0, Method::ConnectionTuneOk(Default::default()));
    assert_eq!(p.frames(), vec![]);
    assert_eq!(p.calls(), vec![]);
    assert_eq!(
        p.send(0, Method::ConnectionCloseOk(ConnectionCloseOk {})),
        Status::Close
    );
    assert_eq!(p.s.phase(), Phase::Closed);
    assert_eq!(p.calls(), vec![Call::ConnectionClosed(CONN)]);
    assert_eq!(p.s.close_reason.as_deref(), Some(text));
}

/// Both sides send `connection.close` at once: each gets its close-ok.
#[test]
fn both_sides_closing_at_once() {
    let mut p = Peer::open();
    p.event(Event::ForceClose {
        code: 320,
        text: "broker forced connection closure with reason 'shutdown'".into(),
    });
    let text = "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'";
    assert_eq!(p.frames(), vec![m(0, connection_close(320, text, 0, 0))]);
    p.send(0, connection_close(200, "bye", 0, 0));
    assert_eq!(
        p.frames(),
        vec![m(0, Method::ConnectionCloseOk(ConnectionCloseOk {}))]
    );
    assert_eq!(p.s.phase(), Phase::Closing);
    assert_eq!(
        p.send(0, Method::ConnectionCloseOk(ConnectionCloseOk {})),
        Status::Close
    );
    assert_eq!(p.s.phase(), Phase::Closed);
    assert_eq!(p.calls(), vec![Call::ConnectionClosed(CONN)]);
}

#[test]
fn connection_blocked_only_for_clients_that_support_it() {
    let mut p = Peer::open();
    p.s.write_blocked(true);
    p.s.write_blocked(false);
    assert_eq!(
        p.frames(),
        vec![
            m(
                0,
                Method::ConnectionBlocked(ConnectionBlocked {
                    reason: "low on memory".into()
                })
            ),
            m(0, Method::ConnectionUnblocked(ConnectionUnblocked {}))
        ]
    );
    let mut p = Peer::open_with(cfg(), &["basic.nack"], 2047, 131_072, 0);
    p.s.write_blocked(true);
    assert_eq!(p.frames(), vec![]);
}

/// A connection refused at `connection.open`, or at login with
/// `authentication_failure_close`, closes through the close handshake but
/// was never opened: the broker has nothing to forget.
#[test]
fn a_connection_never_opened_is_not_reported_closed() {
    let mut p = started(cfg(), CLIENT_CAPS);
    p.send(0, tune_ok(2047, 131_072, 0));
    p.b.vhost = Err(AmqpError::not_allowed("vhost nope not found"));
    p.send(0, open("nope"));
    assert_eq!(p.s.phase(), Phase::Closing);
    p.b.calls.clear();
    assert_eq!(
        p.send(0, Method::ConnectionCloseOk(ConnectionCloseOk {})),
        Status::Close
    );
    assert_eq!(p.b.calls, vec![]);

    let mut p = Peer::new(cfg());
    p.b.login = Err(AmqpError::access_refused("PLAIN login refused"));
    p.send_raw(&PROTOCOL_HEADER);
    p.send(
        0,
        start_ok(&["authentication_failure_close"], "PLAIN", plain("guest", "x")),
    );
    assert_eq!(p.s.phase(), Phase::Closing);
    p.b.calls.clear();
    let closed = p.send(0, Method::ConnectionCloseOk(ConnectionCloseOk {}));
    assert_eq!(closed, Status::Close);
    assert_eq!(p.b.calls, vec![]);
}

/// More of what RabbitMQ 3.10.8 answers on channel 0 and to frames it
/// cannot classify.
#[test]
fn frame_and_channel_zero_errors_as_rabbitmq() {
    let running = "CHANNEL_ERROR - unexpected method in connection state running";
    let raw = |b: &[u8]| BytesMut::from(b);
    let cases: Vec<(BytesMut, Method)> = vec![
        (
            method_bytes(
                0,
                Method::ConnectionBlocked(ConnectionBlocked { reason: "x".into() }),
            ),
            connection_close(504, running, 10, 60),
        ),
        (
            method_bytes(0, Method::ChannelOpen(Default::default())),
            connection_close(504, running, 20, 10),
        ),
        (
            // A heartbeat with a payload, on channel 0 or another.
            raw(&[8, 0, 0, 0, 0, 0, 2, b'a', b'b', 0xCE]),
            connection_close(
                501,
                "FRAME_ERROR - type 8, all octets = <<\"ab\">>: unknown_frame",
                0,
                0,
            ),
        ),
        (
            raw(&[8, 0, 1, 0, 0, 0, 1, 1, 0xCE]),
            connection_close(
                501,
                "FRAME_ERROR - type 8, all octets = <<1>>: unknown_frame",
                0,
                0,
            ),
        ),
        (
            // Too short to name a method.
            raw(&[1, 0, 0, 0, 0, 0, 3, 0, 10, 0, 0xCE]),
            connection_close(
                501,
                "FRAME_ERROR - type 1, all octets = <<0,10,0>>: unknown_frame",
                0,
                0,
            ),
        ),
        (
            raw(&[1, 0, 1, 0, 0, 0, 2, 0, 20, 0xCE]),
            connection_close(
                501,
                "FRAME_ERROR - type 1, all octets = <<0,20>>: unknown_frame",
                0,
                0,
            ),
        ),
        (
            // An unknown type on a channel; more than 16 octets.
            {
                let mut b = raw(&[7, 0, 1, 0, 0, 0, 17]);
                b.extend_from_slice(&(100..117).collect::<Vec<u8>>());
                b.extend_from_slice(&[0xCE]);
                b
            },
            connection_close(
                501,
                "FRAME_ERROR - type 7, first 16 octets = <<\"defghijklmnopqrs\">>: unknown_frame",
                0,
                0,
            ),
        ),
        (
            // Content on channel 0.
            raw(&[3, 0, 0, 0, 0, 0, 2, b'a', b'b', 0xCE]),
            connection_close(505, "UNEXPECTED_FRAME - type 3, all octets = <<\"ab\">>", 0, 0),
        ),
    ];
    let mut wrong = Mismatches::default();
    for (input, close) in cases {
        let mut p = Peer::open();
        p.send_raw(&input);
        wrong.check(&input[..], p.frames(), vec![m(0, close)]);
    }
    // Before connection.open, only open is expected; close included.
    let opening = "CHANNEL_ERROR - unexpected method in connection state opening";
    for (method, ids) in [
        (connection_close(200, "bye", 0, 0), (10, 50)),
        (tune_ok(2047, 131_072, 0), (10, 31)),
        (Method::BasicQos(Default::default()), (60, 10)),
    ] {
        let mut p = started(cfg(), CLIENT_CAPS);
        p.send(0, tune_ok(2047, 131_072, 0));
        p.send(0, method.clone());
        let close = connection_close(504, opening, ids.0, ids.1);
        wrong.check(method, p.frames(), vec![m(0, close)]);
    }
    wrong.assert_none();
}

/// On TLS, EXTERNAL is offered and logs in as the user the certificate
/// names, with no password; without a usable certificate the client gets
/// RabbitMQ's generic refusal and the log gets the reason. Elsewhere it is
/// not offered, and asking for it is a hard error as in RabbitMQ.
#[test]
fn external_logs_in_as_the_certificate_names() {
    let mut p = Peer::new(cfg());
    p.s.set_tls_login(Ok("CN=alice,O=example".into()));
    p.send_raw(&PROTOCOL_HEADER);
    match &p.frames()[..] {
        [f] => assert!(format!("{f:?}").contains("PLAIN AMQPLAIN EXTERNAL"), "{f:?}"),
        other => panic!("{other:?}"),
    }
    p.send(0, start_ok(&[], "EXTERNAL", Bytes::new()));
    assert_eq!(p.b.calls, vec![Call::Login("CN=alice,O=example".into(), None)]);
    assert_eq!(p.s.user(), "CN=alice,O=example");
    assert_eq!(p.s.auth_mechanism(), "EXTERNAL");

    let mut p = Peer::new(cfg());
    p.s.set_tls_login(Err("connection peer presented no TLS (x.509) certificate"));
    p.send_raw(&PROTOCOL_HEADER);
    p.frames();
    p.send(
        0,
        start_ok(&["authentication_failure_close"], "EXTERNAL", Bytes::new()),
    );
    assert_eq!(p.b.calls, vec![]);
    let text = "ACCESS_REFUSED - Login was refused using authentication mechanism EXTERNAL. \
                For details see the broker logfile.";
    assert_eq!(p.frames(), vec![m(0, connection_close(403, text, 0, 0))]);
    assert_eq!(
        p.s.close_reason.as_deref(),
        Some("EXTERNAL login refused: connection peer presented no TLS (x.509) certificate")
    );

    let mut p = Peer::new(cfg());
    p.send_raw(&PROTOCOL_HEADER);
    match &p.frames()[..] {
        [f] => assert!(!format!("{f:?}").contains("EXTERNAL"), "{f:?}"),
        other => panic!("{other:?}"),
    }
    p.send(0, start_ok(&[], "EXTERNAL", Bytes::new()));
    assert_eq!(p.b.calls, vec![]);
    assert!(
        p.s.close_reason
            .as_deref()
            .is_some_and(|r| r.contains("unknown authentication mechanism")),
        "{:?}",
        p.s.close_reason
    );
}
