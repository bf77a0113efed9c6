//! The simulated broker and its surroundings, driven by one seed: several
//! shards (real hubs: queue owners, control plane, sessions), the rings
//! between them, the group-commit syncer, a simulated disk, a simulated
//! network to the clients, crashes and restarts — all as events on one
//! virtual clock.

use super::checker::{Checker, id_of};
use super::client::{Client, QueueSpec, Role};
use super::rng::Rng;
use super::{Failure, Options, Outcome};
use crate::broker::request::{Reply, Request, Settle};
use crate::config::Config;
use crate::hub::{ConnState, Hub};
use crate::ids::{ChannelRef, ConnId, ConsumerRef, QueueId, VhostId};
use crate::message::Message;
use crate::owner::{Item, SyncWaiter};
use crate::protocol::{AmqpError, ShortStr};
use crate::session::{Broker, Event, Phase, PublishOutcome, Session, SessionConfig, Status};
use crate::storage::{Disk, SimDisk, Syncable, sim_disk::Faults};
use bytes::BytesMut;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::sync::Arc;

/// The wall clock the broker sees at virtual time 0 (ms).
const EPOCH_MS: u64 = 1_800_000_000_000;

/// How long (µs) a finished workload may go without a consumer ack before
/// the run ends and what was never consumed counts as lost.
const STALL_US: u64 = 5_000_000;

enum Ev {
    ClientWake(usize),
    ToServer {
        epoch: u32,
        shard: usize,
        conn: ConnId,
        data: Vec<u8>,
    },
    ServerEof {
        epoch: u32,
        shard: usize,
        conn: ConnId,
    },
    ToClient {
        client: usize,
        incarnation: u32,
        data: Vec<u8>,
    },
    ClientEof {
        client: usize,
        incarnation: u32,
    },
    Ring {
        epoch: u32,
        to: usize,
        items: Vec<Item>,
    },
    SyncStart {
        epoch: u32,
        shard: usize,
    },
    SyncDone {
        epoch: u32,
        shard: usize,
        files: Vec<(QueueId, Arc<dyn Syncable>)>,
        waiters: Vec<SyncWaiter>,
    },
    LogSyncDone {
        epoch: u32,
        file: Arc<dyn Syncable>,
    },
    Timer {
        epoch: u32,
        shard: usize,
        conn: ConnId,
    },
    Sweep {
        epoch: u32,
        shard: usize,
    },
    /// The balancer moves a queue to another shard.
    MoveQueue,
    Crash {
        power: bool,
    },
    Restart,
    Disconnect(usize),
}

impl Ev {
    fn kind(&self) -> u64 {
        match self {
            Ev::ClientWake(_) => 1,
            Ev::ToServer { .. } => 2,
            Ev::ServerEof { .. } => 3,
            Ev::ToClient { .. } => 4,
            Ev::ClientEof { .. } => 5,
            Ev::Ring { .. } => 6,
            Ev::SyncStart { .. } => 7,
            Ev::SyncDone { .. } => 8,
            Ev::LogSyncDone { .. } => 9,
            Ev::Timer { .. } => 10,
            Ev::Sweep { .. } => 11,
            Ev::Crash { .. } => 12,
            Ev::Restart => 13,
            Ev::Disconnect(_) => 14,
            Ev::MoveQueue => 15,
        }
    }
}

/// A connection as its shard holds it (what `shard/conn.rs` does with a
/// socket, here with the simulated network).
struct SConn {
    session: Session,
    state: ConnState,
    inbox: VecDeque<Event>,
    rbuf: BytesMut,
    client: usize,
    incarnation: u32,
    throttled: Vec<QueueId>,
    armed: Option<u64>,
    eof: bool,
}

struct SShard {
    hub: Hub,
    conns: BTreeMap<ConnId, SConn>,
    sync_busy: bool,
    sync_scheduled: bool,
}

struct Broker_ {
    epoch: u32,
    shards: Vec<SShard>,
    /// Last delivery time per (from, to) ring: rings keep order.
    ring_last: Vec<Vec<u64>>,
    /// Connections handed over to another shard: old (shard, id) → new.
    /// The socket moves with them, so what the client sends to the old
    /// place arrives at the new one.
    moved: BTreeMap<(usize, ConnId), (usize, ConnId)>,
    /// Input (and end of input) that arrived while a connection was on
    /// the ring, by its new id.
    transit: BTreeMap<ConnId, (Vec<u8>, bool)>,
}

/// A connection on the ring to another shard, with its id there.
struct SMoving {
    sc: SConn,
    id: ConnId,
}

impl Broker_ {
    /// Where a connection is now, following hand-overs.
    fn locate(&self, mut shard: usize, mut conn: ConnId) -> (usize, ConnId) {
        while let Some(&(s, c)) = self.moved.get(&(shard, conn)) {
            (shard, conn) = (s, c);
        }
        (shard, conn)
    }
}

