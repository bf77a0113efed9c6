//! The control plane composed with the queue owners, through
//! [`Hub`]s on a simulated disk: a delete counts the messages its owner
//! holds (behind the publishes the deleting channel sent first), a closed
//! connection's exclusive queues go on every shard, and the durable
//! topology and messages come back after a restart.

use super::*;
use crate::config::Config;
use crate::hub::Hub;
use crate::message::Message;
use crate::protocol::BasicProperties;
use crate::session::{Event, SessionConfig};

/// Shards whose rings are FIFO per pair, with items for shard 0 (the
/// control plane) always carried first: the control plane runs ahead of
/// the data path as far as the rings allow.
struct Cluster {
    hubs: Vec<Hub>,
    disk: SimDisk,
    /// Events for connections, with the shard that got them.
    events: Vec<(ShardId, String)>,
}

fn config() -> Arc<Config> {
    Arc::new(Config {
        data_dir: log_dir(),
        // These tests place queues on the declaring shard.
        queue_locator: crate::config::QueueLocator::ClientLocal,
        ..Config::default()
    })
}

fn describe_event(ev: &Event) -> String {
    match ev {
        Event::Reply { ch, reply } => format!("{:?}/{}: {}", ch.conn, ch.channel, describe_reply(reply)),
        Event::Confirm { ch, seq, ok } => format!("{:?}/{}: confirm {seq} {ok}", ch.conn, ch.channel),
        Event::ConsumerCancelled { consumer } => format!("cancelled c{}", consumer.id),
        other => format!("{other:?}"),
    }
}

impl Cluster {
    /// A fresh broker of `n` shards on a new disk.
    fn new(n: usize) -> Cluster {
        let disk = SimDisk::new(5);
        disk.create_dir_all(&log_dir()).unwrap();
        let (mut log, initial) = TopoLog::open(&disk, &log_dir()).unwrap();
        assert!(initial.is_empty());
        let changes = first_boot();
        log.append(&changes.iter().collect::<Vec<_>>()).unwrap();
        log.file().sync().unwrap();
        Self::boot(n, disk, log, &changes)
    }

    fn boot(n: usize, disk: SimDisk, log: TopoLog, initial: &[Change]) -> Cluster {
        let mut log = Some(log);
        let hubs = (0..n)
            .map(|i| {
                Hub::new(
                    i as ShardId,
                    n,
                    config(),
                    SessionConfig::default(),
                    Arc::new(disk.clone()),
                    i as u64 + 1,
                    initial,
                    if i == 0 { log.take() } else { None },
                    0,
                )
                .expect("boots")
            })
            .collect();
        Cluster {
            hubs,
            disk,
            events: Vec::new(),
        }
    }

    /// The process dies; a new one reads the log back and starts over.
    fn restart(self) -> Cluster {
        let n = self.hubs.len();
        let disk = self.disk.clone();
        drop(self);
        disk.crash_process();
        let (log, initial) = TopoLog::open(&disk, &log_dir()).unwrap();
        Self::boot(n, disk, log, &initial)
    }

    /// Sends an item from shard `from` to shard `to` (queued behind what
    /// `from` sent there before).
    fn send(&mut self, from: usize, to: ShardId, item: Item) {
        crate::owner::Effects::to_shard(&mut self.hubs[from].out, to, item);
    }

    fn request(&mut self, ch: ChannelRef, req: Request) {
        self.send(
            ch.shard() as usize,
            0,
            Item::Control(ControlMsg::Request {
                ch,
                vhost: VhostId(1),
                user: "guest".into(),
                req,
            }),
        );
    }

