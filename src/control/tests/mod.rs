//! Unit tests of the control plane as a state machine: messages in,
//! [`Action`]s out, completions back, against a topology the test applies
//! as the runtime would, with the topology log on a simulated disk.
//! `hub` drives it composed with the queue owners, through [`crate::hub::Hub`].
//!
//! Reply codes and texts are RabbitMQ 3.10's. A test that shows warren
//! behaving differently is `#[ignore = "bug: …"]`.

mod admin;
mod cluster;
mod deletes;
mod hub;
mod log;
mod requests;

use super::{Action, ControlService};
use crate::broker::control::ControlPlane;
use crate::broker::request::{Reply, Request};
use crate::broker::topology::{Change, Dest, Topology};
use crate::broker::users::{User, hash_password};
use crate::ids::{ChannelRef, ConnId, QueueId, ShardId, VhostId};
use crate::owner::{ControlMsg, Item};
use crate::protocol::{AmqpError, FieldTable, FieldValue, LongStr, ShortStr};
use crate::storage::sim_disk::Faults;
use crate::storage::topolog::TopoLog;
use crate::storage::{Disk, SimDisk, Syncable};
use bytes::Bytes;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, sync_channel};

pub(super) fn ss(s: &str) -> ShortStr {
    ShortStr::from_string_lossy(s)
}

pub(super) fn ls(s: &str) -> FieldValue {
    FieldValue::LongStr(LongStr::new(Bytes::copy_from_slice(s.as_bytes())))
}

pub(super) fn table(entries: &[(&str, FieldValue)]) -> FieldTable {
    entries.iter().map(|(k, v)| (ss(k), v.clone())).collect()
}

/// Channel 1 of connection `n` on `shard`.
pub(super) fn chan(shard: ShardId, n: u64) -> ChannelRef {
    ChannelRef {
        conn: ConnId::new(shard, n),
        channel: 1,
        epoch: 1,
    }
}

pub(super) fn declare(name: &str, durable: bool) -> Request {
    Request::QueueDeclare {
        name: ss(name),
        generated: false,
        passive: false,
        durable,
        exclusive: false,
        auto_delete: false,
        args: FieldTable::new(),
    }
}

pub(super) fn declare_exclusive(name: &str) -> Request {
    Request::QueueDeclare {
        name: ss(name),
        generated: false,
        passive: false,
        durable: false,
        exclusive: true,
        auto_delete: false,
        args: FieldTable::new(),
    }
}

pub(super) fn delete(name: &str, if_unused: bool, if_empty: bool) -> Request {
    Request::QueueDelete {
        queue: ss(name),
        if_unused,
        if_empty,
    }
}

pub(super) fn describe_change(topo: &Topology, c: &Change) -> String {
    let xname = |id| {
        topo.exchange(id)
            .map_or_else(|| format!("x{}", id.0), |x| x.def.name.as_str().into_owned())
    };
    match c {
        Change::AddVhost { name, .. } => format!("add-vhost {name}"),
        Change::DeleteVhost { id } => format!("delete-vhost v{}", id.0),
        Change::DeclareExchange(d) => format!("declare-exchange '{}'", d.name),
        Change::DeleteExchange { id } => format!("delete-exchange {}", xname(*id)),
        Change::DeclareQueue(d) => format!(
            "declare-queue q{} {} owner={}{}{}",
            d.id.0,
            d.name,
            d.owner,
            if d.durable { " durable" } else { "" },
            if d.exclusive.is_some() { " exclusive" } else { "" }
        ),
        Change::DeleteQueue { id } => format!("delete-queue q{}", id.0),
        Change::QueueLeader { id, node } => format!("queue-leader q{} {node:x}", id.0),
        Change::QueueReplicas { id, replicas } => format!("queue-replicas q{} {replicas:x?}", id.0),
        Change::MoveQueue { id, owner, epoch } => format!("move-queue q{} to {owner} epoch {epoch}", id.0),
        Change::Bind {
            source, dest, key, ..
        } => format!("bind {} -> {} '{key}'", xname(*source), dest_name(dest)),
        Change::Unbind {
            source, dest, key, ..
        } => {
            format!("unbind {} -> {} '{key}'", xname(*source), dest_name(dest))
        }
        Change::PutUser(u) => format!("put-user {}", u.name),
        Change::DeleteUser { name } => format!("delete-user {name}"),
        Change::SetPermissions { user, vhost, .. } => format!("set-permissions {user} v{}", vhost.0),
        Change::ClearPermissions { user, vhost } => format!("clear-permissions {user} v{}", vhost.0),
        Change::SetPolicy(p) => format!("set-policy {}", p.name),
        Change::ClearPolicy { name, .. } => format!("clear-policy {name}"),
        Change::SetVhostLimits { vhost, limits } => format!("set-vhost-limits v{} {limits:?}", vhost.0),
        Change::SetUserLimits { user, limits } => format!("set-user-limits {user} {limits:?}"),
    }
}

