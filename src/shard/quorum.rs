//! Shard 0's side of quorum queues: the node's quorum groups (opened as
//! their queues are declared), the proposals of the owner's quorum queues
//! (one log entry per group per step; publishes confirmed once committed),
//! committed entries handed back to the owner, and leadership: the node
//! whose own first entry of a term is applied takes over its queues'
//! engines and records itself as their leader in the metadata; a node
//! that stops leading empties them.

use super::state::{Shard, now_ms};
use crate::cluster::forward;
use crate::cluster::log_store::LogStore;
use crate::cluster::net::raft::ClusterNetwork;
use crate::cluster::net::{CallError, service_fn};
use crate::cluster::quorum::{
    Applied, KIND_QUORUM_PROPOSE, QCmd, QOp, Quorum, QuorumRaft, QuorumSink, QuorumSm, raft_config,
};
use crate::control::Action;
use crate::ids::{ChannelRef, QueueId};
use crate::owner::{ControlMsg, Effects, QuorumProposal};
use crate::session::Event;
use openraft::ServerState;
use openraft::async_runtime::WatchReceiver;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

/// Messages a group's outbox holds while its writes wait (no leader, no
/// majority); past it, new publishes are refused (nacked) and dropped.
const MAX_QUEUED_MESSAGES: usize = 100_000;
/// How long a proposal may wait for its group to commit it.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the declare-ok of a new quorum queue waits for its group to
/// elect a leader; past it, it is given anyway (publishes wait for one).
const LEADER_WAIT: Duration = Duration::from_secs(5);
/// A leader that has not heard from a majority for this long takes no
/// new entries (as the metadata group).
const QUORUM_STALE_MS: u64 = 600;
/// One group on this node.
pub(super) struct Group {
    pub(super) raft: QuorumRaft,
    sm: QuorumSm,
    /// The term in which this node leads it and its queues' engines serve.
    led: Cell<Option<u64>>,
    /// The term for which a blank entry was written to take the lead.
    nudged: Cell<Option<u64>>,
    /// The term in which the metadata was seen naming this node leader
    /// (applied here), so every node's consumers carried on with it.
    announced: Cell<Option<u64>>,
    /// A change of the group's Raft members runs (one at a time).
    pub(super) changing: Cell<bool>,
    /// As its leader: members this node took out whose removal committed,
    /// not yet told so (see `replicas::tell_removed`).
    pub(super) removed: RefCell<std::collections::BTreeSet<u64>>,
    /// As a member taken out: the removal committed (the leader said so,
    /// or this node, leading, took itself out); it may now stop the group
    /// and delete its data.
    pub(super) left: Cell<bool>,
    /// `replicas::leave` runs.
    pub(super) leaving: Cell<bool>,
}

impl Group {
    pub(super) fn leading(&self) -> bool {
        self.led.get().is_some()
    }

    /// Takes the lead in `term` if this node still leads in it (once per
    /// term): the engines are rebuilt from the state, which is complete
    /// (the term's own entry was applied).
    fn take_lead(&self, shard: &Rc<Shard>, group: u32, term: u64) -> bool {
        if self.led.get() == Some(term) {
            return true;
        }
        let m = self.raft.metrics().borrow_watched().clone();
        if m.state != ServerState::Leader || m.current_term != term {
            return false;
        }
        self.led.set(Some(term));
        activate(shard, self, group, true);
        true
    }
}

/// This node's quorum groups.
pub struct Groups {
    /// This boot's writer id in the groups' logs ([`QOp::Writer`]).
    source: u64,
    pub(super) groups: RefCell<HashMap<u32, Rc<Group>>>,
    pub(super) opening: RefCell<HashSet<u32>>,
    /// Per group: entries waiting to be written, in order, and whether its
    /// writer runs. One write per group at a time from this node, so a
    /// channel's publishes reach the log in order even when a write waits
    /// for a leader; what queues meanwhile goes in the next write, whole.
    outbox: RefCell<HashMap<u32, Outbox>>,
}

/// One group's entries waiting to be written from this node.
#[derive(Default)]
struct Outbox {
    queued: std::collections::VecDeque<Entry>,
    /// Messages in `queued` (bounded by [`MAX_QUEUED_MESSAGES`]).
    messages: usize,
    running: bool,
    /// The number of this node's last write to the group.
    batch: u64,
}

