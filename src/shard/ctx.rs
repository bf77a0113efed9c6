//! The [`Broker`] a connection's session talks to: its shard.

use super::item::{ControlMsg, Item, QueueOp};
use super::state::{Enqueued, Shard};
use crate::broker::control::{check_exclusive, no_exchange, no_queue};
use crate::broker::request::{Reply, Request, Settle};
use crate::broker::topology::RouteError;
use crate::broker::topology::Topology;
use crate::broker::users::{Access, check_password, is_loopback, refused};
use crate::ids::{ChannelRef, ConnId, ConsumerRef, QueueId, VhostId};
use crate::message::Message;
use crate::protocol::{AmqpError, ShortStr};
use crate::session::{Broker, PublishOutcome};
use bytes::Bytes;
use std::cell::RefCell;

/// What the broker remembers about one connection, for its checks.
/// Owned by the connection's task.
#[derive(Default)]
pub struct ConnState {
    pub peer: Option<std::net::SocketAddr>,
    /// The authenticated user.
    pub user: RefCell<String>,
    /// The last exchange this connection was allowed to publish to, and the
    /// topology version that said so: permission regexes run once per
    /// exchange, not once per message.
    pub(super) write_ok: RefCell<Option<(VhostId, Bytes, u64)>>,
    /// The last route this connection computed: publishers mostly send to
    /// one exchange and key, and this skips permission checks, name
    /// lookups and matching for all but the first message.
    pub(super) route: RefCell<RouteCache>,
}

#[derive(Default)]
pub(super) struct RouteCache {
    valid: bool,
    vhost: Option<VhostId>,
    version: u64,
    exchange: Vec<u8>,
    routing_key: Vec<u8>,
    dests: Vec<(QueueId, crate::ids::ShardId)>,
}

/// A connection's view of its shard. Used only from the connection's task,
/// never while another borrow of the shard's state is held.
pub struct Ctx<'a> {
    pub shard: &'a Shard,
    pub conn: &'a ConnState,
}

