//! What real clients trip over, on the wire: pipelined methods, the close
//! handshake, channel numbers and limits, frame sizes, the order of
//! replies and server-sent cancels, length limits seen by the next
//! operation. Each expectation was checked against RabbitMQ 3.10
//! (WARREN_WIRE_ADDR=127.0.0.1:5672 cargo test --release compat::).

use crate::raw::{Raw, method_frame, publish_frames, target};
use bytes::BytesMut;
use std::time::Duration;
use warren::protocol::methods::*;
use warren::protocol::*;

const FRAME_MAX: u32 = 131_072;

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", warren::shard::random_u64() % 1_000_000_000)
}

fn declare(out: &mut BytesMut, ch: u16, name: &str, args: FieldTable, nowait: bool) {
    method_frame(
        out,
        ch,
        Method::QueueDeclare(QueueDeclare {
            queue: ss(name),
            auto_delete: false,
            arguments: args,
            nowait,
            ..Default::default()
        }),
    );
}

fn delete(r: &mut Raw, ch: u16, name: &str) {
    r.send_method(
        ch,
        Method::QueueDelete(QueueDelete {
            queue: ss(name),
            ..Default::default()
        }),
    );
    loop {
        if let Some((c, Method::QueueDeleteOk(_))) = r.method_within(Duration::from_secs(10))
            && c == ch
        {
            return;
        }
    }
}

fn send_one(r: &mut Raw, f: impl FnOnce(&mut BytesMut)) {
    let mut out = BytesMut::new();
    f(&mut out);
    r.send(&out);
}

/// The next method on `ch` (skipping others' traffic), with a deadline so a
/// stall fails the test instead of hanging it.
fn next_on(r: &mut Raw, ch: u16) -> Method {
    loop {
        match r.method_within(Duration::from_secs(10)) {
            Some((c, m)) if c == ch => return m,
            Some(_) => continue,
            None => panic!("nothing more on channel {ch}: stalled"),
        }
    }
}

fn get_body(r: &mut Raw, ch: u16, queue: &str) -> Option<Vec<u8>> {
    r.send_method(
        ch,
        Method::BasicGet(BasicGet {
            queue: ss(queue),
            no_ack: true,
            ..Default::default()
        }),
    );
    match next_on(r, ch) {
        Method::BasicGetEmpty(_) => None,
        Method::BasicGetOk(_) => Some(read_content(r)),
        other => panic!("expected get-ok or get-empty, got {other:?}"),
    }
}

/// The body of the content that follows a `get-ok` or `deliver`.
fn read_content(r: &mut Raw) -> Vec<u8> {
    let size = loop {
        match r.frame() {
            Some(Frame::Header { header, .. }) => break header.body_size as usize,
            Some(_) => continue,
            None => panic!("socket closed"),
        }
    };
    let mut body = Vec::with_capacity(size);
    while body.len() < size {
        match r.frame() {
            Some(Frame::Body { body: b, .. }) => body.extend_from_slice(&b),
            other => panic!("expected a body frame, got {other:?}"),
        }
    }
    body
}

fn ss(s: &str) -> ShortStr {
    ShortStr::from_string_lossy(s)
}

fn table(k: &'static str, v: FieldValue) -> FieldTable {
    [(ShortStr::from_static(k), v)].into_iter().collect()
}

/// Two synchronous methods in one write both get their replies, with
/// heartbeats off (nothing else would ever wake the connection).
#[test]
fn pipelined_declares_get_every_reply() {
    let t = target();
    let mut r = Raw::open(&t, 0);
    r.open_channel(1);
    let (a, b) = (unique("compat.pipe.a"), unique("compat.pipe.b"));
    send_one(&mut r, |o| {
        declare(o, 1, &a, FieldTable::new(), false);
        declare(o, 1, &b, FieldTable::new(), false);
    });
    for name in [&a, &b] {
        match next_on(&mut r, 1) {
            Method::QueueDeclareOk(ok) => assert_eq!(ok.queue.to_string(), *name),
            other => panic!("expected declare-ok, got {other:?}"),
        }
    }
    delete(&mut r, 1, &a);
    delete(&mut r, 1, &b);
}

