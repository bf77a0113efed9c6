//! A quorum queue's `basic.get` reads the publishes proposed before it.

use super::*;
use crate::broker::topology::QueueDef;
use crate::owner::RemoteOp;

/// Declares quorum queue `q` ("qq") with `replicas`, its leader `node`
/// as the metadata names it (0: this node).
fn declare_quorum(w: &mut W, q: QueueId, node: u64, replicas: &[u64]) {
    let vhost = w.vhost;
    w.apply(&[Change::DeclareQueue(QueueDef {
        id: q,
        vhost,
        name: ss("qq"),
        owner: SHARD,
        node,
        durable: true,
        exclusive: None,
        auto_delete: false,
        args: FieldTable::new(),
        replicas: replicas.to_vec(),
        group: crate::broker::topology::quorum_group(replicas),
    })]);
}

/// A quorum queue this node (7) replicates and leads.
fn led_quorum_queue(w: &mut W) -> QueueId {
    let q = QueueId(900);
    declare_quorum(w, q, 0, &[7]);
    assert!(w.owner.quorum_activate(&w.topo, q, std::iter::empty(), 0));
    q
}

fn node_seven() -> W {
    W::with_config(OwnerConfig {
        node: 7,
        ..owner_config()
    })
}

#[test]
fn a_get_waits_for_the_publishes_proposed_before_it() {
    let mut w = node_seven();
    let q = led_quorum_queue(&mut w);
    // Published in this step, not proposed yet: the get waits.
    w.publish(q, transient("a"), 0);
    assert_eq!(w.get(q, true, 0), Vec::<String>::new());
    w.step(0);
    // Another publish proposed after the get does not hold it back.
    w.publish(q, transient("b"), 0);
    w.step(0);
    w.owner
        .quorum_enqueued(&w.topo, &mut w.fx, q, 1, vec![transient("a")], 0);
    assert_eq!(w.fx.take(), Vec::<String>::new());
    w.owner.quorum_answered(&w.topo, &mut w.fx, q, 1, 0);
    let got = w.fx.take();
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].contains("get-ok 'a' remaining=0 no-ack"), "{got:?}");
    // Nothing of this node's in flight but "b": a new get waits for it,
    // and a refused one (answered without a message) lets it through.
    assert_eq!(w.get(q, true, 0), Vec::<String>::new());
    w.owner.quorum_answered(&w.topo, &mut w.fx, q, 1, 0);
    let got = w.fx.take();
    assert!(got.len() == 1 && got[0].contains("get-empty"), "{got:?}");
    // Nothing in flight: answered at once.
    let got = w.get(q, true, 0);
    assert!(got.len() == 1 && got[0].contains("get-empty"), "{got:?}");
}

#[test]
fn a_waiting_get_is_answered_when_the_node_stops_leading_or_the_queue_goes() {
    let mut w = node_seven();
    let q = led_quorum_queue(&mut w);
    w.publish(q, transient("a"), 0);
    w.step(0);
    assert_eq!(w.get(q, true, 0), Vec::<String>::new());
    w.owner.quorum_deactivate(&mut w.fx, q);
    let got = w.fx.take();
    assert!(got.iter().any(|e| e.contains("get-empty")), "{got:?}");

    let mut w = node_seven();
    let q = led_quorum_queue(&mut w);
    w.publish(q, transient("a"), 0);
    w.step(0);
    assert_eq!(w.get(q, true, 0), Vec::<String>::new());
    w.apply(&[Change::DeleteQueue { id: q }]);
    let got = w.fx.take();
    assert!(got.iter().any(|e| e.contains("get-empty")), "{got:?}");
}

/// On a follower, a `basic.get` goes to the leader on another node; it
/// leaves only once the publishes this node proposed before it are
/// answered (they reach the leader through the group, not in order with
/// it). Other operations are not held; a deleted queue lets it go.
#[test]
fn a_get_for_a_leader_elsewhere_waits_for_this_nodes_publishes() {
    let mut w = node_seven();
    let q = QueueId(901);
    declare_quorum(&mut w, q, 9, &[9, 7]);
    let get = || RemoteOp::Queue {
        name: ss("qq"),
        ch: CONS_CH,
        op: QueueOp::Get { no_ack: true },
    };
    let sent = |w: &mut W| {
        w.fx.take_raw_items()
            .into_iter()
            .map(|(_, i)| match i {
                Item::Remote { node: 9, queue, op } if queue == q => match op {
                    RemoteOp::Queue {
                        op: QueueOp::Get { .. },
                        ..
                    } => "get",
                    RemoteOp::Settle { .. } => "settle",
                    _ => "other",
                },
                _ => "not for the leader",
            })
            .collect::<Vec<_>>()
    };
    w.publish(q, transient("a"), 0);
    w.owner.remote_op(&mut w.fx, 9, q, get());
    assert!(sent(&mut w).is_empty(), "held while 'a' is not answered");
    w.step(0);
    w.publish(q, transient("b"), 0);
    w.step(0);
    // A settle goes at once.
    w.owner.remote_op(
        &mut w.fx,
        9,
        q,
        RemoteOp::Settle {
            seq: 1,
            how: crate::broker::request::Settle::Ack,
        },
    );
    assert_eq!(sent(&mut w), ["settle"]);
    // 'a' answered: the get leaves ('b', proposed after it, does not hold it).
    w.owner.quorum_answered(&w.topo, &mut w.fx, q, 1, 0);
    assert_eq!(sent(&mut w), ["get"]);
    // Held again behind 'b'; the queue deleted, it goes to the leader,
    // which answers it.
    w.owner.remote_op(&mut w.fx, 9, q, get());
    assert!(sent(&mut w).is_empty());
    w.apply(&[Change::DeleteQueue { id: q }]);
    assert_eq!(sent(&mut w), ["get"]);
}

/// A publish for a quorum queue this node holds no slot of (it stopped
/// replicating it while the metadata still routes here) is refused, so
/// its publisher is nacked; a deleted queue's is confirmed and dropped,
/// as RabbitMQ does.
#[test]
fn a_publish_to_a_quorum_queue_without_a_slot_here_is_refused() {
    let mut w = node_seven();
    let q = led_quorum_queue(&mut w);
    // Taken out of the replicas; the slot dropped before the metadata
    // names another leader (it still routes here).
    w.apply(&[Change::QueueReplicas {
        id: q,
        replicas: vec![9],
    }]);
    w.owner.quorum_drop(&mut w.fx, q);
    assert_eq!(w.publish(q, transient("a"), 0), Enqueued::Refused);
    w.apply(&[Change::DeleteQueue { id: q }]);
    assert_eq!(w.publish(q, transient("b"), 0), Enqueued::Now);
}