impl Ctx<'_> {
    /// Checks `access` to a resource; the 403 RabbitMQ sends otherwise.
    fn permit(
        &self,
        topo: &Topology,
        vhost: VhostId,
        access: Access,
        kind: &str,
        name: &[u8],
    ) -> Result<(), AmqpError> {
        let user = self.conn.user.borrow();
        let ok = topo
            .permissions(&user, vhost)
            .is_some_and(|p| p.allows(access, name));
        if ok {
            Ok(())
        } else {
            Err(refused(kind, name, topo.vhost_name(vhost), &user))
        }
    }

    fn owner(&self, queue: QueueId) -> Option<crate::ids::ShardId> {
        self.shard.topo.borrow().queue(queue).map(|q| q.owner)
    }

    /// Resolves a queue name for an operation on its owner, checking
    /// existence and exclusivity here (the topology is replicated).
    /// A publish with `CC`/`BCC` headers: routed with every key; `BCC`
    /// never reaches consumers (RabbitMQ's sender-selected distribution).
    fn publish_sender_selected(
        &self,
        ch: ChannelRef,
        vhost: VhostId,
        msg: Message,
        confirm: Option<u64>,
        (keys, strip_bcc): (Vec<Bytes>, bool),
    ) -> Result<PublishOutcome, AmqpError> {
        let s = self.shard;
        let topo = s.topo.borrow();
        self.check_write(&topo, vhost, msg.exchange())?;
        let mut route = s.route.borrow_mut();
        let (scratch, out) = &mut *route;
        let mut dests = Vec::new();
        for key in std::iter::once(Bytes::copy_from_slice(msg.routing_key())).chain(keys) {
            match topo.route(vhost, msg.exchange(), &key, msg.props(), scratch, out) {
                Ok(_) => dests.extend(out.iter().copied()),
                Err(RouteError::NoExchange) => {
                    return Err(no_exchange(msg.exchange(), topo.vhost_name(vhost)));
                }
                Err(RouteError::Internal) => {
                    return Err(AmqpError::access_refused(format!(
                        "cannot publish to internal exchange '{}' in vhost '{}'",
                        String::from_utf8_lossy(msg.exchange()),
                        topo.vhost_name(vhost)
                    )));
                }
            }
        }
        drop(route);
        drop(topo);
        dests.sort_unstable();
        dests.dedup();
        let msg = if strip_bcc { without_bcc(&msg) } else { msg };
        s.routed.set(s.routed.get() + 1);
        Ok(self.enqueue_all(&dests, msg, ch, confirm))
    }

    /// Hands a routed message to each destination queue: directly when
    /// this shard owns it, through the outbox otherwise.
    fn enqueue_all(
        &self,
        dests: &[(QueueId, crate::ids::ShardId)],
        msg: Message,
        ch: ChannelRef,
        confirm: Option<u64>,
    ) -> PublishOutcome {
        let s = self.shard;
        let mut outcome = PublishOutcome {
            routed: !dests.is_empty(),
            ..Default::default()
        };
        for &(queue, owner) in dests.iter() {
            if owner == s.id {
                let mut queues = s.queues.borrow_mut();
                if let Some(slot) = queues.get_mut(&queue) {
                    let c = confirm.map(|seq| (ch, seq));
                    match s.enqueue(slot, msg.clone(), c, ch.conn) {
                        Enqueued::Now => {}
                        Enqueued::Deferred => outcome.pending_confirms += u32::from(c.is_some()),
                        Enqueued::Refused => outcome.rejected = true,
                    }
                }
            } else {
                if confirm.is_some() {
                    outcome.pending_confirms += 1;
                }
                s.send(
                    owner,
                    Item::Publish {
                        queue,
                        msg: msg.clone(),
                        confirm: confirm.map(|seq| (ch, seq)),
                        publisher: ch.conn,
                    },
                );
            }
        }
        outcome
    }

    /// Write access to an exchange, cached per connection.
    fn check_write(&self, topo: &Topology, vhost: VhostId, exchange: &[u8]) -> Result<(), AmqpError> {
        if let Some((v, name, version)) = &*self.conn.write_ok.borrow()
            && *v == vhost
            && *version == topo.version()
            && name[..] == *exchange
        {
            return Ok(());
        }
        // RabbitMQ names the default exchange `amq.default` for permissions.
        let resource: &[u8] = if exchange.is_empty() {
            b"amq.default"
        } else {
            exchange
        };
        self.permit(topo, vhost, Access::Write, "exchange", resource)?;
        *self.conn.write_ok.borrow_mut() = Some((vhost, Bytes::copy_from_slice(exchange), topo.version()));
        Ok(())
    }

    fn queue_op(&self, ch: ChannelRef, vhost: VhostId, name: ShortStr, op: QueueOp) {
        let s = self.shard;
        let found = {
            let topo = s.topo.borrow();
            let vname = topo.vhost_name(vhost).to_string();
            // consume, get and purge all need read access to the queue.
            self.permit(&topo, vhost, Access::Read, "queue", name.as_bytes())
                .and_then(|_| match topo.queue_by_name(vhost, name.as_bytes()) {
                    None => Err(no_queue(&name, &vname)),
                    Some(q) => check_exclusive(q, ch.conn, &vname).map(|_| (q.id, q.owner)),
                })
        };
        match found {
            Err(e) => s.reply(ch, Reply::Error(e)),
            Ok((queue, owner)) => s.send(owner, Item::QueueOp { queue, name, ch, op }),
        }
    }
}