fn dest_name(d: &Dest) -> String {
    match d {
        Dest::Queue(q) => format!("q{}", q.0),
        Dest::Exchange(x) => format!("x{}", x.0),
    }
}

fn changes(topo: &Topology, cs: &[Change]) -> String {
    cs.iter()
        .map(|c| describe_change(topo, c))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn describe_reply(r: &Reply) -> String {
    match r {
        Reply::QueueDeclareOk {
            name,
            messages,
            consumers,
        } => format!("declare-ok {name} messages={messages} consumers={consumers}"),
        Reply::QueueDeleteOk { messages } => format!("delete-ok {messages}"),
        Reply::QueuePurgeOk { messages } => format!("purge-ok {messages}"),
        Reply::ExchangeDeclareOk => "exchange-declare-ok".into(),
        Reply::ExchangeDeleteOk => "exchange-delete-ok".into(),
        Reply::QueueBindOk => "bind-ok".into(),
        Reply::QueueUnbindOk => "unbind-ok".into(),
        Reply::Error(e) => format!("error {} {}", e.code, e.reply_text()),
        other => format!("{other:?}"),
    }
}

pub(super) fn describe_item(topo: &Topology, item: &Item) -> String {
    match item {
        Item::Topology(cs) => format!("topology [{}]", changes(topo, cs)),
        Item::OwnerDelete {
            op,
            queue,
            if_unused,
            if_empty,
        } => format!(
            "owner-delete op={op} q{}{}{}",
            queue.0,
            if *if_unused { " if-unused" } else { "" },
            if *if_empty { " if-empty" } else { "" }
        ),
        Item::Via { dest, item } => format!("via {dest} {}", describe_item(topo, item)),
        Item::DeclareCounts { queue, ch, name } => {
            format!(
                "declare-counts q{} {name} for {:?}/{}",
                queue.0, ch.conn, ch.channel
            )
        }
        other => format!("{other:?}"),
    }
}

fn admin_result(r: &Result<(), AmqpError>) -> String {
    match r {
        Ok(()) => "admin ok".into(),
        Err(e) => format!("admin error {} {}", e.code, e.reply_text()),
    }
}

/// The first boot's topology: vhost `/` (with its standard exchanges),
/// `guest` allowed everything there.
pub(super) fn first_boot() -> Vec<Change> {
    let mut changes = ControlPlane::default()
        .add_vhost(&Topology::default(), "/")
        .unwrap();
    changes.push(Change::PutUser(User {
        name: "guest".into(),
        password_hash: hash_password(b"guest", [1, 2, 3, 4]),
        tags: vec!["administrator".into()],
        counters: Default::default(),
    }));
    changes.push(Change::SetPermissions {
        user: "guest".into(),
        vhost: VhostId(1),
        configure: ".*".into(),
        write: ".*".into(),
        read: ".*".into(),
    });
    changes
}

/// The data directory of the topology log.
pub(super) fn log_dir() -> PathBuf {
    PathBuf::from("/data")
}

/// A control plane over a topology with vhost `/` and user `guest`, its
/// log on a simulated disk.
pub(super) struct C {
    pub topo: Topology,
    pub svc: ControlService,
    pub disk: SimDisk,
    pub vhost: VhostId,
    /// The last topology log file to sync (`Action::SyncLog`).
    pub sync_file: Option<Arc<dyn Syncable>>,
    /// Management replies arrive here.
    pub admin_rx: Vec<Receiver<Result<(), AmqpError>>>,
    /// A setup planner, for queues declared behind the service's back.
    setup: ControlPlane,
    /// Clustered: proposals made, for the test's metadata log.
    pub proposals: Vec<super::Proposal>,
}

impl C {
    /// `nshards` shards, with a topology log.
    pub fn new(nshards: usize) -> C {
        Self::build(nshards, true)
    }

    /// Without a topology log: nothing is durable.
    pub fn without_log(nshards: usize) -> C {
        Self::build(nshards, false)
    }

    fn build(nshards: usize, with_log: bool) -> C {
        let disk = SimDisk::new(9);
        disk.create_dir_all(&log_dir()).unwrap();
        let (mut log, initial) = TopoLog::open(&disk, &log_dir()).unwrap();
        assert!(initial.is_empty());
        let mut topo = Topology::default();
        let setup = ControlPlane::default();
        // The first boot's topology, logged as the broker logs it.
        let first = first_boot();
        for c in &first {
            topo.apply(c);
        }
        log.append(&first.iter().collect::<Vec<_>>()).unwrap();
        log.file().sync().unwrap();
        let vhost = topo.vhost("/").unwrap().id;
        let svc = ControlService::new(nshards, with_log.then_some(log), &topo);
        C {
            topo,
            svc,
            disk,
            vhost,
            sync_file: None,
            admin_rx: Vec::new(),
            setup,
            proposals: Vec::new(),
        }
    }

    /// Polls until the service has nothing more to do now; applies what
    /// it asks to apply, keeps the log file to sync and answers the
    /// management plane's channels. Returns what it did, described.
    pub fn poll(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        let mut n = 0;
        while let Some(a) = self.svc.poll(&self.topo) {
            n += 1;
            assert!(n < 1000, "poll never settles");
            out.push(match a {
                Action::Apply(cs) => {
                    let d = format!("apply [{}]", changes(&self.topo, &cs));
                    for c in &cs {
                        self.topo.apply(c);
                    }
                    d
                }
                Action::Send(shard, item) => format!("send {shard}: {}", describe_item(&self.topo, &item)),
                Action::Reply(ch, r) => {
                    format!("reply {:?}/{}: {}", ch.conn, ch.channel, describe_reply(&r))
                }
                Action::Hold(a) => match *a {
                    Action::Reply(ch, r) => {
                        format!("held reply {:?}/{}: {}", ch.conn, ch.channel, describe_reply(&r))
                    }
                    Action::AdminReply(tx, r) => {
                        let d = format!("held {}", admin_result(&r));
                        tx.try_send(r).expect("one answer per operation");
                        d
                    }
                    Action::WhenLed(group, a) => format!("held {}", when_led(group, *a)),
                    _ => panic!("only answers are held"),
                },
                Action::WhenLed(group, a) => when_led(group, *a),
                Action::AdminReply(tx, r) => {
                    let d = admin_result(&r);
                    tx.try_send(r).expect("one answer per operation");
                    d
                }
                Action::SyncLog(f) => {
                    self.sync_file = Some(f);
                    "sync-log".into()
                }
                Action::Propose(p) => {
                    let d = format!(
                        "propose token={} base={} [{}]",
                        p.token,
                        p.base,
                        changes(&self.topo, &p.changes)
                    );
                    self.proposals.push(p);
                    d
                }
            });
        }
        out
    }

    pub fn request(&mut self, ch: ChannelRef, req: Request) {
        self.svc.submit(ControlMsg::Request {
            ch,
            vhost: self.vhost,
            user: "guest".into(),
            req,
        });
    }

    pub fn admin(&mut self, op: crate::admin::AdminOp) {
        let (tx, rx) = sync_channel(1);
        self.admin_rx.push(rx);
        self.svc.submit(ControlMsg::Admin {
            user: "guest".into(),
            op,
            reply: tx,
        });
    }

    /// Syncs the log file the service asked for (failing if `fail`) and
    /// reports it. Returns whether the sync succeeded.
    pub fn sync_log(&mut self, fail: bool) -> bool {
        let f = self.sync_file.take().expect("a sync was asked for");
        self.disk.set_faults(Faults {
            sync_error: if fail { 1.0 } else { 0.0 },
            ..Default::default()
        });
        f.begin_sync();
        let ok = f.sync().is_ok();
        self.disk.set_faults(Faults::default());
        self.svc.persisted(ok);
        ok
    }

    /// Every other shard applied the last broadcast.
    pub fn all_applied(&mut self, nshards: usize) {
        for d in 1..nshards {
            self.svc.topology_applied(d as crate::ids::ShardId);
        }
    }

    /// Runs a request to completion as the runtime would (syncing the log,
    /// every shard applying, the owner agreeing to deletes with 0
    /// messages). Returns the reply.
    pub fn run(&mut self, nshards: usize, ch: ChannelRef, req: Request) -> String {
        self.request(ch, req);
        let mut all = Vec::new();
        for _ in 0..10 {
            let step = self.poll();
            let done = step.iter().find(|s| s.starts_with("reply ")).cloned();
            all.extend(step.iter().cloned());
            if let Some(r) = done {
                return r;
            }
            if let Some(s) = step.iter().find(|s| s.contains("owner-delete op=")) {
                let op: u64 = s
                    .split("op=")
                    .nth(1)
                    .unwrap()
                    .split(' ')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap();
                self.svc.owner_deleted(op, Ok(0));
            } else if step.last().map(String::as_str) == Some("sync-log") {
                assert!(self.sync_log(false));
            } else {
                self.all_applied(nshards);
            }
        }
        panic!("no reply: {all:?}");
    }

    /// Declares a queue behind the service's back (owned by `owner`).
    pub fn put_queue(
        &mut self,
        name: &str,
        owner: ShardId,
        durable: bool,
        exclusive: Option<ConnId>,
    ) -> QueueId {
        let who = crate::broker::control::Requester {
            vhost: self.vhost,
            conn: exclusive.unwrap_or(ConnId::new(owner, 77)),
            shard: owner,
            user: "guest",
        };
        let req = Request::QueueDeclare {
            name: ss(name),
            generated: false,
            passive: false,
            durable,
            exclusive: exclusive.is_some(),
            auto_delete: false,
            args: FieldTable::new(),
        };
        self.setup.resume_ids(&self.topo);
        match self.setup.plan(&self.topo, who, req).unwrap() {
            crate::broker::control::Plan::Apply { changes, .. } => {
                for c in &changes {
                    self.topo.apply(c);
                }
            }
            other => panic!("{other:?}"),
        }
        let id = self.qid(name);
        // The service must not hand out this id again.
        self.svc.plane.resume_ids(&self.topo);
        id
    }

    pub fn qid(&self, name: &str) -> QueueId {
        self.topo
            .queue_id(self.vhost, name.as_bytes())
            .unwrap_or_else(|| panic!("no queue {name}"))
    }

    pub fn has_queue(&self, name: &str) -> bool {
        self.topo.queue_id(self.vhost, name.as_bytes()).is_some()
    }

    /// What the topology log holds now, as a restart after a power loss
    /// would read it: the names of the queues it declares.
    pub fn logged_queues_after_power_loss(&self) -> Vec<String> {
        self.disk.crash_power();
        logged_queues(&self.disk, &log_dir())
    }
}

/// The queues a topology log declares (read by reopening it).
pub(super) fn logged_queues(disk: &SimDisk, dir: &Path) -> Vec<String> {
    let (_, changes) = TopoLog::open(disk, dir).unwrap();
    let mut v: Vec<String> = changes
        .iter()
        .filter_map(|c| match c {
            Change::DeclareQueue(d) => Some(d.name.as_str().into_owned()),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

/// A channel's answer that waits for a quorum group's leader.
fn when_led(group: u32, a: Action) -> String {
    match a {
        Action::Reply(ch, r) => format!(
            "reply (once group {group:x} has a leader) {:?}/{}: {}",
            ch.conn,
            ch.channel,
            describe_reply(&r)
        ),
        _ => panic!("only a channel's answer waits for a leader"),
    }
}