    /// Runs every shard until nothing moves: steps, syncs (log and
    /// stores), and carries items — those for shard 0 first.
    fn pump(&mut self) {
        for _ in 0..10_000 {
            let mut moved = false;
            for i in 0..self.hubs.len() {
                let h = &mut self.hubs[i];
                h.step(0);
                for f in std::mem::take(&mut h.out.log_syncs) {
                    f.begin_sync();
                    let ok = f.sync().is_ok();
                    h.log_synced(ok, 0);
                    moved = true;
                }
                if h.owner.wants_sync() {
                    let batch = h.take_sync();
                    let mut failed = Vec::new();
                    for (q, f) in &batch.files {
                        f.begin_sync();
                        if f.sync().is_err() {
                            failed.push(*q);
                        }
                    }
                    h.synced(batch.waiters, &failed, 0);
                    moved = true;
                }
                for (_, ev) in std::mem::take(&mut h.out.events) {
                    self.events.push((i as ShardId, describe_event(&ev)));
                }
            }
            // One destination per round: shard 0 if anything goes there.
            let dest = (0..self.hubs.len()).find(|&d| self.hubs.iter().any(|h| h.out.pending_for(d) > 0));
            if let Some(d) = dest {
                for i in 0..self.hubs.len() {
                    let items = std::mem::take(&mut self.hubs[i].out.items[d]);
                    for item in items {
                        self.hubs[d].handle_item(item, 0);
                    }
                }
                moved = true;
            }
            if !moved {
                return;
            }
        }
        panic!("the cluster never settles");
    }

    fn take_events(&mut self) -> Vec<String> {
        self.events
            .drain(..)
            .map(|(s, e)| format!("on {s}: {e}"))
            .collect()
    }

    fn queue_everywhere(&self, name: &str) -> Vec<bool> {
        self.hubs
            .iter()
            .map(|h| h.topo.queue_id(VhostId(1), name.as_bytes()).is_some())
            .collect()
    }
}

fn publish_item(queue: QueueId, body: &str, persistent: bool, confirm: Option<(ChannelRef, u64)>) -> Item {
    let props = BasicProperties {
        delivery_mode: persistent.then_some(2),
        ..Default::default()
    };
    Item::Publish {
        queue,
        msg: Message::assemble(b"", b"q", &props.to_bytes(), body.as_bytes()).with_properties_from_raw(),
        confirm,
        publisher: confirm.map_or(ConnId(0), |(ch, _)| ch.conn),
    }
}

/// `queue.delete` from a channel on shard 1 of a queue owned by shard 2,
/// sent right after three publishes to it: the owner is asked through
/// shard 1, so it has the three messages when it counts them. (Sent
/// straight from shard 0, the question would overtake them here: shard
/// 0's items for shard 2 are carried before shard 1's.)
#[test]
fn delete_counts_the_publishes_the_channel_sent_before_it() {
    let mut c = Cluster::new(3);
    c.request(chan(2, 1), declare("q", false));
    c.pump();
    assert_eq!(
        c.take_events(),
        ["on 2: conn2.1/1: declare-ok q messages=0 consumers=0"]
    );
    assert_eq!(c.queue_everywhere("q"), [true, true, true]);
    let q = c.hubs[2].topo.queue_id(VhostId(1), b"q").unwrap();
    let ch = chan(1, 1);
    for i in 0..3 {
        c.send(1, 2, publish_item(q, &i.to_string(), false, None));
    }
    c.request(ch, delete("q", false, false));
    c.pump();
    assert_eq!(c.take_events(), ["on 1: conn1.1/1: delete-ok 3"]);
    assert_eq!(c.queue_everywhere("q"), [false, false, false]);
    assert!(c.hubs[2].owner.queue(q).is_none());
}

/// A connection closing takes its exclusive queues, on every shard.
#[test]
fn connection_closed_removes_exclusive_queues_everywhere() {
    let mut c = Cluster::new(2);
    let ch = chan(1, 3);
    c.request(ch, declare_exclusive("e"));
    c.request(chan(1, 4), declare("kept", false));
    c.pump();
    assert_eq!(
        c.take_events(),
        [
            "on 1: conn1.3/1: declare-ok e messages=0 consumers=0",
            "on 1: conn1.4/1: declare-ok kept messages=0 consumers=0"
        ]
    );
    let e = c.hubs[1].topo.queue_id(VhostId(1), b"e").unwrap();
    c.send(1, 1, publish_item(e, "x", false, None));
    c.send(1, 0, Item::Control(ControlMsg::ConnectionClosed(ch.conn)));
    c.pump();
    assert_eq!(c.take_events(), Vec::<String>::new());
    assert_eq!(c.queue_everywhere("e"), [false, false]);
    assert_eq!(c.queue_everywhere("kept"), [true, true]);
    assert!(c.hubs[1].owner.queue(e).is_none());
    assert!(c.hubs[0].control.as_ref().unwrap().is_idle());
}

