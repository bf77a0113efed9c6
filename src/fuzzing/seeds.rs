//! The seed corpus: small valid inputs for every target, made with the
//! encoders. `fuzz/corpus/<target>/seed-*` are these bytes; the unit test
//! `fuzzing::tests::seeds_are_committed` checks that they still are, and
//! `WARREN_WRITE_SEEDS=1 cargo test --release --lib fuzzing::tests` writes
//! them again after a change here.

use super::segment::{framed, kind, mode};
use super::session::handshake;
use crate::message::Message;
use crate::protocol::methods::*;
use crate::protocol::{
    BasicProperties, FieldTable, FieldValue, Frame, LongStr, Method, ShortStr, put_table, write_content,
    write_heartbeat, write_method_frame,
};
use crate::storage::record;
use bytes::{Bytes, BytesMut};

/// (target, file name, bytes) of every seed.
pub fn all() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out = Vec::new();
    for (name, b) in frame() {
        out.push(("frame", name, b));
    }
    for (name, b) in field_table() {
        out.push(("field_table", name, b));
    }
    for (name, b) in session() {
        out.push(("session", name, b));
    }
    for (name, b) in segment_recovery() {
        out.push(("segment_recovery", name, b));
    }
    out
}

fn s(v: &'static str) -> ShortStr {
    ShortStr::from_static(v)
}

/// A table with a value of every type, nested.
fn every_type() -> FieldTable {
    let inner: FieldTable = [(s("n"), FieldValue::Void), (s("i"), FieldValue::I32(-7))]
        .into_iter()
        .collect();
    [
        (s("t"), FieldValue::Bool(true)),
        (s("b"), FieldValue::I8(-3)),
        (s("B"), FieldValue::U8(250)),
        (s("s"), FieldValue::I16(-300)),
        (s("u"), FieldValue::U16(60000)),
        (s("I"), FieldValue::I32(-70000)),
        (s("i"), FieldValue::U32(4_000_000_000)),
        (s("l"), FieldValue::I64(-5)),
        (s("f"), FieldValue::F32(1.5)),
        (s("d"), FieldValue::F64(2.25)),
        (
            s("D"),
            FieldValue::Decimal {
                scale: 2,
                value: 12345,
            },
        ),
        (s("S"), FieldValue::LongStr(LongStr::from_static("hello"))),
        (
            s("A"),
            FieldValue::Array(vec![FieldValue::I32(1), FieldValue::Table(inner.clone())]),
        ),
        (s("T"), FieldValue::Timestamp(1_700_000_000)),
        (s("F"), FieldValue::Table(inner)),
        (s("V"), FieldValue::Void),
        (s("x"), FieldValue::ByteArray(Bytes::from_static(b"\x00\x01"))),
    ]
    .into_iter()
    .collect()
}

fn table_bytes(t: &FieldTable) -> Vec<u8> {
    let mut out = BytesMut::new();
    put_table(&mut out, t);
    out.to_vec()
}

fn full_props() -> BasicProperties {
    BasicProperties {
        content_type: Some(s("text/plain")),
        content_encoding: Some(s("utf-8")),
        headers: Some(
            [(s("CC"), FieldValue::Array(vec!["k2".into()]))]
                .into_iter()
                .collect(),
        ),
        delivery_mode: Some(2),
        priority: Some(3),
        correlation_id: Some(s("c1")),
        reply_to: Some(s("amq.rabbitmq.reply-to")),
        expiration: Some(s("60000")),
        message_id: Some(s("m1")),
        timestamp: Some(1_700_000_000),
        kind: Some(s("t")),
        user_id: Some(s("guest")),
        app_id: Some(s("a")),
        cluster_id: Some(s("c")),
    }
}

fn m(out: &mut BytesMut, ch: u16, method: Method) {
    write_method_frame(out, ch, &method);
}

fn publish(
    out: &mut BytesMut,
    ch: u16,
    exchange: &'static str,
    key: &'static str,
    props: &[u8],
    body: &[u8],
) {
    m(
        out,
        ch,
        Method::BasicPublish(BasicPublish {
            exchange: s(exchange),
            routing_key: s(key),
            ..Default::default()
        }),
    );
    write_content(out, ch, 60, props, body, 4096);
}

fn declare(out: &mut BytesMut, ch: u16, queue: &'static str, durable: bool, args: FieldTable) {
    m(
        out,
        ch,
        Method::QueueDeclare(QueueDeclare {
            queue: s(queue),
            durable,
            arguments: args,
            ..Default::default()
        }),
    );
}

