//! Installing a snapshot of the cluster's metadata on a node that already
//! has a topology (one that was down while the cluster compacted its
//! metadata log): the changes that turn what the node has into what the
//! snapshot holds, and nothing more.
//!
//! Deleting everything and declaring it again would be simpler, but a
//! queue deleted drops its messages: a queue the node serves, present in
//! both, must stay untouched (its leader may move). Ids are never reused,
//! so an id present in both names the same vhost, exchange or queue.

use crate::broker::limits::Limits;
use crate::broker::topology::{Change, Topology};
use crate::storage::topolog;
use bytes::BytesMut;
use std::collections::{HashMap, HashSet};

/// What identifies the thing a create-style change makes.
#[derive(Clone, PartialEq, Eq, Hash)]
enum Key {
    Vhost(u32),
    VhostLimits(u32),
    User(String),
    UserLimits(String),
    Permissions(String, u32),
    Policy(u32, String),
    Exchange(u64),
    Queue(u64),
    /// A binding is all it says (its encoding).
    Binding(Vec<u8>),
}

fn encoded(c: &Change) -> Vec<u8> {
    let mut b = BytesMut::new();
    topolog::encode(c, &mut b);
    b.to_vec()
}

fn key(c: &Change) -> Option<Key> {
    Some(match c {
        Change::AddVhost { id, .. } => Key::Vhost(id.0),
        Change::SetVhostLimits { vhost, .. } => Key::VhostLimits(vhost.0),
        Change::PutUser(u) => Key::User(u.name.clone()),
        Change::SetUserLimits { user, .. } => Key::UserLimits(user.clone()),
        Change::SetPermissions { user, vhost, .. } => Key::Permissions(user.clone(), vhost.0),
        Change::SetPolicy(p) => Key::Policy(p.vhost.0, p.name.clone()),
        Change::DeclareExchange(x) => Key::Exchange(x.id.0),
        Change::DeclareQueue(q) => Key::Queue(q.id.0),
        Change::Bind { .. } => Key::Binding(encoded(c)),
        _ => return None,
    })
}