/// A declare on one channel and a confirmed publish on another, in one
/// write: the confirm comes.
#[test]
fn confirm_behind_a_declare_on_another_channel_comes() {
    let t = target();
    let mut r = Raw::open(&t, 0);
    r.open_channel(1);
    r.open_channel(2);
    r.send_method(1, Method::ConfirmSelect(Default::default()));
    assert!(matches!(next_on(&mut r, 1), Method::ConfirmSelectOk(_)));
    let q = unique("compat.pipe.c");
    send_one(&mut r, |o| {
        declare(o, 2, &q, FieldTable::new(), false);
        publish_frames(o, 1, "", "nowhere", b"x", FRAME_MAX);
    });
    let mut got = (false, false);
    while got != (true, true) {
        match r.method_within(Duration::from_secs(10)) {
            Some((2, Method::QueueDeclareOk(_))) => got.0 = true,
            Some((1, Method::BasicAck(a))) => {
                assert_eq!(a.delivery_tag, 1);
                got.1 = true
            }
            Some(_) => {}
            None => panic!("stalled: declare-ok and ack seen = {got:?}"),
        }
    }
    delete(&mut r, 2, &q);
}

/// aiormq's shape: `nowait` declare and bind, then `basic.qos`, in one write.
#[test]
fn nowait_methods_then_qos() {
    let t = target();
    let mut r = Raw::open(&t, 0);
    r.open_channel(1);
    let q = unique("compat.nowait");
    send_one(&mut r, |o| {
        declare(o, 1, &q, FieldTable::new(), true);
        method_frame(
            o,
            1,
            Method::QueueBind(QueueBind {
                queue: ss(&q),
                exchange: "amq.direct".into(),
                routing_key: ss(&q),
                nowait: true,
                ..Default::default()
            }),
        );
        method_frame(
            o,
            1,
            Method::BasicQos(BasicQos {
                prefetch_count: 10,
                ..Default::default()
            }),
        );
    });
    assert!(matches!(next_on(&mut r, 1), Method::BasicQosOk(_)));
    delete(&mut r, 1, &q);
}

/// The client's `connection.close` gets `close-ok`, and the socket stays
/// until the client has read it: a second close racing the first (the Go
/// client closing from several goroutines) gets its own `close-ok`.
#[test]
fn every_client_close_gets_close_ok() {
    let t = target();
    let mut r = Raw::open(&t, 0);
    r.open_channel(1);
    let close = || {
        Method::ConnectionClose(ConnectionClose {
            reply_code: 200,
            reply_text: "bye".into(),
            ..Default::default()
        })
    };
    send_one(&mut r, |o| {
        method_frame(o, 0, close());
        method_frame(o, 0, close());
    });
    for i in 0..2 {
        match r.method_within(Duration::from_secs(10)) {
            Some((0, Method::ConnectionCloseOk(_))) => {}
            other => panic!("close #{i}: expected close-ok, got {other:?}"),
        }
    }
    // Anything else is ignored now; the server closes once we do.
    r.send_method(1, Method::BasicQos(Default::default()));
    r.s.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(r.closes_within(Duration::from_secs(10)));
}

/// Channel numbers are not limited by `channel_max` (aiormq opens 65535);
/// a bad `queue.bind` on it is a normal channel error.
#[test]
fn any_channel_number_may_be_used() {
    let t = target();
    let mut r = Raw::open(&t, 0);
    r.open_channel(65535);
    r.send_method(
        65535,
        Method::QueueBind(QueueBind {
            queue: "compat-no-such-queue".into(),
            exchange: "amq.direct".into(),
            ..Default::default()
        }),
    );
    let (code, text) = r.expect_channel_close(65535);
    assert_eq!(code, 404, "{text}");
    r.open_channel(2048);
}

/// What `channel_max` limits is how many channels are open: one more is
/// 530 NOT_ALLOWED for the whole connection.
#[test]
fn channel_max_limits_open_channels() {
    let t = target();
    let mut r = Raw::open_tuned(&t, 0, Some(3));
    for n in [7, 300, 65000] {
        r.open_channel(n);
    }
    r.send_method(8, Method::ChannelOpen(Default::default()));
    let (code, text) = r.expect_connection_close();
    assert_eq!(code, 530);
    assert_eq!(
        text,
        "NOT_ALLOWED - number of channels opened (3) has reached the negotiated channel_max (3)"
    );
}

