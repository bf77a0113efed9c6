//! In-memory tests of the session layer, in quinn-proto's style: a fake
//! broker that records every call and answers as the test tells it, and a
//! client that encodes frames with `protocol` and decodes what the session
//! writes. No sockets, no clock (time is a number the test passes), no
//! executor.
//!
//! Expected texts and class/method ids are RabbitMQ 3.10's, checked against
//! RabbitMQ 3.10.8 with a raw client (the same frames as these tests).

mod confirms;
mod consume;
mod errors;
mod handshake;
mod publish;
mod reply_to;
mod timers;

use super::{Broker, Event, PublishOutcome, Session, SessionConfig, Status};
use crate::broker::request::{Reply, Request, Settle};
use crate::ids::{ChannelRef, ConnId, ConsumerRef, QueueId, VhostId};
use crate::message::Message;
use crate::protocol::methods::*;
use crate::protocol::{
    AmqpError, ContentHeader, FieldTable, FieldValue, Frame, LongStr, Method, PROTOCOL_HEADER, ShortStr,
    decode_frame, write_content, write_method_frame,
};
use crate::queue::Delivery;
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;

pub(super) const CONN: ConnId = ConnId(7);
pub(super) const VHOST: VhostId = VhostId(3);
/// The queue every fake delivery comes from.
pub(super) const Q: QueueId = QueueId(42);
/// Empty basic properties (no flags).
pub(super) const NO_PROPS: &[u8] = &[0, 0];

/// A message as the broker received it, comparable as a whole.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Published {
    pub ch: u16,
    pub exchange: Vec<u8>,
    pub routing_key: Vec<u8>,
    pub props: Vec<u8>,
    pub body: Vec<u8>,
    pub persistent: bool,
    pub priority: u8,
    pub expiration: u32,
    pub confirm: Option<u64>,
}

impl Published {
    /// A plain publish on `ch` with empty properties and no confirm.
    pub fn plain(ch: u16, exchange: &str, key: &str, body: &[u8]) -> Published {
        Published {
            ch,
            exchange: exchange.into(),
            routing_key: key.into(),
            props: NO_PROPS.to_vec(),
            body: body.to_vec(),
            persistent: false,
            priority: 0,
            expiration: Message::NO_EXPIRATION,
            confirm: None,
        }
    }
}

/// One call the session made on the broker, in order.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Call {
    Login(String, Option<Vec<u8>>),
    OpenVhost(String, String),
    Publish(Published),
    ExchangeExists(Vec<u8>),
    Settle(QueueId, u64, Settle),
    /// Channel number and the (class, method) ids of the request; the
    /// request itself is in [`FakeBroker::requests`].
    Request(u16, (u16, u16)),
    DropConsumer(QueueId, ConsumerRef),
    /// Queue, consumer, its prefetch, the sequences it takes along.
    Resume(QueueId, ConsumerRef, u32, Vec<u64>),
    Written(QueueId, ConsumerRef, u32),
    GrantCredit(QueueId, ConsumerRef, u32),
    ConnectionClosed(ConnId),
}

/// A broker that records what the session asks and answers as told.
/// Asynchronous answers are sent back by the test as [`Event`]s.
pub(super) struct FakeBroker {
    pub calls: Vec<Call>,
    /// Every request with its channel, vhost and user.
    pub requests: Vec<(ChannelRef, VhostId, String, Request)>,
    /// Channel refs seen in publishes and requests, by channel number (the
    /// latest incarnation last).
    pub crefs: Vec<ChannelRef>,
    pub login: Result<(), AmqpError>,
    pub vhost: Result<VhostId, AmqpError>,
    /// Answers to the next publishes; `routed` with nothing pending after.
    pub outcomes: VecDeque<Result<PublishOutcome, AmqpError>>,
    pub exchange: Result<(), AmqpError>,
    /// The user's channel count and limit (none: no limit, nothing counted).
    pub channels: Option<(crate::broker::limits::Counter, u64)>,
    names: u32,
}