impl Default for Groups {
    fn default() -> Self {
        Groups {
            // Random, so that two boots (of any node) never share one.
            source: rand::random(),
            groups: RefCell::default(),
            opening: RefCell::default(),
            outbox: RefCell::default(),
        }
    }
}

impl Groups {
    /// Stops every group (the node is stopping).
    pub async fn shutdown(&self, rpc: &crate::cluster::net::raft::RaftService) {
        let all: Vec<(u32, Rc<Group>)> = self.groups.borrow_mut().drain().collect();
        for (id, g) in all {
            rpc.remove_group(id);
            let _ = g.raft.shutdown().await;
        }
    }
}

struct Sink {
    shard: Weak<Shard>,
}

impl QuorumSink for Sink {
    fn applied(&self, _group: u32, what: Vec<Applied>) {
        let Some(shard) = self.shard.upgrade() else { return };
        let now = now_ms();
        {
            let mut hub = shard.hub.borrow_mut();
            let hub = &mut *hub;
            for w in what {
                match w {
                    Applied::Enqueued { queue, first, msgs } => {
                        hub.owner
                            .quorum_enqueued(&hub.topo, &mut hub.out, queue, first, msgs, now)
                    }
                    Applied::Settled { queue, idx } => hub.owner.quorum_settled(queue, &idx),
                    Applied::Returned { queue, idx } => hub.owner.quorum_returned(queue, idx),
                }
            }
        }
        shard.after_step(now);
    }

    fn lead(&self, group: u32, term: u64) {
        let Some(shard) = self.shard.upgrade() else { return };
        let Some(g) = groups(&shard).and_then(|gs| gs.groups.borrow().get(&group).cloned()) else {
            return;
        };
        if g.take_lead(&shard, group, term) || g.raft.metrics().borrow_watched().current_term > term {
            return;
        }
        // The metrics may not show the election yet: wait for them.
        glommio::spawn_local(async move {
            let mut rx = g.raft.metrics();
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline {
                if g.take_lead(&shard, group, term) || rx.borrow_watched().current_term > term {
                    return;
                }
                let _ = glommio::timer::timeout(Duration::from_millis(100), async {
                    let _ = rx.changed().await;
                    Ok(())
                })
                .await;
            }
        })
        .detach();
    }

    fn is_deleted(&self, queue: QueueId) -> bool {
        let Some(shard) = self.shard.upgrade() else {
            return false;
        };
        let hub = shard.hub.borrow();
        // Committed ids only: the planner's own may be ahead of entries
        // not applied here yet (a queue declared elsewhere whose group
        // entries arrive first would be taken as deleted, and its
        // messages skipped on this replica alone).
        let next = hub.control.as_ref().map_or(u64::MAX, |c| c.committed_ids()[0]);
        hub.topo.queue(queue).is_none() && queue.0 < next
    }
}

pub(super) fn groups(shard: &Shard) -> Option<Rc<Groups>> {
    shard.cluster.borrow().as_ref().map(|g| g.quorum.clone())
}

