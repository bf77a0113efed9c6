//! One shard's runtime state: its hub (the socket-free core) and the
//! plumbing around it — connection inboxes, wake-ups for the ring flushers
//! and the syncer, and the figures management reads.

use super::notify::Notify;
use crate::admin::SharedStats;
use crate::config::Config;
use crate::hub::{CloseMatch, Hub};
use crate::ids::{ConnId, IdMap, ShardId};
use crate::session::Event;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Waker;

/// A connection as its shard sees it: the inbox other tasks fill and the
/// wake-up for the connection's task. Owned by the connection's shard.
pub struct ConnHandle {
    pub inbox: RefCell<VecDeque<Event>>,
    pub notify: Notify,
    /// What the management plane shows; refreshed by the connection's task
    /// when its state changes and about once a second.
    pub meta: RefCell<ConnMeta>,
}

/// A connection's description for management.
#[derive(Debug, Clone, Default)]
pub struct ConnMeta {
    pub name: String,
    pub peer: Option<std::net::SocketAddr>,
    pub local: Option<std::net::SocketAddr>,
    pub connected_at_ms: u64,
    pub user: String,
    pub vhost: String,
    pub state: &'static str,
    pub frame_max: u32,
    pub heartbeat: u16,
    pub client_properties: serde_json::Value,
    pub channels: Vec<crate::session::ChannelSummary>,
    pub recv_oct: u64,
    pub send_oct: u64,
    pub published: u64,
    pub delivered: u64,
    pub confirmed: u64,
    pub auth_mechanism: &'static str,
    /// A TLS connection's protocol, cipher and client certificate.
    pub tls: Option<crate::tls::Peer>,
}

impl ConnHandle {
    pub fn push(&self, ev: Event) {
        self.inbox.borrow_mut().push_back(ev);
        self.notify.notify();
    }
}

/// Group-commit figures of one shard.
pub struct SyncStats {
    pub fsyncs: u64,
    pub files: u64,
    pub waiters: u64,
    /// fsync latency in microseconds.
    pub latency: hdrhistogram::Histogram<u64>,
}

impl Default for SyncStats {
    fn default() -> Self {
        SyncStats {
            fsyncs: 0,
            files: 0,
            waiters: 0,
            latency: hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 2).expect("valid bounds"),
        }
    }
}

/// Everything one shard owns. Lives on its executor thread; shared by that
/// shard's tasks through `Rc`. No locks: each field is touched only by this
/// thread, and RefCell borrows never span an await.
pub struct Shard {
    pub id: ShardId,
    pub cfg: Arc<Config>,
    pub hub: RefCell<Hub>,
    pub conns: RefCell<IdMap<ConnId, Rc<ConnHandle>>>,
    /// Wakes the ring flusher of each peer.
    pub flush: Vec<Notify>,
    /// Connections waiting for a congested outbox to drain.
    pub drain_waiters: RefCell<Vec<Waker>>,
    /// Connections stopped because a queue move holds too much
    /// (`Hub::moves_congested`); the step that releases it wakes them.
    pub move_congested: Cell<bool>,
    pub sync_notify: Notify,
    pub stopping: Cell<bool>,
    pub stats: Arc<SharedStats>,
    pub sync_stats: RefCell<SyncStats>,
    /// Items and ring pushes sent to other shards.
    pub ring_items: Cell<u64>,
    pub ring_batches: Cell<u64>,
    /// Connections this shard handed over to another.
    pub handoffs: Cell<u64>,
    /// Direct replies dropped by this shard's connections (their client
    /// was not reading).
    pub replies_dropped: Cell<u64>,
    /// Bytes read from clients' sockets (the work the park batching
    /// control measures), and how long parks may hold their wake-up now
    /// (µs, 0: not at all).
    pub recv_bytes: Cell<u64>,
    pub park_window_us: Cell<u64>,
    /// Rung by the admin task when the broker may have been asked to stop.
    pub stop_notify: Notify,
    /// Rung when something may expire that could not before.
    pub sweep_notify: Notify,
    /// Shard 0: this node's side of its cluster (the cluster port, the
    /// metadata group).
    pub cluster: RefCell<Option<Rc<super::cluster::Glue>>>,
    /// Shard 0, clustered: the metadata log's last entry handed to the
    /// control plane (what a held answer waits for: see
    /// [`super::visible`]).
    pub meta_index: Cell<u64>,
}