fn consume(out: &mut BytesMut, ch: u16, queue: &'static str, tag: &'static str, no_ack: bool) {
    m(
        out,
        ch,
        Method::BasicConsume(BasicConsume {
            queue: s(queue),
            consumer_tag: s(tag),
            no_ack,
            ..Default::default()
        }),
    );
}

fn open_channel(out: &mut BytesMut, ch: u16) {
    m(out, ch, Method::ChannelOpen(ChannelOpen::default()));
}

/// Frame streams behind a `frame_max` selector byte.
fn frame() -> Vec<(String, Vec<u8>)> {
    let mut v = Vec::new();
    let with = |sel: u8, b: BytesMut| {
        let mut x = vec![sel];
        x.extend_from_slice(&b);
        x
    };
    // The client's handshake.
    v.push(("seed-handshake".into(), with(0, handshake(131_072, 60))));
    // A publish with every property, split into 4096-byte frames.
    let mut b = BytesMut::new();
    publish(
        &mut b,
        1,
        "amq.direct",
        "k",
        &full_props().to_bytes(),
        &[7u8; 5000],
    );
    v.push(("seed-publish".into(), with(1, b)));
    // Declarations with arguments, a consume, acks, a heartbeat, closes.
    let mut b = BytesMut::new();
    open_channel(&mut b, 1);
    m(
        &mut b,
        1,
        Method::ExchangeDeclare(ExchangeDeclare {
            exchange: s("x"),
            kind: s("headers"),
            durable: true,
            arguments: every_type(),
            ..Default::default()
        }),
    );
    let mut args = FieldTable::new();
    args.insert(s("x-max-length"), FieldValue::I32(10));
    declare(&mut b, 1, "q", true, args);
    consume(&mut b, 1, "q", "c1", false);
    m(
        &mut b,
        1,
        Method::BasicAck(BasicAck {
            delivery_tag: 1,
            multiple: true,
        }),
    );
    write_heartbeat(&mut b);
    m(
        &mut b,
        1,
        Method::ChannelClose(ChannelClose {
            reply_code: 200,
            reply_text: s("bye"),
            ..Default::default()
        }),
    );
    v.push(("seed-methods".into(), with(2, b)));
    // What a broker sends: start, deliver, get-ok, a content header.
    let mut b = BytesMut::new();
    m(
        &mut b,
        0,
        Method::ConnectionStart(ConnectionStart {
            version_major: 0,
            version_minor: 9,
            server_properties: every_type(),
            mechanisms: LongStr::from_static("PLAIN AMQPLAIN"),
            locales: LongStr::from_static("en_US"),
        }),
    );
    crate::protocol::write_basic_deliver(&mut b, 1, b"ctag", 9, true, b"ex", b"rk");
    crate::protocol::write_basic_get_ok(&mut b, 1, 10, false, b"", b"q", 3);
    Frame::Header {
        channel: 1,
        header: crate::protocol::ContentHeader {
            class_id: 60,
            weight: 0,
            body_size: 0,
            properties: Bytes::from_static(&[0, 0]),
        },
    }
    .encode(&mut b);
    v.push(("seed-server".into(), with(0, b)));
    v
}

/// Encoded tables.
fn field_table() -> Vec<(String, Vec<u8>)> {
    let mut nested = FieldTable::new();
    nested.insert(s("outer"), FieldValue::Table(every_type()));
    nested.insert(
        s("arr"),
        FieldValue::Array(vec![
            FieldValue::Array(vec![FieldValue::Void]),
            FieldValue::F64(f64::NAN),
        ]),
    );
    let mut args = FieldTable::new();
    args.insert(s("x-message-ttl"), FieldValue::I32(60000));
    args.insert(s("x-dead-letter-exchange"), "dlx".into());
    vec![
        ("seed-empty".into(), table_bytes(&FieldTable::new())),
        ("seed-every-type".into(), table_bytes(&every_type())),
        ("seed-nested".into(), table_bytes(&nested)),
        ("seed-args".into(), table_bytes(&args)),
    ]
}

