//! The [`Broker`] a connection's session talks to: its shard's hub.
//! Publishes are routed here, on the connection's own shard, against the
//! replicated topology; queues this shard owns take them at once, others
//! get them through the outbox.

use super::Hub;
use crate::broker::control::{check_exclusive, no_exchange, no_queue};
use crate::broker::limits::{self, Lease};
use crate::broker::reply_to;
use crate::broker::request::{Reply, Request, Settle};
use crate::broker::topology::RouteError;
use crate::broker::topology::Topology;
use crate::broker::users::{Access, check_password, is_loopback, refused};
use crate::ids::{ChannelRef, ConnId, ConsumerRef, QueueId, VhostId};
use crate::message::Message;
use crate::owner::{ControlMsg, Effects, Enqueued, Item, QueueOp, RemoteOp};
use crate::protocol::{AmqpError, ShortStr};
use crate::session::{Broker, Event, HandOffTarget, PublishOutcome};
use bytes::Bytes;

/// What the broker remembers about one connection, for its checks.
/// Owned by the connection's task.
#[derive(Default)]
pub struct ConnState {
    pub peer: Option<std::net::SocketAddr>,
    /// The authenticated user.
    pub user: String,
    /// The last exchange this connection was allowed to publish to, and the
    /// topology version that said so: permission regexes run once per
    /// exchange, not once per message.
    write_ok: Option<(VhostId, Bytes, u64)>,
    /// The last route this connection computed: publishers mostly send to
    /// one exchange and key, and this skips permission checks, name
    /// lookups and matching for all but the first message.
    route: RouteCache,
    /// It declared an exclusive queue: the queue is tied to this
    /// connection's id, so the connection stays where it is.
    exclusive: bool,
    /// The shard the connection is moving to (see [`Broker::hand_off`]).
    pub handoff_to: Option<crate::ids::ShardId>,
    /// The places this connection takes in its vhost's and its user's
    /// connection counts, from `connection.open` until it closes (they
    /// move with it to another shard).
    leases: Vec<Lease>,
}

impl ConnState {
    /// A connection from `peer` (none: the management plane's own).
    pub fn new(peer: Option<std::net::SocketAddr>) -> ConnState {
        ConnState {
            peer,
            ..Default::default()
        }
    }
}

#[derive(Default)]
struct RouteCache {
    valid: bool,
    vhost: Option<VhostId>,
    version: u64,
    exchange: Vec<u8>,
    routing_key: Vec<u8>,
    dests: Vec<(QueueId, crate::ids::ShardId)>,
    /// A destination lives on another node of the cluster.
    remote: bool,
}

/// A connection's view of its shard's hub, for one batch of its input.
pub struct Client<'a> {
    pub hub: &'a mut Hub,
    pub conn: &'a mut ConnState,
    /// Wall-clock milliseconds (TTLs).
    pub now: u64,
}