/// A durable queue and its confirmed persistent messages come back after
/// a crash; a transient queue does not.
#[test]
fn durable_topology_and_messages_survive_a_restart() {
    let mut c = Cluster::new(2);
    let ch = chan(1, 1);
    c.request(ch, declare("d", true));
    c.request(ch, declare("t", false));
    c.pump();
    c.take_events();
    let d = c.hubs[1].topo.queue_id(VhostId(1), b"d").unwrap();
    for seq in 1..=2 {
        c.send(1, 1, publish_item(d, &format!("m{seq}"), true, Some((ch, seq))));
    }
    c.pump();
    assert_eq!(
        c.take_events(),
        [
            "on 1: conn1.1/1: confirm 1 true",
            "on 1: conn1.1/1: confirm 2 true"
        ]
    );
    let mut c = c.restart();
    assert_eq!(c.queue_everywhere("d"), [true, true]);
    assert_eq!(c.queue_everywhere("t"), [false, false]);
    assert_eq!(c.hubs[1].owner.queue(d).unwrap().ready_count(), 2);
    // Ids go on after the recovered ones (d is q1; t was q2 and is gone).
    c.request(ch, declare("n", false));
    c.pump();
    assert_eq!(
        c.take_events(),
        ["on 1: conn1.1/1: declare-ok n messages=0 consumers=0"]
    );
    assert_eq!(c.hubs[0].topo.queue_id(VhostId(1), b"n"), Some(QueueId(2)));
    // A redeclare of d is answered by its owner, with its count.
    c.request(ch, declare("d", true));
    c.pump();
    assert_eq!(
        c.take_events(),
        ["on 1: conn1.1/1: declare-ok d messages=2 consumers=0"]
    );
}

/// A `queue.delete` whose log append fails is answered 541 — and must
/// leave the queue as it was: it is still in the topology, so its owner
/// must still have it (with its message).
#[test]
fn a_delete_that_cannot_be_logged_leaves_the_queue_intact() {
    let mut c = Cluster::new(2);
    let ch = chan(1, 1);
    c.request(ch, declare("q", true));
    c.pump();
    c.take_events();
    let q = c.hubs[1].topo.queue_id(VhostId(1), b"q").unwrap();
    c.send(1, 1, publish_item(q, "m", true, Some((ch, 1))));
    c.pump();
    assert_eq!(c.take_events(), ["on 1: conn1.1/1: confirm 1 true"]);
    c.disk.set_faults(Faults {
        append_error: 1.0,
        ..Default::default()
    });
    c.request(ch, delete("q", false, false));
    c.pump();
    c.disk.set_faults(Faults::default());
    assert_eq!(
        c.take_events(),
        [
            "on 1: conn1.1/1: error 541 INTERNAL_ERROR - cannot write the topology log: simulated I/O error: write failed"
        ]
    );
    assert_eq!(c.queue_everywhere("q"), [true, true]);
    c.request(ch, declare("q", true));
    c.pump();
    assert_eq!(
        c.take_events(),
        ["on 1: conn1.1/1: declare-ok q messages=1 consumers=0"]
    );
}