/// Session inputs: mode byte, schedule, stream.
fn session() -> Vec<(String, Vec<u8>)> {
    let input = |mode: u8, schedule: &[u8], stream: &[u8]| {
        let mut x = vec![mode, schedule.len() as u8];
        x.extend_from_slice(schedule);
        x.extend_from_slice(stream);
        x
    };
    let mut v = Vec::new();
    // The handshake alone, byte by byte for a while, then the clock.
    v.push((
        "seed-handshake".into(),
        input(0, &[0, 0, 0, 3, 7, 100, 0x85], &handshake(131_072, 0)),
    ));
    // Publish to a durable queue with confirms, consume, ack, get, reject.
    let mut b = BytesMut::new();
    open_channel(&mut b, 1);
    m(&mut b, 1, Method::ConfirmSelect(ConfirmSelect::default()));
    declare(&mut b, 1, "q", true, FieldTable::new());
    let persistent = BasicProperties {
        delivery_mode: Some(2),
        ..Default::default()
    }
    .to_bytes();
    publish(&mut b, 1, "", "q", &persistent, b"one");
    publish(&mut b, 1, "", "q", &full_props().to_bytes(), b"two");
    publish(&mut b, 1, "amq.direct", "nowhere", &[0, 0], b"");
    m(
        &mut b,
        1,
        Method::BasicQos(BasicQos {
            prefetch_count: 2,
            ..Default::default()
        }),
    );
    consume(&mut b, 1, "q", "c1", false);
    m(
        &mut b,
        1,
        Method::BasicAck(BasicAck {
            delivery_tag: 1,
            multiple: false,
        }),
    );
    m(
        &mut b,
        1,
        Method::BasicReject(BasicReject {
            delivery_tag: 2,
            requeue: true,
        }),
    );
    m(
        &mut b,
        1,
        Method::BasicGet(BasicGet {
            queue: s("q"),
            ..Default::default()
        }),
    );
    m(
        &mut b,
        1,
        Method::BasicCancel(BasicCancel {
            consumer_tag: s("c1"),
            ..Default::default()
        }),
    );
    let mut hs = handshake(4096, 0);
    hs.extend_from_slice(&b);
    v.push((
        "seed-publish-consume".into(),
        input(0, &[0x7f, 0x7f, 20, 0x90], &hs),
    ));
    // Behind the harness's own handshake: exchanges, bindings, a
    // transaction, a second channel, purge and delete, then a close.
    let mut b = BytesMut::new();
    open_channel(&mut b, 1);
    open_channel(&mut b, 2);
    m(
        &mut b,
        1,
        Method::ExchangeDeclare(ExchangeDeclare {
            exchange: s("t"),
            kind: s("topic"),
            ..Default::default()
        }),
    );
    let mut args = FieldTable::new();
    args.insert(s("x-max-length"), FieldValue::I32(1));
    args.insert(s("x-overflow"), "reject-publish".into());
    args.insert(s("x-message-ttl"), FieldValue::I32(1000));
    declare(&mut b, 1, "", false, args);
    m(
        &mut b,
        1,
        Method::QueueBind(QueueBind {
            queue: s(""),
            exchange: s("t"),
            routing_key: s("a.#"),
            ..Default::default()
        }),
    );
    consume(&mut b, 1, "", "", true);
    m(&mut b, 1, Method::TxSelect(TxSelect {}));
    publish(&mut b, 1, "t", "a.b", &[0, 0], b"x");
    publish(&mut b, 1, "t", "a.c", &[0, 0], b"y");
    m(&mut b, 1, Method::TxCommit(TxCommit {}));
    m(
        &mut b,
        1,
        Method::QueuePurge(QueuePurge {
            queue: s(""),
            ..Default::default()
        }),
    );
    m(
        &mut b,
        1,
        Method::QueueDelete(QueueDelete {
            queue: s(""),
            ..Default::default()
        }),
    );
    m(
        &mut b,
        0,
        Method::ConnectionClose(ConnectionClose {
            reply_code: 200,
            reply_text: s("bye"),
            ..Default::default()
        }),
    );
    m(&mut b, 0, Method::ConnectionCloseOk(ConnectionCloseOk {}));
    v.push(("seed-topology-tx".into(), input(1, &[], &b)));
    // A bad frame after the handshake (the error path), with heartbeats on.
    let mut b = BytesMut::new();
    open_channel(&mut b, 1);
    b.extend_from_slice(&[1, 0, 1, 0, 0, 0, 2, 0, 60, 0xCE]);
    v.push((
        "seed-bad-frame".into(),
        input(5, &[0x7f, 0x7f, 0x7f, 0xff, 0xff], &b),
    ));
    v
}

