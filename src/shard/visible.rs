//! Clustered: the answer to a metadata change (a declare, a bind, a
//! management change) is given once every running member of the cluster
//! applied it, not only this node. RabbitMQ's metadata transactions commit
//! on every running node; a client that declares a queue on one node and
//! publishes on another relies on it. Were the answer given at commit, a
//! publish on a member that had not yet applied the declare would find no
//! queue, be dropped as unroutable and still be confirmed.
//!
//! Held answers ([`crate::control::Action::Hold`]) wait here, each with
//! the metadata log index it needs. One round at a time asks every other
//! member, all at once, to answer once it applied the highest index held
//! ([`KIND_META_APPLIED`]); a round releases every answer it covers, so a
//! burst of declares costs one round trip, not one each. A member that did
//! not answer in time (down, cut off, far behind) is given only
//! [`SLOW_WAIT`] in later rounds until it answers again: a dead node costs
//! the cluster's declares one [`MEMBER_WAIT`] once, not every time.

use super::notify::Notify;
use super::state::Shard;
use crate::cluster::node::KIND_META_APPLIED;
use crate::cluster::node::Node;
use crate::control::Action;
use futures::channel::oneshot;
use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::{Rc, Weak};
use std::time::Duration;

/// How long a member may take to apply a change before it is taken as
/// slow.
const MEMBER_WAIT: Duration = Duration::from_secs(1);
/// What a member that was slow in the last round is given.
const SLOW_WAIT: Duration = Duration::from_millis(50);
/// Answers held at most (past it, a new one is given at once: the member
/// that holds everything up is not worth stalling every client for).
const MAX_HELD: usize = 100_000;

/// Shard 0's held answers, and the other nodes' requests waiting here.
#[derive(Default)]
pub struct Visible {
    /// Answers, each with the metadata index it waits for.
    held: RefCell<Vec<(u64, Action)>>,
    notify: Notify,
    /// Members that did not answer the last round in time.
    slow: RefCell<HashSet<u64>>,
    /// Requests of other nodes: answered once every shard applied the
    /// first n broadcasts of the control plane.
    waiters: RefCell<Vec<(u64, oneshot::Sender<()>)>>,
}

/// Starts the rounds and serves the other members' requests.
pub fn start(shard: &Rc<Shard>, node: &Rc<Node>, visible: &Rc<Visible>) {
    glommio::spawn_local(rounds(Rc::downgrade(shard), node.clone(), visible.clone())).detach();
    let weak = Rc::downgrade(shard);
    let node2 = node.clone();
    super::cluster::serve(shard, node, KIND_META_APPLIED, move |_, _, body| {
        let (weak, node) = (weak.clone(), node2.clone());
        async move { applied_here(weak, node, body).await }
    });
}

/// Holds answers of the control plane until every running member applied
/// the metadata this node applied so far.
pub fn hold(shard: &Rc<Shard>, answers: Vec<Action>) {
    let visible = shard.cluster.borrow().as_ref().map(|g| g.visible.clone());
    let index = shard.meta_index.get();
    match visible {
        Some(v) if v.held.borrow().len() < MAX_HELD => {
            v.held
                .borrow_mut()
                .extend(answers.into_iter().map(|a| (index, a)));
            v.notify.notify();
        }
        _ => release(shard, answers),
    }
}

/// Gives answers now (on a later turn: this runs inside a step).
fn release(shard: &Rc<Shard>, answers: Vec<Action>) {
    let shard = shard.clone();
    glommio::spawn_local(async move {
        give(&shard, answers);
        shard.after_step(super::state::now_ms());
    })
    .detach();
}

/// Gives answers: a quorum queue's declare-ok once its group has a
/// leader, the others now.
fn give(shard: &Rc<Shard>, answers: Vec<Action>) {
    let mut later = Vec::new();
    {
        let mut hub = shard.hub.borrow_mut();
        for a in answers {
            match a {
                Action::WhenLed(group, a) => later.push((group, *a)),
                a => hub.release(a),
            }
        }
    }
    // Outside the borrow: glommio runs a spawned task at once, and the
    // wait's task takes the hub when its group already has a leader.
    for (group, a) in later {
        super::quorum::when_led(shard, group, a);
    }
}