/// A closed channel no longer counts, and its number can be opened again.
#[test]
fn closed_channels_free_their_count() {
    let t = target();
    let mut r = Raw::open_tuned(&t, 0, Some(2));
    r.open_channel(1);
    r.open_channel(2);
    r.send_method(2, Method::ChannelClose(Default::default()));
    assert!(matches!(next_on(&mut r, 2), Method::ChannelCloseOk(_)));
    r.open_channel(2);
    r.send_method(5, Method::ChannelOpen(Default::default()));
    assert_eq!(r.expect_connection_close().0, 530);
}

/// `exchange.declare` of the default exchange is refused even when passive.
#[test]
fn passive_declare_of_the_default_exchange_is_refused() {
    let t = target();
    let mut r = Raw::open(&t, 0);
    r.open_channel(1);
    r.send_method(
        1,
        Method::ExchangeDeclare(ExchangeDeclare {
            exchange: "".into(),
            kind: "direct".into(),
            passive: true,
            ..Default::default()
        }),
    );
    let (code, text) = r.expect_channel_close(1);
    assert_eq!(code, 403);
    assert_eq!(
        text,
        "ACCESS_REFUSED - operation not permitted on the default exchange"
    );
}

/// Deleting a queue from the channel that consumes it: `delete-ok` first,
/// then the server's `basic.cancel` (kombu fails otherwise).
#[test]
fn delete_ok_comes_before_the_consumers_cancel() {
    let t = target();
    let mut r = Raw::open(&t, 0);
    r.open_channel(1);
    let q = unique("compat.del");
    send_one(&mut r, |o| declare(o, 1, &q, FieldTable::new(), false));
    assert!(matches!(next_on(&mut r, 1), Method::QueueDeclareOk(_)));
    r.send_method(
        1,
        Method::BasicConsume(BasicConsume {
            queue: ss(&q),
            consumer_tag: "c1".into(),
            ..Default::default()
        }),
    );
    assert!(matches!(next_on(&mut r, 1), Method::BasicConsumeOk(_)));
    r.send_method(
        1,
        Method::QueueDelete(QueueDelete {
            queue: ss(&q),
            ..Default::default()
        }),
    );
    assert!(matches!(next_on(&mut r, 1), Method::QueueDeleteOk(_)));
    match next_on(&mut r, 1) {
        Method::BasicCancel(c) => assert_eq!(c.consumer_tag.to_string(), "c1"),
        other => panic!("expected basic.cancel, got {other:?}"),
    }
}

fn limited_queue_then_get(arg: &'static str, persistent: bool) {
    let t = target();
    let mut r = Raw::open(&t, 0);
    r.open_channel(1);
    let q = unique("compat.maxlen");
    let args = table(arg, FieldValue::I32(2));
    r.send_method(
        1,
        Method::QueueDeclare(QueueDeclare {
            queue: ss(&q),
            durable: persistent,
            arguments: args,
            ..Default::default()
        }),
    );
    assert!(matches!(next_on(&mut r, 1), Method::QueueDeclareOk(_)));
    // Five one-byte publishes and a get, in one write.
    send_one(&mut r, |o| {
        for i in 0..5u8 {
            method_frame(
                o,
                1,
                Method::BasicPublish(BasicPublish {
                    routing_key: ss(&q),
                    ..Default::default()
                }),
            );
            let props: &[u8] = if persistent { &[0x10, 0x00, 2] } else { &[0, 0] };
            write_content(o, 1, 60, props, &[b'0' + i], FRAME_MAX);
        }
        method_frame(
            o,
            1,
            Method::BasicGet(BasicGet {
                queue: ss(&q),
                no_ack: true,
                ..Default::default()
            }),
        );
    });
    let first = match next_on(&mut r, 1) {
        Method::BasicGetOk(ok) => {
            assert_eq!(ok.message_count, 1, "one left after this one");
            read_content(&mut r)
        }
        other => panic!("expected get-ok, got {other:?}"),
    };
    assert_eq!(first, b"3");
    assert_eq!(get_body(&mut r, 1, &q).as_deref(), Some(&b"4"[..]));
    assert_eq!(get_body(&mut r, 1, &q), None);
    delete(&mut r, 1, &q);
}