/// Storage inputs: mode byte, entries.
fn segment_recovery() -> Vec<(String, Vec<u8>)> {
    let entry = |out: &mut Vec<u8>, k: u8, bytes: &[u8]| {
        out.push(k);
        out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
        out.extend_from_slice(bytes);
    };
    // The payload of a message record (what follows `len crc`).
    let payload = |exchange: &[u8], key: &[u8], props: &[u8], body: &[u8]| {
        let m = Message::assemble(exchange, key, props, body);
        let mut buf = vec![0u8; record::encoded_len(&m)];
        record::encode(&m, 1_700_000_000_000, &mut buf);
        buf[record::RECORD_PREFIX..].to_vec()
    };
    let all_headers = mode::SEGMENT_HEADER | mode::ACK_HEADER | mode::TOPO_HEADER;
    let mut v = Vec::new();
    // Three records, one acked and one delivered; pre-allocated.
    let mut x = vec![all_headers | mode::PREALLOCATE];
    entry(&mut x, kind::RECORD, &payload(b"", b"q", &[0x10, 0, 2], b"one"));
    entry(
        &mut x,
        kind::RECORD,
        &payload(b"ex", b"rk", &full_props().to_bytes(), b"two"),
    );
    entry(&mut x, kind::RECORD, &payload(b"", b"q", &[0, 0], b""));
    entry(&mut x, kind::ACK_RECORDS, &[0, 0x81]);
    v.push(("seed-acked".into(), x));
    // A torn tail after a valid record, then a second segment whose middle
    // record is corrupt.
    let mut x = vec![all_headers];
    entry(&mut x, kind::RECORD, &payload(b"", b"q", &[0, 0], b"kept"));
    let torn = framed(&payload(b"", b"q", &[0, 0], b"torn"));
    entry(&mut x, kind::RAW, &torn[..torn.len() - 3]);
    entry(&mut x, kind::NEXT_SEGMENT, &[]);
    entry(&mut x, kind::RECORD, &payload(b"", b"q", &[0, 0], b"a"));
    let mut bad = framed(&payload(b"", b"q", &[0, 0], b"b"));
    let n = bad.len();
    bad[n - 1] ^= 0x40;
    entry(&mut x, kind::RAW, &bad);
    entry(&mut x, kind::RECORD, &payload(b"", b"q", &[0, 0], b"c"));
    v.push(("seed-damage".into(), x));
    // A topology log: a vhost, a durable queue, a binding, a user.
    let mut x = vec![all_headers];
    let changes = {
        use crate::broker::topology::{Change, Dest, QueueDef, Topology};
        use crate::ids::{QueueId, VhostId};
        let mut changes = crate::broker::control::ControlPlane::default()
            .add_vhost(&Topology::default(), "/")
            .unwrap_or_default();
        let direct = changes.iter().find_map(|c| match c {
            Change::DeclareExchange(d) if d.name.as_bytes() == b"amq.direct" => Some(d.id),
            _ => None,
        });
        let vhost = match changes.first() {
            Some(Change::AddVhost { id, .. }) => *id,
            _ => VhostId(1),
        };
        changes.push(Change::DeclareQueue(QueueDef {
            id: QueueId(1),
            vhost,
            name: s("q"),
            owner: 0,
            node: 0,
            durable: true,
            exclusive: None,
            auto_delete: false,
            args: FieldTable::new(),
            replicas: Vec::new(),
            group: 0,
        }));
        if let Some(source) = direct {
            changes.push(Change::Bind {
                source,
                dest: Dest::Queue(QueueId(1)),
                key: s("k"),
                args: FieldTable::new(),
            });
        }
        changes.push(Change::PutUser(crate::broker::users::User {
            name: "guest".into(),
            password_hash: vec![1, 2, 3],
            tags: vec!["administrator".into()],
            counters: Default::default(),
        }));
        changes
    };
    for c in &changes {
        let mut b = BytesMut::new();
        crate::storage::topolog::encode(c, &mut b);
        entry(&mut x, kind::TOPO_RECORD, &b);
    }
    entry(&mut x, kind::TOPO_RAW, &[9, 0, 0, 0, 1]);
    entry(&mut x, kind::RECORD, &payload(b"", b"q", &[0, 0], b"m"));
    v.push(("seed-topology".into(), x));
    v
}
