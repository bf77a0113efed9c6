//! The connection state machine: protocol header, handshake, tuning, frame
//! dispatch to channels, heartbeats bookkeeping and closing.

use super::Broker;
use super::Event;
use super::auth::{self, MECHANISMS};
use super::channel::Channel;
use super::erl;
use super::table::ChannelTable;
use crate::ids::{ChannelRef, ConnId, ConsumerRef, QueueId, VhostId};
use crate::protocol::methods::*;
use crate::protocol::{
    AmqpError, FRAME_BODY, FRAME_HEADER, FRAME_HEARTBEAT, FRAME_METHOD, FRAME_MIN_SIZE, FieldTable,
    FieldValue, LongStr, Method, PROTOCOL_HEADER, ShortStr, frame_at, reply, split_frames, write_heartbeat,
    write_method_frame,
};
use bytes::{Buf, Bytes, BytesMut};

/// Per-connection settings, from the broker [`crate::config::Config`].
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub frame_max: u32,
    pub channel_max: u16,
    /// Seconds; 0 disables.
    pub heartbeat: u16,
    pub max_message_size: u64,
    pub max_unconfirmed: usize,
    pub tx_max_messages: usize,
    pub tx_max_bytes: usize,
    pub cluster_name: String,
    pub product_version: String,
    /// Longest a delivery may stay unacked before its channel is closed
    /// (RabbitMQ's `consumer_timeout`); 0 = never.
    pub consumer_timeout_ms: u64,
    /// Time allowed from accept to `connection.open` (RabbitMQ: 10 s).
    pub handshake_timeout_ms: u64,
    /// Unsent output past which direct replies to this connection are
    /// dropped: they have no queue to wait in and no flow control, so a
    /// client that does not read must not make the broker hold them.
    pub reply_output_max: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        let l = crate::config::Limits::default();
        SessionConfig {
            frame_max: l.frame_max,
            channel_max: l.channel_max,
            heartbeat: l.heartbeat.as_secs() as u16,
            max_message_size: l.max_message_size,
            max_unconfirmed: l.max_unconfirmed,
            tx_max_messages: l.tx_max_messages,
            tx_max_bytes: l.tx_max_bytes,
            cluster_name: "warren".into(),
            product_version: env!("CARGO_PKG_VERSION").into(),
            consumer_timeout_ms: l.consumer_timeout.as_millis() as u64,
            handshake_timeout_ms: l.handshake_timeout.as_millis() as u64,
            reply_output_max: 4 * l.write_buffer_high,
        }
    }
}

/// RabbitMQ's `analyze_frame`: a frame it cannot even classify (unknown
/// type, a heartbeat with a payload, a method or content header shorter
/// than its fixed fields) is a 501, wherever it comes.
pub(super) fn analyze_frame(kind: u8, payload: &[u8]) -> Result<(), AmqpError> {
    let known = match kind {
        FRAME_METHOD => payload.len() >= 4,
        FRAME_HEADER => payload.len() >= 12,
        FRAME_BODY => true,
        FRAME_HEARTBEAT => payload.is_empty(),
        _ => false,
    };
    if known {
        Ok(())
    } else {
        Err(erl::unknown_frame(kind, payload))
    }
}

/// Where the connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for the 8-byte protocol header.
    Header,
    /// `connection.start` sent.
    Start,
    /// `connection.tune` sent.
    Tune,
    /// `connection.tune-ok` received; waiting for `connection.open`.
    Open,
    /// Open and serving channels.
    Running,
    /// We sent `connection.close`; waiting for `close-ok`.
    Closing,
    /// We answered the client's `connection.close` and released
    /// everything. The socket stays open until the client closes it, so
    /// `close-ok` reaches it first (RabbitMQ's order); a repeated `close`
    /// gets another `close-ok`, anything else is ignored.
    Lingering,
    /// Done: flush the output and close the socket.
    Closed,
}

/// What the runtime should do after feeding input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Read more input.
    NeedInput,
    /// A channel awaits a reply: process events before feeding more input.
    Paused,
    /// Flush the output, then close the socket.
    Close,
}

/// What the client said it supports in `connection.start-ok`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientCaps {
    pub consumer_cancel_notify: bool,
    pub authentication_failure_close: bool,
    pub connection_blocked: bool,
}

