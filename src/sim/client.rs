//! Simulated AMQP clients: real frames over the simulated network, in the
//! shapes applications use — confirming publishers, acking consumers with
//! a prefetch, and a prober of length-limited queues. Each reports what
//! it sees to the [`Checker`].

use super::checker::{Checker, MsgId, body_of, id_of};
use super::rng::Rng;
use crate::protocol::methods::*;
use crate::protocol::{
    FieldTable, FieldValue, Frame, LongStr, Method, PROTOCOL_HEADER, ShortStr, decode_frame, write_basic_ack,
    write_content, write_method_frame,
};
use bytes::BytesMut;
use std::collections::{BTreeMap, VecDeque};

/// A queue of the workload, as every client declares it.
#[derive(Debug, Clone)]
pub struct QueueSpec {
    pub name: String,
    pub durable: bool,
    /// `x-max-length`.
    pub max_length: Option<u32>,
    /// `x-message-ttl`, ms.
    pub ttl_ms: Option<u64>,
}

impl QueueSpec {
    fn arguments(&self) -> FieldTable {
        let mut t = FieldTable::new();
        if let Some(l) = self.max_length {
            t.insert("x-max-length".into(), FieldValue::I32(l as i32));
        }
        if let Some(ttl) = self.ttl_ms {
            t.insert("x-message-ttl".into(), FieldValue::I64(ttl as i64));
        }
        t
    }
}

#[derive(Debug, Clone)]
pub enum Role {
    /// Publishes `total` messages (persistent on a durable queue), with
    /// confirms, at most `window` unconfirmed; or (`tx`) in transactions
    /// of up to `window` messages, each taken as confirmed at `commit-ok`.
    Publisher {
        queue: QueueSpec,
        total: u64,
        window: usize,
        tx: bool,
    },
    /// Consumes with a prefetch; acks, sometimes requeues.
    Consumer { queue: QueueSpec, prefetch: u16 },
    /// Publishes N to a length-limited queue and gets in the same write.
    Prober { queue: QueueSpec, limit: u32 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    Start,
    Tune,
    Open,
    Channel,
    /// Setup replies still expected.
    Setup(u8),
    Running,
}

enum Content {
    Deliver { tag: u64, redelivered: bool },
    GetOk { left: u32 },
}

/// One connection of a client.
pub struct Conn {
    /// Which connection of this client it is.
    pub incarnation: u32,
    st: St,
    rbuf: BytesMut,
    /// Bytes to send.
    pub out: BytesMut,
    frame_max: u32,
    next_confirm: u64,
    outstanding: BTreeMap<u64, MsgId>,
    unacked: VecDeque<(u64, MsgId)>,
    /// The consumer channel's identity for the order check.
    session: u64,
    content: Option<(Content, usize, Vec<u8>)>,
    /// The probe in flight: what was published, waiting for the get.
    probe: Option<Vec<MsgId>>,
    purging: bool,
    /// A transactional publisher's `tx.commit` awaits its answer.
    committing: bool,
    /// The queue this connection uses: the workload's, or for a prober an
    /// exclusive one of its own (a reconnected prober must not find what
    /// its previous connection left, or what that one still had in flight).
    queue: String,
    exclusive: bool,
}

pub struct Client {
    pub id: u32,
    pub role: Role,
    pub conn: Option<Conn>,
    incarnations: u32,
    /// Publisher: messages sent so far.
    pub sent: u64,
    sessions: u64,
}

/// What a client returns when the broker refused it legitimately: it
/// drops the connection and starts over.
pub const REFUSED: &str = "refused";

fn method(out: &mut BytesMut, m: Method) {
    write_method_frame(out, 1, &m);
}

fn ss(s: &str) -> ShortStr {
    ShortStr::from_string_lossy(s)
}

impl Client {
    pub fn new(id: u32, role: Role) -> Client {
        Client {
            id,
            role,
            conn: None,
            incarnations: 0,
            sent: 0,
            sessions: 0,
        }
    }