/// Publishes seen by the broker, for the TTL check: the session's own
/// `Broker`, wrapped.
struct Recorder<'a> {
    inner: crate::hub::Client<'a>,
    check: &'a mut Checker,
    now_ms: u64,
}

impl Broker for Recorder<'_> {
    fn check_login(&mut self, user: &str, password: Option<&[u8]>) -> Result<(), AmqpError> {
        self.inner.check_login(user, password)
    }
    fn open_vhost(&mut self, user: &str, vhost: &str) -> Result<VhostId, AmqpError> {
        self.inner.open_vhost(user, vhost)
    }
    fn publish(
        &mut self,
        ch: ChannelRef,
        vhost: VhostId,
        msg: Message,
        confirm: Option<u64>,
        mandatory: bool,
    ) -> Result<PublishOutcome, AmqpError> {
        if let Some(id) = id_of(msg.body()) {
            self.check.arrived(id, self.now_ms);
        }
        self.inner.publish(ch, vhost, msg, confirm, mandatory)
    }
    fn exchange_exists(&mut self, vhost: VhostId, exchange: &[u8]) -> Result<(), AmqpError> {
        self.inner.exchange_exists(vhost, exchange)
    }
    fn settle(&mut self, queue: QueueId, seq: u64, how: Settle) {
        self.inner.settle(queue, seq, how)
    }
    fn request(&mut self, ch: ChannelRef, vhost: VhostId, user: &str, req: Request) {
        self.inner.request(ch, vhost, user, req)
    }
    fn drop_consumer(&mut self, queue: QueueId, consumer: ConsumerRef) {
        self.inner.drop_consumer(queue, consumer)
    }
    fn resume_consumer(&mut self, queue: QueueId, spec: crate::queue::ConsumerSpec, held: Vec<u64>) {
        self.inner.resume_consumer(queue, spec, held)
    }
    fn written(&mut self, queue: QueueId, consumer: ConsumerRef, n: u32) {
        self.inner.written(queue, consumer, n)
    }
    fn grant_credit(&mut self, queue: QueueId, consumer: ConsumerRef, n: u32) {
        self.inner.grant_credit(queue, consumer, n)
    }
    fn unique_name(&mut self, prefix: &str) -> ShortStr {
        self.inner.unique_name(prefix)
    }
    fn connection_closed(&mut self, conn: ConnId) {
        self.inner.connection_closed(conn)
    }
    fn open_channel(&mut self) -> Result<Option<crate::broker::limits::Lease>, AmqpError> {
        self.inner.open_channel()
    }
    fn hand_off(&mut self, to: crate::session::HandOffTarget<'_>) -> bool {
        self.inner.hand_off(to)
    }
}

pub struct World {
    opts: Options,
    seed: u64,
    rng: Rng,
    /// Virtual time, µs.
    now: u64,
    heap: BinaryHeap<Reverse<(u64, u64)>>,
    events: BTreeMap<u64, Ev>,
    next_ev: u64,
    disk: SimDisk,
    cfg: Arc<Config>,
    broker: Option<Broker_>,
    epoch: u32,
    clients: Vec<Client>,
    /// Where each client's current connection lives: (shard, conn,
    /// incarnation, broker epoch).
    routes: Vec<Option<(usize, ConnId, u32, u32)>>,
    /// Last arrival time per client, each direction, to keep TCP's order.
    to_server_last: Vec<u64>,
    to_client_last: Vec<u64>,
    check: Checker,
    trace: VecDeque<String>,
    crashes: u32,
    /// No more crashes or disconnects: the workload is draining.
    calm: bool,
    handoffs: u64,
    queue_moves: u64,
    events_run: u64,
    /// (acks seen, when that count last changed).
    progress: (u64, u64),
    /// A hash of every event and its time: equal for equal runs.
    fingerprint: u64,
}

impl World {
    pub fn new(seed: u64, opts: &Options) -> World {
        let mut rng = Rng::new(seed);
        let disk = SimDisk::new(rng.next());
        if opts.faults {
            disk.set_faults(Faults {
                sync_error: [0.0, 0.0, 0.01, 0.05][rng.below(4) as usize],
                append_error: [0.0, 0.0, 0.002][rng.below(3) as usize],
            });
        }
        let mut cfg = Config {
            data_dir: "/sim/data".into(),
            shards: opts.shards,
            // Queues on every shard (the balancer, which packs them, is not
            // simulated: its moves are, at random).
            queue_locator: crate::config::QueueLocator::ClientLocal,
            ..Default::default()
        };
        // Small segments: roll-over and segment deletion happen often.
        cfg.limits.segment_size = [4096, 16384, 65536][rng.below(3) as usize];
        cfg.limits.flow_backlog = 200;
        let mut check = Checker::default();
        check.ttl_slack_ms = 1;
        let mut w = World {
            opts: opts.clone(),
            seed,
            rng,
            now: 0,
            heap: BinaryHeap::new(),
            events: BTreeMap::new(),
            next_ev: 0,
            disk,
            cfg: Arc::new(cfg),
            broker: None,
            epoch: 0,
            clients: Vec::new(),
            routes: Vec::new(),
            to_server_last: Vec::new(),
            to_client_last: Vec::new(),
            check,
            trace: VecDeque::new(),
            crashes: 0,
            calm: false,
            handoffs: 0,
            queue_moves: 0,
            events_run: 0,
            progress: (0, 0),
            fingerprint: 0xCBF2_9CE4_8422_2325,
        };
        w.workload();
        w
    }

