//! Changing quorum queues' replicas: `rabbitmq-queues grow` and `shrink`
//! (and the shrink of `forget_cluster_node`) set them in the metadata;
//! each group's leader then changes its Raft members to match, and tells
//! each member it took out once that removal committed; only then does
//! that member stop the group and delete its data (a member that stopped
//! while still a voter would come back with no log: a voter that forgot
//! its votes breaks Raft).

use super::quorum::{self, Group, Groups, groups};
use super::state::{Shard, now_ms};
use crate::cluster::net::service_fn;
use crate::cluster::quorum::KIND_QUORUM_LEFT;
use openraft::ServerState;
use openraft::async_runtime::WatchReceiver;
use std::collections::BTreeSet;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// How long one step of a change of a group's members (a new member
/// catching up, then the new voters committed) may take before it is
/// tried again (the leader checks every second).
const MEMBERS_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a member out of a group waits for the metadata to name
/// another leader of its queues before it drops them (what is routed to
/// it meanwhile is refused, not lost).
const HANDOVER_WAIT: Duration = Duration::from_secs(10);

/// How long `grow` and `shrink` wait for the groups this node runs to
/// take their new members (a new one catches up first).
const REPLICAS_WAIT: Duration = Duration::from_secs(20);

/// Adds `id` to quorum queues' replicas or takes it out (see
/// `AdminOp::QuorumReplicas`), then waits until the groups this node runs
/// have those members. One row per queue, as `rabbitmq-queues` prints:
/// vhost, name, size (its replicas after) and result.
pub async fn change(shard: &Rc<Shard>, id: u64, grow: bool, even: bool) -> Result<serde_json::Value, String> {
    struct Row {
        vhost: String,
        name: String,
        group: u32,
        size: usize,
        error: Option<&'static str>,
    }
    let mut rows: Vec<Row> = {
        let hub = shard.hub.borrow();
        hub.topo
            .queues()
            .filter(|q| q.is_quorum())
            .filter_map(|q| {
                let (size, error) = match q.replicas_after(id, grow, even) {
                    Some(r) => (r.len(), None),
                    // Only the node left: RabbitMQ's `last_node`.
                    None if !grow && q.replicas == [id] => {
                        (1, Some("error: the last node cannot be removed"))
                    }
                    None => return None,
                };
                Some(Row {
                    vhost: hub.topo.vhost_name(q.vhost).to_string(),
                    name: q.name.to_string(),
                    group: q.quorum_group(),
                    size,
                    error,
                })
            })
            .collect()
    };
    if rows.iter().any(|r| r.error.is_none()) {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let now = now_ms();
        shard
            .hub
            .borrow_mut()
            .submit_control(crate::owner::ControlMsg::Admin {
                user: String::new(),
                op: crate::admin::AdminOp::QuorumReplicas { node: id, grow, even },
                reply: tx,
            });
        shard.after_step(now);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match rx.try_recv() {
                Ok(Ok(())) => break,
                Ok(Err(e)) => return Err(e.text.to_string()),
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    return Err("the control plane dropped the change".into());
                }
                Err(std::sync::mpsc::TryRecvError::Empty) if Instant::now() >= deadline => {
                    return Err("timed out waiting for the metadata to take the change".into());
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => {
                    glommio::timer::sleep(Duration::from_millis(10)).await
                }
            }
        }
        let deadline = Instant::now() + REPLICAS_WAIT;
        let mut groups: Vec<u32> = rows
            .iter()
            .filter(|r| r.error.is_none())
            .map(|r| r.group)
            .collect();
        groups.dedup();
        groups.retain(|g| !has_members_wanted(shard, *g));
        while !groups.is_empty() && Instant::now() < deadline {
            glommio::timer::sleep(Duration::from_millis(100)).await;
            groups.retain(|g| !has_members_wanted(shard, *g));
        }
        for r in rows.iter_mut().filter(|r| groups.contains(&r.group)) {
            r.error = Some("error: the operation timed out and may not have been completed");
        }
    }
    Ok(serde_json::Value::Array(
        rows.into_iter()
            .map(|r| {
                serde_json::json!({
                    "vhost": r.vhost,
                    "name": r.name,
                    "size": r.size,
                    "result": r.error.unwrap_or("ok"),
                })
            })
            .collect(),
    ))
}

