//! The control plane as a member of a cluster: planned changes go to the
//! metadata log as proposals, every node applies committed entries in log
//! order, and a proposal planned against an older topology is rejected
//! everywhere alike and planned again.

use super::*;
use crate::control::Proposal;

/// Two nodes' control planes over the same first-boot topology, clustered.
fn two_nodes(nshards: usize) -> (C, C) {
    let mut a = C::without_log(nshards);
    let mut b = C::without_log(nshards);
    a.svc.enter_cluster(0, 1);
    b.svc.enter_cluster(0, 1);
    (a, b)
}

/// Commits `p` (proposed by `from`) as the metadata log does: every node
/// gets it in the same order. Returns whether it was accepted.
fn commit(nodes: &mut [&mut C], from: usize, p: &Proposal) -> bool {
    let mut verdicts = Vec::new();
    for (i, n) in nodes.iter_mut().enumerate() {
        verdicts.push(
            n.svc
                .replicated(i == from, p.token, p.base, p.next_ids, p.changes.clone()),
        );
    }
    assert!(
        verdicts.windows(2).all(|w| w[0] == w[1]),
        "every node decides alike"
    );
    verdicts[0]
}

#[test]
fn a_declare_is_proposed_and_answered_once_committed() {
    let (mut a, mut b) = two_nodes(1);
    a.request(chan(0, 1), declare("q1", true));
    let step = a.poll();
    assert_eq!(
        step,
        vec!["propose token=1 base=0 [declare-queue q1 q1 owner=0 durable]"]
    );
    let p = a.proposals.pop().unwrap();
    assert!(commit(&mut [&mut a, &mut b], 0, &p));
    let step = a.poll();
    assert_eq!(
        step,
        vec![
            "apply [declare-queue q1 q1 owner=0 durable]",
            // Held until every member applied it too (the runtime asks).
            "held reply C0.1/1: declare-ok q1 messages=0 consumers=0"
        ]
        .into_iter()
        .map(|s| s.replace("C0.1", &format!("{:?}", chan(0, 1).conn)))
        .collect::<Vec<_>>()
    );
    // The other node applies it without answering anyone.
    assert_eq!(b.poll(), vec!["apply [declare-queue q1 q1 owner=0 durable]"]);
    assert_eq!(a.svc.accepted(), 1);
    assert_eq!(b.svc.accepted(), 1);
}

#[test]
fn concurrent_declares_of_different_queues_both_succeed_with_distinct_ids() {
    let (mut a, mut b) = two_nodes(1);
    a.request(chan(0, 1), declare("qa", true));
    b.request(chan(0, 2), declare("qb", true));
    a.poll();
    b.poll();
    let pa = a.proposals.pop().unwrap();
    let pb = b.proposals.pop().unwrap();
    // Both planned queue id 1 against the same topology; a's is first.
    assert!(commit(&mut [&mut a, &mut b], 0, &pa));
    assert!(
        !commit(&mut [&mut a, &mut b], 1, &pb),
        "b planned against an older topology"
    );
    a.poll();
    let step = b.poll();
    // b applied a's change, then planned its own again, with a fresh id.
    assert_eq!(step[0], "apply [declare-queue q1 qa owner=0 durable]");
    assert_eq!(
        step[1],
        "propose token=2 base=1 [declare-queue q2 qb owner=0 durable]"
    );
    let pb = b.proposals.pop().unwrap();
    assert!(commit(&mut [&mut a, &mut b], 1, &pb));
    let step = b.poll();
    assert!(
        step.last()
            .unwrap()
            .ends_with("declare-ok qb messages=0 consumers=0"),
        "{step:?}"
    );
    a.poll();
    assert_eq!(a.topo.queues().count(), 2);
    assert_eq!(b.topo.queues().count(), 2);
}

#[test]
fn the_same_declare_on_two_nodes_creates_one_queue() {
    let (mut a, mut b) = two_nodes(1);
    a.request(chan(0, 1), declare("shared", true));
    b.request(chan(0, 2), declare("shared", true));
    a.poll();
    b.poll();
    let pa = a.proposals.pop().unwrap();
    let pb = b.proposals.pop().unwrap();
    assert!(commit(&mut [&mut a, &mut b], 0, &pa));
    assert!(!commit(&mut [&mut a, &mut b], 1, &pb));
    a.poll();
    let step = b.poll();
    // Planned again, the declare finds the queue: its owner answers.
    assert_eq!(step[0], "apply [declare-queue q1 shared owner=0 durable]");
    assert!(step[1].contains("declare-counts q1 shared"), "{step:?}");
    assert!(b.proposals.is_empty());
    assert_eq!(b.topo.queues().count(), 1);
}