impl Broker for Ctx<'_> {
    fn check_login(&mut self, user: &str, password: &[u8]) -> Result<(), AmqpError> {
        let refuse = |why: &str| {
            log::warn!(
                "login refused for user '{user}' from {}: {why}",
                self.conn.peer.map_or("?".into(), |p| p.to_string())
            );
            AmqpError::access_refused(
                "Login was refused using authentication mechanism PLAIN. For details see the broker logfile.",
            )
        };
        let topo = self.shard.topo.borrow();
        let Some(u) = topo.user(user) else {
            return Err(refuse("no such user"));
        };
        if !check_password(&u.password_hash, password) {
            return Err(refuse("invalid credentials"));
        }
        let remote = self.conn.peer.is_some_and(|p| !is_loopback(&p));
        if remote && self.shard.cfg.loopback_users.iter().any(|l| l == user) {
            return Err(refuse("user can only connect via localhost"));
        }
        *self.conn.user.borrow_mut() = user.to_string();
        Ok(())
    }

    fn open_vhost(&mut self, user: &str, vhost: &str) -> Result<VhostId, AmqpError> {
        let topo = self.shard.topo.borrow();
        let v = topo
            .vhost(vhost)
            .ok_or_else(|| AmqpError::not_allowed(format!("vhost {vhost} not found")))?;
        if topo.permissions(user, v.id).is_none() {
            return Err(AmqpError::not_allowed(format!(
                "access to vhost '{vhost}' refused for user '{user}'"
            )));
        }
        Ok(v.id)
    }

    fn publish(
        &mut self,
        ch: ChannelRef,
        vhost: VhostId,
        msg: Message,
        confirm: Option<u64>,
    ) -> Result<PublishOutcome, AmqpError> {
        let s = self.shard;
        if let Some(extra) = sender_selected(&msg) {
            return self.publish_sender_selected(ch, vhost, msg, confirm, extra);
        }
        let topo = s.topo.borrow();
        let mut cache = self.conn.route.borrow_mut();
        let hit = cache.valid
            && cache.vhost == Some(vhost)
            && cache.version == topo.version()
            && short_eq(&cache.routing_key, msg.routing_key())
            && short_eq(&cache.exchange, msg.exchange());
        if !hit {
            self.check_write(&topo, vhost, msg.exchange())?;
            let mut route = s.route.borrow_mut();
            let (scratch, dests) = &mut *route;
            let routed = match topo.route(
                vhost,
                msg.exchange(),
                msg.routing_key(),
                msg.props(),
                scratch,
                dests,
            ) {
                Ok(r) => r,
                Err(RouteError::NoExchange) => {
                    return Err(no_exchange(msg.exchange(), topo.vhost_name(vhost)));
                }
                Err(RouteError::Internal) => {
                    return Err(AmqpError::access_refused(format!(
                        "cannot publish to internal exchange '{}' in vhost '{}'",
                        String::from_utf8_lossy(msg.exchange()),
                        topo.vhost_name(vhost)
                    )));
                }
            };
            let c = &mut *cache;
            c.valid = routed.by_key_only;
            c.vhost = Some(vhost);
            c.version = topo.version();
            c.exchange.clear();
            c.exchange.extend_from_slice(msg.exchange());
            c.routing_key.clear();
            c.routing_key.extend_from_slice(msg.routing_key());
            c.dests.clear();
            c.dests.extend_from_slice(dests);
        }
        s.routed.set(s.routed.get() + 1);
        Ok(self.enqueue_all(&cache.dests, msg, ch, confirm))
    }

    fn exchange_exists(&mut self, vhost: VhostId, exchange: &[u8]) -> Result<(), AmqpError> {
        let topo = self.shard.topo.borrow();
        self.check_write(&topo, vhost, exchange)?;
        if exchange.is_empty() {
            return Ok(());
        }
        match topo.exchange_by_name(vhost, exchange) {
            None => Err(no_exchange(exchange, topo.vhost_name(vhost))),
            Some(x) if x.def.internal => Err(AmqpError::access_refused(format!(
                "cannot publish to internal exchange '{}' in vhost '{}'",
                String::from_utf8_lossy(exchange),
                topo.vhost_name(vhost)
            ))),
            Some(_) => Ok(()),
        }
    }

    fn settle(&mut self, queue: QueueId, seq: u64, how: Settle) {
        match self.owner(queue) {
            Some(o) if o == self.shard.id => self.shard.settle_local(queue, seq, how),
            Some(o) => self.shard.send(o, Item::Settle { queue, seq, how }),
            None => {}
        }
    }

    fn request(&mut self, ch: ChannelRef, vhost: VhostId, user: &str, req: Request) {
        let s = self.shard;
        match req {
            Request::Consume { queue, spec } => self.queue_op(ch, vhost, queue, QueueOp::Consume(spec)),
            Request::Get { queue, no_ack } => self.queue_op(ch, vhost, queue, QueueOp::Get { no_ack }),
            Request::QueuePurge { queue } => self.queue_op(ch, vhost, queue, QueueOp::Purge),
            Request::Cancel { queue, consumer } => match self.owner(queue) {
                None => s.reply(ch, Reply::CancelOk { consumer }),
                Some(owner) => s.send(
                    owner,
                    Item::QueueOp {
                        queue,
                        name: ShortStr::default(),
                        ch,
                        op: QueueOp::Cancel(consumer),
                    },
                ),
            },
            Request::Barrier => s.start_barrier(ch),
            other => s.send(
                0,
                Item::Control(ControlMsg::Request {
                    ch,
                    vhost,
                    user: user.to_string(),
                    req: other,
                }),
            ),
        }
    }

    fn drop_consumer(&mut self, queue: QueueId, consumer: ConsumerRef) {
        match self.owner(queue) {
            Some(o) if o == self.shard.id => self.shard.drop_consumer_local(queue, consumer),
            Some(o) => self.shard.send(o, Item::DropConsumer { queue, consumer }),
            None => {}
        }
    }

    fn written(&mut self, queue: QueueId, consumer: ConsumerRef, n: u32) {
        if let Some(o) = self.owner(queue) {
            self.shard.send(o, Item::Written { queue, consumer, n });
        }
    }

    fn grant_credit(&mut self, queue: QueueId, consumer: ConsumerRef, n: u32) {
        if let Some(o) = self.owner(queue) {
            self.shard.send(o, Item::Credit { queue, consumer, n });
        }
    }

    fn unique_name(&mut self, prefix: &str) -> ShortStr {
        self.shard.unique_name(prefix)
    }

    fn connection_closed(&mut self, conn: ConnId) {
        self.shard
            .send(0, Item::Control(ControlMsg::ConnectionClosed(conn)));
    }
}