    fn workload(&mut self) {
        let r = &mut self.rng;
        let durable: Vec<QueueSpec> = (0..r.range(1, 3))
            .map(|i| QueueSpec {
                name: format!("durable-{i}"),
                durable: true,
                max_length: None,
                ttl_ms: None,
            })
            .collect();
        let ttl = QueueSpec {
            name: "ttl".into(),
            durable: false,
            max_length: None,
            ttl_ms: Some(r.range(1, 50)),
        };
        let limited = QueueSpec {
            name: "limited".into(),
            durable: false,
            max_length: Some(r.range(1, 5) as u32),
            ttl_ms: None,
        };
        let mut roles = Vec::new();
        let m = self.opts.messages;
        for q in &durable {
            for _ in 0..r.range(1, 2) {
                roles.push(Role::Publisher {
                    queue: q.clone(),
                    total: r.range(m / 2, m),
                    window: r.range(1, 64) as usize,
                    tx: r.chance(0.3),
                });
            }
            for _ in 0..r.range(1, 2) {
                roles.push(Role::Consumer {
                    queue: q.clone(),
                    prefetch: [1, 2, 10, 100][r.below(4) as usize],
                });
            }
        }
        if r.chance(0.5) {
            roles.push(Role::Publisher {
                queue: ttl.clone(),
                total: r.range(m / 4, m / 2),
                window: r.range(1, 16) as usize,
                tx: false,
            });
            roles.push(Role::Consumer {
                queue: ttl,
                prefetch: [1, 5][r.below(2) as usize],
            });
        }
        if r.chance(0.5) {
            let limit = limited.max_length.unwrap_or(1);
            roles.push(Role::Prober {
                queue: limited,
                limit,
            });
        }
        for (i, role) in roles.into_iter().enumerate() {
            self.clients.push(Client::new(i as u32 + 1, role));
            self.routes.push(None);
            self.to_server_last.push(0);
            self.to_client_last.push(0);
        }
    }

    fn at(&mut self, t: u64, ev: Ev) {
        let seq = self.next_ev;
        self.next_ev += 1;
        self.heap.push(Reverse((t, seq)));
        self.events.insert(seq, ev);
    }

    fn note(&mut self, what: impl FnOnce() -> String) {
        if self.trace.len() >= 400 {
            self.trace.pop_front();
        }
        let s = what();
        self.trace.push_back(format!("{:>10} µs  {s}", self.now));
    }

    fn now_ms(&self) -> u64 {
        EPOCH_MS + self.now / 1000
    }

    /// A network delay: mostly short, sometimes a spike.
    fn net_delay(&mut self) -> u64 {
        if self.rng.chance(0.02) {
            self.rng.range(2_000, 30_000)
        } else {
            self.rng.range(20, 1_500)
        }
    }

    pub fn run(mut self) -> Result<Outcome, Failure> {
        self.start_broker();
        for c in 0..self.clients.len() {
            let t = self.rng.range(0, 5_000);
            self.at(t, Ev::ClientWake(c));
        }
        if self.opts.crashes {
            for _ in 0..self.rng.below(3) {
                let t = self.rng.range(10_000, self.opts.chaos_us);
                let power = self.rng.chance(0.5);
                self.at(t, Ev::Crash { power });
            }
            for _ in 0..self.rng.below(6) {
                let t = self.rng.range(5_000, self.opts.chaos_us);
                let c = self.rng.below(self.clients.len() as u64) as usize;
                self.at(t, Ev::Disconnect(c));
            }
        }
        if self.opts.shards > 1 {
            for _ in 0..self.rng.below(40) {
                let t = self.rng.range(1_000, self.opts.chaos_us * 2);
                self.at(t, Ev::MoveQueue);
            }
        }
        while let Some(Reverse((t, seq))) = self.heap.pop() {
            let ev = self.events.remove(&seq).expect("scheduled");
            self.now = t;
            self.events_run += 1;
            self.fingerprint = (self.fingerprint ^ t ^ (ev.kind() << 56)).wrapping_mul(0x100_0000_01B3);
            if self.now > self.opts.chaos_us {
                self.calm = true;
            }
            if let Err(e) = self.handle(ev) {
                return Err(self.failure(e));
            }
            if !self.check.violations.is_empty() {
                let v = self.check.violations[0].0.clone();
                return Err(self.failure(v));
            }
            if self.done() {
                break;
            }
            // Settled but not done: nothing consumed for a while after the
            // workload ended means what is missing will not come.
            let acked = self.check.counts.acked;
            if acked != self.progress.0 {
                self.progress = (acked, self.now);
            } else if self.calm
                && self.clients.iter().all(Client::finished)
                && self.now > self.progress.1 + STALL_US
            {
                break;
            }
            if self.now > self.opts.max_us || self.events_run > self.opts.max_events {
                break;
            }
        }
        self.check.finish();
        if let Some(v) = self.check.violations.first() {
            let v = v.0.clone();
            return Err(self.failure(v));
        }
        Ok(Outcome {
            seed: self.seed,
            virtual_ms: self.now / 1000,
            events: self.events_run,
            crashes: self.crashes,
            handoffs: self.handoffs,
            queue_moves: self.queue_moves,
            counts: self.check.counts,
            syncs: self.disk.sync_counts(),
            fingerprint: self.fingerprint,
        })
    }