/// `x-max-length: 2`, five publishes, then at once a get: "3" and "4",
/// as if each publish and its drop-head had been applied on arrival.
#[test]
fn max_length_is_exact_for_the_next_get() {
    limited_queue_then_get("x-max-length", false);
}

#[test]
fn max_length_bytes_is_exact_for_the_next_get() {
    limited_queue_then_get("x-max-length-bytes", false);
}

/// The same on a durable queue with persistent messages (written to disk
/// at the end of a step, which the get must not overtake).
#[test]
fn max_length_is_exact_for_persistent_messages() {
    limited_queue_then_get("x-max-length", true);
}

/// `if-empty` counts ready messages only: a queue whose only message is
/// delivered and unacked may be deleted.
#[test]
fn if_empty_ignores_unacked_messages() {
    let t = target();
    let mut r = Raw::open(&t, 0);
    r.open_channel(1);
    let q = unique("compat.ifempty");
    send_one(&mut r, |o| declare(o, 1, &q, FieldTable::new(), false));
    assert!(matches!(next_on(&mut r, 1), Method::QueueDeclareOk(_)));
    send_one(&mut r, |o| publish_frames(o, 1, "", &q, b"x", FRAME_MAX));
    r.send_method(
        1,
        Method::BasicGet(BasicGet {
            queue: ss(&q),
            no_ack: false,
            ..Default::default()
        }),
    );
    assert!(matches!(next_on(&mut r, 1), Method::BasicGetOk(_)));
    r.send_method(
        1,
        Method::QueueDelete(QueueDelete {
            queue: ss(&q),
            if_empty: true,
            ..Default::default()
        }),
    );
    match next_on(&mut r, 1) {
        Method::QueueDeleteOk(ok) => assert_eq!(ok.message_count, 0),
        other => panic!("expected delete-ok, got {other:?}"),
    }
}

fn body_frame(out: &mut BytesMut, ch: u16, len: usize) {
    out.extend_from_slice(&[3]);
    out.extend_from_slice(&ch.to_be_bytes());
    out.extend_from_slice(&(len as u32).to_be_bytes());
    out.extend_from_slice(&vec![b'z'; len]);
    out.extend_from_slice(&[0xCE]);
}

/// amqpstorm sends body frames whose payload is `frame_max` (a frame of
/// `frame_max` + 8 bytes): accepted, as RabbitMQ does.
#[test]
fn body_frame_of_frame_max_payload_is_accepted() {
    let t = target();
    let mut r = Raw::open(&t, 0);
    r.open_channel(1);
    let q = unique("compat.frame");
    send_one(&mut r, |o| declare(o, 1, &q, FieldTable::new(), false));
    assert!(matches!(next_on(&mut r, 1), Method::QueueDeclareOk(_)));
    send_one(&mut r, |o| {
        method_frame(
            o,
            1,
            Method::BasicPublish(BasicPublish {
                routing_key: ss(&q),
                ..Default::default()
            }),
        );
        write_header_frame(o, 1, 60, FRAME_MAX as u64, &[0, 0]);
        body_frame(o, 1, FRAME_MAX as usize);
    });
    let body = get_body(&mut r, 1, &q).expect("the message arrived");
    assert_eq!(body.len(), FRAME_MAX as usize);
    delete(&mut r, 1, &q);
}

/// One byte more is a frame error, worded as RabbitMQ words it.
#[test]
fn body_frame_over_frame_max_is_a_frame_error() {
    let t = target();
    let mut r = Raw::open(&t, 0);
    r.open_channel(1);
    send_one(&mut r, |o| {
        method_frame(
            o,
            1,
            Method::BasicPublish(BasicPublish {
                routing_key: "nowhere".into(),
                ..Default::default()
            }),
        );
        write_header_frame(o, 1, 60, FRAME_MAX as u64 + 1, &[0, 0]);
        body_frame(o, 1, FRAME_MAX as usize + 1);
    });
    let (code, text) = r.expect_connection_close();
    assert_eq!(code, 501);
    assert_eq!(
        text,
        "FRAME_ERROR - type 3, all octets = <<>>: {frame_too_large,131073,131064}"
    );
}