/// The changes that make `topo` hold what `image` (a snapshot, as
/// create-style changes in dependency order) holds: removals first, the
/// most dependent first; then, in the image's order, what is new or
/// changed. A queue in both whose home node differs moves
/// (`QueueLeader`), one whose replicas differ gets the image's
/// (`QueueReplicas`); nothing else about it changes.
pub fn changes_to(topo: &Topology, image: Vec<Change>) -> Vec<Change> {
    let current = topolog::image(topo, true);
    let target: HashMap<Key, Vec<u8>> = image
        .iter()
        .filter_map(|c| key(c).map(|k| (k, encoded(c))))
        .collect();
    let have: HashMap<Key, (&Change, Vec<u8>)> = current
        .iter()
        .filter_map(|c| key(c).map(|k| (k, (c, encoded(c)))))
        .collect();
    let gone = |k: &Key| !target.contains_key(k);
    let vhost_stays = |v: u32| !gone(&Key::Vhost(v));
    let user_stays = |u: &String| !gone(&Key::User(u.clone()));

    let mut out = Vec::new();
    // Removals, by rank: bindings, queues, exchanges, policies,
    // permissions and limits, users, vhosts.
    let mut removals: Vec<(u8, Change)> = Vec::new();
    for c in &current {
        let Some(k) = key(c) else { continue };
        if !gone(&k) {
            continue;
        }
        let removal = match c {
            Change::Bind {
                source,
                dest,
                key,
                args,
            } => (
                0,
                Change::Unbind {
                    source: *source,
                    dest: *dest,
                    key: key.clone(),
                    args: args.clone(),
                },
            ),
            Change::DeclareQueue(q) => (1, Change::DeleteQueue { id: q.id }),
            Change::DeclareExchange(x) => (2, Change::DeleteExchange { id: x.id }),
            Change::SetPolicy(p) if vhost_stays(p.vhost.0) => (
                3,
                Change::ClearPolicy {
                    vhost: p.vhost,
                    name: p.name.clone(),
                },
            ),
            Change::SetPermissions { user, vhost, .. } if vhost_stays(vhost.0) && user_stays(user) => (
                3,
                Change::ClearPermissions {
                    user: user.clone(),
                    vhost: *vhost,
                },
            ),
            Change::SetVhostLimits { vhost, .. } if vhost_stays(vhost.0) => (
                3,
                Change::SetVhostLimits {
                    vhost: *vhost,
                    limits: None,
                },
            ),
            Change::SetUserLimits { user, .. } if user_stays(user) => (
                3,
                Change::SetUserLimits {
                    user: user.clone(),
                    limits: Limits::default(),
                },
            ),
            Change::PutUser(u) => (4, Change::DeleteUser { name: u.name.clone() }),
            Change::AddVhost { id, .. } => (5, Change::DeleteVhost { id: *id }),
            _ => continue,
        };
        removals.push(removal);
    }
    removals.sort_by_key(|(rank, _)| *rank);
    out.extend(removals.into_iter().map(|(_, c)| c));

    let mut moved = HashSet::new();
    for c in image {
        let Some(k) = key(&c) else {
            out.push(c);
            continue;
        };
        match have.get(&k) {
            None => out.push(c),
            Some((_, bytes)) if *bytes == target[&k] => {}
            Some((old, _)) => match (&c, old) {
                (Change::DeclareQueue(new), Change::DeclareQueue(old)) => {
                    if new.node != old.node && moved.insert(new.id) {
                        out.push(Change::QueueLeader {
                            id: new.id,
                            node: new.node,
                        });
                    }
                    if new.replicas != old.replicas {
                        out.push(Change::QueueReplicas {
                            id: new.id,
                            replicas: new.replicas.clone(),
                        });
                    }
                }
                // The same id is the same vhost or exchange.
                (Change::AddVhost { .. }, _) | (Change::DeclareExchange(_), _) => {}
                // Users, permissions, policies and limits are set whole.
                _ => out.push(c),
            },
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::control::ControlPlane;
    use crate::broker::topology::{Dest, ExchangeDef, QueueDef};
    use crate::broker::users::User;
    use crate::ids::{ExchangeId, QueueId, VhostId};
    use crate::routing::ExchangeKind;

    fn queue(id: u64, name: &'static str, node: u64) -> Change {
        Change::DeclareQueue(QueueDef {
            id: QueueId(id),
            vhost: VhostId(1),
            name: name.into(),
            owner: 0,
            node,
            durable: true,
            exclusive: None,
            auto_delete: false,
            args: Default::default(),
            replicas: Vec::new(),
            group: 0,
        })
    }

    fn exchange(id: u64, name: &'static str) -> Change {
        Change::DeclareExchange(ExchangeDef {
            id: ExchangeId(id),
            vhost: VhostId(1),
            name: name.into(),
            kind: ExchangeKind::Direct,
            durable: true,
            auto_delete: false,
            internal: false,
            args: Default::default(),
        })
    }

    fn bind(x: u64, q: u64, key: &'static str) -> Change {
        Change::Bind {
            source: ExchangeId(x),
            dest: Dest::Queue(QueueId(q)),
            key: key.into(),
            args: Default::default(),
        }
    }

    fn user(name: &str, tag: &str) -> Change {
        Change::PutUser(User {
            name: name.into(),
            password_hash: Vec::new(),
            tags: vec![tag.into()],
            counters: Default::default(),
        })
    }

    fn topo_of(changes: &[Change]) -> Topology {
        let mut t = Topology::default();
        for c in changes {
            t.apply(c);
        }
        t
    }

    fn names(cs: &[Change]) -> Vec<String> {
        cs.iter()
            .map(|c| match c {
                Change::DeleteQueue { id } => format!("-q{}", id.0),
                Change::DeclareQueue(q) => format!("+q{}@{}", q.id.0, q.node),
                Change::QueueLeader { id, node } => format!("q{}->{}", id.0, node),
                Change::DeleteExchange { id } => format!("-x{}", id.0),
                Change::DeclareExchange(x) => format!("+x{}", x.id.0),
                Change::Bind { source, key, .. } => format!("+b{}:{key}", source.0),
                Change::Unbind { source, key, .. } => format!("-b{}:{key}", source.0),
                Change::PutUser(u) => format!("+u{}", u.name),
                Change::DeleteUser { name } => format!("-u{name}"),
                other => format!("{other:?}").chars().take(12).collect(),
            })
            .collect()
    }

    fn base() -> Vec<Change> {
        ControlPlane::default()
            .add_vhost(&Topology::default(), "/")
            .unwrap()
    }

    #[test]
    fn an_empty_node_takes_the_whole_image() {
        let mut image = base();
        image.extend([exchange(100, "x"), queue(7, "q", 0), bind(100, 7, "k")]);
        let out = changes_to(&Topology::default(), image.clone());
        assert_eq!(names(&out), names(&image));
    }

    #[test]
    fn what_both_hold_stays_untouched_and_only_the_difference_is_applied() {
        let mut have = base();
        have.extend([
            user("guest", "administrator"),
            user("old", "x"),
            exchange(100, "x"),
            exchange(101, "gone-x"),
            queue(7, "kept", 0),
            queue(8, "moves", 0),
            queue(9, "gone", 0),
            bind(100, 7, "k"),
            bind(100, 7, "gone-k"),
            bind(101, 7, "k"),
        ]);
        let mut image = base();
        image.extend([
            user("guest", "management"),
            user("new", "x"),
            exchange(100, "x"),
            exchange(102, "new-x"),
            queue(7, "kept", 0),
            queue(8, "moves", 5),
            queue(10, "new", 0),
            bind(100, 7, "k"),
            bind(102, 10, "k"),
        ]);
        let out = changes_to(&topo_of(&have), image.clone());
        assert_eq!(
            names(&out),
            vec![
                // Removals first, bindings before what they join.
                "-b100:gone-k",
                "-b101:k",
                "-q9",
                "-x101",
                "-uold",
                // Then the image's order: a user set whole, a new one,
                // the new exchange and queue, a move, the new binding.
                "+uguest",
                "+unew",
                "+x102",
                "q8->5",
                "+q10@0",
                "+b102:k",
            ]
        );
        // Applied, the node holds what the image holds.
        let mut t = topo_of(&have);
        for c in &out {
            t.apply(c);
        }
        assert!(changes_to(&t, image).is_empty());
        assert_eq!(t.queue(QueueId(8)).map(|q| q.node), Some(5));
    }

    #[test]
    fn a_quorum_queue_whose_replicas_changed_takes_the_images() {
        let quorum = |replicas: Vec<u64>| {
            let Change::DeclareQueue(mut q) = queue(7, "qq", 3) else {
                unreachable!()
            };
            q.group = crate::broker::topology::quorum_group(&[3, 4, 5]);
            q.replicas = replicas;
            Change::DeclareQueue(q)
        };
        let mut have = base();
        have.push(quorum(vec![3, 4, 5]));
        let mut image = base();
        image.push(quorum(vec![3, 5]));
        let out = changes_to(&topo_of(&have), image.clone());
        assert!(
            matches!(out.as_slice(), [Change::QueueReplicas { id: QueueId(7), replicas }] if *replicas == vec![3, 5]),
            "{out:?}"
        );
        let mut t = topo_of(&have);
        for c in &out {
            t.apply(c);
        }
        assert!(changes_to(&t, image).is_empty());
    }
}