impl Client<'_> {
    /// Checks `access` to a resource; the 403 RabbitMQ sends otherwise.
    fn permit(
        &self,
        topo: &Topology,
        vhost: VhostId,
        access: Access,
        kind: &str,
        name: &[u8],
    ) -> Result<(), AmqpError> {
        let user = &self.conn.user;
        let ok = topo
            .permissions(user, vhost)
            .is_some_and(|p| p.allows(access, name));
        if ok {
            Ok(())
        } else {
            Err(refused(kind, name, topo.vhost_name(vhost), user))
        }
    }

    /// A publish with `CC`/`BCC` headers: routed with every key; `BCC`
    /// never reaches consumers (RabbitMQ's sender-selected distribution).
    fn publish_sender_selected(
        &mut self,
        ch: ChannelRef,
        vhost: VhostId,
        msg: Message,
        confirm: Option<u64>,
        (keys, strip_bcc): (Vec<Bytes>, bool),
    ) -> Result<PublishOutcome, AmqpError> {
        let mut dests = Vec::new();
        let mut remote = false;
        {
            let h = &mut *self.hub;
            let topo = &h.topo;
            check_write(
                &mut self.conn.write_ok,
                &self.conn.user,
                topo,
                vhost,
                msg.exchange(),
            )?;
            let (scratch, out) = &mut h.route;
            for key in std::iter::once(Bytes::copy_from_slice(msg.routing_key())).chain(keys) {
                match topo.route(vhost, msg.exchange(), &key, msg.props(), scratch, out) {
                    Ok(r) => {
                        remote |= r.remote;
                        dests.extend(out.iter().copied());
                    }
                    Err(e) => return Err(route_error(e, topo, vhost, msg.exchange())),
                }
            }
        }
        dests.sort_unstable();
        dests.dedup();
        let msg = if strip_bcc { without_bcc(&msg) } else { msg };
        self.hub.routed += 1;
        Ok(enqueue_all(self.hub, &dests, remote, msg, ch, confirm, self.now))
    }

    /// A reply to a direct reply-to name: straight to the channel it names
    /// (routed, and confirmed at once, if the name is one of this node's;
    /// the channel drops it if its reply consumer is gone).
    fn direct_reply(
        &mut self,
        from: ChannelRef,
        vhost: VhostId,
        msg: Message,
        confirm: Option<u64>,
        mandatory: bool,
    ) -> Result<PublishOutcome, AmqpError> {
        let h = &mut *self.hub;
        check_write(&mut self.conn.write_ok, &self.conn.user, &h.topo, vhost, b"")?;
        let to = reply_to::target(msg.routing_key());
        let mut remote_confirm = None;
        let routed = match to {
            Some(t) if t.node == h.owner.node() && (t.ch.shard() as usize) < h.nshards => {
                h.send_event(
                    t.ch.conn,
                    Event::DirectReply {
                        ch: t.ch,
                        key: t.key,
                        msg,
                    },
                );
                true
            }
            // Another node's: shard 0 sends it there (dropped if the node
            // is not a member or cannot be reached, as a reply to a gone
            // consumer is).
            // A mandatory one comes back (`Event::Returned`) if that node
            // has no such reply consumer; its confirm waits for the answer,
            // so that the return comes first.
            Some(t) if t.node != h.owner.node() => {
                let returner = mandatory.then_some(from);
                remote_confirm = returner.and(confirm).map(|seq| (from, seq));
                let r = crate::owner::RemoteReply {
                    node: t.node,
                    ch: t.ch,
                    key: t.key,
                    msg,
                    returner,
                    confirm: remote_confirm,
                };
                h.out.to_shard(0, Item::RemoteReply(r));
                true
            }
            _ => false,
        };
        if routed {
            h.routed += 1;
        }
        Ok(PublishOutcome {
            routed,
            pending_confirms: remote_confirm.is_some() as u32,
            ..Default::default()
        })
    }

    fn queue_op(&mut self, ch: ChannelRef, vhost: VhostId, name: ShortStr, op: QueueOp) {
        let found = {
            let topo = &self.hub.topo;
            let vname = topo.vhost_name(vhost).to_string();
            // consume, get and purge all need read access to the queue.
            self.permit(topo, vhost, Access::Read, "queue", name.as_bytes())
                .and_then(|_| match topo.queue_by_name(vhost, name.as_bytes()) {
                    None => Err(no_queue(&name, &vname)),
                    Some(q) => check_exclusive(q, ch.conn, &vname).map(|_| (q.id, q.owner, q.node)),
                })
        };
        let out = &mut self.hub.out;
        match found {
            // A queue on another node: the operation goes there, and its
            // replies and deliveries come back from there.
            Ok((queue, _, node)) if node != 0 => out.to_shard(
                0,
                Item::Remote {
                    node,
                    queue,
                    op: RemoteOp::Queue { name, ch, op },
                },
            ),
            Err(e) => out.to_conn(
                ch.conn,
                crate::session::Event::Reply {
                    ch,
                    reply: Reply::Error(e),
                },
            ),
            Ok((queue, owner, _)) => out.to_shard(owner, Item::QueueOp { queue, name, ch, op }),
        }
    }

    fn send_to_owner(&mut self, queue: QueueId, item: Item, remote: impl FnOnce() -> RemoteOp) {
        match self.hub.topo.queue(queue).map(|q| (q.owner, q.node)) {
            Some((_, node)) if node != 0 => self.hub.out.to_shard(
                0,
                Item::Remote {
                    node,
                    queue,
                    op: remote(),
                },
            ),
            Some((o, _)) => self.hub.out.to_shard(o, item),
            None => {}
        }
    }
}