    /// Every publisher finished and every confirmed message was consumed.
    fn done(&self) -> bool {
        self.calm && self.clients.iter().all(Client::finished) && self.check.outstanding() == 0
    }

    fn failure(&self, what: String) -> Failure {
        Failure {
            seed: self.seed,
            what,
            at_us: self.now,
            trace: self.trace.iter().cloned().collect(),
        }
    }

    /// Starts (or restarts) the broker from what the disk holds. A start
    /// that fails (a failed sync while recovering) is retried later, as a
    /// supervisor would.
    fn start_broker(&mut self) {
        let nshards = self.opts.shards;
        let salt = (self.rng.next() as u32).to_le_bytes();
        let recovered = crate::hub::recover_topology(&self.disk, &self.cfg, nshards, salt);
        let (log, changes) = match recovered {
            Ok(x) => x,
            Err(e) => return self.start_failed(format!("topology log: {e}")),
        };
        log::debug!(
            "sim: restart with queues {:?}; disk: {:?}",
            changes
                .iter()
                .filter_map(|c| match c {
                    crate::broker::topology::Change::DeclareQueue(q) =>
                        Some((q.id, q.name.to_string(), q.owner)),
                    _ => None,
                })
                .collect::<Vec<_>>(),
            self.disk.list_dir(std::path::Path::new("/sim/data/queues")),
        );
        let mut log = Some(log);
        let mut shards = Vec::new();
        for i in 0..nshards {
            let hub = Hub::new(
                i as u16,
                nshards,
                self.cfg.clone(),
                SessionConfig::default(),
                Arc::new(self.disk.clone()),
                self.rng.next(),
                &changes,
                if i == 0 { log.take() } else { None },
                self.now_ms(),
            );
            match hub {
                Ok(hub) => shards.push(SShard {
                    hub,
                    conns: BTreeMap::new(),
                    sync_busy: false,
                    sync_scheduled: false,
                }),
                Err(e) => return self.start_failed(e),
            }
        }
        if log::log_enabled!(log::Level::Debug) {
            for sh in &shards {
                for slot in sh.hub.owner.queues() {
                    let ids: Vec<_> = slot
                        .q
                        .ready_iter()
                        .map(|e| {
                            (
                                id_of(e.msg.body()),
                                e.redelivered,
                                e.loc.map(|l| (l.segment(), l.offset())),
                            )
                        })
                        .collect();
                    log::debug!("sim: recovered {}: {ids:?}", slot.name);
                }
            }
        }
        self.epoch += 1;
        self.broker = Some(Broker_ {
            epoch: self.epoch,
            shards,
            ring_last: vec![vec![0; nshards]; nshards],
            moved: BTreeMap::new(),
            transit: BTreeMap::new(),
        });
        for s in 0..nshards {
            let t = self.now + 100_000;
            self.at(
                t,
                Ev::Sweep {
                    epoch: self.epoch,
                    shard: s,
                },
            );
        }
        let epoch = self.epoch;
        self.note(|| format!("broker started (epoch {epoch})"));
    }

    fn start_failed(&mut self, why: String) {
        self.note(|| format!("broker failed to start: {why}"));
        let t = self.now + self.rng.range(1_000, 20_000);
        self.at(t, Ev::Restart);
    }