/// A supervisor restarts warren at once after a `kill -9` with clients
/// connected: the previous run's connections (FIN_WAIT, TIME_WAIT) do not
/// hold the port. A port another process listens on is still refused.
#[test]
fn restarts_at_once_on_the_same_port_after_kill9() {
    use crate::common::{ChildBroker, temp_data_dir};
    let (_d, data) = temp_data_dir();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let first = ChildBroker::start_on(&data, 2, port).expect("first start");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let clients = rt.block_on(async {
        let mut v = Vec::new();
        for _ in 0..50 {
            let c = crate::common::connect(&first.uri).await;
            let ch = c.create_channel().await.unwrap();
            v.push((c, ch));
        }
        v
    });
    first.kill9();
    let second = ChildBroker::start_on(&data, 2, port).unwrap_or_else(|e| {
        let ss = std::process::Command::new("ss").args(["-tanp"]).output().unwrap();
        panic!(
            "{e}\n{}",
            String::from_utf8_lossy(&ss.stdout)
                .lines()
                .filter(|l| l.contains(&port.to_string()))
                .collect::<Vec<_>>()
                .join("\n")
        )
    });
    rt.block_on(async {
        let c = crate::common::connect(&second.uri).await;
        c.create_channel().await.unwrap();
    });
    drop(clients);
    // A real listener on the port: refused with a clear message.
    let err = match ChildBroker::start_on(&temp_data_dir().1, 1, port) {
        Ok(_) => panic!("a second broker started on a port in use"),
        Err(e) => e,
    };
    assert!(err.contains(&format!("port {port} is already in use")), "{err}");
}

/// A supervisor's restart (SIGTERM, then start at once) with clients
/// connected: the stopping broker closes their connections first, and
/// once they hang up its side is in TIME_WAIT; that must not hold the
/// port either (RabbitMQ restarts at once).
#[test]
fn restarts_at_once_on_the_same_port_after_a_graceful_stop() {
    use crate::common::{ChildBroker, temp_data_dir};
    use std::io::{Read, Write};
    let (_d, data) = temp_data_dir();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    // On `::`, warren's default: the leftover sockets are IPv6 ones.
    let first = ChildBroker::start_dual_stack(&data, 2, port).expect("first start");
    // Clients that hang up only after the broker closed on them.
    let clients: Vec<_> = (0..20)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.write_all(&PROTOCOL_HEADER).unwrap();
            std::thread::spawn(move || {
                s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                let mut buf = [0u8; 4096];
                while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
            })
        })
        .collect();
    first.terminate();
    for c in clients {
        c.join().unwrap();
    }
    let second = ChildBroker::start_dual_stack(&data, 2, port).expect("restarts on the same port");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = crate::common::connect(&second.uri).await;
        c.create_channel().await.unwrap();
    });
}

/// TIME_WAIT sockets left by listeners without SO_REUSEADDR (a warren from
/// before issue 10 had only SO_REUSEPORT) do not hold the port either: an
/// upgrade restarts at once.
#[test]
fn restarts_over_time_wait_left_by_an_older_listener() {
    use crate::common::{ChildBroker, temp_data_dir};
    use socket2::{Domain, Socket, Type};
    use std::io::Read;
    let (_d, data) = temp_data_dir();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let old = Socket::new(Domain::IPV6, Type::STREAM, None).unwrap();
    old.set_only_v6(false).unwrap();
    old.set_reuse_port(true).unwrap();
    let any: std::net::SocketAddr = format!("[::]:{port}").parse().unwrap();
    old.bind(&any.into()).unwrap();
    old.listen(16).unwrap();
    // The server side closes first; once the client hangs up too, the
    // server's socket is in TIME_WAIT.
    let mut client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let (server, _) = old.accept().unwrap();
    drop(server);
    client.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(client.read(&mut buf).unwrap(), 0);
    drop(client);
    drop(old);
    let b = ChildBroker::start_dual_stack(&data, 1, port).expect("starts over the TIME_WAIT");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = crate::common::connect(&b.uri).await;
        c.create_channel().await.unwrap();
    });
}
