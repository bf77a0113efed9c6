//! A raw AMQP peer over a plain socket, for tests that need exact control
//! of what goes on the wire. Set WARREN_WIRE_ADDR=host:port to run the
//! tests that use it against another broker (they were checked against
//! RabbitMQ that way).

use crate::common;
use bytes::BytesMut;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;
use warren::protocol::methods::*;
use warren::protocol::*;

pub struct Target {
    pub addr: SocketAddr,
    pub _broker: Option<common::Broker>,
}

pub fn target() -> Target {
    match std::env::var("WARREN_WIRE_ADDR") {
        Ok(a) => Target {
            addr: a.parse().unwrap(),
            _broker: None,
        },
        Err(_) => {
            let b = common::start(1);
            Target {
                addr: b.handle.amqp_addr(),
                _broker: Some(b),
            }
        }
    }
}

pub struct Raw {
    pub s: TcpStream,
    pub buf: BytesMut,
}

impl Raw {
    pub fn connect(t: &Target) -> Raw {
        let s = TcpStream::connect(t.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Raw {
            s,
            buf: BytesMut::new(),
        }
    }

    pub fn send(&mut self, b: &[u8]) {
        self.s.write_all(b).unwrap();
    }

    pub fn send_method(&mut self, ch: u16, m: Method) {
        let mut out = BytesMut::new();
        write_method_frame(&mut out, ch, &m);
        self.send(&out);
    }

    /// The next frame, or None on EOF.
    pub fn frame(&mut self) -> Option<Frame> {
        loop {
            if let Some(raw) = decode_frame(&mut self.buf, 0).unwrap() {
                return Some(Frame::decode(raw).unwrap());
            }
            let mut tmp = [0u8; 65536];
            match self.s.read(&mut tmp) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
            }
        }
    }

    pub fn method(&mut self) -> Option<Method> {
        loop {
            match self.frame()? {
                Frame::Method { method, .. } => return Some(method),
                _ => continue,
            }
        }
    }

    /// Handshake up to an open connection.
    pub fn open(t: &Target, heartbeat: u16) -> Raw {
        Raw::open_tuned(t, heartbeat, None)
    }

    /// Handshake with our own `channel_max` in `tune-ok` (or the server's).
    pub fn open_tuned(t: &Target, heartbeat: u16, channel_max: Option<u16>) -> Raw {
        let mut r = Raw::connect(t);
        r.send(&PROTOCOL_HEADER);
        assert!(matches!(r.method(), Some(Method::ConnectionStart(_))));
        r.send_method(
            0,
            Method::ConnectionStartOk(ConnectionStartOk {
                client_properties: client_properties(),
                mechanism: "PLAIN".into(),
                response: LongStr::from_static("\0guest\0guest"),
                locale: "en_US".into(),
            }),
        );
        let Some(Method::ConnectionTune(t)) = r.method() else {
            panic!("no tune")
        };
        r.send_method(
            0,
            Method::ConnectionTuneOk(ConnectionTuneOk {
                channel_max: channel_max.unwrap_or(t.channel_max),
                frame_max: t.frame_max,
                heartbeat,
            }),
        );
        r.send_method(
            0,
            Method::ConnectionOpen(ConnectionOpen {
                virtual_host: "/".into(),
                ..Default::default()
            }),
        );
        assert!(matches!(r.method(), Some(Method::ConnectionOpenOk(_))));
        r
    }

    pub fn expect_close(&mut self) -> u16 {
        loop {
            match self.method() {
                Some(Method::ConnectionClose(c)) => return c.reply_code,
                Some(_) => continue,
                None => panic!("socket closed without connection.close"),
            }
        }
    }

    /// The next `connection.close`: (code, text).
    pub fn expect_connection_close(&mut self) -> (u16, String) {
        loop {
            match self.method() {
                Some(Method::ConnectionClose(c)) => return (c.reply_code, c.reply_text.to_string()),
                Some(_) => continue,
                None => panic!("socket closed without connection.close"),
            }
        }
    }

    /// The next `channel.close` on `ch`: (code, text); answers it.
    pub fn expect_channel_close(&mut self, ch: u16) -> (u16, String) {
        loop {
            match self.frame() {
                Some(Frame::Method {
                    channel,
                    method: Method::ChannelClose(c),
                }) if channel == ch => {
                    self.send_method(ch, Method::ChannelCloseOk(Default::default()));
                    return (c.reply_code, c.reply_text.to_string());
                }
                Some(Frame::Method {
                    method: Method::ConnectionClose(c),
                    ..
                }) => panic!("connection closed: {} {}", c.reply_code, c.reply_text),
                Some(_) => continue,
                None => panic!("socket closed without channel.close"),
            }
        }
    }

    /// Opens channel `ch` and waits for `open-ok`.
    pub fn open_channel(&mut self, ch: u16) {
        self.send_method(ch, Method::ChannelOpen(Default::default()));
        match self.frame() {
            Some(Frame::Method {
                channel,
                method: Method::ChannelOpenOk(_),
            }) if channel == ch => {}
            other => panic!("expected channel.open-ok on {ch}, got {other:?}"),
        }
    }

    /// The next method frame with its channel, or None when nothing comes
    /// within `wait` (or the socket closes).
    pub fn method_within(&mut self, wait: Duration) -> Option<(u16, Method)> {
        self.s.set_read_timeout(Some(wait)).unwrap();
        let r = loop {
            match self.frame() {
                Some(Frame::Method { channel, method }) => break Some((channel, method)),
                Some(_) => continue,
                None => break None,
            }
        };
        self.s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        r
    }

    /// Whether the peer closes the socket within `wait` (after whatever
    /// it still sends).
    pub fn closes_within(&mut self, wait: Duration) -> bool {
        self.s.set_read_timeout(Some(wait)).unwrap();
        let mut tmp = [0u8; 4096];
        let closed = loop {
            match self.s.read(&mut tmp) {
                Ok(0) => break true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
                Err(_) => break false,
            }
        };
        self.s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        closed
    }
}

/// The frames of one method, in a buffer to send with others in one write.
pub fn method_frame(out: &mut BytesMut, ch: u16, m: Method) {
    write_method_frame(out, ch, &m);
}

/// The frames of a publish (empty properties) into `out`.
pub fn publish_frames(out: &mut BytesMut, ch: u16, exchange: &str, key: &str, body: &[u8], frame_max: u32) {
    write_method_frame(
        out,
        ch,
        &Method::BasicPublish(BasicPublish {
            exchange: ShortStr::from_string_lossy(exchange),
            routing_key: ShortStr::from_string_lossy(key),
            ..Default::default()
        }),
    );
    write_content(out, ch, 60, &[0, 0], body, frame_max);
}

/// What real clients announce: the capabilities that change what a broker
/// sends (server-sent `basic.cancel`, `connection.blocked`).
pub fn client_properties() -> FieldTable {
    let caps: FieldTable = [
        "consumer_cancel_notify",
        "connection.blocked",
        "publisher_confirms",
        "basic.nack",
    ]
    .into_iter()
    .map(|k| (ShortStr::from_static(k), FieldValue::Bool(true)))
    .collect();
    [(ShortStr::from_static("capabilities"), FieldValue::Table(caps))]
        .into_iter()
        .collect()
}
