//! Vhost and user limits over the whole cluster: every second shard 0 asks
//! the other running members what connections and channels they hold (in
//! their status) and sets each counter's share held elsewhere, which
//! [`crate::broker::limits::Counter::acquire`] counts against the limit.
//! RabbitMQ's tracking tables are per node and summed the same way.

use super::state::Shard;
use crate::broker::topology::Topology;
use crate::cluster::node::Holds;
use std::rc::Weak;
use std::time::Duration;

/// How often the other members are asked.
const PERIOD: Duration = Duration::from_secs(1);

/// What this node holds, for its status.
pub fn held_here(topo: &Topology) -> Holds {
    let mut h = Holds::default();
    for v in topo.vhosts() {
        let n = v.connections.count();
        if n > 0 {
            h.vhost_connections.insert(v.name.clone(), n);
        }
    }
    for u in topo.users() {
        let (c, ch) = (u.counters.connections.count(), u.counters.channels.count());
        if c > 0 {
            h.user_connections.insert(u.name.clone(), c);
        }
        if ch > 0 {
            h.user_channels.insert(u.name.clone(), ch);
        }
    }
    h
}

/// Sets every counter's share held by the other members to `elsewhere`.
pub fn apply(topo: &Topology, elsewhere: &Holds) {
    let get = |m: &std::collections::BTreeMap<String, u32>, k: &str| m.get(k).copied().unwrap_or(0);
    for v in topo.vhosts() {
        v.connections
            .set_elsewhere(get(&elsewhere.vhost_connections, &v.name));
    }
    for u in topo.users() {
        u.counters
            .connections
            .set_elsewhere(get(&elsewhere.user_connections, &u.name));
        u.counters
            .channels
            .set_elsewhere(get(&elsewhere.user_channels, &u.name));
    }
}

/// Runs on shard 0 while the node has a cluster side. A member that does
/// not answer in time counts as holding nothing (its clients lost it, or
/// soon will), as RabbitMQ counts only running nodes.
pub async fn run(shard: Weak<Shard>) {
    loop {
        glommio::timer::sleep(PERIOD).await;
        let Some(shard) = shard.upgrade() else { return };
        let Some(node) = shard.cluster.borrow().as_ref().map(|g| g.node.clone()) else {
            return;
        };
        let peers = node.peers();
        let statuses = futures::future::join_all(peers.iter().map(|(_, addr)| node.status_of(addr))).await;
        let mut elsewhere = Holds::default();
        for st in statuses.into_iter().flatten() {
            if st.app_running {
                elsewhere.add(&st.holds);
            }
        }
        apply(&shard.hub.borrow().topo, &elsewhere);
    }
}