/// Write access to an exchange, cached per connection.
fn check_write(
    cache: &mut Option<(VhostId, Bytes, u64)>,
    user: &str,
    topo: &Topology,
    vhost: VhostId,
    exchange: &[u8],
) -> Result<(), AmqpError> {
    if let Some((v, name, version)) = &*cache
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
    let ok = topo
        .permissions(user, vhost)
        .is_some_and(|p| p.allows(Access::Write, resource));
    if !ok {
        return Err(refused("exchange", resource, topo.vhost_name(vhost), user));
    }
    *cache = Some((vhost, Bytes::copy_from_slice(exchange), topo.version()));
    Ok(())
}

fn route_error(e: RouteError, topo: &Topology, vhost: VhostId, exchange: &[u8]) -> AmqpError {
    match e {
        RouteError::NoExchange => no_exchange(exchange, topo.vhost_name(vhost)),
        RouteError::Internal => AmqpError::access_refused(format!(
            "cannot publish to internal exchange '{}' in vhost '{}'",
            String::from_utf8_lossy(exchange),
            topo.vhost_name(vhost)
        )),
    }
}

/// Hands a routed message to each destination queue: directly when this
/// shard owns it, through the outbox otherwise.
fn enqueue_all(
    hub: &mut Hub,
    dests: &[(QueueId, crate::ids::ShardId)],
    remote: bool,
    msg: Message,
    ch: ChannelRef,
    confirm: Option<u64>,
    now: u64,
) -> PublishOutcome {
    let mut outcome = PublishOutcome {
        routed: !dests.is_empty(),
        ..Default::default()
    };
    let h = hub;
    for &(queue, owner) in dests.iter() {
        let c = confirm.map(|seq| (ch, seq));
        // A queue on another node: forwarded there through shard 0; its
        // node confirms it.
        // A quorum queue this node replicates is proposed from here (its
        // group carries it to the leader), as a local one.
        let me = h.owner.node();
        if remote
            && let Some(node) = h
                .topo
                .queue(queue)
                .filter(|q| !q.replicas.contains(&me))
                .map(|q| q.node)
                .filter(|&n| n != 0)
        {
            outcome.pending_confirms += u32::from(c.is_some());
            h.out.to_shard(
                0,
                Item::Forward(crate::owner::Forward {
                    node,
                    queue,
                    msg: msg.clone(),
                    confirm: c,
                }),
            );
            continue;
        }
        if owner == h.id && !h.moves.holds(queue) {
            match h
                .owner
                .enqueue(&h.topo, &mut h.out, queue, msg.clone(), c, ch.conn, now)
            {
                Enqueued::Now => {}
                Enqueued::Deferred => outcome.pending_confirms += u32::from(c.is_some()),
                Enqueued::Refused => outcome.rejected = true,
            }
        } else {
            outcome.pending_confirms += u32::from(c.is_some());
            let item = Item::Publish {
                queue,
                msg: msg.clone(),
                confirm: c,
                publisher: ch.conn,
            };
            if owner == h.id {
                // Moving here: in order with what its other senders sent.
                h.moves.hold(item, now);
            } else {
                h.out.to_shard(owner, item);
            }
        }
    }
    outcome
}

