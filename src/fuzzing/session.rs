//! The session harness: one client connection to a real single-shard hub
//! (topology, queue owner, control plane, stores on a simulated disk),
//! driven as the runtime drives it.

use crate::config::Config;
use crate::hub::{CloseMatch, ConnState, Hub};
use crate::ids::QueueId;
use crate::protocol::methods::{ConnectionOpen, ConnectionStartOk, ConnectionTuneOk};
use crate::protocol::{
    FieldTable, FieldValue, Frame, LongStr, Method, PROTOCOL_HEADER, ShortStr, decode_frame, reply,
    write_method_frame,
};
use crate::session::{Event, Phase, Session, SessionConfig, Status};
use crate::storage::SimDisk;
use bytes::BytesMut;
use std::sync::Arc;

/// Rounds of events and input one turn may take before the harness calls
/// it a livelock.
const MAX_ROUNDS: usize = 100_000;

/// The bytes of a valid handshake: protocol header, `start-ok` (PLAIN,
/// guest), `tune-ok` and `connection.open` of "/".
pub fn handshake(frame_max: u32, heartbeat: u16) -> BytesMut {
    let mut out = BytesMut::new();
    out.extend_from_slice(&PROTOCOL_HEADER);
    let caps: FieldTable = [
        "consumer_cancel_notify",
        "connection.blocked",
        "publisher_confirms",
        "basic.nack",
    ]
    .into_iter()
    .map(|k| (ShortStr::from_static(k), FieldValue::Bool(true)))
    .collect();
    let start_ok = Method::ConnectionStartOk(ConnectionStartOk {
        client_properties: [(ShortStr::from_static("capabilities"), FieldValue::Table(caps))]
            .into_iter()
            .collect(),
        mechanism: "PLAIN".into(),
        response: LongStr::from_static("\0guest\0guest"),
        locale: "en_US".into(),
    });
    write_method_frame(&mut out, 0, &start_ok);
    let tune_ok = Method::ConnectionTuneOk(ConnectionTuneOk {
        channel_max: 2047,
        frame_max,
        heartbeat,
    });
    write_method_frame(&mut out, 0, &tune_ok);
    let open = Method::ConnectionOpen(ConnectionOpen {
        virtual_host: "/".into(),
        ..Default::default()
    });
    write_method_frame(&mut out, 0, &open);
    out
}

/// Property: a session over a real hub, fed arbitrary bytes, never panics
/// (nor does the hub behind it), only ever writes well-formed frames
/// within its `frame_max` (or RabbitMQ's protocol header, refusing a bad
/// one), reaches a quiet state after every batch (no livelock), and once
/// the connection is gone (the client hung up) no queue holds a consumer
/// or an unacked delivery of it.
///
/// Input: a mode byte (bit 0: prepend a valid handshake; bit 1: its
/// `frame_max` is 4096 instead of 131072; bit 2: it asks for a 5 s
/// heartbeat), a length `n` and `n` schedule bytes, then the byte stream.
/// Each schedule byte either feeds the next 1–128 bytes of the stream
/// (bit 7 clear) or moves the clock by up to 32 s (bit 7 set) and runs the
/// timers; what the schedule leaves of the stream is fed in one piece.
pub fn session(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (schedule, stream) = match rest.split_first() {
        Some((&n, rest)) => rest.split_at((n as usize).min(rest.len())),
        None => (&[][..], &[][..]),
    };
    let mut h = Harness::new();
    let mut input = BytesMut::new();
    if mode & 1 != 0 {
        let frame_max = if mode & 2 != 0 { 4096 } else { 131_072 };
        let heartbeat = if mode & 4 != 0 { 5 } else { 0 };
        input = handshake(frame_max, heartbeat);
    }
    input.extend_from_slice(stream);
    let mut at = 0;
    for &s in schedule {
        if h.done() {
            break;
        }
        if s & 0x80 != 0 {
            h.tick((s & 0x7f) as u64 * 250);
        } else {
            let n = ((s as usize) + 1).min(input.len() - at);
            h.read(&input[at..at + n]);
            at += n;
        }
    }
    if !h.done() && at < input.len() {
        h.read(&input[at..]);
    }
    h.hang_up();
}

