//! The [`Broker`] a connection's session talks to: its shard.

use super::item::{ControlMsg, Item, QueueOp};
use super::state::Shard;
use crate::broker::control::{check_exclusive, no_exchange, no_queue};
use crate::broker::request::{Reply, Request, Settle};
use crate::broker::topology::RouteError;
use crate::ids::{ChannelRef, ConnId, ConsumerRef, QueueId, VhostId};
use crate::message::Message;
use crate::protocol::{AmqpError, ShortStr};
use crate::session::{Broker, PublishOutcome};

/// A connection's view of its shard. Used only from the connection's task,
/// never while another borrow of the shard's state is held.
pub struct Ctx<'a> {
    pub shard: &'a Shard,
}

impl Ctx<'_> {
    fn owner(&self, queue: QueueId) -> Option<crate::ids::ShardId> {
        self.shard.topo.borrow().queue(queue).map(|q| q.owner)
    }

    /// Resolves a queue name for an operation on its owner, checking
    /// existence and exclusivity here (the topology is replicated).
    fn queue_op(&self, ch: ChannelRef, vhost: VhostId, name: ShortStr, op: QueueOp) {
        let s = self.shard;
        let found = {
            let topo = s.topo.borrow();
            let vname = topo.vhost_name(vhost).to_string();
            match topo.queue_by_name(vhost, name.as_bytes()) {
                None => Err(no_queue(&name, &vname)),
                Some(q) => check_exclusive(q, ch.conn, &vname).map(|_| (q.id, q.owner)),
            }
        };
        match found {
            Err(e) => s.reply(ch, Reply::Error(e)),
            Ok((queue, owner)) => s.send(owner, Item::QueueOp { queue, name, ch, op }),
        }
    }
}

impl Broker for Ctx<'_> {
    fn check_login(&mut self, user: &str, password: &[u8]) -> Result<(), AmqpError> {
        let cfg = &self.shard.cfg;
        if user == cfg.default_user && password == cfg.default_pass.as_bytes() {
            Ok(())
        } else {
            Err(AmqpError::access_refused(
                "Login was refused using authentication mechanism PLAIN. For details see the broker logfile.",
            ))
        }
    }

    fn open_vhost(&mut self, _user: &str, vhost: &str) -> Result<VhostId, AmqpError> {
        self.shard
            .topo
            .borrow()
            .vhost(vhost)
            .map(|v| v.id)
            .ok_or_else(|| AmqpError::not_allowed(format!("vhost {vhost} not found")))
    }

    fn publish(
        &mut self,
        ch: ChannelRef,
        vhost: VhostId,
        msg: Message,
        confirm: Option<u64>,
    ) -> Result<PublishOutcome, AmqpError> {
        let s = self.shard;
        let topo = s.topo.borrow();
        let mut route = s.route.borrow_mut();
        let (scratch, dests) = &mut *route;
        match topo.route(
            vhost,
            msg.exchange(),
            msg.routing_key(),
            msg.props(),
            scratch,
            dests,
        ) {
            Ok(()) => {}
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
        let mut outcome = PublishOutcome {
            routed: !dests.is_empty(),
            ..Default::default()
        };
        for &(queue, owner) in dests.iter() {
            if owner == s.id {
                let mut queues = s.queues.borrow_mut();
                if let Some(slot) = queues.get_mut(&queue) {
                    let c = confirm.map(|seq| (ch, seq));
                    if s.enqueue(slot, msg.clone(), c) && c.is_some() {
                        outcome.pending_confirms += 1;
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
                    },
                );
            }
        }
        Ok(outcome)
    }

    fn exchange_exists(&mut self, vhost: VhostId, exchange: &[u8]) -> Result<(), AmqpError> {
        if exchange.is_empty() {
            return Ok(());
        }
        let topo = self.shard.topo.borrow();
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

    fn request(&mut self, ch: ChannelRef, vhost: VhostId, _user: &str, req: Request) {
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