/// The replicas the metadata gives the group's queues (the same for all
/// of them: `grow` and `shrink` change a whole group); `None` when it has
/// no queue left.
pub(super) fn wanted(shard: &Shard, group: u32) -> Option<Vec<u64>> {
    let hub = shard.hub.borrow();
    hub.topo
        .queues()
        .find(|q| q.is_quorum() && q.group == group)
        .map(|q| q.replicas.clone())
}

/// The group's voters and learners, as this member sees them.
fn members(g: &Group) -> (u64, BTreeSet<u64>, BTreeSet<u64>) {
    let m = g.raft.metrics().borrow_watched().clone();
    let ms = m.membership_config.membership();
    (m.id, ms.voter_ids().collect(), ms.learner_ids().collect())
}

/// Whether the group's Raft voters, as this node sees them, are the
/// replicas the metadata names (true where this node does not run it,
/// or is out of it).
pub fn has_members_wanted(shard: &Shard, group: u32) -> bool {
    let Some(g) = groups(shard).and_then(|gs| gs.groups.borrow().get(&group).cloned()) else {
        return true;
    };
    let Some(want) = wanted(shard, group) else {
        return true;
    };
    let (me, voters, _) = members(&g);
    voters == want.iter().copied().collect() || !want.contains(&me)
}

/// The replicas of these groups' queues changed in the metadata: the
/// group's leader makes its Raft members follow; a node taken out of
/// them leaves the group once the leader says its removal committed.
pub fn members_changed(shard: &Rc<Shard>, changed: Vec<u32>) {
    let Some(gs) = groups(shard) else { return };
    let me = shard.hub.borrow().owner.node();
    for group in changed {
        let Some(g) = gs.groups.borrow().get(&group).cloned() else {
            continue;
        };
        let Some(want) = wanted(shard, group) else {
            continue;
        };
        let shard = shard.clone();
        let gs = gs.clone();
        glommio::spawn_local(async move {
            if want.contains(&me) {
                reconcile(&shard, group, &g, &want).await;
            } else {
                leave(&shard, &gs, group, g).await;
            }
        })
        .detach();
    }
}

/// Every second on a group's leader: members that do not match the
/// metadata yet, and members taken out not told yet.
pub(super) fn keep_members(shard: &Rc<Shard>, group: u32, g: &Rc<Group>) {
    let Some(want) = wanted(shard, group) else { return };
    let (_, voters, learners) = members(g);
    let want_set: BTreeSet<u64> = want.iter().copied().collect();
    let stray = learners.iter().any(|l| !want_set.contains(l));
    if voters == want_set && !stray && g.removed.borrow().is_empty() {
        return;
    }
    let (shard, g) = (shard.clone(), g.clone());
    glommio::spawn_local(async move { reconcile(&shard, group, &g, &want).await }).detach();
}

async fn reconcile(shard: &Rc<Shard>, group: u32, g: &Group, want: &[u64]) {
    if let Err(e) = follow_replicas(shard, group, g, want).await {
        log::warn!("quorum group {group:x}: cannot change its members yet: {e}");
    }
    // One added back before it was told is not told: it is a member (and
    // may not have applied the change that added it back yet).
    g.removed.borrow_mut().retain(|id| !want.contains(id));
    tell_removed(shard, group, g).await;
}