    /// A publisher that has sent everything and had it all answered.
    pub fn finished(&self) -> bool {
        match &self.role {
            Role::Publisher { total, .. } => {
                self.sent >= *total && self.conn.as_ref().is_none_or(|c| c.outstanding.is_empty())
            }
            _ => true,
        }
    }

    /// Opens a new connection: the protocol header goes out.
    pub fn connect(&mut self) -> u32 {
        self.incarnations += 1;
        let (queue, exclusive) = match &self.role {
            Role::Prober { queue, .. } => (format!("{}-{}-{}", queue.name, self.id, self.incarnations), true),
            Role::Publisher { queue, .. } | Role::Consumer { queue, .. } => (queue.name.clone(), false),
        };
        let mut out = BytesMut::new();
        out.extend_from_slice(&PROTOCOL_HEADER);
        self.conn = Some(Conn {
            incarnation: self.incarnations,
            st: St::Start,
            rbuf: BytesMut::new(),
            out,
            frame_max: 131_072,
            next_confirm: 1,
            outstanding: BTreeMap::new(),
            unacked: VecDeque::new(),
            session: 0,
            content: None,
            probe: None,
            purging: false,
            committing: false,
            queue,
            exclusive,
        });
        self.incarnations
    }

    /// The connection is gone: unconfirmed publishes are in doubt (neither
    /// required nor refused), unacked deliveries go back to the queue.
    pub fn lost(&mut self) {
        self.conn = None;
    }

    /// Bytes from the broker.
    pub fn on_bytes(&mut self, data: &[u8], now_us: u64, check: &mut Checker) -> Result<(), String> {
        let Some(c) = &mut self.conn else { return Ok(()) };
        c.rbuf.extend_from_slice(data);
        loop {
            let Some(c) = &mut self.conn else { return Ok(()) };
            let raw = match decode_frame(&mut c.rbuf, 0) {
                Ok(Some(raw)) => raw,
                Ok(None) => return Ok(()),
                Err(e) => return Err(format!("client {}: bad frame from the broker: {e:?}", self.id)),
            };
            let frame =
                Frame::decode(raw).map_err(|e| format!("client {}: undecodable frame: {e:?}", self.id))?;
            self.on_frame(frame, now_us, check)?;
        }
    }

    fn on_frame(&mut self, frame: Frame, now_us: u64, check: &mut Checker) -> Result<(), String> {
        let id = self.id;
        let role = self.role.clone();
        let c = self.conn.as_mut().expect("connected");
        match frame {
            Frame::Method { method, .. } => self.on_method(method, &role, now_us, check),
            Frame::Header { header, .. } => {
                if let Some((_, size, _)) = &mut c.content {
                    *size = header.body_size as usize;
                    if *size == 0 {
                        self.content_done(now_us, check)?;
                    }
                    Ok(())
                } else {
                    Err(format!("client {id}: content header without a method"))
                }
            }
            Frame::Body { body, .. } => {
                let Some((_, size, buf)) = &mut c.content else {
                    return Err(format!("client {id}: body without a method"));
                };
                buf.extend_from_slice(&body);
                if buf.len() >= *size {
                    self.content_done(now_us, check)?;
                }
                Ok(())
            }
            Frame::Heartbeat { .. } => Ok(()),
        }
    }