struct Harness {
    disk: SimDisk,
    hub: Hub,
    state: ConnState,
    session: Session,
    /// The client's bytes not yet taken by the session.
    rbuf: BytesMut,
    /// What the session wrote, not yet checked.
    wire: BytesMut,
    /// Queues that asked the connection to stop reading.
    throttled: Vec<QueueId>,
    /// Events for the connection from outside the hub (a vhost's or
    /// user's deletion closing it).
    pending: Vec<Event>,
    /// The clock (ms); the runtime's wall clock and monotonic clock alike.
    now: u64,
    /// The session closed the connection, or the client hung up.
    gone: bool,
    /// The session sent RabbitMQ's protocol header (a bad one came in).
    header_refused: bool,
}

impl Harness {
    fn new() -> Harness {
        let disk = SimDisk::new(1);
        let mut cfg = Config {
            data_dir: "/fuzz/data".into(),
            shards: 1,
            ..Default::default()
        };
        // Small segments: roll-over and segment removal happen early.
        cfg.limits.segment_size = 4096;
        let now = 1_000_000;
        let (log, changes) =
            crate::hub::recover_topology(&disk, &cfg, 1, [1, 2, 3, 4]).expect("a fresh data dir boots");
        let mut hub = Hub::new(
            0,
            1,
            Arc::new(cfg),
            SessionConfig::default(),
            Arc::new(disk.clone()),
            1,
            &changes,
            Some(log),
            now,
        )
        .expect("a fresh hub starts");
        let id = hub.new_conn_id();
        let session = Session::new(id, hub.session_cfg.clone(), now);
        Harness {
            disk,
            hub,
            state: ConnState::new(Some(std::net::SocketAddr::from(([127, 0, 0, 1], 40000)))),
            session,
            rbuf: BytesMut::new(),
            wire: BytesMut::new(),
            throttled: Vec::new(),
            pending: Vec::new(),
            now,
            gone: false,
            header_refused: false,
        }
    }

    fn done(&self) -> bool {
        self.gone
    }

    /// Bytes arrive from the client.
    fn read(&mut self, bytes: &[u8]) {
        self.rbuf.extend_from_slice(bytes);
        self.session.note_read(self.now);
        self.turn();
    }

    /// Time passes: the connection's timers and the hub's sweep run.
    fn tick(&mut self, ms: u64) {
        self.now += ms;
        if let Some(at) = self.session.poll_timeout()
            && at <= self.now
        {
            let mut b = self.hub.client(&mut self.state, self.now);
            self.session.set_clock(self.now);
            self.session.handle_timeout(self.now, &mut b);
        }
        self.hub.sweep(self.now);
        self.turn();
    }

    /// The client closed its socket: the session is aborted as the runtime
    /// does, everything settles, and the connection left nothing behind.
    fn hang_up(&mut self) {
        if !self.gone {
            let mut b = self.hub.client(&mut self.state, self.now);
            self.session.abort("client closed TCP connection", &mut b);
            self.gone = true;
        }
        self.turn();
        assert!(
            self.wire.is_empty(),
            "a partial frame in the output: {:?}",
            self.wire
        );
        for slot in self.hub.owner.queues() {
            assert_eq!(slot.q.consumer_count(), 0, "queue {} kept a consumer", slot.name);
            assert_eq!(
                slot.q.unacked_count(),
                0,
                "queue {} kept an unacked delivery",
                slot.name
            );
        }
    }

    /// Runs until nothing is left to do: events to the session, input to
    /// the session (as far as it takes it), the hub's step, syncs.
    fn turn(&mut self) {
        for _ in 0..MAX_ROUNDS {
            if !self.round() {
                return;
            }
        }
        panic!("no quiet state after {MAX_ROUNDS} rounds");
    }