impl Default for FakeBroker {
    fn default() -> Self {
        FakeBroker {
            calls: Vec::new(),
            requests: Vec::new(),
            crefs: Vec::new(),
            login: Ok(()),
            vhost: Ok(VHOST),
            outcomes: VecDeque::new(),
            exchange: Ok(()),
            channels: None,
            names: 0,
        }
    }
}

pub(super) fn routed() -> PublishOutcome {
    PublishOutcome {
        routed: true,
        pending_confirms: 0,
        rejected: false,
    }
}

impl FakeBroker {
    fn saw(&mut self, ch: ChannelRef) {
        if self.crefs.last() != Some(&ch) {
            self.crefs.push(ch);
        }
    }

    pub fn publishes(&self) -> Vec<Published> {
        self.calls
            .iter()
            .filter_map(|c| match c {
                Call::Publish(p) => Some(p.clone()),
                _ => None,
            })
            .collect()
    }
}

impl Broker for FakeBroker {
    fn check_login(&mut self, user: &str, password: Option<&[u8]>) -> Result<(), AmqpError> {
        self.calls
            .push(Call::Login(user.into(), password.map(<[u8]>::to_vec)));
        self.login.clone()
    }
    fn open_vhost(&mut self, user: &str, vhost: &str) -> Result<VhostId, AmqpError> {
        self.calls.push(Call::OpenVhost(user.into(), vhost.into()));
        self.vhost.clone()
    }
    fn publish(
        &mut self,
        ch: ChannelRef,
        vhost: VhostId,
        msg: Message,
        confirm: Option<u64>,
        _mandatory: bool,
    ) -> Result<PublishOutcome, AmqpError> {
        assert_eq!(vhost, VHOST);
        self.saw(ch);
        self.calls.push(Call::Publish(Published {
            ch: ch.channel,
            exchange: msg.exchange().into(),
            routing_key: msg.routing_key().into(),
            props: msg.props().into(),
            body: msg.body().into(),
            persistent: msg.persistent,
            priority: msg.priority,
            expiration: msg.expiration,
            confirm,
        }));
        self.outcomes.pop_front().unwrap_or(Ok(routed()))
    }
    fn exchange_exists(&mut self, vhost: VhostId, exchange: &[u8]) -> Result<(), AmqpError> {
        assert_eq!(vhost, VHOST);
        self.calls.push(Call::ExchangeExists(exchange.into()));
        self.exchange.clone()
    }
    fn settle(&mut self, queue: QueueId, seq: u64, how: Settle) {
        self.calls.push(Call::Settle(queue, seq, how));
    }
    fn request(&mut self, ch: ChannelRef, vhost: VhostId, user: &str, req: Request) {
        self.saw(ch);
        self.calls.push(Call::Request(ch.channel, req.method_ids()));
        self.requests.push((ch, vhost, user.into(), req));
    }
    fn drop_consumer(&mut self, queue: QueueId, consumer: ConsumerRef) {
        self.calls.push(Call::DropConsumer(queue, consumer));
    }
    fn resume_consumer(&mut self, queue: QueueId, spec: crate::queue::ConsumerSpec, held: Vec<u64>) {
        self.calls
            .push(Call::Resume(queue, spec.cref, spec.prefetch, held));
    }
    fn written(&mut self, queue: QueueId, consumer: ConsumerRef, n: u32) {
        self.calls.push(Call::Written(queue, consumer, n));
    }
    fn grant_credit(&mut self, queue: QueueId, consumer: ConsumerRef, n: u32) {
        self.calls.push(Call::GrantCredit(queue, consumer, n));
    }
    fn unique_name(&mut self, prefix: &str) -> ShortStr {
        self.names += 1;
        ShortStr::from_string_lossy(&format!("{prefix}{:022}", self.names))
    }
    fn connection_closed(&mut self, conn: ConnId) {
        self.calls.push(Call::ConnectionClosed(conn));
    }
    fn open_channel(&mut self) -> Result<Option<crate::broker::limits::Lease>, AmqpError> {
        match &self.channels {
            None => Ok(None),
            Some((c, limit)) => c
                .acquire(Some(*limit))
                .map(Some)
                .ok_or_else(|| crate::broker::limits::user_channels_reached("guest", *limit)),
        }
    }
}