    fn on_method(&mut self, m: Method, role: &Role, now_us: u64, check: &mut Checker) -> Result<(), String> {
        let id = self.id;
        let c = self.conn.as_mut().expect("connected");
        match (c.st, m) {
            (St::Start, Method::ConnectionStart(_)) => {
                let caps: FieldTable = ["consumer_cancel_notify", "publisher_confirms", "basic.nack"]
                    .into_iter()
                    .map(|k| (ShortStr::from_static(k), FieldValue::Bool(true)))
                    .collect();
                let props: FieldTable = [(ShortStr::from_static("capabilities"), FieldValue::Table(caps))]
                    .into_iter()
                    .collect();
                write_method_frame(
                    &mut c.out,
                    0,
                    &Method::ConnectionStartOk(ConnectionStartOk {
                        client_properties: props,
                        mechanism: "PLAIN".into(),
                        response: LongStr::from_static("\0guest\0guest"),
                        locale: "en_US".into(),
                    }),
                );
                c.st = St::Tune;
            }
            (St::Tune, Method::ConnectionTune(t)) => {
                c.frame_max = t.frame_max;
                write_method_frame(
                    &mut c.out,
                    0,
                    &Method::ConnectionTuneOk(ConnectionTuneOk {
                        channel_max: t.channel_max,
                        frame_max: t.frame_max,
                        heartbeat: 0,
                    }),
                );
                write_method_frame(
                    &mut c.out,
                    0,
                    &Method::ConnectionOpen(ConnectionOpen {
                        virtual_host: "/".into(),
                        ..Default::default()
                    }),
                );
                c.st = St::Open;
            }
            (St::Open, Method::ConnectionOpenOk(_)) => {
                method(&mut c.out, Method::ChannelOpen(Default::default()));
                c.st = St::Channel;
            }
            (St::Channel, Method::ChannelOpenOk(_)) => {
                let q = self.queue_spec(role);
                let c = self.conn.as_mut().expect("connected");
                method(
                    &mut c.out,
                    Method::QueueDeclare(QueueDeclare {
                        queue: ss(&c.queue),
                        durable: q.durable,
                        exclusive: c.exclusive,
                        arguments: q.arguments(),
                        ..Default::default()
                    }),
                );
                let n = match role {
                    Role::Publisher { tx: false, .. } => {
                        method(&mut c.out, Method::ConfirmSelect(Default::default()));
                        2
                    }
                    Role::Publisher { tx: true, .. } => {
                        method(&mut c.out, Method::TxSelect(Default::default()));
                        2
                    }
                    Role::Consumer { prefetch, .. } => {
                        method(
                            &mut c.out,
                            Method::BasicQos(BasicQos {
                                prefetch_count: *prefetch,
                                ..Default::default()
                            }),
                        );
                        method(
                            &mut c.out,
                            Method::BasicConsume(BasicConsume {
                                queue: ss(&q.name),
                                consumer_tag: "c".into(),
                                ..Default::default()
                            }),
                        );
                        self.sessions += 1;
                        c.session = ((id as u64) << 32) | self.sessions;
                        3
                    }
                    Role::Prober { .. } => 1,
                };
                c.st = St::Setup(n);
            }
            (
                St::Setup(n),
                Method::QueueDeclareOk(_)
                | Method::ConfirmSelectOk(_)
                | Method::TxSelectOk(_)
                | Method::BasicQosOk(_)
                | Method::BasicConsumeOk(_),
            ) => {
                c.st = if n <= 1 { St::Running } else { St::Setup(n - 1) };
            }
            (St::Running, Method::BasicAck(a)) => {
                self.settle_confirms(a.delivery_tag, a.multiple, true, now_us, check)?
            }
            (St::Running, Method::BasicNack(a)) => {
                self.settle_confirms(a.delivery_tag, a.multiple, false, now_us, check)?
            }
            (St::Running | St::Setup(_), Method::BasicDeliver(d)) => {
                c.content = Some((
                    Content::Deliver {
                        tag: d.delivery_tag,
                        redelivered: d.redelivered,
                    },
                    usize::MAX,
                    Vec::new(),
                ));
            }
            (St::Running, Method::BasicGetOk(g)) => {
                c.content = Some((
                    Content::GetOk {
                        left: g.message_count,
                    },
                    usize::MAX,
                    Vec::new(),
                ));
            }
            (St::Running, Method::BasicGetEmpty(_)) => {
                if let (Some(published), Role::Prober { limit, .. }) = (c.probe.take(), role) {
                    check.probe(*limit, &published, None, 0);
                    Self::purge(c, role);
                }
            }
            (St::Running, Method::QueuePurgeOk(_)) => c.purging = false,
            // Everything the transaction published is in its queues (and
            // synced, for persistent messages on a durable queue).
            (St::Running, Method::TxCommitOk(_)) if c.committing => {
                c.committing = false;
                for (_, msg) in std::mem::take(&mut c.outstanding) {
                    check.confirmed(msg, true, now_us);
                }
            }
            // A queue refused some of the commit (a failed sync): none of
            // it is required; the client starts over, as on a nack.
            (_, Method::ChannelClose(cl))
                if c.committing
                    && cl.reply_code == 406
                    && cl.reply_text.as_bytes().ends_with(b"partial tx completion") =>
            {
                for (_, msg) in std::mem::take(&mut c.outstanding) {
                    check.confirmed(msg, false, now_us);
                }
                return Err(REFUSED.into());
            }
            // The broker may refuse what it cannot do safely under
            // injected faults (541: a topology log that failed to sync);
            // the client starts over, as an application would. Anything
            // else is a failure.
            (_, Method::ConnectionClose(cl)) if cl.reply_code == 541 => return Err(REFUSED.into()),
            (_, Method::ChannelClose(cl)) if cl.reply_code == 541 => return Err(REFUSED.into()),
            (_, Method::ConnectionClose(cl)) => {
                return Err(format!(
                    "client {id}: the broker closed the connection: {} {}",
                    cl.reply_code, cl.reply_text
                ));
            }
            (_, Method::ChannelClose(cl)) => {
                return Err(format!(
                    "client {id}: the broker closed the channel: {} {}",
                    cl.reply_code, cl.reply_text
                ));
            }
            (_, Method::BasicCancel(_)) => {
                return Err(format!("client {id}: the broker cancelled the consumer"));
            }
            (st, m) => return Err(format!("client {id}: unexpected {} in state {st:?}", m.name())),
        }
        Ok(())
    }

