//! Raw protocol over a socket: what a broken or hostile peer gets back.
//! Set WARREN_WIRE_ADDR=host:port to run these against another broker
//! (they were checked against RabbitMQ that way).

use crate::raw::{Raw, Target, target};
use bytes::{BufMut, BytesMut};
use std::io::{Read, Write};
use std::time::{Duration, Instant};
use warren::protocol::methods::*;
use warren::protocol::*;

#[test]
fn wrong_protocol_header_gets_ours_back() {
    let t = target();
    let mut r = Raw::connect(&t);
    r.send(b"AMQP\x01\x01\x00\x0a");
    let mut got = [0u8; 8];
    r.s.read_exact(&mut got).unwrap();
    assert_eq!(got, PROTOCOL_HEADER);
    assert_eq!(r.s.read(&mut got).unwrap_or(0), 0, "then the socket closes");
    let mut r = Raw::connect(&t);
    r.send(b"GET / HTTP/1.1\r\n\r\n");
    r.s.read_exact(&mut got).unwrap();
    assert_eq!(got, PROTOCOL_HEADER);
}

#[test]
fn bad_frame_end_is_a_frame_error() {
    let t = target();
    let mut r = Raw::open(&t, 0);
    r.send(&[1, 0, 1, 0, 0, 0, 4, 0, 20, 0, 10, 0xAB]);
    assert_eq!(r.expect_close(), 501);
}

#[test]
fn unknown_frame_type_is_a_frame_error() {
    let t = target();
    let mut r = Raw::open(&t, 0);
    r.send(&[7, 0, 1, 0, 0, 0, 0, 0xCE]);
    assert_eq!(r.expect_close(), 501);
}

#[test]
fn frame_over_frame_max_is_a_frame_error() {
    let t = target();
    let mut r = Raw::open(&t, 0);
    r.send_method(1, Method::ChannelOpen(Default::default()));
    assert!(matches!(r.method(), Some(Method::ChannelOpenOk(_))));
    let mut out = BytesMut::new();
    out.put_slice(&[3, 0, 1]);
    out.put_u32(1_000_000);
    out.put_slice(&vec![0u8; 1_000_000]);
    out.put_u8(0xCE);
    let _ = r.s.write_all(&out);
    assert_eq!(r.expect_close(), 501);
}

#[test]
fn content_without_publish_is_unexpected() {
    let t = target();
    let mut r = Raw::open(&t, 0);
    r.send_method(1, Method::ChannelOpen(Default::default()));
    r.method();
    let mut out = BytesMut::new();
    write_header_frame(&mut out, 1, 60, 3, &[0, 0]);
    r.send(&out);
    assert_eq!(r.expect_close(), 505);
}

#[test]
fn method_in_the_middle_of_content_is_unexpected() {
    let t = target();
    let mut r = Raw::open(&t, 0);
    r.send_method(1, Method::ChannelOpen(Default::default()));
    r.method();
    r.send_method(
        1,
        Method::BasicPublish(BasicPublish {
            routing_key: "q".into(),
            ..Default::default()
        }),
    );
    r.send_method(1, Method::BasicQos(Default::default()));
    assert_eq!(r.expect_close(), 505);
}

#[test]
fn second_channel_open_is_a_channel_error() {
    let t = target();
    let mut r = Raw::open(&t, 0);
    r.send_method(1, Method::ChannelOpen(Default::default()));
    r.method();
    r.send_method(1, Method::ChannelOpen(Default::default()));
    assert_eq!(r.expect_close(), 504);
}

#[test]
fn method_on_unopened_channel_is_a_channel_error() {
    let t = target();
    let mut r = Raw::open(&t, 0);
    r.send_method(5, Method::BasicQos(Default::default()));
    assert_eq!(r.expect_close(), 504);
}

#[test]
fn truncated_method_is_a_frame_error() {
    let t = target();
    let mut r = Raw::open(&t, 0);
    r.send_method(1, Method::ChannelOpen(Default::default()));
    r.method();
    // queue.declare with its arguments cut off.
    r.send(&[1, 0, 1, 0, 0, 0, 6, 0, 50, 0, 10, 0, 0, 0xCE]);
    assert_eq!(r.expect_close(), 501);
}

#[test]
fn amqplain_login_works() {
    let t = target();
    let mut r = Raw::connect(&t);
    r.send(&PROTOCOL_HEADER);
    let Some(Method::ConnectionStart(s)) = r.method() else {
        panic!()
    };
    assert!(String::from_utf8_lossy(s.mechanisms.as_bytes()).contains("AMQPLAIN"));
    let mut resp = BytesMut::new();
    for (k, v) in [("LOGIN", "guest"), ("PASSWORD", "guest")] {
        put_shortstr(&mut resp, k.as_bytes());
        resp.put_u8(b'S');
        put_longstr(&mut resp, v.as_bytes());
    }
    r.send_method(
        0,
        Method::ConnectionStartOk(ConnectionStartOk {
            client_properties: FieldTable::new(),
            mechanism: "AMQPLAIN".into(),
            response: LongStr::new(resp.freeze()),
            locale: "en_US".into(),
        }),
    );
    assert!(matches!(r.method(), Some(Method::ConnectionTune(_))));
}