/// What real clients announce in `connection.start-ok`.
pub(super) const CLIENT_CAPS: &[&str] = &[
    "consumer_cancel_notify",
    "connection.blocked",
    "publisher_confirms",
    "basic.nack",
];

pub(super) fn start_ok(caps: &[&str], mechanism: &'static str, response: Bytes) -> Method {
    let caps: FieldTable = caps
        .iter()
        .map(|k| (ShortStr::from_string_lossy(k), FieldValue::Bool(true)))
        .collect();
    Method::ConnectionStartOk(ConnectionStartOk {
        client_properties: [(ShortStr::from_static("capabilities"), FieldValue::Table(caps))]
            .into_iter()
            .collect(),
        mechanism: mechanism.into(),
        response: LongStr::new(response),
        locale: "en_US".into(),
    })
}

pub(super) fn plain(user: &str, password: &str) -> Bytes {
    Bytes::from(format!("\0{user}\0{password}"))
}

pub(super) fn tune_ok(channel_max: u16, frame_max: u32, heartbeat: u16) -> Method {
    Method::ConnectionTuneOk(ConnectionTuneOk {
        channel_max,
        frame_max,
        heartbeat,
    })
}

pub(super) fn open(vhost: &'static str) -> Method {
    Method::ConnectionOpen(ConnectionOpen {
        virtual_host: vhost.into(),
        ..Default::default()
    })
}

pub(super) fn m(channel: u16, method: Method) -> Frame {
    Frame::Method { channel, method }
}

pub(super) fn channel_close(code: u16, text: &str, class_id: u16, method_id: u16) -> Method {
    Method::ChannelClose(ChannelClose {
        reply_code: code,
        reply_text: ShortStr::from_string_lossy(text),
        class_id,
        method_id,
    })
}

pub(super) fn connection_close(code: u16, text: &str, class_id: u16, method_id: u16) -> Method {
    Method::ConnectionClose(ConnectionClose {
        reply_code: code,
        reply_text: ShortStr::from_string_lossy(text),
        class_id,
        method_id,
    })
}

pub(super) fn channel_open_ok() -> Method {
    Method::ChannelOpenOk(ChannelOpenOk::default())
}

pub(super) fn header(body_size: u64, props: &[u8]) -> Frame {
    Frame::Header {
        channel: 0,
        header: ContentHeader {
            class_id: 60,
            weight: 0,
            body_size,
            properties: Bytes::copy_from_slice(props),
        },
    }
}

/// The frames of a message's content on `ch` (one body frame).
pub(super) fn content(ch: u16, props: &[u8], body: &[u8]) -> Vec<Frame> {
    let Frame::Header { header, .. } = header(body.len() as u64, props) else {
        unreachable!()
    };
    let mut v = vec![Frame::Header { channel: ch, header }];
    if !body.is_empty() {
        v.push(Frame::Body {
            channel: ch,
            body: Bytes::copy_from_slice(body),
        });
    }
    v
}

pub(super) fn publish_method(exchange: &str, key: &str, mandatory: bool) -> Method {
    Method::BasicPublish(BasicPublish {
        exchange: ShortStr::from_string_lossy(exchange),
        routing_key: ShortStr::from_string_lossy(key),
        mandatory,
        ..Default::default()
    })
}

/// The frames of a publish: method, header, body split by `frame_max`.
pub(super) fn publish_bytes(
    ch: u16,
    exchange: &str,
    key: &str,
    props: &[u8],
    body: &[u8],
    frame_max: u32,
) -> BytesMut {
    let mut out = BytesMut::new();
    write_method_frame(&mut out, ch, &publish_method(exchange, key, false));
    write_content(&mut out, ch, 60, props, body, frame_max);
    out
}

pub(super) fn method_bytes(ch: u16, m: Method) -> BytesMut {
    let mut out = BytesMut::new();
    write_method_frame(&mut out, ch, &m);
    out
}

pub(super) fn message(body: &[u8]) -> Message {
    Message::assemble(b"ex", b"rk", NO_PROPS, body)
}

/// A session, its fake broker, the client's unread input and the time.
pub(super) struct Peer {
    pub s: Session,
    pub b: FakeBroker,
    pub input: BytesMut,
    pub now: u64,
}