/// On the group's leader: makes its voters the replicas the metadata
/// names. Removals first (voters, then learners left over from a grow
/// that did not finish), so that a new member that is down holds back
/// nothing else; then each new member is added as a learner, catches up,
/// and becomes a voter. Joint consensus: a change commits with a majority
/// of the old voters and of the new, so a dead member can be taken out
/// while the others are a majority. Does nothing on another member, or
/// while another change of this group runs.
async fn follow_replicas(shard: &Rc<Shard>, group: u32, g: &Group, want: &[u64]) -> Result<(), String> {
    let m = g.raft.metrics().borrow_watched().clone();
    if m.state != ServerState::Leader || want.is_empty() || g.changing.replace(true) {
        return Ok(());
    }
    let r = async {
        let (me, voters, learners) = members(g);
        let want: BTreeSet<u64> = want.iter().copied().collect();
        let out: BTreeSet<u64> = voters.difference(&want).copied().collect();
        if !out.is_empty() {
            within(
                MEMBERS_TIMEOUT,
                g.raft
                    .change_membership(openraft::ChangeMembers::RemoveVoters(out.clone()), false),
            )
            .await?;
            log::info!(
                "quorum group {group:x}: {:x?} taken out",
                out.iter().collect::<Vec<_>>()
            );
            // Committed: each is told (this node, leading, has left).
            for id in &out {
                if *id == me {
                    g.left.set(true);
                } else {
                    g.removed.borrow_mut().insert(*id);
                }
            }
            if out.contains(&me) {
                return Ok(());
            }
        }
        let stray: BTreeSet<u64> = learners.difference(&want).copied().collect();
        if !stray.is_empty() {
            within(
                MEMBERS_TIMEOUT,
                g.raft
                    .change_membership(openraft::ChangeMembers::RemoveNodes(stray.clone()), false),
            )
            .await?;
            g.removed.borrow_mut().extend(stray);
        }
        let new: BTreeSet<u64> = want.difference(&voters).copied().collect();
        if !new.is_empty() {
            let Some(node) = shard.cluster.borrow().as_ref().map(|c| c.node.clone()) else {
                return Err("no cluster port".to_string());
            };
            for id in &new {
                let info = node
                    .info_of(*id)
                    .ok_or_else(|| format!("{id:x} is not a member of the cluster"))?;
                within(MEMBERS_TIMEOUT, g.raft.add_learner(*id, info, true)).await?;
            }
            within(
                MEMBERS_TIMEOUT,
                g.raft
                    .change_membership(openraft::ChangeMembers::AddVoterIds(new.clone()), false),
            )
            .await?;
            log::info!(
                "quorum group {group:x}: {:x?} added",
                new.iter().collect::<Vec<_>>()
            );
        }
        Ok(())
    }
    .await;
    g.changing.set(false);
    r
}

async fn within<T, E: std::fmt::Display>(
    limit: Duration,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match glommio::timer::timeout(limit, async { Ok(f.await) }).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err("timed out (no majority, or a new member does not answer)".into()),
    }
}

/// Tells the members this leader took out that their removal committed.
/// One that does not answer is told again next second; one that is no
/// longer a cluster member is not told (forgotten: it must be reset to
/// come back). A leader change loses the list: a member never told keeps
/// running the group it is out of, harmless, until it restarts.
async fn tell_removed(shard: &Rc<Shard>, group: u32, g: &Group) {
    let Some(node) = shard.cluster.borrow().as_ref().map(|c| c.node.clone()) else {
        return;
    };
    let ids: Vec<u64> = g.removed.borrow().iter().copied().collect();
    for id in ids {
        let told = match node.addr_of(id) {
            None => true,
            Some(addr) => node
                .call(
                    &addr,
                    KIND_QUORUM_LEFT,
                    group.to_le_bytes().to_vec(),
                    Duration::from_secs(2),
                )
                .await
                .is_ok(),
        };
        if told {
            g.removed.borrow_mut().remove(&id);
        }
    }
}