#[test]
fn a_failed_proposal_fails_the_request_and_the_next_one_goes_on() {
    let (mut a, _b) = two_nodes(1);
    a.request(chan(0, 1), declare("q1", true));
    a.poll();
    let p = a.proposals.pop().unwrap();
    a.svc.propose_failed(p.token, AmqpError::internal("no majority"));
    let step = a.poll();
    assert_eq!(step.len(), 1);
    assert!(
        step[0].starts_with("reply ") && step[0].ends_with("error 541 INTERNAL_ERROR - no majority"),
        "{step:?}"
    );
    a.request(chan(0, 1), declare("q2", true));
    let step = a.poll();
    assert!(step[0].starts_with("propose token=2 base=0"), "{step:?}");
}

#[test]
fn an_operation_waits_for_every_shard_to_apply_foreign_entries_too() {
    let (mut a, mut b) = two_nodes(3);
    b.request(chan(0, 2), declare("qb", false));
    b.poll();
    let pb = b.proposals.pop().unwrap();
    a.request(chan(0, 1), declare("qa", false));
    a.poll();
    let pa = a.proposals.pop().unwrap();
    assert!(commit(&mut [&mut a, &mut b], 1, &pb));
    let step = a.poll();
    // a applied b's entry and sent it to its two other shards; its own
    // request is re-planned (base 0 is stale by then).
    assert_eq!(
        step.iter().filter(|s| s.starts_with("send ")).count(),
        2,
        "{step:?}"
    );
    assert!(!commit(&mut [&mut a, &mut b], 0, &pa));
    let step = a.poll();
    assert!(
        step.iter().any(|s| s.starts_with("propose token=2 base=1")),
        "{step:?}"
    );
    let pa = a.proposals.pop().unwrap();
    assert!(commit(&mut [&mut a, &mut b], 0, &pa));
    let step = a.poll();
    assert!(
        !step.iter().any(|s| s.starts_with("held reply")),
        "waits for the shards: {step:?}"
    );
    // Four broadcasts were sent (two entries × two shards): the reply
    // comes after the fourth answer, not the second.
    a.svc.topology_applied(1);
    a.svc.topology_applied(2);
    a.svc.topology_applied(1);
    assert!(!a.poll().iter().any(|s| s.starts_with("held reply")));
    a.svc.topology_applied(2);
    assert!(a.poll().iter().any(|s| s.starts_with("held reply")));
}

#[test]
fn a_management_change_that_loses_a_race_is_planned_again() {
    let (mut a, mut b) = two_nodes(1);
    b.request(chan(0, 2), declare("qb", true));
    b.poll();
    let pb = b.proposals.pop().unwrap();
    a.admin(crate::admin::AdminOp::AddVhost { name: "shop".into() });
    a.poll();
    let pa = a.proposals.pop().unwrap();
    assert!(commit(&mut [&mut a, &mut b], 1, &pb));
    assert!(!commit(&mut [&mut a, &mut b], 0, &pa));
    let step = a.poll();
    assert!(
        step.iter()
            .any(|s| s.starts_with("propose") && s.contains("add-vhost shop")),
        "{step:?}"
    );
    let pa = a.proposals.pop().unwrap();
    assert!(commit(&mut [&mut a, &mut b], 0, &pa));
    let step = a.poll();
    assert!(step.iter().any(|s| s == "held admin ok"), "{step:?}");
    assert!(a.topo.vhost("shop").is_some());
    b.poll();
    assert!(b.topo.vhost("shop").is_some());
}

#[test]
fn while_paused_no_operation_starts_and_seeding_resumes_it() {
    let mut a = C::without_log(1);
    a.svc.pause(true);
    a.request(chan(0, 1), declare("q1", true));
    assert!(a.poll().is_empty(), "nothing starts while paused");
    assert!(a.svc.quiet() && !a.svc.settled());
    a.svc.enter_cluster(0, 1);
    a.svc.seeded([1, 1, 2]);
    let step = a.poll();
    assert!(step[0].starts_with("propose token=1 base=1"), "{step:?}");
}