/// The extra routing keys of a message with `CC`/`BCC` headers, and whether
/// `BCC` must be stripped; `None` for the usual message (checked without
/// decoding anything unless the header names appear in the raw bytes).
fn sender_selected(msg: &Message) -> Option<(Vec<Bytes>, bool)> {
    let props = msg.props();
    let has_headers = props.first().is_some_and(|b| b & 0x20 != 0);
    if !has_headers {
        return None;
    }
    let mentions = |pat: &[u8]| props.windows(pat.len()).any(|w| w == pat);
    if !mentions(b"\x02CC") && !mentions(b"\x03BCC") {
        return None;
    }
    let headers = crate::broker::topology::decode_headers(props)?;
    let cc = crate::broker::deadletter::cc_keys(&headers, "CC");
    let bcc = crate::broker::deadletter::cc_keys(&headers, "BCC");
    let strip = headers.get("BCC").is_some();
    if cc.is_empty() && bcc.is_empty() && !strip {
        return None;
    }
    Some((cc.into_iter().chain(bcc).collect(), strip))
}

/// The message with its `BCC` header removed.
fn without_bcc(msg: &Message) -> Message {
    let mut p = crate::protocol::BasicProperties::decode(&msg.props_bytes()).unwrap_or_default();
    if let Some(h) = &mut p.headers {
        h.remove("BCC");
    }
    let mut m = Message::assemble(msg.exchange(), msg.routing_key(), &p.to_bytes(), msg.body());
    m.persistent = msg.persistent;
    m.priority = msg.priority;
    m.expiration = msg.expiration;
    m
}

/// Equality of short names without a libc call per comparison (exchange
/// names and routing keys are at most 255 bytes and usually a few dozen).
#[inline]
fn short_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}