/// Makes this node's engines serve the group's queues that do not serve
/// yet, and records it as their leader in the metadata (`new_term`: even
/// where it names this node already, for their consumers to carry on).
fn activate(shard: &Rc<Shard>, g: &Group, group: u32, new_term: bool) {
    let now = now_ms();
    let me = shard.hub.borrow().owner.node();
    let mut led = Vec::new();
    {
        let mut hub = shard.hub.borrow_mut();
        let hub = &mut *hub;
        let state = g.sm.state.borrow();
        for q in hub.owner.quorum_queues(group) {
            let msgs = state
                .queues
                .get(&q)
                .map(|qs| {
                    qs.msgs
                        .iter()
                        .map(|(i, h)| (*i, h.msg.clone(), h.count))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default();
            if hub.owner.quorum_activate(&hub.topo, q, msgs.into_iter(), now) {
                led.push(q);
            }
        }
        if !led.is_empty() {
            hub.submit_control(ControlMsg::QueueLeader {
                queues: led,
                node: me,
                force: new_term,
            });
        }
    }
    shard.after_step(now);
}

/// Gives `answer` (a quorum queue's declare-ok) once the queue's group has
/// a leader (which, if it is this node, serves the queue), or after
/// [`LEADER_WAIT`]; at once if this node runs no such group (it holds no
/// replica). Not to be called with the hub borrowed:
/// the task may run, and take it, before this returns.
pub fn when_led(shard: &Rc<Shard>, group: u32, answer: Action) {
    let shard = shard.clone();
    glommio::spawn_local(async move {
        let deadline = Instant::now() + LEADER_WAIT;
        while Instant::now() < deadline {
            let Some(gs) = groups(&shard) else { break };
            let g = gs.groups.borrow().get(&group).cloned();
            match g {
                // A leader elsewhere; or this node, once its engines serve
                // (a get right after the declare finds what was published).
                Some(g) if led_elsewhere_or_here(&g) => break,
                Some(_) => {}
                // Not open yet on a replica: it is about to be.
                None if gs.opening.borrow().contains(&group)
                    || !shard.hub.borrow().owner.quorum_queues(group).is_empty() => {}
                None => break,
            }
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
        shard.hub.borrow_mut().release(answer);
        shard.after_step(now_ms());
    })
    .detach();
}

fn led_elsewhere_or_here(g: &Group) -> bool {
    let m = g.raft.metrics().borrow_watched().clone();
    match m.current_leader {
        Some(l) if l == m.id => g.leading(),
        Some(_) => true,
        None => false,
    }
}

/// Opens the groups this node must run (their queues were declared).
pub fn open(shard: &Rc<Shard>, reqs: Vec<(u32, Vec<u64>)>) {
    // Before the cluster side is up (the metadata log replays at start),
    // the groups are opened once it is.
    let Some(gs) = groups(shard) else { return };
    for (group, replicas) in reqs {
        if let Some(g) = gs.groups.borrow().get(&group).cloned() {
            // A new queue of a group this node already leads.
            if g.leading() {
                let shard = shard.clone();
                glommio::spawn_local(async move { activate(&shard, &g, group, false) }).detach();
            }
            continue;
        }
        if !gs.opening.borrow_mut().insert(group) {
            continue;
        }
        let shard = shard.clone();
        let gs = gs.clone();
        glommio::spawn_local(async move {
            if let Err(e) = open_group(&shard, &gs, group, replicas).await {
                log::error!("cannot open quorum group {group:x}: {e}");
            }
            gs.opening.borrow_mut().remove(&group);
            // A change of replicas applied while it opened was skipped
            // (see `replicas::members_changed`): taken out meanwhile, it
            // leaves as any member taken out does.
            super::replicas::members_changed(&shard, vec![group]);
        })
        .detach();
    }
}

async fn open_group(
    shard: &Rc<Shard>,
    gs: &Rc<Groups>,
    group: u32,
    replicas: Vec<u64>,
) -> Result<(), String> {
    let Some(node) = shard.cluster.borrow().as_ref().map(|g| g.node.clone()) else {
        return Err("no cluster port".into());
    };
    let dir = shard.cfg.data_dir.join("quorum").join(format!("{group:08x}"));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let log = LogStore::<Quorum>::open(&dir.join("log")).map_err(|e| e.to_string())?;
    let sink = Rc::new(Sink {
        shard: Rc::downgrade(shard),
    });
    let sm = QuorumSm::open(group, node.id, dir, sink).map_err(|e| e.to_string())?;
    let directory = {
        let node = Rc::downgrade(&node);
        Rc::new(move |id: &u64| node.upgrade()?.addr_of(*id))
    };
    let net = ClusterNetwork::<Quorum>::new(node.transport(), group, node.id).with_directory(directory);
    let raft = QuorumRaft::new(node.id, raft_config(), net, log, sm.clone())
        .await
        .map_err(|e| e.to_string())?;
    node.rpc().add_group(group, raft.clone());
    let g = Rc::new(Group {
        raft: raft.clone(),
        sm,
        led: Cell::new(None),
        nudged: Cell::new(None),
        announced: Cell::new(None),
        changing: Cell::new(false),
        removed: RefCell::default(),
        left: Cell::new(false),
        leaving: Cell::new(false),
    });
    gs.groups.borrow_mut().insert(group, g.clone());
    glommio::spawn_local(watch_leadership(Rc::downgrade(shard), group, g.clone())).detach();
    glommio::spawn_local(keep_leader_record(Rc::downgrade(shard), group, Rc::downgrade(&g))).detach();
    if replicas.first() == Some(&node.id) && !raft.is_initialized().await.map_err(|e| e.to_string())? {
        let mut members = BTreeMap::new();
        for r in &replicas {
            match node.info_of(*r) {
                Some(info) => {
                    members.insert(*r, info);
                }
                None => log::warn!("quorum group {group:x}: replica {r:x} is not a cluster member"),
            }
        }
        raft.initialize(members).await.map_err(|e| e.to_string())?;
        // The declaring node leads at first (as RabbitMQ's client-local
        // leader locator): it stands before the others' timers run out.
        let _ = raft.trigger().elect(false).await;
    }
    Ok(())
}

/// Follows the group's leadership here: empties its engines when this
/// node stops leading; when it leads without having taken the lead (a
/// restarted node that finds itself leader of its old term writes no new
/// entry of its own), writes a blank entry, whose application takes it.
async fn watch_leadership(shard: Weak<Shard>, group: u32, g: Rc<Group>) {
    let mut rx = g.raft.metrics();
    loop {
        let (leader, term) = {
            let m = rx.borrow_watched();
            (m.state == ServerState::Leader, m.current_term)
        };
        if leader && g.led.get() != Some(term) && g.nudged.get() != Some(term) {
            g.nudged.set(Some(term));
            let g = g.clone();
            glommio::spawn_local(async move {
                // The election's own entry usually comes first.
                glommio::timer::sleep(Duration::from_millis(300)).await;
                let m = g.raft.metrics().borrow_watched().clone();
                if m.state == ServerState::Leader && m.current_term == term && g.led.get() != Some(term) {
                    let _ = g.raft.write_blank().await;
                }
            })
            .detach();
        }
        if !leader && g.leading() {
            g.led.set(None);
            let Some(shard) = shard.upgrade() else { return };
            let now = now_ms();
            let queues = {
                let mut hub = shard.hub.borrow_mut();
                let hub = &mut *hub;
                let queues = hub.owner.quorum_queues(group);
                for q in &queues {
                    let left = hub.owner.quorum_deactivate(&mut hub.out, *q);
                    if !left.is_empty() {
                        super::cluster::keep_failed_settles(hub, &shard, *q, left);
                    }
                }
                queues
            };
            super::cluster::forget_queues(&shard, &queues);
            shard.after_step(now);
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// While this node leads the group, makes sure the metadata says so for
/// each of its queues (recording it fails while the metadata group has no
/// majority, or loses a race: it is tried again).
async fn keep_leader_record(shard: Weak<Shard>, group: u32, g: Weak<Group>) {
    loop {
        glommio::timer::sleep(Duration::from_secs(1)).await;
        let (Some(shard), Some(g)) = (shard.upgrade(), g.upgrade()) else {
            return;
        };
        if !g.leading() {
            continue;
        }
        // Members that do not match the metadata's replicas yet (a change
        // that failed: no majority then, or a new member not up), and
        // members taken out not told yet.
        super::replicas::keep_members(&shard, group, &g);
        let me = shard.hub.borrow().owner.node();
        // Not announced in this term yet (the record named this node
        // already, and the write that says so again has not been applied):
        // every queue is recorded again, for consumers to carry on.
        let force = g.announced.get() != g.led.get();
        let stale: Vec<QueueId> = {
            let hub = shard.hub.borrow();
            hub.owner
                .quorum_queues(group)
                .into_iter()
                .filter(|q| hub.topo.queue(*q).is_some_and(|d| force || d.node != 0))
                .collect()
        };
        if !stale.is_empty() {
            let now = now_ms();
            shard.hub.borrow_mut().submit_control(ControlMsg::QueueLeader {
                queues: stale,
                node: me,
                force,
            });
            shard.after_step(now);
        }
    }
}

/// The metadata now names a leader for these queues: where it names this
/// node, its groups' current terms are announced.
pub fn recorded(shard: &Rc<Shard>, queues: &[QueueId]) {
    let Some(gs) = groups(shard) else { return };
    let hub = shard.hub.borrow();
    for q in queues {
        let Some(d) = hub.topo.queue(*q).filter(|d| d.node == 0 && d.is_quorum()) else {
            continue;
        };
        if let Some(g) = gs.groups.borrow().get(&d.quorum_group()) {
            g.announced.set(g.led.get());
        }
    }
}

/// Drops deleted queues' replicated state.
pub fn forget(shard: &Rc<Shard>, gone: Vec<(u32, QueueId)>) {
    let Some(gs) = groups(shard) else { return };
    for (group, q) in gone {
        if let Some(g) = gs.groups.borrow().get(&group) {
            g.sm.forget(q);
        }
    }
}

/// The returns and settles one entry carries for each queue, to undo or
/// retry if it fails.
type Undo = Vec<(QueueId, Vec<u64>, Vec<u64>)>;
/// One group's entry of a turn: its changes, the confirms that wait for
/// it, what to undo if it fails, and how many messages it enqueues per
/// queue (the owner's gets wait for them to be answered).
type Entry = (QCmd, Vec<(ChannelRef, u64)>, Undo, Vec<(QueueId, u64)>);

/// Sends the owner's quorum proposals: one entry per group.
pub fn propose(shard: &Rc<Shard>, proposals: Vec<QuorumProposal>) {
    let mut by_group: HashMap<u32, (Entry, usize)> = HashMap::new();
    for p in proposals {
        let ((cmd, confirms, undo, enqueued), n) = by_group.entry(p.group).or_default();
        if !p.enqueue.is_empty() {
            *n += p.enqueue.len();
            enqueued.push((p.queue, p.enqueue.len() as u64));
            let mut msgs = Vec::new();
            for m in &p.enqueue {
                forward::encode(&mut msgs, p.queue, m);
            }
            cmd.ops.push(QOp::Enqueue { msgs: msgs.into() });
        }
        if !p.settles.is_empty() {
            cmd.ops.push(QOp::Settle {
                queue: p.queue.0,
                idx: p.settles.clone(),
            });
        }
        if !p.returns.is_empty() {
            cmd.ops.push(QOp::Return {
                queue: p.queue.0,
                idx: p.returns.clone(),
            });
        }
        if !p.settles.is_empty() || !p.returns.is_empty() {
            undo.push((p.queue, p.returns, p.settles));
        }
        confirms.extend(p.confirms);
    }
    let Some(gs) = groups(shard) else {
        // No cluster side (yet): nothing can be replicated.
        let entries = by_group.into_values().map(|(e, _)| e).collect();
        glommio::spawn_local(refuse(shard.clone(), entries)).detach();
        return;
    };
    for (group, (mut entry, n)) in by_group {
        let start = {
            let mut out = gs.outbox.borrow_mut();
            let o = out.entry(group).or_default();
            let refused = if n > 0 && o.messages + n > MAX_QUEUED_MESSAGES {
                // The group has not taken a write for a while: refuse the
                // publishes (settles and returns still go).
                log::warn!(
                    "quorum group {group:x}: {} messages wait for the group: refusing {n} more",
                    o.messages
                );
                entry.0.ops.retain(|op| !matches!(op, QOp::Enqueue { .. }));
                // (Its enqueue counts stay with the entry: answered when
                // the writer reaches it, in order with the writes before.)
                Some((
                    QCmd::default(),
                    std::mem::take(&mut entry.1),
                    Vec::new(),
                    Vec::new(),
                ))
            } else {
                o.messages += n;
                None
            };
            o.queued.push_back(entry);
            let start = !std::mem::replace(&mut o.running, true);
            drop(out);
            if let Some(refused) = refused {
                glommio::spawn_local(refuse(shard.clone(), vec![refused])).detach();
            }
            start
        };
        if start {
            glommio::spawn_local(writer(shard.clone(), gs.clone(), group)).detach();
        }
    }
}

/// Answers entries that are not written: their publishes are refused
/// (nacked), and the owner's gets stop waiting for them.
async fn refuse(shard: Rc<Shard>, entries: Vec<Entry>) {
    let now = now_ms();
    {
        let mut hub = shard.hub.borrow_mut();
        let hub = &mut *hub;
        for (_, confirms, _, enqueued) in entries {
            for (ch, seq) in confirms {
                hub.out.to_conn(ch.conn, Event::Confirm { ch, seq, ok: false });
            }
            for (queue, n) in enqueued {
                hub.owner.quorum_answered(&hub.topo, &mut hub.out, queue, n, now);
            }
        }
    }
    shard.after_step(now);
}

/// Writes a group's queued entries, one write at a time, each holding all
/// that queued while the previous one was on its way.
async fn writer(shard: Rc<Shard>, gs: Rc<Groups>, group: u32) {
    loop {
        let (batch, number): (Vec<Entry>, u64) = {
            let mut out = gs.outbox.borrow_mut();
            let Some(o) = out.get_mut(&group) else {
                return;
            };
            if o.queued.is_empty() {
                o.running = false;
                return;
            }
            o.messages = 0;
            o.batch += 1;
            (o.queued.drain(..).collect(), o.batch)
        };
        let mut cmd = QCmd::default();
        cmd.ops.push(QOp::Writer {
            source: gs.source,
            batch: number,
        });
        let mut confirms = Vec::new();
        let mut undo = Vec::new();
        let mut enqueued = Vec::new();
        for (c, k, u, e) in batch {
            cmd.ops.extend(c.ops);
            confirms.extend(k);
            undo.extend(u);
            enqueued.extend(e);
        }
        let r = write(&shard, group, cmd).await;
        if let Err(e) = &r {
            log::warn!("quorum group {group:x}: {e}");
        }
        let ok = r.is_ok();
        // Settles are tried again while this node serves only when the
        // group did not answer in time (not when it refused them).
        let retry = r.as_ref().err().is_some_and(|e| e.starts_with("timed out"));
        let now = now_ms();
        {
            let mut hub = shard.hub.borrow_mut();
            let hub = &mut *hub;
            for (ch, seq) in confirms {
                hub.out.to_conn(ch.conn, Event::Confirm { ch, seq, ok });
            }
            if !ok {
                for (queue, returns, settles) in undo {
                    let left = hub.owner.quorum_failed(queue, returns, settles, retry);
                    if !left.is_empty() {
                        super::cluster::keep_failed_settles(hub, &shard, queue, left);
                    }
                }
            }
            // After the undo: a get that waited sees the returns back.
            for (queue, n) in enqueued {
                hub.owner.quorum_answered(&hub.topo, &mut hub.out, queue, n, now);
            }
        }
        shard.after_step(now);
    }
}

/// Appends `cmd` to the group's log through its leader and waits until it
/// is committed. A write that fails because the leader changed is sent
/// again to the next one: the group applies it once ([`QOp::Writer`]).
async fn write(shard: &Rc<Shard>, group: u32, cmd: QCmd) -> Result<(), String> {
    let deadline = Instant::now() + COMMIT_TIMEOUT;
    let Some(node) = shard.cluster.borrow().as_ref().map(|g| g.node.clone()) else {
        return Err("no cluster port".into());
    };
    // Encoded for another node's leader only, once.
    let mut body: Option<Vec<u8>> = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("timed out waiting for a majority of the queue's replicas".into());
        }
        let g = groups(shard).and_then(|gs| gs.groups.borrow().get(&group).cloned());
        let Some(g) = g else {
            glommio::timer::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let (leader, addr) = {
            let m = g.raft.metrics().borrow_watched().clone();
            let addr = m.current_leader.and_then(|l| {
                m.membership_config
                    .membership()
                    .get_node(&l)
                    .map(|n| n.addr.clone())
            });
            (m.current_leader, addr)
        };
        match (leader, addr) {
            // Not leader (yet, or any more): wait for one, as when the
            // leader is another node.
            (Some(l), _) if l == node.id && may_write_here(&g).is_ok() => {
                match write_here(&g, cmd.clone(), left).await {
                    Err(e) if e.starts_with("not leader") => {}
                    r => return r,
                }
            }
            (Some(l), _) if l == node.id => {}
            (Some(_), Some(addr)) => {
                let body = match &body {
                    Some(b) => b.clone(),
                    None => {
                        let b = postcard::to_extend(&cmd, group.to_le_bytes().to_vec())
                            .map_err(|e| e.to_string())?;
                        body.insert(b).clone()
                    }
                };
                match node.call(&addr, KIND_QUORUM_PROPOSE, body, left).await {
                    Ok(_) => return Ok(()),
                    Err(CallError::Remote(e)) if e.starts_with("not leader") => {}
                    Err(CallError::Remote(e)) => return Err(e),
                    Err(e) => log::debug!("quorum proposal to {addr}: {e}"),
                }
            }
            _ => {}
        }
        glommio::timer::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether this node leads the group and has heard from a majority lately.
fn may_write_here(g: &Group) -> Result<(), String> {
    let m = g.raft.metrics().borrow_watched().clone();
    if m.state != ServerState::Leader {
        return Err("not leader".into());
    }
    // (A leader elected a moment ago has no acknowledgement yet: its
    // first entries wait for the commit.)
    if m.last_quorum_acked
        .as_ref()
        .is_some_and(|at| at.elapsed() > Duration::from_millis(QUORUM_STALE_MS))
        && m.membership_config.membership().voter_ids().count() > 1
    {
        return Err("not leader: no majority of the queue's replicas answers".into());
    }
    Ok(())
}

/// Appends on this node, its leader.
async fn write_here(g: &Group, cmd: QCmd, left: Duration) -> Result<(), String> {
    may_write_here(g)?;
    match glommio::timer::timeout(left, async { Ok(g.raft.client_write(cmd).await) }).await {
        Err(_) => Err("timed out waiting for a majority of the queue's replicas".into()),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) if e.forward_to_leader().is_some() => Err("not leader".into()),
        Ok(Err(e)) => Err(format!("the queue's log refused the change: {e}")),
    }
}

/// Serves proposals other nodes send to this node's groups.
pub fn serve(shard: &Rc<Shard>, node: &crate::cluster::node::Node) {
    let weak = Rc::downgrade(shard);
    node.register(
        KIND_QUORUM_PROPOSE,
        service_fn(move |_from: &str, _kind: u8, body: Vec<u8>| {
            let shard = weak.upgrade();
            async move {
                let Some(shard) = shard else {
                    return Err("the node is stopping".to_string());
                };
                if body.len() < 4 {
                    return Err("short proposal".to_string());
                }
                let group = u32::from_le_bytes(body[..4].try_into().expect("4 bytes"));
                let cmd: QCmd = postcard::from_bytes(&body[4..]).map_err(|e| format!("bad proposal: {e}"))?;
                let g = groups(&shard).and_then(|gs| gs.groups.borrow().get(&group).cloned());
                let Some(g) = g else {
                    return Err("not leader: no such group here".to_string());
                };
                write_here(&g, cmd, COMMIT_TIMEOUT).await.map(|()| Vec::new())
            }
        }),
    );
}

/// A quorum queue's leader and members by name, as this node sees them.
pub fn describe(shard: &Shard, group: u32, replicas: &[u64]) -> crate::admin::QuorumInfo {
    let node = shard.cluster.borrow().as_ref().map(|g| g.node.clone());
    let name = |id: u64| {
        node.as_ref()
            .and_then(|n| n.info_of(id))
            .map_or_else(|| format!("{id:x}"), |i| i.name)
    };
    let g = groups(shard).and_then(|gs| gs.groups.borrow().get(&group).cloned());
    let (leader, members, online) = match &g {
        Some(g) => {
            let m = g.raft.metrics().borrow_watched().clone();
            let me = m.id;
            // The group's voters as this member knows them (behind the
            // metadata's replicas while a change of members runs), in the
            // metadata's order.
            let voters: std::collections::BTreeSet<u64> =
                m.membership_config.membership().voter_ids().collect();
            let mut members: Vec<u64> = replicas.iter().copied().filter(|r| voters.contains(r)).collect();
            members.extend(voters.iter().copied().filter(|v| !replicas.contains(v)));
            // Members whose replication the leader tracks as recent, or
            // just this one when it does not lead.
            let online: Vec<u64> = match &m.heartbeat {
                Some(hb) => members
                    .iter()
                    .copied()
                    .filter(|r| {
                        *r == me
                            || hb.get(r).is_some_and(|t| {
                                t.as_ref().is_some_and(|t| t.elapsed() < Duration::from_secs(2))
                            })
                    })
                    .collect(),
                None => vec![me],
            };
            (m.current_leader, members, online)
        }
        None => (None, replicas.to_vec(), Vec::new()),
    };
    crate::admin::QuorumInfo {
        leader: leader.map(name),
        members: members.into_iter().map(name).collect(),
        online: online.into_iter().map(name).collect(),
    }
}

/// The messages a queue's replicated state holds here, and their bytes.
pub fn held(shard: &Shard, group: u32, queue: QueueId) -> (u64, u64) {
    let Some(g) = groups(shard).and_then(|gs| gs.groups.borrow().get(&group).cloned()) else {
        return (0, 0);
    };
    let st = g.sm.state.borrow();
    st.queues.get(&queue).map_or((0, 0), |q| {
        (
            q.msgs.len() as u64,
            q.msgs.values().map(|h| h.msg.body_len() as u64).sum(),
        )
    })
}