impl Shard {
    pub fn new(hub: Hub, cfg: Arc<Config>, stats: Arc<SharedStats>) -> Shard {
        let (id, nshards) = (hub.id, hub.nshards);
        Shard {
            id,
            cfg,
            hub: RefCell::new(hub),
            conns: RefCell::default(),
            flush: (0..nshards).map(|_| Notify::default()).collect(),
            drain_waiters: RefCell::default(),
            move_congested: Cell::new(false),
            sync_notify: Notify::default(),
            stopping: Cell::new(false),
            stats,
            sync_stats: RefCell::default(),
            ring_items: Cell::new(0),
            ring_batches: Cell::new(0),
            handoffs: Cell::new(0),
            replies_dropped: Cell::new(0),
            recv_bytes: Cell::new(0),
            park_window_us: Cell::new(0),
            cluster: RefCell::new(None),
            meta_index: Cell::new(0),
            stop_notify: Notify::default(),
            sweep_notify: Notify::default(),
        }
    }

    /// Runs the hub's step and carries out what it left: events to this
    /// shard's connections (what a gone connection held is given back),
    /// closes of connections whose vhost or user went, topology log syncs,
    /// the syncer's and the ring flushers' wake-ups. Run after every batch
    /// of work of every task, so one ring push carries a whole batch.
    /// `now`: the wall clock of the batch (the same the batch's work used,
    /// so a message published with a TTL of 0 is still deliverable in the
    /// step that follows its publish).
    pub fn after_step(self: &Rc<Self>, now: u64) {
        loop {
            let (events, closes, log_syncs, adopted, wants_sync, proposals, forwards, remote, quorum) = {
                let mut hub = self.hub.borrow_mut();
                hub.step(now);
                let wants_sync = hub.owner.wants_sync();
                if hub.owner.take_sweep_kick() {
                    self.sweep_notify.notify();
                }
                let out = &mut hub.out;
                (
                    std::mem::take(&mut out.events),
                    std::mem::take(&mut out.closes),
                    std::mem::take(&mut out.log_syncs),
                    std::mem::take(&mut out.adopted),
                    wants_sync,
                    (std::mem::take(&mut out.proposals), std::mem::take(&mut out.held)),
                    std::mem::take(&mut out.forwards),
                    (
                        std::mem::take(&mut out.remote_ops),
                        std::mem::take(&mut out.remote_replies),
                    ),
                    (
                        std::mem::take(&mut out.quorum),
                        std::mem::take(&mut out.quorum_open),
                        std::mem::take(&mut out.quorum_forget),
                        std::mem::take(&mut out.quorum_members),
                        std::mem::take(&mut out.moved),
                    ),
                )
            };
            let (quorum, quorum_open, quorum_forget, quorum_members, moved) = quorum;
            if !quorum_open.is_empty() {
                super::quorum::open(self, quorum_open);
            }
            if !quorum_members.is_empty() {
                super::replicas::members_changed(self, quorum_members);
            }
            if !quorum_forget.is_empty() {
                super::quorum::forget(self, quorum_forget);
            }
            if !quorum.is_empty() {
                super::quorum::propose(self, quorum);
            }
            if !moved.is_empty() {
                if self.cluster.borrow().is_some() {
                    super::quorum::recorded(self, &moved);
                    super::cluster::resend_settles(self, &moved);
                    let elsewhere: Vec<_> = {
                        let hub = self.hub.borrow();
                        moved
                            .iter()
                            .copied()
                            .filter(|q| hub.topo.queue(*q).is_none_or(|d| d.node != 0))
                            .collect()
                    };
                    super::cluster::forget_queues(self, &elsewhere);
                }
                let conns: Vec<_> = self.conns.borrow().values().cloned().collect();
                for q in moved {
                    for c in &conns {
                        c.push(crate::session::Event::QueueMoved { queue: q });
                    }
                }
            }
            let (proposals, held) = proposals;
            if !proposals.is_empty() {
                super::cluster::propose(self, proposals);
            }
            if !held.is_empty() {
                super::visible::hold(self, held);
            }
            // Publishes before queue operations: a channel's get or purge
            // behind its publish reaches the other node after it.
            if !forwards.is_empty() {
                super::cluster::forward(self, forwards);
            }
            let (remote_ops, remote_replies) = remote;
            if !remote_ops.is_empty() {
                super::cluster::send_ops(self, remote_ops);
            }
            if !remote_replies.is_empty() {
                super::cluster::send_replies(self, remote_replies);
            }
            for a in adopted {
                super::conn::adopt(self, a);
            }
            if wants_sync {
                self.sync_notify.notify();
            }
            for file in log_syncs {
                let shard = self.clone();
                glommio::spawn_local(async move {
                    let ok = glommio::executor()
                        .spawn_blocking(move || match file.sync() {
                            Ok(()) => true,
                            Err(e) => {
                                log::error!("cannot sync the topology log: {e}");
                                false
                            }
                        })
                        .await;
                    let now = now_ms();
                    shard.hub.borrow_mut().log_synced(ok, now);
                    shard.after_step(now);
                })
                .detach();
            }
            self.close_matching(&closes);
            let mut orphans = Vec::new();
            {
                let conns = self.conns.borrow();
                for (conn, ev) in events {
                    if conn == ConnId::FORWARDED {
                        super::cluster::forwarded_event(self, ev);
                        continue;
                    }
                    if conn.is_stand_in() {
                        super::cluster::stand_in_event(self, conn, ev);
                        continue;
                    }
                    match conns.get(&conn) {
                        Some(h) => h.push(ev),
                        None => orphans.push(ev),
                    }
                }
            }
            if self.id == 0 {
                super::cluster::flush_events(self);
                super::visible::wake(self);
            }
            if orphans.is_empty() {
                break;
            }
            let mut hub = self.hub.borrow_mut();
            for ev in orphans {
                hub.orphan(ev);
            }
        }
        let hub = self.hub.borrow();
        for (d, items) in hub.out.items.iter().enumerate() {
            if !items.is_empty() && d != self.id as usize {
                self.flush[d].notify();
            }
        }
        if self.move_congested.get() && !hub.moves_congested() {
            self.move_congested.set(false);
            for w in self.drain_waiters.borrow_mut().drain(..) {
                w.wake();
            }
        }
    }