    /// One round; whether anything happened.
    fn round(&mut self) -> bool {
        let now = self.now;
        let mut work = false;
        let mut events = std::mem::take(&mut self.hub.out.events);
        events.extend(self.pending.drain(..).map(|ev| (self.session.conn, ev)));
        let mut orphans = Vec::new();
        {
            let mut b = self.hub.client(&mut self.state, now);
            self.session.set_clock(now);
            let mut any = false;
            for (conn, ev) in events {
                work = true;
                if self.gone || conn != self.session.conn {
                    orphans.push(ev);
                    continue;
                }
                match ev {
                    Event::Throttle { queue, on } => {
                        self.throttled.retain(|q| *q != queue);
                        if on {
                            self.throttled.push(queue);
                        }
                    }
                    Event::Describe => {}
                    ev => {
                        self.session.on_event(ev, &mut b);
                        any = true;
                    }
                }
            }
            if any {
                self.session.end_batch(&mut b);
            }
            if !self.gone {
                let lingering = self.session.phase() == Phase::Lingering;
                let can_feed = lingering || self.throttled.is_empty() && !self.session.over_limits();
                if can_feed
                    && (!self.rbuf.is_empty() || self.session.has_unprocessed_frames())
                    && !self.session.is_paused()
                {
                    let before = (self.rbuf.len(), self.session.has_unprocessed_frames());
                    if self.session.feed(&mut self.rbuf, &mut b) == Status::Close {
                        self.session.abort("closed", &mut b);
                    }
                    work |= before != (self.rbuf.len(), self.session.has_unprocessed_frames());
                }
            }
            let out = std::mem::take(self.session.output());
            if !out.is_empty() {
                work = true;
                self.session.note_written(now);
                self.session.report_written(&mut b);
                self.wire.extend_from_slice(&out);
            }
            if !self.gone && self.session.phase() == Phase::Closed {
                self.gone = true;
                work = true;
            }
        }
        self.check_output();
        for ev in orphans {
            self.hub.orphan(ev);
        }
        self.hub.step(now);
        let log_syncs = std::mem::take(&mut self.hub.out.log_syncs);
        for f in log_syncs {
            work = true;
            let ok = f.sync().is_ok();
            self.hub.log_synced(ok, now);
        }
        if self.hub.owner.wants_sync() {
            let batch = self.hub.take_sync();
            if !batch.is_empty() {
                work = true;
                for (_, f) in &batch.files {
                    f.begin_sync();
                }
                let mut failed = Vec::new();
                for (q, f) in &batch.files {
                    if f.sync().is_err() && !failed.contains(q) {
                        failed.push(*q);
                    }
                }
                self.hub.synced(batch.waiters, &failed, now);
            }
        }
        for (m, text) in std::mem::take(&mut self.hub.out.closes) {
            let hit = match m {
                CloseMatch::Vhost(v) => self.session.vhost().is_some_and(|(_, name)| name == v),
                CloseMatch::User(u) => self.session.user() == u,
            };
            if hit {
                work = true;
                self.pending.push(Event::ForceClose {
                    code: reply::CONNECTION_FORCED,
                    text,
                });
            }
        }
        // One shard: nothing is handed over, nothing leaves for a peer.
        assert!(self.hub.out.adopted.is_empty());
        let _ = &self.disk;
        work
    }

    /// Everything the session wrote is well-formed: whole frames (or the
    /// protocol header refusing a bad one) within the connection's
    /// `frame_max`, each payload decodable.
    fn check_output(&mut self) {
        if self.wire.starts_with(&PROTOCOL_HEADER)
            && !self.header_refused
            && self.session.phase() == Phase::Closed
        {
            self.header_refused = true;
            let _ = self.wire.split_to(PROTOCOL_HEADER.len());
        }
        let frame_max = self.session.frame_max();
        loop {
            match decode_frame(&mut self.wire, frame_max) {
                Ok(Some(raw)) => {
                    if let Err(e) = Frame::decode(raw.clone()) {
                        panic!("the session wrote an undecodable frame {raw:?}: {e:?}");
                    }
                }
                Ok(None) => break,
                Err(e) => panic!("the session wrote a bad frame: {e:?}: {:?}", self.wire),
            }
        }
        // Frames are written whole: nothing may be left between batches.
        assert!(
            self.wire.is_empty(),
            "a partial frame in the output: {:?}",
            self.wire
        );
    }
}