/// Counters for management.
#[derive(Debug, Default, Clone, Copy)]
pub struct SessionStats {
    pub recv_frames: u64,
    pub published: u64,
    pub delivered: u64,
    pub confirmed: u64,
    /// Direct replies dropped because the client was not reading (see
    /// [`SessionConfig::reply_output_max`]), since the runtime last took
    /// the count (into the shard's total).
    pub replies_dropped: u64,
}

/// One client connection's protocol state. Owned by the connection's shard
/// (by its connection task).
pub struct Session {
    pub conn: ConnId,
    pub(super) cfg: SessionConfig,
    pub(super) phase: Phase,
    pub(super) out: BytesMut,
    /// The frames being processed, and how far.
    pub(super) chunk: Bytes,
    pub(super) pos: usize,
    pub(super) frame_max: u32,
    pub(super) channel_max: u16,
    pub(super) heartbeat: u16,
    pub(super) user: String,
    pub(super) vhost: VhostId,
    pub(super) vhost_name: String,
    pub client_properties: FieldTable,
    pub caps: ClientCaps,
    pub(super) channels: ChannelTable,
    pub(super) next_epoch: u32,
    pub(super) next_consumer_id: u32,
    /// The channel whose request is in flight; input waits until it ends.
    pub(super) awaiting: Option<u16>,
    /// The connection moves to another shard before its next frame.
    pub(super) handoff_pending: bool,
    /// Where the frame being processed starts in `chunk`.
    pub(super) frame_start: usize,
    /// Handed off once already, or asked and refused, for publishing and
    /// for consuming: a connection moves at most once.
    pub(super) handoff_asked: (bool, bool),
    /// Whether it asked, at its first `channel.open`, to move to the shard
    /// that takes new work (see [`HandOffTarget::Home`]), and whether that
    /// move is the one pending (it does not count as a publish or consume
    /// move: those may follow).
    pub(super) home_asked: bool,
    pub(super) home_pending: bool,
    /// A resource alarm is on (why, for `connection.blocked`): the next
    /// `basic.publish` blocks.
    pub(super) alarm: Option<&'static str>,
    /// Stopped before a `basic.publish` until the alarm clears.
    pub(super) alarm_blocked: bool,
    /// Tracked deliveries encoded since the last flush, per consumer.
    pub(super) written: Vec<(QueueId, ConsumerRef, u32)>,
    /// Channels with confirms to emit.
    pub(super) confirm_dirty: Vec<u16>,
    pub stats: SessionStats,
    /// Why we closed, for the log.
    pub close_reason: Option<String>,
    /// The runtime's clock (ms), refreshed before each batch.
    pub(super) now_ms: u64,
    pub(super) timers: super::timers::Timers,
    /// `connection.open` succeeded: the broker knows the connection and
    /// must be told when it goes (whatever phase it closes from).
    opened: bool,
    /// The broker was told this connection is gone.
    closed_reported: bool,
    /// On a TLS connection, the user its client certificate names (or why
    /// none): EXTERNAL is offered then.
    tls_login: Option<Result<String, &'static str>>,
    /// The SASL mechanism the client logged in with.
    mechanism: &'static str,
    /// Why a login was refused, for the log (the client gets RabbitMQ's
    /// generic text).
    login_failure: Option<String>,
}

impl Session {
    /// A session for a connection accepted at `now` (the runtime's clock,
    /// in milliseconds).
    pub fn new(conn: ConnId, cfg: SessionConfig, now: u64) -> Self {
        let frame_max = cfg.frame_max;
        let channel_max = cfg.channel_max;
        Session {
            conn,
            cfg,
            phase: Phase::Header,
            out: BytesMut::with_capacity(16 * 1024),
            chunk: Bytes::new(),
            pos: 0,
            frame_max,
            channel_max,
            heartbeat: 0,
            user: String::new(),
            vhost: VhostId(0),
            vhost_name: String::new(),
            client_properties: FieldTable::new(),
            caps: ClientCaps::default(),
            channels: ChannelTable::default(),
            next_epoch: 1,
            next_consumer_id: 1,
            awaiting: None,
            handoff_pending: false,
            frame_start: 0,
            handoff_asked: (false, false),
            home_asked: false,
            home_pending: false,
            alarm: None,
            alarm_blocked: false,
            written: Vec::new(),
            confirm_dirty: Vec::new(),
            stats: SessionStats::default(),
            close_reason: None,
            now_ms: now,
            timers: super::timers::Timers::new(now),
            opened: false,
            closed_reported: false,
            tls_login: None,
            mechanism: "",
            login_failure: None,
        }
    }