    fn queue_spec(&self, role: &Role) -> QueueSpec {
        match role {
            Role::Publisher { queue, .. } | Role::Consumer { queue, .. } | Role::Prober { queue, .. } => {
                queue.clone()
            }
        }
    }

    fn purge(c: &mut Conn, role: &Role) {
        if let Role::Prober { .. } = role {
            method(
                &mut c.out,
                Method::QueuePurge(QueuePurge {
                    queue: ss(&c.queue),
                    ..Default::default()
                }),
            );
            c.purging = true;
        }
    }

    fn settle_confirms(
        &mut self,
        tag: u64,
        multiple: bool,
        ok: bool,
        now_us: u64,
        check: &mut Checker,
    ) -> Result<(), String> {
        let c = self.conn.as_mut().expect("connected");
        let tags: Vec<u64> = if multiple {
            c.outstanding.range(..=tag).map(|(t, _)| *t).collect()
        } else {
            vec![tag]
        };
        if tags.is_empty() || !c.outstanding.contains_key(&tag) && !multiple {
            return Err(format!("client {}: confirm for unknown tag {tag}", self.id));
        }
        for t in tags {
            if let Some(id) = c.outstanding.remove(&t) {
                check.confirmed(id, ok, now_us);
            }
        }
        Ok(())
    }

    fn content_done(&mut self, now_us: u64, check: &mut Checker) -> Result<(), String> {
        let role = self.role.clone();
        let c = self.conn.as_mut().expect("connected");
        let (kind, _, body) = c.content.take().expect("content");
        let Some(msg) = id_of(&body) else {
            return Err(format!("client {}: a body that is not ours: {body:?}", self.id));
        };
        match kind {
            Content::Deliver { tag, redelivered } => {
                check.delivered(c.session, msg, redelivered, now_us);
                c.unacked.push_back((tag, msg));
                if let Role::Consumer { prefetch, .. } = role
                    && prefetch > 0
                    && c.unacked.len() > prefetch as usize
                {
                    check.prefetch_exceeded(c.session, c.unacked.len(), prefetch);
                }
            }
            Content::GetOk { left } => {
                if let (Some(published), Role::Prober { limit, .. }) = (c.probe.take(), &role) {
                    check.probe(*limit, &published, Some(msg), left);
                    Self::purge(c, &role);
                }
            }
        }
        Ok(())
    }