impl Broker for Client<'_> {
    fn check_login(&mut self, user: &str, password: Option<&[u8]>) -> Result<(), AmqpError> {
        let refuse = |why: &str| {
            log::warn!(
                "login refused for user '{user}' from {}: {why}",
                self.conn.peer.map_or("?".into(), |p| p.to_string())
            );
            AmqpError::access_refused(
                "Login was refused using authentication mechanism PLAIN. For details see the broker logfile.",
            )
        };
        let Some(u) = self.hub.topo.user(user) else {
            return Err(refuse("no such user"));
        };
        if password.is_some_and(|p| !check_password(&u.password_hash, p)) {
            return Err(refuse("invalid credentials"));
        }
        let remote = self.conn.peer.is_some_and(|p| !is_loopback(&p));
        if remote && self.hub.cfg.loopback_users.iter().any(|l| l == user) {
            return Err(refuse("user can only connect via localhost"));
        }
        self.conn.user = user.to_string();
        Ok(())
    }

    /// RabbitMQ's checks of `connection.open`, in its order
    /// (`rabbit_reader:handle_method0`): the vhost's connection limit, the
    /// user's, then access to the vhost. The places taken in both counts
    /// are held until the connection closes.
    fn open_vhost(&mut self, user: &str, vhost: &str) -> Result<VhostId, AmqpError> {
        let topo = &self.hub.topo;
        let v = topo
            .vhost(vhost)
            .ok_or_else(|| AmqpError::not_allowed(format!("vhost {vhost} not found")))?;
        let limit = v.limits.as_ref().and_then(|l| l.get(limits::MAX_CONNECTIONS));
        let in_vhost = v
            .connections
            .acquire(limit)
            .ok_or_else(|| limits::vhost_connections_reached(vhost, user, limit.unwrap_or(0)))?;
        let mut leases = vec![in_vhost];
        // A user deleted since it logged in has no counter; its connections
        // are being closed.
        if let Some(u) = topo.user(user) {
            let limit = topo.user_limits(user).get(limits::MAX_CONNECTIONS);
            let of_user = u
                .counters
                .connections
                .acquire(limit)
                .ok_or_else(|| limits::user_connections_reached(user, limit.unwrap_or(0)))?;
            leases.push(of_user);
        }
        if topo.permissions(user, v.id).is_none() {
            return Err(AmqpError::not_allowed(format!(
                "access to vhost '{vhost}' refused for user '{user}'"
            )));
        }
        self.conn.leases = leases;
        Ok(v.id)
    }

    /// The user's channel limit (`rabbit_reader:create_channel`).
    fn open_channel(&mut self) -> Result<Option<Lease>, AmqpError> {
        let topo = &self.hub.topo;
        let user = &self.conn.user;
        let Some(u) = topo.user(user) else {
            return Ok(None);
        };
        let limit = topo.user_limits(user).get(limits::MAX_CHANNELS);
        u.counters
            .channels
            .acquire(limit)
            .map(Some)
            .ok_or_else(|| limits::user_channels_reached(user, limit.unwrap_or(0)))
    }

    fn publish(
        &mut self,
        ch: ChannelRef,
        vhost: VhostId,
        msg: Message,
        confirm: Option<u64>,
        mandatory: bool,
    ) -> Result<PublishOutcome, AmqpError> {
        if msg.exchange().is_empty() && reply_to::is_reply_name(msg.routing_key()) {
            return self.direct_reply(ch, vhost, msg, confirm, mandatory);
        }
        if let Some(extra) = sender_selected(&msg) {
            return self.publish_sender_selected(ch, vhost, msg, confirm, extra);
        }
        let h = &mut *self.hub;
        let topo = &h.topo;
        let c = &mut self.conn.route;
        let hit = c.valid
            && c.vhost == Some(vhost)
            && c.version == topo.version()
            && short_eq(&c.routing_key, msg.routing_key())
            && short_eq(&c.exchange, msg.exchange());
        if !hit {
            check_write(
                &mut self.conn.write_ok,
                &self.conn.user,
                topo,
                vhost,
                msg.exchange(),
            )?;
            let (scratch, dests) = &mut h.route;
            let routed = topo
                .route(
                    vhost,
                    msg.exchange(),
                    msg.routing_key(),
                    msg.props(),
                    scratch,
                    dests,
                )
                .map_err(|e| route_error(e, topo, vhost, msg.exchange()))?;
            c.valid = routed.by_key_only;
            c.remote = routed.remote;
            c.vhost = Some(vhost);
            c.version = topo.version();
            c.exchange.clear();
            c.exchange.extend_from_slice(msg.exchange());
            c.routing_key.clear();
            c.routing_key.extend_from_slice(msg.routing_key());
            c.dests.clear();
            c.dests.extend_from_slice(dests);
        }
        h.routed += 1;
        Ok(enqueue_all(h, &c.dests, c.remote, msg, ch, confirm, self.now))
    }

    fn exchange_exists(&mut self, vhost: VhostId, exchange: &[u8]) -> Result<(), AmqpError> {
        let topo = &self.hub.topo;
        check_write(&mut self.conn.write_ok, &self.conn.user, topo, vhost, exchange)?;
        if exchange.is_empty() {
            return Ok(());
        }
        match topo.exchange_by_name(vhost, exchange) {
            None => Err(no_exchange(exchange, topo.vhost_name(vhost))),
            Some(x) if x.def.internal => Err(route_error(RouteError::Internal, topo, vhost, exchange)),
            Some(_) => Ok(()),
        }
    }

    fn settle(&mut self, queue: QueueId, seq: u64, how: Settle) {
        let h = &mut *self.hub;
        match h.topo.queue(queue).map(|q| (q.owner, q.node)) {
            Some((_, node)) if node != 0 => h.out.to_shard(
                0,
                Item::Remote {
                    node,
                    queue,
                    op: RemoteOp::Settle { seq, how },
                },
            ),
            Some((o, _)) if o == h.id && !h.moves.holds(queue) => {
                h.owner.settle(&h.topo, &mut h.out, queue, seq, how, self.now)
            }
            Some((o, _)) if o == h.id => h.moves.hold(Item::Settle { queue, seq, how }, self.now),
            Some((o, _)) => h.out.to_shard(o, Item::Settle { queue, seq, how }),
            None => {}
        }
    }

    fn request(&mut self, ch: ChannelRef, vhost: VhostId, user: &str, req: Request) {
        if let Request::QueueDeclare { exclusive: true, .. } = req {
            self.conn.exclusive = true;
        }
        match req {
            Request::Consume { queue, spec } => self.queue_op(ch, vhost, queue, QueueOp::Consume(spec)),
            Request::Get { queue, no_ack } => self.queue_op(ch, vhost, queue, QueueOp::Get { no_ack }),
            Request::QueuePurge { queue } => self.queue_op(ch, vhost, queue, QueueOp::Purge),
            Request::Cancel { queue, consumer } => {
                match self.hub.topo.queue(queue).map(|q| (q.owner, q.node)) {
                    // A consumer of a queue on another node: cancelled there.
                    Some((_, node)) if node != 0 => self.hub.out.to_shard(
                        0,
                        Item::Remote {
                            node,
                            queue,
                            op: RemoteOp::Queue {
                                name: ShortStr::default(),
                                ch,
                                op: QueueOp::Cancel(consumer),
                            },
                        },
                    ),
                    None => self.hub.out.to_conn(
                        ch.conn,
                        crate::session::Event::Reply {
                            ch,
                            reply: Reply::CancelOk { consumer },
                        },
                    ),
                    Some((owner, _)) => self.hub.out.to_shard(
                        owner,
                        Item::QueueOp {
                            queue,
                            name: ShortStr::default(),
                            ch,
                            op: QueueOp::Cancel(consumer),
                        },
                    ),
                }
            }
            Request::Barrier => self.hub.start_barrier(ch),
            other => self.hub.out.to_shard(
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
        let h = &mut *self.hub;
        match h.topo.queue(queue).map(|q| (q.owner, q.node)) {
            Some((_, node)) if node != 0 => h.out.to_shard(
                0,
                Item::Remote {
                    node,
                    queue,
                    op: RemoteOp::Drop { consumer },
                },
            ),
            Some((o, _)) if o == h.id && !h.moves.holds(queue) => {
                h.owner.drop_consumer(&mut h.out, queue, consumer, self.now)
            }
            Some((o, _)) if o == h.id => h.moves.hold(Item::DropConsumer { queue, consumer }, self.now),
            Some((o, _)) => h.out.to_shard(o, Item::DropConsumer { queue, consumer }),
            None => {}
        }
    }

    fn resume_consumer(&mut self, queue: QueueId, spec: crate::queue::ConsumerSpec, held: Vec<u64>) {
        let h = &mut *self.hub;
        let ch = spec.cref.ch;
        let consumer = spec.cref;
        let op = QueueOp::Resume { spec, held };
        let name = ShortStr::default();
        match h.topo.queue(queue).map(|q| (q.owner, q.node)) {
            Some((_, node)) if node != 0 => h.out.to_shard(
                0,
                Item::Remote {
                    node,
                    queue,
                    op: RemoteOp::Queue { name, ch, op },
                },
            ),
            // At once when here: the channel's acks that follow are
            // settled after it.
            Some((o, _)) if o == h.id => h
                .owner
                .queue_op(&h.topo, &mut h.out, queue, name, ch, op, self.now),
            Some((o, _)) => h.out.to_shard(o, Item::QueueOp { queue, name, ch, op }),
            None => h.out.to_conn(
                ch.conn,
                crate::session::Event::Resumed {
                    consumer,
                    queue,
                    claimed: None,
                },
            ),
        }
    }

    fn written(&mut self, queue: QueueId, consumer: ConsumerRef, n: u32) {
        self.send_to_owner(queue, Item::Written { queue, consumer, n }, || {
            RemoteOp::Written { consumer, n }
        });
    }

    fn grant_credit(&mut self, queue: QueueId, consumer: ConsumerRef, n: u32) {
        self.send_to_owner(queue, Item::Credit { queue, consumer, n }, || RemoteOp::Credit {
            consumer,
            n,
        });
    }

    fn unique_name(&mut self, prefix: &str) -> ShortStr {
        self.hub.unique_name(prefix)
    }

    fn reply_name(&mut self, ch: ChannelRef, key: &[u8; reply_to::KEY_LEN]) -> ShortStr {
        reply_to::name_for(self.hub.owner.node(), ch, key)
    }

    fn reply_consumer(&mut self, key: [u8; reply_to::KEY_LEN], live: bool) {
        self.hub.replies.set(key, live);
    }

    fn reply_name_lives(&mut self, to: reply_to::Target) -> bool {
        self.hub.replies.contains(&to.key)
    }

    fn ask_reply_name(&mut self, ch: ChannelRef, name: &ShortStr, vhost: &str, to: reply_to::Target) -> bool {
        let me = self.hub.owner.node();
        if to.node == 0 || to.node == me || me == 0 {
            return false;
        }
        self.hub.out.to_shard(
            0,
            Item::Remote {
                node: to.node,
                queue: QueueId(0),
                op: RemoteOp::ReplyName {
                    name: name.clone(),
                    ch,
                    key: to.key,
                    vhost: vhost.to_string(),
                },
            },
        );
        true
    }

    fn reply_name_gone(&mut self, to: reply_to::Target) -> bool {
        to.node == self.hub.owner.node() && !self.hub.replies.contains(&to.key)
    }

    fn hand_off(&mut self, to: HandOffTarget<'_>) -> bool {
        let h = &mut *self.hub;
        if !h.cfg.connection_handoff || h.nshards < 2 || self.conn.exclusive {
            return false;
        }
        let target = match to {
            HandOffTarget::Home => h.balances().then_some(h.fill),
            HandOffTarget::Consume { vhost, queue } => h
                .topo
                .queue_by_name(vhost, queue)
                .filter(|q| q.node == 0)
                .map(|q| q.owner),
            HandOffTarget::Publish {
                vhost,
                exchange,
                routing_key,
            } => {
                // Where the first message goes (properties unknown yet: a
                // headers exchange routes nothing, and nothing moves). A
                // publisher to queues of several shards stays.
                let (scratch, out) = &mut h.route;
                match h.topo.route(vhost, exchange, routing_key, &[], scratch, out) {
                    Ok(r) if r.remote => None,
                    Ok(_) => match out.first() {
                        Some(&(_, s)) if out.iter().all(|&(_, o)| o == s) => Some(s),
                        _ => None,
                    },
                    Err(_) => None,
                }
            }
        };
        match target {
            Some(s) if s != h.id && (s as usize) < h.nshards => {
                self.conn.handoff_to = Some(s);
                true
            }
            _ => false,
        }
    }

    fn connection_closed(&mut self, conn: ConnId) {
        self.conn.leases.clear();
        self.hub
            .out
            .to_shard(0, Item::Control(ControlMsg::ConnectionClosed(conn)));
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