    /// The connection came over TLS: offer EXTERNAL, which logs in as the
    /// user the client certificate names (or is refused with the reason).
    /// Before the protocol header.
    pub fn set_tls_login(&mut self, login: Result<String, &'static str>) {
        self.tls_login = Some(login);
    }

    /// Sets the clock used to time deliveries (ms).
    pub fn set_clock(&mut self, now_ms: u64) {
        self.now_ms = now_ms;
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }
    pub fn user(&self) -> &str {
        &self.user
    }
    /// "PLAIN", "AMQPLAIN" or "EXTERNAL" once logged in.
    pub fn auth_mechanism(&self) -> &'static str {
        self.mechanism
    }
    pub fn vhost(&self) -> Option<(VhostId, &str)> {
        (self.phase == Phase::Running).then_some((self.vhost, self.vhost_name.as_str()))
    }
    /// Negotiated heartbeat in seconds (0 = off).
    pub fn heartbeat(&self) -> u16 {
        self.heartbeat
    }
    pub fn frame_max(&self) -> u32 {
        self.frame_max
    }
    pub fn channel_count(&self) -> usize {
        self.channels.len()
    }
    pub fn is_paused(&self) -> bool {
        self.awaiting.is_some() || self.handoff_pending || self.alarm_blocked
    }

    /// A resource alarm went on or off. As RabbitMQ does, a connection is
    /// blocked when it next sends `basic.publish` (it gets
    /// `connection.blocked` then, and nothing more of its input is
    /// processed, however far its bodies got); connections that only
    /// consume carry on.
    pub fn set_alarm(&mut self, reason: Option<&'static str>) {
        self.alarm = reason;
        if reason.is_none() && self.alarm_blocked {
            self.alarm_blocked = false;
            self.write_blocked(false);
        }
    }

    /// Stopped by the alarm before a `basic.publish`.
    pub fn alarm_blocked(&self) -> bool {
        self.alarm_blocked
    }

    /// The session stopped before a frame that a shard closer to its queue
    /// should process: the runtime moves the connection there and calls
    /// [`Session::rebind`].
    pub fn handoff_pending(&self) -> bool {
        self.handoff_pending
    }

    /// The connection now lives on another shard, as `conn`.
    pub fn rebind(&mut self, conn: ConnId) {
        self.conn = conn;
        for ch in self.channels.iter_mut() {
            ch.cref.conn = conn;
        }
        self.handoff_pending = false;
        if !std::mem::take(&mut self.home_pending) {
            self.handoff_asked = (true, true);
        }
    }

    /// The hand-off could not be carried out: go on here.
    pub fn stay(&mut self) {
        self.handoff_pending = false;
        self.home_pending = false;
    }

    /// Nothing of this connection is anywhere else in the broker: no
    /// consumers, unacked deliveries, unconfirmed publishes, transactions
    /// or requests in flight, no channel closing or half-way through a
    /// publish. Such a connection can move to another shard.
    pub(super) fn quiet(&self) -> bool {
        self.phase == Phase::Running
            && self.awaiting.is_none()
            && self.written.is_empty()
            && self.confirm_dirty.is_empty()
            && self.channels.iter().all(|c| c.is_quiet())
    }
    /// Frames already taken from the read buffer but not yet processed
    /// (they wait behind a reply): feed again without new input.
    pub fn has_unprocessed_frames(&self) -> bool {
        self.pos < self.chunk.len()
    }
    /// Unconfirmed publishes over the limit: stop reading until confirms drain.
    pub fn over_limits(&self) -> bool {
        self.channels
            .iter()
            .any(|c| c.confirms.outstanding() >= self.cfg.max_unconfirmed)
    }

    /// Pending output; the runtime writes it and clears what it wrote.
    pub fn output(&mut self) -> &mut BytesMut {
        &mut self.out
    }

    /// Tells a client that supports it that we stopped reading its
    /// publishes (`connection.blocked`), or resumed.
    pub fn write_blocked(&mut self, blocked: bool) {
        if !self.caps.connection_blocked || self.phase != Phase::Running {
            return;
        }
        let m = if blocked {
            Method::ConnectionBlocked(ConnectionBlocked {
                reason: ShortStr::from_static(self.alarm.unwrap_or("low on memory")),
            })
        } else {
            Method::ConnectionUnblocked(ConnectionUnblocked {})
        };
        write_method_frame(&mut self.out, 0, &m);
    }

    pub fn write_heartbeat(&mut self) {
        write_heartbeat(&mut self.out);
    }

    /// Consumes every complete frame in `buf` (or until a channel must wait
    /// for a reply).
    pub fn feed(&mut self, buf: &mut BytesMut, b: &mut impl Broker) -> Status {
        loop {
            match self.phase {
                Phase::Closed => return Status::Close,
                Phase::Header => {
                    if buf.len() < 8 {
                        // A client sending something else entirely (HTTP…)
                        // would never send 8 bytes; answer as soon as the
                        // prefix cannot match.
                        if !PROTOCOL_HEADER.starts_with(&buf[..]) && !buf.is_empty() {
                            return self.bad_header();
                        }
                        return Status::NeedInput;
                    }
                    if buf[..8] != PROTOCOL_HEADER {
                        return self.bad_header();
                    }
                    buf.advance(8);
                    self.send_start();
                    continue;
                }
                _ => {}
            }
            if self.is_paused() {
                return Status::Paused;
            }
            if self.pos < self.chunk.len() {
                self.process_chunk(b);
                self.end_batch(b);
                continue;
            }
            self.release_chunk();
            match split_frames(buf, self.frame_max) {
                Ok(Some(chunk)) => {
                    self.chunk = chunk;
                    self.pos = 0;
                }
                Ok(None) => return Status::NeedInput,
                Err(e) => {
                    self.close_connection(e, b);
                    // Frames already parsed are past; nothing after the bad
                    // one can be trusted.
                    buf.clear();
                    return if self.phase == Phase::Closed {
                        Status::Close
                    } else {
                        Status::NeedInput
                    };
                }
            }
        }
    }

    fn bad_header(&mut self) -> Status {
        self.out.extend_from_slice(&PROTOCOL_HEADER);
        self.phase = Phase::Closed;
        self.close_reason = Some("bad protocol header".into());
        Status::Close
    }

    /// Detaches pending publishes from the finished chunk so its memory can
    /// be freed once the messages that borrow from it are gone.
    fn release_chunk(&mut self) {
        if self.chunk.is_empty() {
            return;
        }
        let chunk = std::mem::take(&mut self.chunk);
        for ch in self.channels.iter_mut() {
            if !ch.assembly.is_idle() {
                ch.assembly.detach(&chunk);
            }
        }
        self.pos = 0;
    }

    fn process_chunk(&mut self, b: &mut impl Broker) {
        while !self.is_paused() && !matches!(self.phase, Phase::Closed) {
            // split_frames checked every frame of the run (size, end octet).
            let Some((kind, channel, payload, next)) = frame_at(&self.chunk, self.pos) else {
                return;
            };
            self.frame_start = self.pos;
            self.pos = next;
            self.stats.recv_frames += 1;
            let r = self.handle_frame(kind, channel, payload.start, payload.end, b);
            if let Err((ch, e)) = r {
                if ch == 0 || e.is_hard() {
                    self.close_connection(e, b);
                } else {
                    self.close_channel(ch, e, b);
                }
            }
        }
    }

    fn handle_frame(
        &mut self,
        kind: u8,
        channel: u16,
        start: usize,
        end: usize,
        b: &mut impl Broker,
    ) -> Result<(), (u16, AmqpError)> {
        // The hot path: content and methods on a channel of an open
        // connection.
        if channel != 0
            && self.phase == Phase::Running
            && matches!(kind, FRAME_METHOD | FRAME_HEADER | FRAME_BODY)
        {
            return self
                .handle_channel_frame(kind, channel, start, end, b)
                .map_err(|e| (channel, e));
        }
        self.handle_other_frame(kind, channel, start, end, b)
            .map_err(|e| (0, e))
    }

    /// Frames on channel 0, heartbeats, frames of unknown types and
    /// anything while not running, as RabbitMQ's reader takes them.
    fn handle_other_frame(
        &mut self,
        kind: u8,
        channel: u16,
        start: usize,
        end: usize,
        b: &mut impl Broker,
    ) -> Result<(), AmqpError> {
        let payload = &self.chunk[start..end];
        if matches!(self.phase, Phase::Closing | Phase::Lingering) {
            // Only the close handshake matters now; what cannot be decoded
            // is ignored like everything else.
            if kind == FRAME_METHOD
                && channel == 0
                && let Ok(m) = Method::decode(&self.chunk.slice(start..end))
            {
                match m {
                    Method::ConnectionCloseOk(_) if self.phase == Phase::Closing => self.finish_close(b),
                    // Both sides closing at once, or a client closing from
                    // several threads: each close gets its close-ok.
                    Method::ConnectionClose(_) => {
                        write_method_frame(&mut self.out, 0, &Method::ConnectionCloseOk(ConnectionCloseOk {}))
                    }
                    _ => {}
                }
            }
            return Ok(());
        }
        if channel != 0 && self.phase != Phase::Running {
            // Before connection.open no channel exists, whatever the frame.
            return Err(erl::unexpected_frame(kind, payload));
        }
        analyze_frame(kind, payload)?;
        match kind {
            FRAME_HEARTBEAT if channel == 0 => Ok(()),
            FRAME_METHOD if channel == 0 => {
                let m = Method::decode(&self.chunk.slice(start..end))?;
                let (class_id, method_id) = (m.class_id(), m.method_id());
                let phase = self.phase;
                self.handle_connection_method(m, b).map_err(|e| {
                    // RabbitMQ names the connection method that failed,
                    // except in a refused login, which it reports with no
                    // method (the only close sent before tune).
                    if phase != Phase::Start && e.class_id == 0 && e.method_id == 0 {
                        e.with_method(class_id, method_id)
                    } else {
                        e
                    }
                })
            }
            // Content on channel 0, a heartbeat on another channel.
            _ => Err(erl::unexpected_frame(kind, payload)),
        }
    }

    fn send_start(&mut self) {
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
        let s = |v: String| FieldValue::LongStr(LongStr::from(v));
        let props: FieldTable = vec![
            (ShortStr::from_static("capabilities"), FieldValue::Table(caps)),
            (
                ShortStr::from_static("cluster_name"),
                s(self.cfg.cluster_name.clone()),
            ),
            (
                ShortStr::from_static("copyright"),
                s("Copyright (c) the warren authors".into()),
            ),
            (
                ShortStr::from_static("information"),
                s("warren: a RabbitMQ-compatible AMQP 0-9-1 broker".into()),
            ),
            (ShortStr::from_static("platform"), s("Rust".into())),
            (ShortStr::from_static("product"), s("warren".into())),
            (
                ShortStr::from_static("version"),
                s(self.cfg.product_version.clone()),
            ),
        ]
        .into_iter()
        .collect();
        let start = Method::ConnectionStart(ConnectionStart {
            version_major: 0,
            version_minor: 9,
            server_properties: props,
            mechanisms: LongStr::from_static(if self.tls_login.is_some() {
                auth::MECHANISMS_TLS
            } else {
                MECHANISMS
            }),
            locales: LongStr::from_static("en_US"),
        });
        write_method_frame(&mut self.out, 0, &start);
        self.phase = Phase::Start;
    }

    fn expect_phase(&self, want: Phase) -> Result<(), AmqpError> {
        if self.phase == want {
            Ok(())
        } else {
            Err(self.unexpected_method())
        }
    }

    /// A connection method (or another class's) where it has no place:
    /// RabbitMQ's `unexpected method in connection state ...` (504), whose
    /// method ids the caller adds.
    fn unexpected_method(&self) -> AmqpError {
        let state = match self.phase {
            Phase::Header | Phase::Start => "starting",
            Phase::Tune => "tuning",
            Phase::Open => "opening",
            Phase::Running => "running",
            Phase::Closing | Phase::Lingering | Phase::Closed => "closing",
        };
        AmqpError::new(
            reply::CHANNEL_ERROR,
            format!("unexpected method in connection state {state}"),
        )
    }

    fn handle_connection_method(&mut self, m: Method, b: &mut impl Broker) -> Result<(), AmqpError> {
        match m {
            Method::ConnectionStartOk(ref ok) => {
                self.expect_phase(Phase::Start)?;
                self.client_properties = ok.client_properties.clone();
                if let Some(FieldValue::Table(caps)) = ok.client_properties.get("capabilities") {
                    let flag = |k: &str| caps.get(k).and_then(|v| v.as_bool()).unwrap_or(false);
                    self.caps = ClientCaps {
                        consumer_cancel_notify: flag("consumer_cancel_notify"),
                        authentication_failure_close: flag("authentication_failure_close"),
                        connection_blocked: flag("connection.blocked"),
                    };
                }
                let mechanism = ok.mechanism.as_bytes();
                let creds = match (mechanism, &self.tls_login) {
                    (b"EXTERNAL", Some(Ok(user))) => auth::Credentials {
                        user: user.clone(),
                        password: None,
                    },
                    (b"EXTERNAL", Some(Err(why))) => {
                        // The client is told what RabbitMQ tells it; the
                        // log gets the reason.
                        self.login_failure = Some(format!("EXTERNAL login refused: {why}"));
                        return Err(auth::refused("EXTERNAL"));
                    }
                    _ => auth::parse_response(mechanism, ok.response.as_bytes())?,
                };
                b.check_login(&creds.user, creds.password.as_deref())
                    .map_err(|e| {
                        if e.code == reply::ACCESS_REFUSED {
                            auth::refused(&String::from_utf8_lossy(mechanism))
                        } else {
                            e
                        }
                    })?;
                self.user = creds.user;
                self.mechanism = match mechanism {
                    b"EXTERNAL" => "EXTERNAL",
                    b"AMQPLAIN" => "AMQPLAIN",
                    _ => "PLAIN",
                };
                let tune = Method::ConnectionTune(ConnectionTune {
                    channel_max: self.cfg.channel_max,
                    frame_max: self.cfg.frame_max,
                    heartbeat: self.cfg.heartbeat,
                });
                write_method_frame(&mut self.out, 0, &tune);
                self.phase = Phase::Tune;
                Ok(())
            }
            Method::ConnectionTuneOk(ref t) => {
                self.expect_phase(Phase::Tune)?;
                let server_max = self.cfg.frame_max;
                if t.frame_max != 0 && t.frame_max < FRAME_MIN_SIZE {
                    return Err(AmqpError::not_allowed(format!(
                        "frame_max={} < {} min size",
                        t.frame_max, FRAME_MIN_SIZE
                    )));
                }
                if server_max != 0 && (t.frame_max == 0 || t.frame_max > server_max) {
                    return Err(AmqpError::not_allowed(format!(
                        "frame_max={} > {} max size",
                        t.frame_max, server_max
                    )));
                }
                let chmax = self.cfg.channel_max;
                if chmax != 0 && (t.channel_max == 0 || t.channel_max > chmax) {
                    return Err(AmqpError::not_allowed(format!(
                        "channel_max={} > {} max channels",
                        t.channel_max, chmax
                    )));
                }
                self.frame_max = t.frame_max;
                self.channel_max = if t.channel_max == 0 {
                    u16::MAX
                } else {
                    t.channel_max
                };
                self.heartbeat = t.heartbeat;
                self.phase = Phase::Open;
                Ok(())
            }
            Method::ConnectionOpen(ref o) => {
                self.expect_phase(Phase::Open)?;
                let name = o.virtual_host.as_str().into_owned();
                self.vhost = b.open_vhost(&self.user, &name)?;
                self.vhost_name = name;
                write_method_frame(
                    &mut self.out,
                    0,
                    &Method::ConnectionOpenOk(ConnectionOpenOk {
                        known_hosts: ShortStr::default(),
                    }),
                );
                self.phase = Phase::Running;
                self.opened = true;
                Ok(())
            }
            Method::ConnectionClose(_) => {
                self.expect_phase(Phase::Running)?;
                write_method_frame(&mut self.out, 0, &Method::ConnectionCloseOk(ConnectionCloseOk {}));
                self.close_reason = Some("client closed".into());
                self.release(b);
                self.phase = Phase::Lingering;
                self.timers.closing_since = self.now_ms;
                Ok(())
            }
            Method::ConnectionUpdateSecret(_) => {
                self.expect_phase(Phase::Running)?;
                // Only meaningful for token-based auth; PLAIN users keep theirs.
                write_method_frame(
                    &mut self.out,
                    0,
                    &Method::ConnectionUpdateSecretOk(ConnectionUpdateSecretOk {}),
                );
                Ok(())
            }
            // Everything else, a stray close-ok included (RabbitMQ 3.10
            // takes close-ok only once it sent close), and methods of other
            // classes on channel 0.
            _ => Err(self.unexpected_method()),
        }
    }

    /// Sends `connection.close` for a hard error and waits for `close-ok`.
    pub fn close_connection(&mut self, e: AmqpError, b: &mut impl Broker) {
        if matches!(self.phase, Phase::Closing | Phase::Lingering | Phase::Closed) {
            return;
        }
        self.close_reason = Some(self.login_failure.take().unwrap_or_else(|| e.reply_text()));
        if matches!(self.phase, Phase::Header) {
            self.phase = Phase::Closed;
            return;
        }
        // Before `connection.open` RabbitMQ does not trust the peer and just
        // closes the socket, except for a refused login when the client
        // asked for `authentication_failure_close`.
        let silent = match self.phase {
            Phase::Start => !(e.code == reply::ACCESS_REFUSED && self.caps.authentication_failure_close),
            Phase::Tune => true,
            _ => false,
        };
        if silent {
            self.finish_close(b);
            return;
        }
        let close = Method::ConnectionClose(ConnectionClose {
            reply_code: e.code,
            reply_text: ShortStr::from_string_lossy(&e.reply_text()),
            class_id: e.class_id,
            method_id: e.method_id,
        });
        write_method_frame(&mut self.out, 0, &close);
        self.teardown_channels(b);
        self.phase = Phase::Closing;
        self.timers.closing_since = self.now_ms;
    }

    /// The runtime lost the socket or gave up waiting: release everything.
    pub fn abort(&mut self, reason: &str, b: &mut impl Broker) {
        if self.close_reason.is_none() {
            self.close_reason = Some(reason.into());
        }
        self.finish_close(b);
    }

    fn finish_close(&mut self, b: &mut impl Broker) {
        if self.phase == Phase::Closed {
            return;
        }
        self.release(b);
        self.phase = Phase::Closed;
    }

    /// Gives back everything the connection holds, once.
    fn release(&mut self, b: &mut impl Broker) {
        self.teardown_channels(b);
        if self.opened && !self.closed_reported {
            self.closed_reported = true;
            b.connection_closed(self.conn);
        }
    }

    fn teardown_channels(&mut self, b: &mut impl Broker) {
        for mut ch in self.channels.drain() {
            ch.release(b);
        }
        self.awaiting = None;
    }

    /// Applies an event from elsewhere in the broker.
    pub fn on_event(&mut self, ev: Event, b: &mut impl Broker) {
        if let Event::ForceClose { code, text } = ev {
            self.close_connection(AmqpError::new(code, text), b);
            return;
        }
        if let Event::QueueMoved { queue } = ev {
            if self.phase == Phase::Running {
                for ch in self.channels.iter_mut() {
                    ch.resume_consumers(queue, b);
                }
            }
            return;
        }
        let Some(cref) = ev.channel() else { return };
        let live = self.phase == Phase::Running
            && self
                .channels
                .get(cref.channel)
                .is_some_and(|c| c.cref == cref && !c.closing);
        if !live {
            Channel::orphan_event(ev, b);
            return;
        }
        let r = self.channel_event(cref.channel, ev, b);
        if let Err(e) = r {
            if e.is_hard() {
                self.close_connection(e, b);
            } else {
                self.close_channel(cref.channel, e, b);
            }
        }
    }

    /// Emits coalesced confirms; call after each batch of input or events.
    pub fn end_batch(&mut self, b: &mut impl Broker) {
        while let Some(n) = self.confirm_dirty.pop() {
            if let Some(ch) = self.channels.get_mut(n) {
                ch.confirm_dirty = false;
                ch.emit_confirms(&mut self.out, &mut self.stats);
                self.finish_commit(n, b);
            }
        }
    }

    /// The output was written to the socket: release transport-window
    /// credit for the tracked deliveries in it.
    pub fn report_written(&mut self, b: &mut impl Broker) {
        for (q, c, n) in self.written.drain(..) {
            b.written(q, c, n);
        }
    }

    pub(super) fn new_channel_ref(&mut self, channel: u16) -> ChannelRef {
        let epoch = self.next_epoch;
        self.next_epoch = self.next_epoch.wrapping_add(1).max(1);
        ChannelRef {
            conn: self.conn,
            channel,
            epoch,
        }
    }
}