/// The defaults, with the consumer timeout off so that timers only run
/// when a test asks for them.
pub(super) fn cfg() -> SessionConfig {
    SessionConfig {
        consumer_timeout_ms: 0,
        ..SessionConfig::default()
    }
}

impl Peer {
    pub fn new(cfg: SessionConfig) -> Peer {
        Peer::at(cfg, 0)
    }

    /// A connection accepted at `now`.
    pub fn at(cfg: SessionConfig, now: u64) -> Peer {
        Peer {
            s: Session::new(CONN, cfg, now),
            b: FakeBroker::default(),
            input: BytesMut::new(),
            now,
        }
    }

    /// A session opened on vhost "/" by a client with the usual
    /// capabilities, `channel_max` 2047, `frame_max` 131072, no heartbeat.
    pub fn open() -> Peer {
        Peer::open_with(cfg(), CLIENT_CAPS, 2047, 131_072, 0)
    }

    pub fn open_with(
        cfg: SessionConfig,
        caps: &[&str],
        channel_max: u16,
        frame_max: u32,
        heartbeat: u16,
    ) -> Peer {
        let mut p = Peer::new(cfg);
        p.send_raw(&PROTOCOL_HEADER);
        p.send(0, start_ok(caps, "PLAIN", plain("guest", "guest")));
        p.send(0, tune_ok(channel_max, frame_max, heartbeat));
        assert_eq!(p.send(0, open("/")), Status::NeedInput);
        let frames = p.frames();
        assert!(
            matches!(
                frames.last(),
                Some(Frame::Method {
                    channel: 0,
                    method: Method::ConnectionOpenOk(_)
                })
            ),
            "{frames:?}"
        );
        p.b.calls.clear();
        p
    }

    /// Opens channel `n` and checks the `open-ok`.
    pub fn open_channel(&mut self, n: u16) {
        self.send(n, Method::ChannelOpen(Default::default()));
        assert_eq!(self.frames(), vec![m(n, channel_open_ok())]);
    }

    /// Feeds bytes as they arrive from the socket at `self.now`.
    pub fn send_raw(&mut self, bytes: &[u8]) -> Status {
        self.input.extend_from_slice(bytes);
        self.s.set_clock(self.now);
        self.s.feed(&mut self.input, &mut self.b)
    }

    pub fn send(&mut self, ch: u16, m: Method) -> Status {
        self.send_raw(&method_bytes(ch, m))
    }

    /// Feeds again with no new input (frames waiting behind a reply).
    pub fn resume(&mut self) -> Status {
        self.send_raw(&[])
    }

    /// Events from the broker, then the end of the batch.
    pub fn events(&mut self, evs: impl IntoIterator<Item = Event>) {
        self.s.set_clock(self.now);
        for ev in evs {
            self.s.on_event(ev, &mut self.b);
        }
        self.s.end_batch(&mut self.b);
    }

    pub fn event(&mut self, ev: Event) {
        self.events([ev]);
    }

    /// The latest incarnation of channel `n` the broker has seen.
    pub fn cref(&self, n: u16) -> ChannelRef {
        *self
            .b
            .crefs
            .iter()
            .rev()
            .find(|c| c.channel == n)
            .expect("the broker saw the channel")
    }

    /// Answers the channel's outstanding request.
    pub fn reply(&mut self, n: u16, reply: Reply) {
        let ch = self.cref(n);
        self.event(Event::Reply { ch, reply });
    }

    /// Everything the session wrote since the last call, decoded.
    pub fn frames(&mut self) -> Vec<Frame> {
        let mut out = self.s.output().split();
        let mut v = Vec::new();
        while let Some(raw) = decode_frame(&mut out, 0).expect("the session writes valid frames") {
            v.push(Frame::decode(raw).expect("the session writes valid frames"));
        }
        assert!(out.is_empty(), "a partial frame in the output");
        v
    }

    /// The broker calls since the last call.
    pub fn calls(&mut self) -> Vec<Call> {
        std::mem::take(&mut self.b.calls)
    }

    /// The last request the broker got.
    pub fn last_request(&self) -> &Request {
        &self.b.requests.last().expect("a request").3
    }