/// Deleting a vhost (management) drops its queues on every shard and
/// asks every shard to close the vhost's connections.
#[test]
fn delete_vhost_drops_queues_and_closes_connections_everywhere() {
    let mut c = Cluster::new(2);
    let (tx, rx) = sync_channel(2);
    c.send(
        0,
        0,
        Item::Control(ControlMsg::Admin {
            user: "guest".into(),
            op: crate::admin::AdminOp::AddVhost { name: "v2".into() },
            reply: tx.clone(),
        }),
    );
    c.pump();
    assert_eq!(rx.try_recv(), Ok(Ok(())));
    let v2 = c.hubs[0].topo.vhost("v2").unwrap().id;
    for h in &c.hubs {
        assert_eq!(h.topo.vhost("v2").map(|v| v.id), Some(v2));
    }
    // A new vhost grants nobody anything.
    c.send(
        0,
        0,
        Item::Control(ControlMsg::Admin {
            user: "guest".into(),
            op: crate::admin::AdminOp::SetPermissions {
                user: "guest".into(),
                vhost: "v2".into(),
                configure: ".*".into(),
                write: ".*".into(),
                read: ".*".into(),
            },
            reply: tx.clone(),
        }),
    );
    c.pump();
    assert_eq!(rx.try_recv(), Ok(Ok(())));
    c.send(
        0,
        0,
        Item::Control(ControlMsg::Admin {
            user: "guest".into(),
            op: crate::admin::AdminOp::Amqp {
                vhost: "v2".into(),
                req: declare("q", true),
            },
            reply: tx.clone(),
        }),
    );
    c.pump();
    assert_eq!(rx.try_recv(), Ok(Ok(())));
    let q = c.hubs[0].topo.queue_id(v2, b"q").unwrap();
    assert!(c.hubs[0].owner.queue(q).is_some(), "placed on shard 0");
    c.send(
        0,
        0,
        Item::Control(ControlMsg::Admin {
            user: "guest".into(),
            op: crate::admin::AdminOp::DeleteVhost { name: "v2".into() },
            reply: tx,
        }),
    );
    c.pump();
    assert_eq!(rx.try_recv(), Ok(Ok(())));
    assert!(c.hubs[0].owner.queue(q).is_none());
    for h in &c.hubs {
        assert!(h.topo.vhost("v2").is_none());
        assert_eq!(
            h.out.closes,
            [(
                crate::hub::CloseMatch::Vhost("v2".into()),
                "vhost 'v2' is deleted".to_string()
            )]
        );
    }
}

impl Cluster {
    /// A management operation, run to its answer.
    fn admin(&mut self, op: crate::admin::AdminOp) -> Result<(), AmqpError> {
        let (tx, rx) = sync_channel(1);
        self.send(
            0,
            0,
            Item::Control(ControlMsg::Admin {
                user: "guest".into(),
                op,
                reply: tx,
            }),
        );
        self.pump();
        rx.try_recv().expect("answered")
    }

    /// `connection.open` of `user` (logged in) on `shard`: the
    /// connection's state, or the refusal's text.
    fn open(&mut self, shard: usize, user: &str, vhost: &str) -> Result<crate::hub::ConnState, String> {
        use crate::session::Broker;
        let mut st = crate::hub::ConnState::new(None);
        st.user = user.into();
        let r = self.hubs[shard].client(&mut st, 0).open_vhost(user, vhost);
        r.map(|_| st).map_err(|e| e.reply_text())
    }

    /// `channel.open` on a connection of `shard`.
    fn channel(
        &mut self,
        shard: usize,
        st: &mut crate::hub::ConnState,
    ) -> Result<Option<crate::broker::limits::Lease>, String> {
        use crate::session::Broker;
        self.hubs[shard]
            .client(st, 0)
            .open_channel()
            .map_err(|e| e.reply_text())
    }

    /// The connection closes (its session tells the broker).
    fn close(&mut self, shard: usize, mut st: crate::hub::ConnState, conn: ConnId) {
        use crate::session::Broker;
        self.hubs[shard].client(&mut st, 0).connection_closed(conn);
        self.pump();
    }
}

fn lim_user() -> [crate::admin::AdminOp; 2] {
    [
        crate::admin::AdminOp::PutUser {
            name: "lim".into(),
            password_hash: Vec::new(),
            tags: Vec::new(),
        },
        crate::admin::AdminOp::SetPermissions {
            user: "lim".into(),
            vhost: "/".into(),
            configure: ".*".into(),
            write: ".*".into(),
            read: ".*".into(),
        },
    ]
}