/// RabbitMQ closes the socket without a `connection.close` for errors
/// before `connection.open` (it does not trust the peer yet).
#[test]
fn frame_max_below_minimum_is_refused() {
    let t = target();
    let mut r = Raw::connect(&t);
    r.send(&PROTOCOL_HEADER);
    r.method();
    r.send_method(
        0,
        Method::ConnectionStartOk(ConnectionStartOk {
            client_properties: FieldTable::new(),
            mechanism: "PLAIN".into(),
            response: LongStr::from_static("\0guest\0guest"),
            locale: "en_US".into(),
        }),
    );
    r.method();
    r.send_method(
        0,
        Method::ConnectionTuneOk(ConnectionTuneOk {
            channel_max: 10,
            frame_max: 1024,
            heartbeat: 0,
        }),
    );
    assert!(r.frame().is_none(), "the socket is closed");
}

#[test]
fn silent_peer_is_dropped_after_two_heartbeats() {
    let t = target();
    let mut r = Raw::open(&t, 1);
    let start = Instant::now();
    let mut heartbeats = 0;
    // We send nothing; the broker heartbeats us, then gives up.
    while let Some(f) = r.frame() {
        if matches!(f, Frame::Heartbeat { .. }) {
            heartbeats += 1;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "still connected after 10 s"
        );
    }
    assert!(heartbeats >= 1, "the broker sent heartbeats");
}

/// Under the memory alarm a publishing connection gets `connection.blocked`
/// and is no longer read (its confirms stop), as in RabbitMQ.
#[test]
fn memory_alarm_blocks_publishers() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = warren::Config {
        bind: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        port: 0,
        shards: 1,
        data_dir: dir.path().to_path_buf(),
        ..Default::default()
    };
    cfg.limits.memory_high_watermark = 1;
    let h = warren::start(cfg).unwrap();
    let t = Target {
        addr: h.amqp_addr(),
        _broker: None,
    };
    let mut r = Raw::connect(&t);
    r.send(&PROTOCOL_HEADER);
    r.method();
    let mut caps = FieldTable::new();
    caps.insert("connection.blocked".into(), FieldValue::Bool(true));
    let mut props = FieldTable::new();
    props.insert("capabilities".into(), FieldValue::Table(caps));
    r.send_method(
        0,
        Method::ConnectionStartOk(ConnectionStartOk {
            client_properties: props,
            mechanism: "PLAIN".into(),
            response: LongStr::from_static("\0guest\0guest"),
            locale: "en_US".into(),
        }),
    );
    let Some(Method::ConnectionTune(tune)) = r.method() else {
        panic!()
    };
    r.send_method(
        0,
        Method::ConnectionTuneOk(ConnectionTuneOk {
            heartbeat: 0,
            ..tune.into_ok()
        }),
    );
    r.send_method(
        0,
        Method::ConnectionOpen(ConnectionOpen {
            virtual_host: "/".into(),
            ..Default::default()
        }),
    );
    r.method();
    r.send_method(1, Method::ChannelOpen(Default::default()));
    r.method();
    r.send_method(1, Method::ConfirmSelect(Default::default()));
    r.method();
    let publish = |r: &mut Raw| {
        r.send_method(
            1,
            Method::BasicPublish(BasicPublish {
                routing_key: "nowhere".into(),
                ..Default::default()
            }),
        );
        let mut out = BytesMut::new();
        write_content(&mut out, 1, 60, &[0, 0], b"x", 131072);
        r.send(&out);
    };
    publish(&mut r);
    let mut saw_blocked = false;
    while let Some(m) = r.method() {
        if let Method::ConnectionBlocked(b) = m {
            assert_eq!(b.reason.as_bytes(), b"low on memory");
            saw_blocked = true;
            break;
        }
    }
    assert!(saw_blocked);
    // Now blocked: a further publish is not read, so no confirm comes.
    publish(&mut r);
    r.s.set_read_timeout(Some(Duration::from_millis(1500))).unwrap();
    let mut tmp = [0u8; 64];
    assert!(r.s.read(&mut tmp).is_err(), "nothing is processed while blocked");
}

trait IntoOk {
    fn into_ok(self) -> ConnectionTuneOk;
}

impl IntoOk for ConnectionTune {
    fn into_ok(self) -> ConnectionTuneOk {
        ConnectionTuneOk {
            channel_max: self.channel_max,
            frame_max: self.frame_max,
            heartbeat: self.heartbeat,
        }
    }
}