    /// Starts consumer `tag` on `queue` and completes it; returns its ref.
    pub fn consume(&mut self, ch: u16, tag: &'static str, no_ack: bool) -> ConsumerRef {
        self.send(
            ch,
            Method::BasicConsume(BasicConsume {
                queue: "q".into(),
                consumer_tag: tag.into(),
                no_ack,
                ..Default::default()
            }),
        );
        let Request::Consume { spec, .. } = self.last_request() else {
            panic!("expected a consume request, got {:?}", self.last_request())
        };
        let consumer = spec.cref;
        self.reply(ch, Reply::ConsumeOk { queue: Q, consumer });
        assert_eq!(
            self.frames(),
            vec![m(
                ch,
                Method::BasicConsumeOk(BasicConsumeOk {
                    consumer_tag: tag.into()
                })
            )]
        );
        self.b.calls.clear();
        consumer
    }

    /// Delivers message `seq` to `consumer` (to be acked, untracked).
    pub fn deliver(&mut self, consumer: ConsumerRef, seq: u64) {
        self.event(delivery(consumer, seq, true, false));
    }
}

pub(super) fn delivery(consumer: ConsumerRef, seq: u64, needs_ack: bool, tracked: bool) -> Event {
    Event::Deliver(Delivery {
        consumer,
        queue: Q,
        seq,
        msg: message(format!("m{seq}").as_bytes()),
        redelivered: false,
        needs_ack,
        tracked,
        loc: None,
    })
}

/// The frames of a delivery of [`message`]`(body)`.
pub(super) fn deliver_frames(ch: u16, tag: &'static str, delivery_tag: u64, body: &[u8]) -> Vec<Frame> {
    let mut v = vec![m(
        ch,
        Method::BasicDeliver(BasicDeliver {
            consumer_tag: tag.into(),
            delivery_tag,
            redelivered: false,
            exchange: "ex".into(),
            routing_key: "rk".into(),
        }),
    )];
    v.extend(content(ch, NO_PROPS, body));
    v
}

/// The only frame written, a `channel.close` or `connection.close`, as
/// (channel, code, text, class id, method id).
pub(super) fn the_close(frames: &[Frame]) -> (u16, u16, String, u16, u16) {
    match frames {
        [
            Frame::Method {
                channel,
                method: Method::ChannelClose(c),
            },
        ] => (
            *channel,
            c.reply_code,
            c.reply_text.to_string(),
            c.class_id,
            c.method_id,
        ),
        [
            Frame::Method {
                channel,
                method: Method::ConnectionClose(c),
            },
        ] => (
            *channel,
            c.reply_code,
            c.reply_text.to_string(),
            c.class_id,
            c.method_id,
        ),
        other => panic!("expected one close, got {other:?}"),
    }
}

pub(super) fn ack(delivery_tag: u64, multiple: bool) -> Method {
    Method::BasicAck(BasicAck {
        delivery_tag,
        multiple,
    })
}

pub(super) fn nack(delivery_tag: u64, multiple: bool, requeue: bool) -> Method {
    Method::BasicNack(BasicNack {
        delivery_tag,
        multiple,
        requeue,
    })
}

pub(super) fn reject(delivery_tag: u64, requeue: bool) -> Method {
    Method::BasicReject(BasicReject {
        delivery_tag,
        requeue,
    })
}

/// The only frame written, a close, as (channel, code, text).
pub(super) fn close_text(frames: &[Frame]) -> (u16, u16, String) {
    let (ch, code, text, ..) = the_close(frames);
    (ch, code, text)
}

/// Differences found by a table test, reported all at once (so a bug
/// report lists every wrong row, not the first).
#[derive(Default)]
pub(super) struct Mismatches(Vec<String>);

impl Mismatches {
    pub fn check<T: PartialEq + std::fmt::Debug>(&mut self, row: impl std::fmt::Debug, got: T, want: T) {
        if got != want {
            self.0.push(format!("{row:?}:\n  got  {got:?}\n  want {want:?}"));
        }
    }

    pub fn assert_none(self) {
        assert!(self.0.is_empty(), "{}", self.0.join("\n"));
    }
}