    fn handle(&mut self, ev: Ev) -> Result<(), String> {
        match ev {
            Ev::ClientWake(c) => self.client_wake(c),
            Ev::ToServer {
                epoch,
                shard,
                conn,
                data,
            } => {
                if !self.live(epoch) {
                    return Ok(());
                }
                let b = self.broker.as_mut().expect("live");
                let (shard, conn) = b.locate(shard, conn);
                if let Some(sc) = b.shards[shard].conns.get_mut(&conn) {
                    sc.rbuf.extend_from_slice(&data);
                    sc.session.note_read(self.now / 1000);
                } else if let Some(t) = b.transit.get_mut(&conn) {
                    t.0.extend_from_slice(&data);
                }
                self.run_shard(shard);
                Ok(())
            }
            Ev::ServerEof { epoch, shard, conn } => {
                if !self.live(epoch) {
                    return Ok(());
                }
                let b = self.broker.as_mut().expect("live");
                let (shard, conn) = b.locate(shard, conn);
                if let Some(sc) = b.shards[shard].conns.get_mut(&conn) {
                    sc.eof = true;
                } else if let Some(t) = b.transit.get_mut(&conn) {
                    t.1 = true;
                }
                self.run_shard(shard);
                Ok(())
            }
            Ev::ToClient {
                client,
                incarnation,
                data,
            } => {
                let now = self.now;
                let c = &mut self.clients[client];
                if c.conn.as_ref().is_some_and(|k| k.incarnation == incarnation) {
                    match c.on_bytes(&data, now, &mut self.check) {
                        Ok(()) => self.flush_client(client),
                        Err(e) if e == super::client::REFUSED => {
                            self.note(|| format!("client {} refused by the broker; starts over", client + 1));
                            self.drop_client(client);
                        }
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            }
            Ev::ClientEof { client, incarnation } => {
                let c = &mut self.clients[client];
                if c.conn.as_ref().is_some_and(|k| k.incarnation == incarnation) {
                    c.lost();
                    self.routes[client] = None;
                    let t = self.now + self.rng.range(1_000, 20_000);
                    self.at(t, Ev::ClientWake(client));
                }
                Ok(())
            }
            Ev::Ring { epoch, to, items } => {
                if !self.live(epoch) {
                    return Ok(());
                }
                let now_ms = self.now_ms();
                let hub = &mut self.broker.as_mut().expect("live").shards[to].hub;
                for item in items {
                    if let Item::QueueArrives(a) = &item
                        && a.slot.is_some()
                    {
                        self.queue_moves += 1;
                    }
                    if let Item::Publish { msg, .. } = &item
                        && let Some(id) = id_of(msg.body())
                    {
                        self.check.arrived(id, now_ms);
                    }
                    hub.handle_item(item, now_ms);
                }
                self.run_shard(to);
                Ok(())
            }
            Ev::SyncStart { epoch, shard } => {
                if !self.live(epoch) {
                    return Ok(());
                }
                let s = &mut self.broker.as_mut().expect("live").shards[shard];
                s.sync_scheduled = false;
                if s.sync_busy {
                    return Ok(());
                }
                let batch = s.hub.take_sync();
                if batch.is_empty() {
                    return Ok(());
                }
                s.sync_busy = true;
                for (_, f) in &batch.files {
                    f.begin_sync();
                }
                let latency = if self.rng.chance(0.05) {
                    self.rng.range(5_000, 40_000)
                } else {
                    self.rng.range(50, 3_000)
                };
                let t = self.now + latency;
                self.at(
                    t,
                    Ev::SyncDone {
                        epoch,
                        shard,
                        files: batch.files,
                        waiters: batch.waiters,
                    },
                );
                Ok(())
            }
            Ev::SyncDone {
                epoch,
                shard,
                files,
                waiters,
            } => {
                if !self.live(epoch) {
                    return Ok(());
                }
                let mut failed = Vec::new();
                for (q, f) in &files {
                    if f.sync().is_err() && !failed.contains(q) {
                        failed.push(*q);
                    }
                }
                if !failed.is_empty() {
                    self.note(|| format!("sync failed for {failed:?}"));
                }
                let now_ms = self.now_ms();
                let s = &mut self.broker.as_mut().expect("live").shards[shard];
                s.sync_busy = false;
                s.hub.synced(waiters, &failed, now_ms);
                self.run_shard(shard);
                Ok(())
            }
            Ev::LogSyncDone { epoch, file } => {
                if !self.live(epoch) {
                    return Ok(());
                }
                let ok = file.sync().is_ok();
                let now_ms = self.now_ms();
                let hub = &mut self.broker.as_mut().expect("live").shards[0].hub;
                hub.log_synced(ok, now_ms);
                self.run_shard(0);
                Ok(())
            }
            Ev::Timer { epoch, shard, conn } => {
                if !self.live(epoch) {
                    return Ok(());
                }
                let now_ms = self.now_ms();
                let mono = self.now / 1000;
                let s = &mut self.broker.as_mut().expect("live").shards[shard];
                if let Some(sc) = s.conns.get_mut(&conn) {
                    sc.armed = None;
                    let mut b = s.hub.client(&mut sc.state, now_ms);
                    sc.session.handle_timeout(mono, &mut b);
                }
                self.run_shard(shard);
                Ok(())
            }
            Ev::Sweep { epoch, shard } => {
                if !self.live(epoch) {
                    return Ok(());
                }
                let now_ms = self.now_ms();
                self.broker.as_mut().expect("live").shards[shard]
                    .hub
                    .sweep(now_ms);
                self.run_shard(shard);
                let t = self.now + 100_000;
                self.at(t, Ev::Sweep { epoch, shard });
                Ok(())
            }
            Ev::Crash { power } => {
                if self.calm || self.broker.is_none() {
                    return Ok(());
                }
                self.crashes += 1;
                self.note(|| format!("CRASH ({})", if power { "power loss" } else { "process" }));
                self.check.crashed(self.now);
                self.broker = None;
                let listing = |d: &SimDisk| {
                    let root = std::path::Path::new("/sim/data/queues");
                    d.list_dir(root)
                        .unwrap_or_default()
                        .into_iter()
                        .map(|q| (q.clone(), d.list_dir(&root.join(&q)).unwrap_or_default()))
                        .collect::<Vec<_>>()
                };
                log::debug!("sim: before the crash: {:?}", listing(&self.disk));
                if power {
                    self.disk.crash_power();
                } else {
                    self.disk.crash_process();
                }
                log::debug!("sim: after the crash: {:?}", listing(&self.disk));
                for c in 0..self.clients.len() {
                    if let Some(incarnation) = self.clients[c].conn.as_ref().map(|k| k.incarnation) {
                        let t = self.now + self.rng.range(10, 500);
                        self.at(
                            t,
                            Ev::ClientEof {
                                client: c,
                                incarnation,
                            },
                        );
                    }
                }
                let t = self.now + self.rng.range(1_000, 50_000);
                self.at(t, Ev::Restart);
                Ok(())
            }
            Ev::Restart => {
                self.start_broker();
                Ok(())
            }
            Ev::MoveQueue => {
                let n = self.opts.shards as u64;
                let pick = self.rng.next();
                let to = self.rng.below(n) as crate::ids::ShardId;
                let Some(b) = self.broker.as_mut() else {
                    return Ok(());
                };
                let hub = &mut b.shards[0].hub;
                let queues: Vec<_> = hub
                    .topo
                    .queues()
                    .filter(|q| q.exclusive.is_none() && !q.is_quorum())
                    .map(|q| (q.id, q.name.clone()))
                    .collect();
                if queues.is_empty() {
                    return Ok(());
                }
                let (queue, name) = queues[(pick % queues.len() as u64) as usize].clone();
                hub.submit_control(crate::owner::ControlMsg::MoveQueue { queue, to });
                self.note(|| format!("move queue '{name}' to shard {to}"));
                self.run_shard(0);
                Ok(())
            }
            Ev::Disconnect(c) => {
                if self.calm {
                    return Ok(());
                }
                self.note(|| format!("client {} disconnects", c + 1));
                self.drop_client(c);
                Ok(())
            }
        }
    }

    /// A client closes its socket (cleanly: what it sent arrives first)
    /// and connects again later.
    fn drop_client(&mut self, c: usize) {
        if let Some((shard, conn, _, epoch)) = self.routes[c].take() {
            self.clients[c].lost();
            let t = self.to_server_last[c].max(self.now) + 1;
            self.to_server_last[c] = t;
            self.at(t, Ev::ServerEof { epoch, shard, conn });
            let t = self.now + self.rng.range(1_000, 20_000);
            self.at(t, Ev::ClientWake(c));
        }
    }

    fn live(&self, epoch: u32) -> bool {
        self.broker.as_ref().is_some_and(|b| b.epoch == epoch)
    }

    fn client_wake(&mut self, c: usize) -> Result<(), String> {
        if self.clients[c].conn.is_none() {
            if let Some(b) = &mut self.broker {
                // SO_REUSEPORT: the kernel picks the shard.
                let shard = self.rng.below(b.shards.len() as u64) as usize;
                let incarnation = self.clients[c].connect();
                let s = &mut b.shards[shard];
                let conn = s.hub.new_conn_id();
                let session = Session::new(conn, s.hub.session_cfg.clone(), self.now / 1000);
                s.conns.insert(
                    conn,
                    SConn {
                        session,
                        state: ConnState::new(None),
                        inbox: VecDeque::new(),
                        rbuf: BytesMut::new(),
                        client: c,
                        incarnation,
                        throttled: Vec::new(),
                        armed: None,
                        eof: false,
                    },
                );
                self.routes[c] = Some((shard, conn, incarnation, b.epoch));
                let id = self.clients[c].id;
                self.note(|| format!("client {id} connects to shard {shard} as {conn:?}"));
            }
        } else if self.routes[c].is_some_and(|(_, _, _, epoch)| self.live(epoch)) {
            // A client whose broker died does not know it yet, but what it
            // sends now never arrives: skip it (an ack sent into a dead
            // connection is not an ack).
            let (now, now_ms) = (self.now, self.now_ms());
            self.clients[c].on_wake(now, now_ms, &mut self.rng, &mut self.check);
        }
        self.flush_client(c);
        let busy = matches!(self.clients[c].role, Role::Consumer { .. });
        let pause = if busy {
            self.rng.range(100, 3_000)
        } else {
            self.rng.range(200, 5_000)
        };
        let t = self.now + pause;
        self.at(t, Ev::ClientWake(c));
        Ok(())
    }

    /// Sends what a client wrote, over its connection, in order.
    fn flush_client(&mut self, c: usize) {
        let Some(conn) = &mut self.clients[c].conn else {
            return;
        };
        if conn.out.is_empty() {
            return;
        }
        let data = std::mem::take(&mut conn.out).to_vec();
        let Some((shard, id, _, epoch)) = self.routes[c] else {
            return;
        };
        // Sometimes in two pieces: partial frames reach the broker.
        let split = if data.len() > 1 && self.rng.chance(0.2) {
            self.rng.range(1, data.len() as u64 - 1) as usize
        } else {
            data.len()
        };
        let (a, b) = data.split_at(split);
        for part in [a, b] {
            if part.is_empty() {
                continue;
            }
            let t = self.to_server_last[c].max(self.now + self.net_delay_small());
            self.to_server_last[c] = t;
            self.at(
                t,
                Ev::ToServer {
                    epoch,
                    shard,
                    conn: id,
                    data: part.to_vec(),
                },
            );
        }
    }

    fn net_delay_small(&mut self) -> u64 {
        self.net_delay()
    }

    /// A shard's turn: every connection with work runs (as its task would),
    /// then the hub's step; events go to connections (what a gone one held
    /// is given back), items to the rings, output to the network, and the
    /// syncer is woken — until nothing is left.
    fn run_shard(&mut self, s: usize) {
        let now_ms = self.now_ms();
        let mono = self.now / 1000;
        let Some(b) = &mut self.broker else { return };
        let epoch = b.epoch;
        let mut outputs: Vec<(usize, u32, Vec<u8>)> = Vec::new();
        let mut closed: Vec<(usize, u32)> = Vec::new();
        let mut timers: Vec<(u64, ConnId)> = Vec::new();
        let mut deliveries = Vec::new();
        let mut pending_moves: Vec<(ConnId, usize, SConn)> = Vec::new();
        loop {
            for (old_id, to, sc) in pending_moves.drain(..) {
                self.handoffs += 1;
                let id = b.shards[to].hub.new_conn_id();
                b.moved.insert((s, old_id), (to, id));
                b.transit.insert(id, (Vec::new(), false));
                let (client, incarnation) = (sc.client, sc.incarnation);
                if let Some(r) = &mut self.routes[client]
                    && r.1 == old_id
                    && r.2 == incarnation
                {
                    (r.0, r.1) = (to, id);
                }
                b.shards[s].hub.out.items[to]
                    .push(Item::Adopt(crate::owner::Adoption(Box::new(SMoving { sc, id }))));
            }
            let shard = &mut b.shards[s];
            let ids: Vec<ConnId> = shard.conns.keys().copied().collect();
            for id in ids {
                let sc = shard.conns.get_mut(&id).expect("listed");
                let mut rec = Recorder {
                    inner: shard.hub.client(&mut sc.state, now_ms),
                    check: &mut self.check,
                    now_ms,
                };
                sc.session.set_clock(mono);
                let mut any = false;
                while let Some(ev) = sc.inbox.pop_front() {
                    match ev {
                        Event::Throttle { queue, on } => {
                            sc.throttled.retain(|q| *q != queue);
                            if on {
                                sc.throttled.push(queue);
                            }
                        }
                        Event::Describe => {}
                        ev => {
                            sc.session.on_event(ev, &mut rec);
                            any = true;
                        }
                    }
                }
                if any {
                    sc.session.end_batch(&mut rec);
                }
                let lingering = sc.session.phase() == Phase::Lingering;
                let can_feed = lingering || sc.throttled.is_empty() && !sc.session.over_limits();
                if can_feed
                    && (!sc.rbuf.is_empty() || sc.session.has_unprocessed_frames())
                    && !sc.session.is_paused()
                    && sc.session.feed(&mut sc.rbuf, &mut rec) == Status::Close
                {
                    sc.session.abort("closed", &mut rec);
                }
                if sc.eof && (!sc.session.is_paused() || sc.rbuf.is_empty()) {
                    sc.session.abort("client closed TCP connection", &mut rec);
                }
                let out = std::mem::take(sc.session.output());
                if !out.is_empty() {
                    sc.session.note_written(mono);
                    sc.session.report_written(&mut rec);
                    outputs.push((sc.client, sc.incarnation, out.to_vec()));
                }
                if sc.session.phase() == Phase::Closed {
                    closed.push((sc.client, sc.incarnation));
                    shard.conns.remove(&id);
                    continue;
                }
                if sc.session.handoff_pending() {
                    // As the runtime does: output first, then the
                    // connection travels on the ring behind what it sent.
                    let to = sc.state.handoff_to.take().expect("a hand-off has a shard") as usize;
                    let mut sc = shard.conns.remove(&id).expect("listed");
                    sc.armed = None;
                    sc.throttled.clear();
                    // Only notices can be addressed to a quiet connection.
                    for ev in sc.inbox.drain(..) {
                        if !matches!(ev, Event::Describe | Event::Throttle { .. }) {
                            shard.hub.orphan(ev);
                        }
                    }
                    pending_moves.push((id, to, sc));
                    continue;
                }
                if let Some(d) = sc.session.poll_timeout()
                    && sc.armed.is_none_or(|a| d < a)
                {
                    sc.armed = Some(d);
                    timers.push((d, id));
                }
            }
            shard.hub.step(now_ms);
            let mut more = !pending_moves.is_empty();
            for a in std::mem::take(&mut shard.hub.out.adopted) {
                let m =
                    a.0.downcast::<SMoving>()
                        .expect("the simulation hands over its own connections");
                let SMoving { mut sc, id } = *m;
                sc.session.rebind(id);
                if let Some((data, eof)) = b.transit.remove(&id) {
                    sc.rbuf.extend_from_slice(&data);
                    sc.eof |= eof;
                }
                shard.conns.insert(id, sc);
                more = true;
            }
            // What the broker hands out now, for the TTL check.
            for (_, ev) in &shard.hub.out.events {
                observe(ev, &mut deliveries);
            }
            for items in &shard.hub.out.items {
                for item in items {
                    if let Item::Event { ev, .. } = item {
                        observe(ev, &mut deliveries);
                    }
                }
            }
            let events = std::mem::take(&mut shard.hub.out.events);
            let mut orphans = Vec::new();
            for (conn, ev) in events {
                match shard.conns.get_mut(&conn) {
                    Some(sc) => {
                        sc.inbox.push_back(ev);
                        more = true;
                    }
                    None => orphans.push(ev),
                }
            }
            for ev in orphans {
                shard.hub.orphan(ev);
                more = true;
            }
            if !more {
                break;
            }
        }
        for id in deliveries {
            self.check.broker_delivered(id, now_ms);
        }
        // Rings: one batch per destination, in order per pair.
        let nshards = b.shards.len();
        let mut rings = Vec::new();
        for d in 0..nshards {
            if d == s {
                continue;
            }
            let items = std::mem::take(&mut b.shards[s].hub.out.items[d]);
            if !items.is_empty() {
                rings.push((d, items));
            }
        }
        let log_syncs = std::mem::take(&mut b.shards[s].hub.out.log_syncs);
        b.shards[s].hub.out.closes.clear();
        let wants_sync = b.shards[s].hub.owner.wants_sync() && !b.shards[s].sync_scheduled;
        if wants_sync {
            b.shards[s].sync_scheduled = true;
        }
        for (d, items) in rings {
            let delay = self.rng.range(5, 800);
            let b = self.broker.as_mut().expect("live");
            let t = b.ring_last[s][d].max(self.now + delay);
            b.ring_last[s][d] = t;
            self.at(t, Ev::Ring { epoch, to: d, items });
        }
        for file in log_syncs {
            let t = self.now + self.rng.range(50, 3_000);
            self.at(t, Ev::LogSyncDone { epoch, file });
        }
        if wants_sync {
            let linger = self.rng.range(0, 500);
            self.at(self.now + linger, Ev::SyncStart { epoch, shard: s });
        }
        for (d, conn) in timers {
            let t = (d * 1000).max(self.now);
            self.at(
                t,
                Ev::Timer {
                    epoch,
                    shard: s,
                    conn,
                },
            );
        }
        for (client, incarnation, data) in outputs {
            let t = self.to_client_last[client].max(self.now + self.net_delay());
            self.to_client_last[client] = t;
            self.at(
                t,
                Ev::ToClient {
                    client,
                    incarnation,
                    data,
                },
            );
        }
        for (client, incarnation) in closed {
            let t = self.to_client_last[client].max(self.now) + 1;
            self.to_client_last[client] = t;
            self.at(t, Ev::ClientEof { client, incarnation });
        }
    }
}

/// The message of a delivery or a get the broker hands out.
fn observe(ev: &Event, out: &mut Vec<super::checker::MsgId>) {
    let msg = match ev {
        Event::Deliver(d) => &d.msg,
        Event::Reply {
            reply: Reply::GetOk { entry, .. },
            ..
        } => &entry.msg,
        _ => return,
    };
    if let Some(id) = id_of(msg.body()) {
        out.push(id);
    }
}