fn set_limits(vhost: Option<&str>, user: Option<&str>, limits: &[(&str, i64)]) -> crate::admin::AdminOp {
    let l = crate::broker::limits::Limits(limits.iter().map(|(k, v)| (k.to_string(), *v)).collect());
    let op = crate::admin::LimitsOp::Set(l);
    match (vhost, user) {
        (Some(v), None) => crate::admin::AdminOp::VhostLimits { vhost: v.into(), op },
        (None, Some(u)) => crate::admin::AdminOp::UserLimits { user: u.into(), op },
        _ => unreachable!(),
    }
}

/// Connections count towards their vhost's and their user's limits, and
/// channels towards their user's, over every shard: each shard alone is
/// under the limit when the next one is refused. RabbitMQ's texts; a
/// refused connection holds no place; closing (or dropping) one frees its
/// places; replacing the user keeps its count.
#[test]
fn connection_and_channel_limits_hold_over_every_shard() {
    let mut c = Cluster::new(2);
    for op in lim_user() {
        c.admin(op).unwrap();
    }
    c.admin(set_limits(Some("/"), None, &[("max-connections", 3)]))
        .unwrap();
    c.admin(set_limits(
        None,
        Some("lim"),
        &[("max-connections", 2), ("max-channels", 2)],
    ))
    .unwrap();
    let mut a = c.open(0, "lim", "/").unwrap();
    let mut b = c.open(1, "lim", "/").unwrap();
    let user_full = "NOT_ALLOWED - connection refused for user 'lim': user connection limit (2) is reached";
    assert_eq!(c.open(1, "lim", "/").err().unwrap(), user_full);
    assert_eq!(c.open(0, "lim", "/").err().unwrap(), user_full);
    let g = c.open(0, "guest", "/").unwrap();
    let vhost_full =
        "NOT_ALLOWED - access to vhost '/' refused for user 'guest': connection limit (3) is reached";
    assert_eq!(c.open(1, "guest", "/").err().unwrap(), vhost_full);
    // The vhost's limit is checked before the user's (and before access).
    assert_eq!(
        c.open(1, "lim", "/").err().unwrap(),
        "NOT_ALLOWED - access to vhost '/' refused for user 'lim': connection limit (3) is reached"
    );
    drop(g);
    let g = c.open(1, "guest", "/").unwrap();

    // Channels: the user's, on both shards.
    let a1 = c.channel(0, &mut a).unwrap();
    let _b1 = c.channel(1, &mut b).unwrap();
    let channels_full = "NOT_ALLOWED - number of channels opened for user 'lim' has reached the maximum allowed user limit of (2)";
    assert_eq!(c.channel(1, &mut b).err().unwrap(), channels_full);
    assert_eq!(c.channel(0, &mut a).err().unwrap(), channels_full);
    drop(a1);
    let _a1 = c.channel(0, &mut a).unwrap();
    // guest has no channel limit.
    let mut g = g;
    let _many: Vec<_> = (0..5).map(|_| c.channel(1, &mut g).unwrap()).collect();

    drop(g);
    // A replaced user (new tags) keeps counting its connections.
    c.admin(crate::admin::AdminOp::PutUser {
        name: "lim".into(),
        password_hash: Vec::new(),
        tags: vec!["management".into()],
    })
    .unwrap();
    assert_eq!(c.open(0, "lim", "/").err().unwrap(), user_full);
    // A connection that closes gives its places back.
    c.close(0, a, ConnId::new(0, 1));
    let _a = c.open(0, "lim", "/").unwrap();
    // Limits lifted: negative means none.
    c.admin(set_limits(None, Some("lim"), &[("max-connections", -1)]))
        .unwrap();
    c.admin(set_limits(Some("/"), None, &[("max-connections", -1)]))
        .unwrap();
    let _more = c.open(1, "lim", "/").unwrap();
}