/// Answers the other nodes' requests whose broadcasts every shard applied
/// (shard 0, after each step).
pub fn wake(shard: &Shard) {
    let cluster = shard.cluster.borrow();
    let Some(v) = cluster.as_ref().map(|g| &g.visible) else {
        return;
    };
    if v.waiters.borrow().is_empty() {
        return;
    }
    let done = match &shard.hub.borrow().control {
        Some(c) => c.applied_everywhere(),
        None => u64::MAX,
    };
    // A sender dropped here is its waiter's answer; one whose waiter
    // gave up (timed out) goes too.
    v.waiters
        .borrow_mut()
        .retain(|(n, tx)| *n > done && !tx.is_canceled());
}

/// One round after another, while answers are held.
async fn rounds(shard: Weak<Shard>, node: Rc<Node>, v: Rc<Visible>) {
    loop {
        v.notify.wait().await;
        let Some(index) = v.held.borrow().iter().map(|(i, _)| *i).max() else {
            continue;
        };
        let peers = node.peers();
        let body = postcard::to_stdvec(&index).expect("an index encodes");
        let calls = peers.iter().map(|(id, addr)| {
            let wait = if v.slow.borrow().contains(id) {
                SLOW_WAIT
            } else {
                // The member waits up to MEMBER_WAIT itself; the call
                // allows for the trip.
                MEMBER_WAIT + SLOW_WAIT
            };
            let (node, body) = (node.clone(), body.clone());
            async move { (*id, node.call(addr, KIND_META_APPLIED, body, wait).await.is_ok()) }
        });
        for (id, ok) in futures::future::join_all(calls).await {
            let changed = if ok {
                v.slow.borrow_mut().remove(&id)
            } else {
                v.slow.borrow_mut().insert(id)
            };
            if changed {
                let name = node.info_of(id).map_or_else(|| format!("{id:x}"), |i| i.name);
                if ok {
                    log::info!("cluster node {name} applies metadata changes again");
                } else {
                    log::warn!(
                        "cluster node {name} did not apply a metadata change in time: answers to changes no longer wait for it"
                    );
                }
            }
        }
        let Some(shard) = shard.upgrade() else { return };
        let ready: Vec<Action> = {
            let mut held = v.held.borrow_mut();
            let (ready, later): (Vec<_>, Vec<_>) = held.drain(..).partition(|(i, _)| *i <= index);
            *held = later;
            if !held.is_empty() {
                v.notify.notify();
            }
            ready.into_iter().map(|(_, a)| a).collect()
        };
        give(&shard, ready);
        shard.after_step(super::state::now_ms());
    }
}

/// Another node's request: answers once this node applied the metadata
/// log up to the index asked for, and every shard here routes by it.
async fn applied_here(shard: Weak<Shard>, node: Rc<Node>, body: Vec<u8>) -> Result<Vec<u8>, String> {
    let index: u64 = postcard::from_bytes(&body).map_err(|e| format!("bad index: {e}"))?;
    if !node.applied_at_least(index, MEMBER_WAIT).await {
        return Err(format!("metadata entry {index} not applied in time"));
    }
    let shard = shard.upgrade().ok_or("the node is stopping")?;
    let v = shard
        .cluster
        .borrow()
        .as_ref()
        .map(|g| g.visible.clone())
        .ok_or("not in a cluster")?;
    let (sent, done) = match &shard.hub.borrow().control {
        Some(c) => (c.broadcasts(), c.applied_everywhere()),
        None => return Ok(Vec::new()),
    };
    if done >= sent {
        return Ok(Vec::new());
    }
    let (tx, rx) = oneshot::channel();
    v.waiters.borrow_mut().push((sent, tx));
    match glommio::timer::timeout(MEMBER_WAIT, async { Ok(rx.await) }).await {
        // Dropped by `wake`: every shard applied the broadcasts.
        Ok(_) => Ok(Vec::new()),
        Err(_) => Err("the shards did not apply the change in time".into()),
    }
}