    /// RabbitMQ closes the connections of a deleted vhost or user.
    fn close_matching(&self, closes: &[(CloseMatch, String)]) {
        if closes.is_empty() {
            return;
        }
        for h in self.conns.borrow().values() {
            let hit = {
                let m = h.meta.borrow();
                closes.iter().find(|(c, _)| match c {
                    CloseMatch::Vhost(v) => *v == m.vhost,
                    CloseMatch::User(u) => *u == m.user,
                })
            };
            if let Some((_, text)) = hit {
                h.push(Event::ForceClose {
                    code: crate::protocol::reply::CONNECTION_FORCED,
                    text: text.clone(),
                });
            }
        }
    }

    /// Items for one peer are past the high-water mark: the shard's
    /// publishers stop reading until the ring takes them.
    pub fn outbox_congested(&self) -> bool {
        let high = self.cfg.limits.outbox_high;
        let hub = self.hub.borrow();
        if hub.moves_congested() {
            self.move_congested.set(true);
            return true;
        }
        hub.out
            .items
            .iter()
            .enumerate()
            .any(|(d, b)| d != self.id as usize && b.len() > high)
    }
}

/// Wall-clock milliseconds (TTLs are wall-clock in RabbitMQ too).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The machine's name, for the node name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// Random bits from the kernel (seeds, password salts); falls back to the
/// clock and pid if getrandom fails.
pub fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    // SAFETY: getrandom writes at most b.len() bytes into b.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n == 8 {
        u64::from_ne_bytes(b)
    } else {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9E37_79B9, |d| d.as_nanos() as u64)
            ^ std::process::id() as u64
    }
}

/// A fresh salt for a password hash.
pub fn random_salt() -> [u8; 4] {
    (random_u64() as u32).to_le_bytes()
}

/// (voluntary, involuntary) context switches of the calling thread: how
/// often a shard slept and was woken, and how often it was preempted.
pub fn context_switches() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/thread-self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    (
        field("voluntary_ctxt_switches:"),
        field("nonvoluntary_ctxt_switches:"),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn salts_vary() {
        let salts: std::collections::HashSet<[u8; 4]> = (0..16).map(|_| super::random_salt()).collect();
        assert!(salts.len() > 1, "{salts:?}");
    }
}