/// `max-queues` holds exactly for declares sent from every shard at once:
/// the control plane plans them one by one against the committed topology.
#[test]
fn the_queue_limit_is_exact_for_declares_from_every_shard_at_once() {
    let mut c = Cluster::new(3);
    c.admin(set_limits(Some("/"), None, &[("max-queues", 2)]))
        .unwrap();
    c.request(chan(0, 1), declare("a", false));
    c.request(chan(1, 1), declare("b", true));
    c.request(chan(1, 2), declare("a", false));
    c.request(chan(2, 1), declare("c", false));
    c.request(chan(2, 2), declare("d", true));
    c.pump();
    let mut events = c.take_events();
    events.sort();
    assert_eq!(
        events,
        [
            "on 0: conn0.1/1: declare-ok a messages=0 consumers=0",
            "on 1: conn1.1/1: declare-ok b messages=0 consumers=0",
            "on 1: conn1.2/1: declare-ok a messages=0 consumers=0",
            "on 2: conn2.1/1: error 406 PRECONDITION_FAILED - cannot declare queue 'c': queue limit in vhost '/' (2) is reached",
            "on 2: conn2.2/1: error 406 PRECONDITION_FAILED - cannot declare queue 'd': queue limit in vhost '/' (2) is reached",
        ]
    );
    c.request(chan(2, 1), delete("a", false, false));
    c.request(chan(2, 1), declare("c", false));
    c.pump();
    assert_eq!(
        c.take_events(),
        [
            "on 2: conn2.1/1: delete-ok 0",
            "on 2: conn2.1/1: declare-ok c messages=0 consumers=0"
        ]
    );
}

/// Limits are durable: after a restart every shard has them and enforces
/// them; a deleted vhost or user takes its limits along, also across a
/// restart.
#[test]
fn limits_survive_a_restart_and_go_with_their_vhost_or_user() {
    use crate::admin::AdminOp;
    let mut c = Cluster::new(2);
    for op in lim_user() {
        c.admin(op).unwrap();
    }
    c.admin(AdminOp::AddVhost { name: "v2".into() }).unwrap();
    c.admin(set_limits(
        Some("/"),
        None,
        &[("max-connections", 1), ("max-queues", 5)],
    ))
    .unwrap();
    c.admin(set_limits(Some("v2"), None, &[])).unwrap();
    c.admin(set_limits(None, Some("lim"), &[("max-channels", 0)]))
        .unwrap();
    let mut c = c.restart();
    let l = |pairs: &[(&str, i64)]| {
        crate::broker::limits::Limits(pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect())
    };
    for h in &c.hubs {
        assert_eq!(
            h.topo.vhost("/").unwrap().limits,
            Some(l(&[("max-connections", 1), ("max-queues", 5)]))
        );
        assert_eq!(
            h.topo.vhost("v2").unwrap().limits,
            Some(l(&[])),
            "an empty set is kept"
        );
        assert_eq!(h.topo.user_limits("lim"), &l(&[("max-channels", 0)]));
    }
    let mut a = c.open(1, "lim", "/").unwrap();
    assert_eq!(
        c.open(0, "guest", "/").err().unwrap(),
        "NOT_ALLOWED - access to vhost '/' refused for user 'guest': connection limit (1) is reached"
    );
    assert_eq!(
        c.channel(1, &mut a).err().unwrap(),
        "NOT_ALLOWED - number of channels opened for user 'lim' has reached the maximum allowed user limit of (0)"
    );
    c.admin(AdminOp::DeleteVhost { name: "v2".into() }).unwrap();
    c.admin(AdminOp::DeleteUser { name: "lim".into() }).unwrap();
    let mut c = c.restart();
    c.admin(AdminOp::AddVhost { name: "v2".into() }).unwrap();
    for op in lim_user() {
        c.admin(op).unwrap();
    }
    for h in &c.hubs {
        assert_eq!(h.topo.vhost("v2").unwrap().limits, None);
        assert!(h.topo.user_limits("lim").is_empty());
    }
    let mut a = c.open(1, "lim", "/").unwrap();
    assert!(c.channel(1, &mut a).is_ok());
}