/// Serves the leaders' word that this node is out of a group.
pub fn serve(shard: &Rc<Shard>, node: &crate::cluster::node::Node) {
    let weak = Rc::downgrade(shard);
    node.register(
        KIND_QUORUM_LEFT,
        service_fn(move |_from: &str, _kind: u8, body: Vec<u8>| {
            let shard = weak.upgrade();
            async move {
                let Some(shard) = shard else {
                    return Err("the node is stopping".to_string());
                };
                let group = u32::from_le_bytes(
                    body.get(..4)
                        .and_then(|b| b.try_into().ok())
                        .ok_or("short body")?,
                );
                let me = shard.hub.borrow().owner.node();
                if wanted(&shard, group).is_some_and(|w| w.contains(&me)) {
                    // Added back since: the leader adds it again.
                    return Ok(Vec::new());
                }
                let Some(gs) = groups(&shard) else {
                    return Ok(Vec::new());
                };
                let g = gs.groups.borrow().get(&group).cloned();
                match g {
                    Some(g) => {
                        g.left.set(true);
                        glommio::spawn_local(async move { leave(&shard, &gs, group, g).await }).detach();
                    }
                    None if !gs.opening.borrow().contains(&group) => delete_data(&shard, group),
                    None => {}
                }
                Ok(Vec::new())
            }
        }),
    );
}

/// This node is no longer among the group's replicas: it goes on as a
/// member until its removal committed ([`Group::left`]; a leader takes
/// itself out), then waits for the metadata to name another leader of
/// the group's queues, stops the group, drops its queues' slots and
/// deletes the group's data here. Added back meanwhile, it stays.
async fn leave(shard: &Rc<Shard>, gs: &Rc<Groups>, group: u32, g: Rc<Group>) {
    if g.leaving.replace(true) {
        return;
    }
    let me = shard.hub.borrow().owner.node();
    let still_out = || wanted(shard, group).is_some_and(|w| !w.contains(&me));
    loop {
        if !still_out() {
            // Added back: a word that came meanwhile is for the past.
            g.left.set(false);
            g.leaving.set(false);
            return;
        }
        if g.left.get() {
            break;
        }
        if g.raft.metrics().borrow_watched().state == ServerState::Leader
            && let Some(want) = wanted(shard, group)
        {
            reconcile(shard, group, &g, &want).await;
        }
        glommio::timer::sleep(Duration::from_millis(200)).await;
    }
    let queues = shard.hub.borrow().owner.quorum_queues(group);
    let deadline = Instant::now() + HANDOVER_WAIT;
    while Instant::now() < deadline
        && queues
            .iter()
            .any(|q| shard.hub.borrow().topo.queue(*q).is_some_and(|d| d.node == 0))
    {
        glommio::timer::sleep(Duration::from_millis(100)).await;
    }
    // A re-open waits for this to finish (see `quorum::open`).
    gs.opening.borrow_mut().insert(group);
    gs.groups.borrow_mut().remove(&group);
    if let Some(node) = shard.cluster.borrow().as_ref().map(|c| c.node.clone()) {
        node.rpc().remove_group(group);
    }
    let _ = g.raft.shutdown().await;
    gs.opening.borrow_mut().remove(&group);
    if let Some(want) = wanted(shard, group).filter(|w| w.contains(&me)) {
        // Added back while it stopped: it runs the group again, from its
        // data (its slots stayed).
        quorum::open(shard, vec![(group, want)]);
        return;
    }
    let now = now_ms();
    {
        let mut hub = shard.hub.borrow_mut();
        let hub = &mut *hub;
        for q in hub.owner.quorum_queues(group) {
            let left = hub.owner.quorum_drop(&mut hub.out, q);
            if !left.is_empty() {
                super::cluster::keep_failed_settles(hub, shard, q, left);
            }
        }
    }
    shard.after_step(now);
    delete_data(shard, group);
    log::info!("quorum group {group:x}: this node is no longer one of its replicas");
}

/// Deletes a group's data here (its removal committed).
fn delete_data(shard: &Shard, group: u32) {
    let dir = shard.cfg.data_dir.join("quorum").join(format!("{group:08x}"));
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => log::warn!("quorum group {group:x}: cannot delete {}: {e}", dir.display()),
    }
}