    /// The client's own move: publish, ack, probe.
    pub fn on_wake(&mut self, now_us: u64, now_ms: u64, rng: &mut Rng, check: &mut Checker) {
        let role = self.role.clone();
        let id = self.id;
        let Some(c) = &mut self.conn else { return };
        if c.st != St::Running {
            return;
        }
        match role {
            Role::Publisher {
                queue,
                total,
                window,
                tx,
            } => {
                if c.committing {
                    return;
                }
                let room = window.saturating_sub(c.outstanding.len());
                let n = (rng.below(4) as usize + 1)
                    .min(room)
                    .min((total - self.sent) as usize);
                for _ in 0..n {
                    let msg: MsgId = (id, self.sent + 1);
                    self.sent += 1;
                    write_method_frame(
                        &mut c.out,
                        1,
                        &Method::BasicPublish(BasicPublish {
                            routing_key: ss(&queue.name),
                            ..Default::default()
                        }),
                    );
                    let props: &[u8] = if queue.durable { &[0x10, 0x00, 2] } else { &[0, 0] };
                    write_content(&mut c.out, 1, 60, props, &body_of(msg), c.frame_max);
                    check.published(msg, queue.durable, now_ms, queue.ttl_ms);
                    c.outstanding.insert(c.next_confirm, msg);
                    c.next_confirm += 1;
                }
                if tx && n > 0 {
                    method(&mut c.out, Method::TxCommit(Default::default()));
                    c.committing = true;
                }
            }
            Role::Consumer { .. } => {
                if c.unacked.is_empty() {
                    return;
                }
                match rng.below(10) {
                    // All at once with `multiple`.
                    0..=3 => {
                        let (tag, _) = *c.unacked.back().expect("some");
                        write_basic_ack(&mut c.out, 1, tag, true);
                        for (_, m) in c.unacked.drain(..) {
                            check.acked(m, now_us);
                        }
                    }
                    // The oldest one.
                    4..=7 => {
                        let (tag, m) = c.unacked.pop_front().expect("some");
                        write_basic_ack(&mut c.out, 1, tag, false);
                        check.acked(m, now_us);
                    }
                    // Back to the queue.
                    8 => {
                        let (tag, _) = c.unacked.pop_front().expect("some");
                        method(
                            &mut c.out,
                            Method::BasicNack(BasicNack {
                                delivery_tag: tag,
                                multiple: false,
                                requeue: true,
                            }),
                        );
                    }
                    _ => {}
                }
            }
            Role::Prober { limit, .. } => {
                if c.probe.is_some() || c.purging {
                    return;
                }
                let n = rng.below(2 * limit as u64 + 3) + 1;
                let mut published = Vec::new();
                for _ in 0..n {
                    let msg: MsgId = (id, self.sent + 1);
                    self.sent += 1;
                    write_method_frame(
                        &mut c.out,
                        1,
                        &Method::BasicPublish(BasicPublish {
                            routing_key: ss(&c.queue),
                            ..Default::default()
                        }),
                    );
                    write_content(&mut c.out, 1, 60, &[0, 0], &body_of(msg), c.frame_max);
                    check.published(msg, false, now_ms, None);
                    published.push(msg);
                }
                method(
                    &mut c.out,
                    Method::BasicGet(BasicGet {
                        queue: ss(&c.queue),
                        no_ack: true,
                        ..Default::default()
                    }),
                );
                c.probe = Some(published);
            }
        }
    }
}