/// What another node's "applied it?" waits for: every shard applied the
/// broadcasts so far, counted per shard (one fast shard's answers do not
/// stand in for a slow one's).
#[test]
fn broadcasts_count_as_applied_only_once_every_shard_applied_them() {
    let (mut a, mut b) = two_nodes(3);
    for q in ["q1", "q2"] {
        a.request(chan(0, 1), declare(q, true));
        a.poll();
        let p = a.proposals.pop().unwrap();
        assert!(commit(&mut [&mut a, &mut b], 0, &p));
        a.poll();
        b.poll();
        if q == "q1" {
            a.all_applied(3);
            a.poll();
        }
    }
    assert_eq!((a.svc.broadcasts(), a.svc.applied_everywhere()), (2, 1));
    // Shard 1 answers the second broadcast, and a stray answer more: shard
    // 2 has still not applied it.
    a.svc.topology_applied(1);
    a.svc.topology_applied(1);
    assert_eq!(a.svc.applied_everywhere(), 1);
    a.svc.topology_applied(2);
    assert_eq!(a.svc.applied_everywhere(), 2);
    // The other node applied both entries; its shards have not yet.
    assert_eq!((b.svc.broadcasts(), b.svc.applied_everywhere()), (2, 0));
}

/// The ids a quorum group's replica uses to tell a deleted queue from one
/// declared elsewhere and not yet applied here: a plan that lost a race
/// used ids on its own node only.
#[test]
fn committed_ids_follow_committed_entries_not_the_planner() {
    let (mut a, mut b) = two_nodes(1);
    a.request(chan(0, 1), declare("qa", true));
    a.poll();
    let pa = a.proposals.pop().unwrap();
    b.request(chan(0, 2), declare("qb", true));
    b.poll();
    let pb = b.proposals.pop().unwrap();
    // Both planned queue id 1; b's entry wins.
    assert_eq!((pa.next_ids[0], pb.next_ids[0]), (2, 2));
    assert!(commit(&mut [&mut a, &mut b], 1, &pb));
    assert!(!commit(&mut [&mut a, &mut b], 0, &pa));
    assert_eq!(a.svc.committed_ids()[0], 2);
    // a plans again (queue id 2); until that entry is committed, id 2 is
    // not taken as used.
    a.poll();
    let pa = a.proposals.pop().expect("planned again");
    assert_eq!(pa.next_ids[0], 3);
    assert_eq!((a.svc.committed_ids()[0], b.svc.committed_ids()[0]), (2, 2));
    assert!(commit(&mut [&mut a, &mut b], 0, &pa));
    assert_eq!((a.svc.committed_ids()[0], b.svc.committed_ids()[0]), (3, 3));
}

/// RabbitMQ answers a quorum queue's declare once the queue's Raft
/// cluster started: the answer waits for the group's leader too.
#[test]
fn a_quorum_declare_is_answered_once_its_group_has_a_leader() {
    let (mut a, mut b) = two_nodes(1);
    a.svc.set_quorum_nodes(1, vec![1, 2, 3]);
    let quorum = FieldValue::LongStr(LongStr::new(bytes::Bytes::from_static(b"quorum")));
    let args: FieldTable = [(ss("x-queue-type"), quorum)].into_iter().collect();
    let req = Request::QueueDeclare {
        name: ss("qq"),
        generated: false,
        passive: false,
        durable: true,
        exclusive: false,
        auto_delete: false,
        args,
    };
    a.request(chan(0, 1), req);
    a.poll();
    let p = a.proposals.pop().unwrap();
    let group = match &p.changes[..] {
        [Change::DeclareQueue(d)] => {
            assert_eq!(d.replicas.len(), 3);
            d.quorum_group()
        }
        other => panic!("one declare: {other:?}"),
    };
    assert!(commit(&mut [&mut a, &mut b], 0, &p));
    let step = a.poll();
    let want = format!(
        "held reply (once group {group:x} has a leader) {:?}/1: declare-ok qq messages=0 consumers=0",
        chan(0, 1).conn
    );
    assert_eq!(step.last(), Some(&want), "{step:?}");
    // A classic queue's declare is held as before.
    a.request(chan(0, 1), declare("classic", true));
    a.poll();
    let p = a.proposals.pop().unwrap();
    assert!(commit(&mut [&mut a, &mut b], 0, &p));
    let step = a.poll();
    let last = step.last().expect("an answer");
    assert!(
        last.starts_with("held reply ") && !last.contains("leader"),
        "{step:?}"
    );
}

fn quorum_declare(name: &str) -> Request {
    let quorum = FieldValue::LongStr(LongStr::new(bytes::Bytes::from_static(b"quorum")));
    Request::QueueDeclare {
        name: ss(name),
        generated: false,
        passive: false,
        durable: true,
        exclusive: false,
        auto_delete: false,
        args: [(ss("x-queue-type"), quorum)].into_iter().collect(),
    }
}

/// Another node's quorum declare, committed while this node's own
/// operation waits, does not make this node's answer wait for that
/// queue's group.
#[test]
fn only_an_operations_own_quorum_declare_makes_its_answer_wait() {
    let (mut a, mut b) = two_nodes(1);
    a.svc.set_quorum_nodes(1, vec![1, 2, 3]);
    b.request(chan(0, 2), declare("classic-b", true));
    b.poll();
    let pb = b.proposals.pop().unwrap();
    a.request(chan(0, 1), quorum_declare("qq"));
    a.poll();
    let pa = a.proposals.pop().unwrap();
    assert!(commit(&mut [&mut a, &mut b], 0, &pa));
    // B's proposal was planned before A's entry: planned again.
    if !commit(&mut [&mut a, &mut b], 1, &pb) {
        b.poll();
        let pb = b.proposals.pop().expect("planned again");
        assert!(commit(&mut [&mut a, &mut b], 1, &pb));
    }
    let step = b.poll();
    let last = step.last().expect("an answer");
    assert!(
        last.starts_with("held reply ") && !last.contains("leader") && last.contains("classic-b"),
        "{step:?}"
    );
}

/// A node alone (its changes not replicated) answers a quorum declare
/// once the group has a leader too.
#[test]
fn a_quorum_declare_on_a_node_alone_waits_for_its_group() {
    let mut a = C::without_log(1);
    a.svc.set_quorum_nodes(1, vec![1]);
    a.request(chan(0, 1), quorum_declare("qq"));
    let step = a.poll();
    let last = step.last().expect("an answer");
    assert!(
        last.starts_with("reply (once group ") && last.contains("declare-ok qq"),
        "{step:?}"
    );
}

/// `shrink` (and `forget_cluster_node`) and `grow`: one entry that
/// changes the replicas of every quorum queue concerned, on every node;
/// each queue keeps its group, and an operation with nothing to change
/// commits nothing.
#[test]
fn grow_and_shrink_change_every_concerned_queue_in_one_entry() {
    let (mut a, mut b) = two_nodes(1);
    a.svc.set_quorum_nodes(1, vec![1, 2, 3]);
    for name in ["q1", "q2"] {
        a.request(chan(0, 1), quorum_declare(name));
        a.poll();
        let p = a.proposals.pop().unwrap();
        assert!(commit(&mut [&mut a, &mut b], 0, &p));
        a.poll();
    }
    b.poll();
    let groups: Vec<u32> = a.topo.queues().map(|q| q.group).collect();
    let shrink = crate::admin::AdminOp::QuorumReplicas {
        node: 3,
        grow: false,
        even: false,
    };
    a.admin(shrink.clone());
    a.poll();
    let p = a.proposals.pop().expect("a proposal");
    assert_eq!(p.changes.len(), 2, "{:?}", p.changes);
    assert!(commit(&mut [&mut a, &mut b], 0, &p));
    let step = a.poll();
    assert!(step.iter().any(|s| s == "held admin ok"), "{step:?}");
    b.poll();
    for n in [&a, &b] {
        for q in n.topo.queues() {
            assert!(!q.replicas.contains(&3) && q.replicas.len() == 2, "{q:?}");
        }
        assert_eq!(n.topo.queues().map(|q| q.group).collect::<Vec<_>>(), groups);
    }
    // Nothing left to shrink: answered at once, nothing proposed.
    a.admin(shrink);
    assert_eq!(a.poll(), ["admin ok"]);
    assert!(a.proposals.is_empty());
    // Grow even: both queues have 2 replicas, so both take node 3 back.
    a.admin(crate::admin::AdminOp::QuorumReplicas {
        node: 3,
        grow: true,
        even: true,
    });
    a.poll();
    let p = a.proposals.pop().expect("a proposal");
    assert!(commit(&mut [&mut a, &mut b], 0, &p));
    a.poll();
    b.poll();
    for q in b.topo.queues() {
        assert_eq!(q.replicas.len(), 3);
        assert_eq!(q.replicas.last(), Some(&3));
    }
}
