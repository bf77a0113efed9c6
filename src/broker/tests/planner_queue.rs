//! `queue.declare`, `queue.bind`/`unbind` and `queue.delete` through the
//! control-plane planner, the deletion cascade and id allocation.

use super::*;
use crate::protocol::reply::{
    ACCESS_REFUSED, INTERNAL_ERROR, NOT_FOUND, NOT_IMPLEMENTED, PRECONDITION_FAILED, RESOURCE_LOCKED,
};
use ExchangeKind::{Direct, Fanout, Headers, Topic};

const LOCKED: &str = "RESOURCE_LOCKED - cannot obtain exclusive access to locked queue 'q' in vhost '/'. It could be originally declared on another connection or the exclusive property value does not match that of the original declaration.";

fn declared(plan: &Plan) -> &super::super::topology::QueueDef {
    match plan {
        Plan::Apply { changes, .. } => match changes.as_slice() {
            [Change::DeclareQueue(d)] => d,
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
}

#[test]
fn declare_new_queue() {
    let mut w = World::new();
    let args = table(&[("x-max-length", FieldValue::I32(10))]);
    let plan = w
        .plan_as(
            GUEST.on(CONN_B, 3),
            QDecl::new("q").durable().auto_delete().args(args.clone()),
        )
        .unwrap();
    assert_eq!(describe(&plan), "apply [declare q1 q] then declare-ok q 0 0");
    let d = declared(&plan);
    assert_eq!(
        (d.id, d.vhost, d.owner, d.durable, d.exclusive, d.auto_delete),
        (QueueId(1), w.vhost, 3, true, None, true)
    );
    assert_eq!(d.args, args);
}

#[test]
fn exclusive_queue_belongs_to_the_declaring_connection() {
    let mut w = World::new();
    let plan = w
        .plan_as(GUEST.on(CONN_B, 1), QDecl::new("q").exclusive())
        .unwrap();
    assert_eq!(declared(&plan).exclusive, Some(CONN_B));
    assert_eq!(declared(&plan).owner, 1);
}

#[test]
fn server_named_queues_are_declared_despite_the_amq_prefix() {
    let mut w = World::new();
    let plan = w.plan(QDecl::generated("amq.gen-abc").exclusive()).unwrap();
    assert_eq!(
        describe(&plan),
        "apply [declare q1 amq.gen-abc] then declare-ok amq.gen-abc 0 0"
    );
}

#[test]
fn client_named_amq_queues_are_403_even_when_they_exist() {
    let mut w = World::new();
    w.run(QDecl::generated("amq.gen-abc")).unwrap();
    for name in ["amq.foo", "amq.gen-abc"] {
        assert_amqp_err(
            w.plan(QDecl::new(name)),
            ACCESS_REFUSED,
            &format!("ACCESS_REFUSED - queue name '{name}' contains reserved prefix 'amq.*'"),
        );
    }
    // Passive declares look the name up.
    assert_eq!(
        describe(&w.plan(QDecl::new("amq.gen-abc").passive()).unwrap()),
        "existing q1 on shard 0 named amq.gen-abc"
    );
    assert_amqp_err(
        w.plan(QDecl::new("amq.foo").passive()),
        NOT_FOUND,
        "NOT_FOUND - no queue 'amq.foo' in vhost '/'",
    );
}

#[test]
fn passive_declare_of_a_missing_queue_is_404() {
    let mut w = World::new();
    assert_amqp_err(
        w.plan(QDecl::new("nope").passive()),
        NOT_FOUND,
        "NOT_FOUND - no queue 'nope' in vhost '/'",
    );
}

#[test]
fn redeclare_goes_to_the_owner_for_counts() {
    let mut w = World::new();
    w.run_as(GUEST.on(CONN_A, 2), QDecl::new("q").durable()).unwrap();
    let v = w.topo.version();
    // Another connection on another shard: the owner is still shard 2.
    let plan = w.plan_as(GUEST.on(CONN_B, 5), QDecl::new("q").durable()).unwrap();
    assert_eq!(describe(&plan), "existing q1 on shard 2 named q");
    // Passive ignores flags and arguments.
    let plan = w
        .plan(
            QDecl::new("q")
                .passive()
                .auto_delete()
                .args(table(&[("x-max-length", FieldValue::I32(1))])),
        )
        .unwrap();
    assert_eq!(describe(&plan), "existing q1 on shard 2 named q");
    assert_eq!(w.topo.version(), v);
}

#[test]
fn redeclare_with_other_flags_is_406() {
    let mut w = World::new();
    w.declare_queue("q");
    assert_amqp_err(
        w.plan(QDecl::new("q").durable()),
        PRECONDITION_FAILED,
        "PRECONDITION_FAILED - inequivalent arg 'durable' for queue 'q' in vhost '/': received 'true' but current is 'false'",
    );
    assert_amqp_err(
        w.plan(QDecl::new("q").auto_delete()),
        PRECONDITION_FAILED,
        "PRECONDITION_FAILED - inequivalent arg 'auto_delete' for queue 'q' in vhost '/': received 'true' but current is 'false'",
    );
    // Exclusive differs: 405, checked before durable.
    assert_amqp_err(
        w.plan(QDecl::new("q").exclusive().durable()),
        RESOURCE_LOCKED,
        LOCKED,
    );
}

#[test]
fn redeclare_with_other_arguments_is_406() {
    let mut w = World::new();
    let args = table(&[
        ("x-max-length", FieldValue::I32(10)),
        ("x-message-ttl", FieldValue::I32(1000)),
    ]);
    w.run(QDecl::new("q").args(args.clone())).unwrap();
    // Same values in another integer width, and extra unknown arguments: fine.
    let wider = table(&[
        ("x-message-ttl", FieldValue::I64(1000)),
        ("x-max-length", FieldValue::U8(10)),
        ("foo", FieldValue::I32(1)),
    ]);
    assert_eq!(
        describe(&w.plan(QDecl::new("q").args(wider)).unwrap()),
        "existing q1 on shard 0 named q"
    );
    let cases = [
        (
            table(&[
                ("x-max-length", FieldValue::I32(11)),
                ("x-message-ttl", FieldValue::I32(1000)),
            ]),
            "inequivalent arg 'x-max-length' for queue 'q' in vhost '/': received '11' but current is '10'",
        ),
        (
            table(&[("x-message-ttl", FieldValue::I32(1000))]),
            "inequivalent arg 'x-max-length' for queue 'q' in vhost '/': received none but current is the value '10' of type 'signedint'",
        ),
        (
            table(&[("x-max-length", FieldValue::I32(10))]),
            "inequivalent arg 'x-message-ttl' for queue 'q' in vhost '/': received none but current is the value '1000' of type 'signedint'",
        ),
        (
            table(&[
                ("x-max-length", FieldValue::I32(10)),
                ("x-message-ttl", FieldValue::I32(1000)),
                ("x-dead-letter-exchange", ls("d")),
            ]),
            "inequivalent arg 'x-dead-letter-exchange' for queue 'q' in vhost '/': received the value 'd' of type 'longstr' but current is none",
        ),
        (
            // Not validated on redeclare: compared.
            table(&[("x-max-length", FieldValue::I32(10)), ("x-message-ttl", ls("a"))]),
            "inequivalent arg 'x-message-ttl' for queue 'q' in vhost '/': received 'a' but current is '1000'",
        ),
    ];
    for (args, text) in cases {
        assert_amqp_err(
            w.plan(QDecl::new("q").args(args)),
            PRECONDITION_FAILED,
            &format!("PRECONDITION_FAILED - {text}"),
        );
    }
}

#[test]
fn redeclare_compares_queue_type() {
    let mut w = World::new();
    w.run(QDecl::new("q").args(table(&[("x-queue-type", ls("classic"))])))
        .unwrap();
    assert_amqp_err(
        w.plan(QDecl::new("q").args(table(&[("x-queue-type", ls("quorum"))]))),
        PRECONDITION_FAILED,
        "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'q' in vhost '/': received 'quorum' but current is 'classic'",
    );
}

#[test]
fn classic_queue_type_is_equivalent_to_none() {
    let mut w = World::new();
    w.declare_queue("plain");
    let classic = table(&[("x-queue-type", ls("classic"))]);
    assert_eq!(
        describe(&w.plan(QDecl::new("plain").args(classic.clone())).unwrap()),
        "existing q1 on shard 0 named plain"
    );
    w.run(QDecl::new("typed").args(classic)).unwrap();
    assert_eq!(
        describe(&w.plan(QDecl::new("typed")).unwrap()),
        "existing q2 on shard 0 named typed"
    );
}

#[test]
fn exclusive_queue_of_another_connection_is_405() {
    let mut w = World::new();
    w.run_as(GUEST.on(CONN_A, 0), QDecl::new("q").exclusive())
        .unwrap();
    let other = GUEST.on(CONN_B, 1);
    for req in [
        Request::from(QDecl::new("q").exclusive()),
        QDecl::new("q").passive().into(),
        QDecl::new("q").into(),
        queue_bind("q", "amq.direct", "k", FieldTable::new()),
        queue_delete("q", false, false),
    ] {
        assert_amqp_err(w.plan_as(other, req), RESOURCE_LOCKED, LOCKED);
    }
    // The owner itself may redeclare it exclusive, but not non-exclusive.
    assert_eq!(
        describe(&w.plan(QDecl::new("q").exclusive()).unwrap()),
        "existing q1 on shard 0 named q"
    );
    assert_amqp_err(w.plan(QDecl::new("q")), RESOURCE_LOCKED, LOCKED);
}

#[test]
fn exclusive_redeclare_of_a_shared_queue_is_405() {
    let mut w = World::new();
    w.declare_queue("q");
    assert_amqp_err(
        w.plan_as(GUEST.on(CONN_B, 0), QDecl::new("q").exclusive()),
        RESOURCE_LOCKED,
        LOCKED,
    );
}

#[test]
fn unbind_from_an_exclusive_queue_of_another_connection_is_405() {
    let mut w = World::new();
    w.run(QDecl::new("q").exclusive()).unwrap();
    w.bind_queue("q", "amq.direct", "k");
    assert_amqp_err(
        w.plan_as(
            GUEST.on(CONN_B, 0),
            queue_unbind("q", "amq.direct", "k", FieldTable::new()),
        ),
        RESOURCE_LOCKED,
        LOCKED,
    );
}

#[test]
fn unbind_of_a_missing_binding_on_a_foreign_exclusive_queue_is_ok() {
    let mut w = World::new();
    w.run(QDecl::new("q").exclusive()).unwrap();
    for x in ["amq.direct", "nope"] {
        assert_eq!(
            describe(
                &w.plan_as(GUEST.on(CONN_B, 0), queue_unbind("q", x, "zz", FieldTable::new()))
                    .unwrap()
            ),
            "reply QueueUnbindOk",
            "{x}"
        );
    }
}

#[test]
fn exclusive_queues_are_never_durable() {
    let mut w = World::new();
    let plan = w.run(QDecl::new("q").exclusive().durable()).unwrap();
    assert!(!declared(&plan).durable);
    assert_eq!(
        describe(&w.plan(QDecl::new("q").exclusive()).unwrap()),
        "existing q1 on shard 0 named q"
    );
}

#[test]
fn invalid_arguments_of_a_new_queue_are_406() {
    let mut w = World::new();
    let t = |k: &str, v: FieldValue| table(&[(k, v)]);
    let cases = [
        (
            t("x-message-ttl", FieldValue::I32(-1)),
            "invalid arg 'x-message-ttl' for queue 'q' in vhost '/': {value_negative,-1}",
        ),
        (
            t("x-message-ttl", ls("a")),
            "invalid arg 'x-message-ttl' for queue 'q' in vhost '/': \"expected integer, got longstr\"",
        ),
        (
            t("x-message-ttl", FieldValue::Bool(true)),
            "invalid arg 'x-message-ttl' for queue 'q' in vhost '/': \"expected integer, got bool\"",
        ),
        (
            t("x-expires", FieldValue::I32(0)),
            "invalid arg 'x-expires' for queue 'q' in vhost '/': {value_zero,0}",
        ),
        (
            t("x-expires", FieldValue::I32(-5)),
            "invalid arg 'x-expires' for queue 'q' in vhost '/': {value_negative,-5}",
        ),
        (
            t("x-expires", ls("a")),
            "invalid arg 'x-expires' for queue 'q' in vhost '/': \"expected integer, got longstr\"",
        ),
        (
            t("x-max-length", FieldValue::I32(-1)),
            "invalid arg 'x-max-length' for queue 'q' in vhost '/': {value_negative,-1}",
        ),
        (
            t("x-max-length", ls("x")),
            "invalid arg 'x-max-length' for queue 'q' in vhost '/': \"expected integer, got longstr\"",
        ),
        (
            t("x-max-length-bytes", FieldValue::I32(-1)),
            "invalid arg 'x-max-length-bytes' for queue 'q' in vhost '/': {value_negative,-1}",
        ),
        (
            t("x-max-priority", FieldValue::I32(-1)),
            "invalid arg 'x-max-priority' for queue 'q' in vhost '/': {value_negative,-1}",
        ),
        (
            t("x-max-priority", ls("a")),
            "invalid arg 'x-max-priority' for queue 'q' in vhost '/': \"expected integer, got longstr\"",
        ),
        (
            t("x-dead-letter-routing-key", FieldValue::I32(5)),
            "invalid arg 'x-dead-letter-routing-key' for queue 'q' in vhost '/': {unacceptable_type,signedint}",
        ),
        (
            t("x-overflow", FieldValue::I32(5)),
            "invalid arg 'x-overflow' for queue 'q' in vhost '/': {unacceptable_type,signedint}",
        ),
        (
            t("x-queue-type", FieldValue::I32(5)),
            "invalid arg 'x-queue-type' for queue 'q' in vhost '/': {unacceptable_type,signedint}",
        ),
    ];
    for (args, text) in cases {
        assert_amqp_err(
            w.plan(QDecl::new("q").args(args)),
            PRECONDITION_FAILED,
            &format!("PRECONDITION_FAILED - {text}"),
        );
    }
    assert!(!w.has_queue("q"));
}

#[test]
fn valid_arguments_of_a_new_queue_are_accepted() {
    let mut w = World::new();
    let args = table(&[
        ("x-message-ttl", FieldValue::I32(0)),
        ("x-expires", FieldValue::I32(1)),
        ("x-max-length", FieldValue::I32(0)),
        ("x-max-length-bytes", FieldValue::I64(1 << 40)),
        ("x-max-priority", FieldValue::I32(255)),
        ("x-dead-letter-exchange", ls("")),
        ("x-dead-letter-routing-key", ls("k")),
        ("x-overflow", ls("reject-publish-dlx")),
        ("x-queue-type", ls("classic")),
        ("x-single-active-consumer", FieldValue::Bool(true)),
        ("x-queue-mode", ls("lazy")),
        ("unknown", FieldValue::Void),
    ]);
    let plan = w.plan(QDecl::new("q").args(args.clone())).unwrap();
    assert_eq!(declared(&plan).args, args);
}

#[test]
fn a_quorum_queue_needs_a_cluster_port() {
    let mut w = World::new();
    assert_amqp_err(
        w.plan(
            QDecl::new("q")
                .durable()
                .args(table(&[("x-queue-type", ls("quorum"))])),
        ),
        PRECONDITION_FAILED,
        "PRECONDITION_FAILED - cannot declare quorum queue 'q' in vhost '/': this node has no cluster port (see --cluster-port)",
    );
}

fn quorum_world() -> World {
    let mut w = World::new();
    w.cp.quorum_nodes = Some((7, vec![7, 3, 5, 9]));
    w
}

#[test]
fn a_quorum_queue_gets_three_replicas_this_node_first_on_shard_0() {
    let mut w = quorum_world();
    let args = table(&[
        ("x-queue-type", ls("quorum")),
        ("x-delivery-limit", FieldValue::I32(3)),
    ]);
    let plan = w.plan(QDecl::new("q").durable().args(args.clone())).unwrap();
    let d = declared(&plan);
    assert_eq!(d.args, args);
    assert_eq!(d.owner, 0);
    assert_eq!(d.replicas.len(), 3);
    assert_eq!(d.replicas[0], 7);
    let mut others = d.replicas[1..].to_vec();
    others.sort_unstable();
    others.dedup();
    assert_eq!(others.len(), 2);
    assert!(others.iter().all(|r| [3, 5, 9].contains(r)));
    // An initial group size caps the replicas (beyond the cluster: all).
    let args = table(&[
        ("x-queue-type", ls("quorum")),
        ("x-quorum-initial-group-size", FieldValue::I32(9)),
    ]);
    let plan = w.plan(QDecl::new("q2").durable().args(args)).unwrap();
    assert_eq!(declared(&plan).replicas.len(), 4);
}

/// Queues with the same replicas share one group, named by their hash;
/// once that group's members changed (shrink, grow), a new queue with the
/// same initial replicas gets a group of its own, and the changed group
/// keeps its name.
#[test]
fn a_group_whose_members_changed_keeps_its_name_and_new_queues_get_another() {
    let mut w = quorum_world();
    let qq = || table(&[("x-queue-type", ls("quorum"))]);
    w.run(QDecl::new("a").durable().args(qq())).unwrap();
    let a = w.topo.queue_by_name(w.vhost, b"a").unwrap().clone();
    assert_eq!(a.group, crate::broker::topology::quorum_group(&a.replicas));
    // The queue id picks the other replicas: find a queue placed as `a`.
    let mut same = None;
    for i in 0..8 {
        let name = format!("b{i}");
        w.run(QDecl::new(&name).durable().args(qq())).unwrap();
        let d = w.topo.queue_by_name(w.vhost, name.as_bytes()).unwrap().clone();
        if d.replicas == a.replicas {
            same = Some(d);
            break;
        }
    }
    let b = same.expect("a queue placed on the same replicas");
    assert_eq!(b.group, a.group, "same replicas, one group");
    // Node 9 (or another) is taken out of the group's queues.
    let gone = a.replicas[1];
    for q in [&a, &b] {
        w.apply_all(&[Change::QueueReplicas {
            id: q.id,
            replicas: q.replicas_after(gone, false, false).unwrap(),
        }]);
    }
    let a2 = w.topo.queue(a.id).unwrap();
    assert_eq!(a2.group, a.group, "the group keeps its name");
    assert_eq!(a2.replicas.len(), 2);
    // A new queue placed on the original replicas does not join it.
    for i in 0..8 {
        let name = format!("c{i}");
        w.run(QDecl::new(&name).durable().args(qq())).unwrap();
        let d = w.topo.queue_by_name(w.vhost, name.as_bytes()).unwrap().clone();
        if d.replicas == a.replicas {
            assert_ne!(d.group, a.group);
            assert_ne!(d.group, 0);
            return;
        }
    }
    panic!("no queue placed on the original replicas");
}

/// Which replicas `grow` and `shrink` give a queue (RabbitMQ's rules).
#[test]
fn grow_and_shrink_change_replicas_as_rabbitmq_does() {
    let q = |r: &[u64]| super::super::topology::QueueDef {
        id: QueueId(1),
        vhost: VhostId(1),
        name: "q".into(),
        owner: 0,
        node: 0,
        durable: true,
        exclusive: None,
        auto_delete: false,
        args: FieldTable::new(),
        replicas: r.to_vec(),
        group: crate::broker::topology::quorum_group(r),
    };
    // grow all: every queue without the node; even: only even sizes.
    assert_eq!(q(&[1, 2]).replicas_after(3, true, false), Some(vec![1, 2, 3]));
    assert_eq!(q(&[1, 2, 3]).replicas_after(3, true, false), None);
    assert_eq!(q(&[1, 2, 4]).replicas_after(3, true, true), None);
    assert_eq!(q(&[1, 2]).replicas_after(3, true, true), Some(vec![1, 2, 3]));
    // shrink: out of the queues that have it, never the last replica.
    assert_eq!(q(&[1, 2, 3]).replicas_after(1, false, false), Some(vec![2, 3]));
    assert_eq!(q(&[2, 3]).replicas_after(1, false, false), None);
    assert_eq!(q(&[1]).replicas_after(1, false, false), None);
    // A classic queue has none.
    assert_eq!(q(&[]).replicas_after(1, true, false), None);
}

/// RabbitMQ 3.10.8's answers (observed with pika).
#[test]
fn quorum_queue_declares_refused_as_rabbitmq_does() {
    let mut w = quorum_world();
    let qq = |extra: &[(&str, FieldValue)]| {
        let mut v = vec![("x-queue-type", ls("quorum"))];
        v.extend(extra.iter().cloned());
        table(&v)
    };
    let cases: Vec<(QDecl, u16, &str)> = vec![
        (
            QDecl::new("q").args(qq(&[])),
            PRECONDITION_FAILED,
            "PRECONDITION_FAILED - invalid property 'non-durable' for queue 'q' in vhost '/'",
        ),
        (
            QDecl::new("q").durable().exclusive().args(qq(&[])),
            PRECONDITION_FAILED,
            "PRECONDITION_FAILED - invalid property 'exclusive-owner' for queue 'q' in vhost '/'",
        ),
        (
            QDecl::new("q").durable().exclusive().auto_delete().args(qq(&[])),
            PRECONDITION_FAILED,
            "PRECONDITION_FAILED - invalid property 'auto-delete' for queue 'q' in vhost '/'",
        ),
        (
            QDecl::new("q").args(qq(&[("x-max-priority", FieldValue::I32(5))])),
            PRECONDITION_FAILED,
            "PRECONDITION_FAILED - invalid arg 'x-max-priority' for queue 'q' in vhost '/' of queue type rabbit_quorum_queue",
        ),
        (
            QDecl::new("q")
                .durable()
                .args(qq(&[("x-queue-mode", ls("lazy"))])),
            PRECONDITION_FAILED,
            "PRECONDITION_FAILED - invalid arg 'x-queue-mode' for queue 'q' in vhost '/' of queue type rabbit_quorum_queue",
        ),
        (
            QDecl::new("q")
                .durable()
                .args(qq(&[("x-quorum-initial-group-size", FieldValue::I32(0))])),
            PRECONDITION_FAILED,
            "PRECONDITION_FAILED - invalid arg 'x-quorum-initial-group-size' for queue 'q' in vhost '/': {value_zero,0}",
        ),
        (
            QDecl::new("q")
                .durable()
                .args(qq(&[("x-quorum-initial-group-size", ls("abc"))])),
            PRECONDITION_FAILED,
            "PRECONDITION_FAILED - invalid arg 'x-quorum-initial-group-size' for queue 'q' in vhost '/': \"expected integer, got longstr\"",
        ),
        (
            QDecl::generated("").durable().args(qq(&[])),
            PRECONDITION_FAILED,
            "PRECONDITION_FAILED - Cannot declare a server-named queue for type rabbit_quorum_queue",
        ),
    ];
    for (decl, code, text) in cases {
        assert_amqp_err(w.plan(decl), code, text);
    }
    // Not checked by RabbitMQ: any x-delivery-limit, unknown arguments,
    // reject-publish-dlx.
    for extra in [
        ("x-delivery-limit", ls("abc")),
        ("x-delivery-limit", FieldValue::I32(-1)),
        ("x-foo", FieldValue::I32(1)),
        ("x-overflow", ls("reject-publish-dlx")),
    ] {
        assert!(
            w.plan(QDecl::new("ok").durable().args(qq(std::slice::from_ref(&extra))))
                .is_ok(),
            "{extra:?}"
        );
    }
}

#[test]
fn a_conditional_delete_of_a_quorum_queue_closes_the_connection_as_rabbitmq_does() {
    let mut w = quorum_world();
    w.run(
        QDecl::new("q")
            .durable()
            .args(table(&[("x-queue-type", ls("quorum"))])),
    )
    .unwrap();
    assert_amqp_err(
        w.plan(queue_delete("q", true, false)),
        NOT_IMPLEMENTED,
        "NOT_IMPLEMENTED - cannot delete queue 'q' in vhost '/'. queue.delete operations with if-unused flag set are not supported by quorum queues",
    );
    assert_amqp_err(
        w.plan(queue_delete("q", false, true)),
        NOT_IMPLEMENTED,
        "NOT_IMPLEMENTED - cannot delete queue 'q' in vhost '/'. queue.delete operations with if-empty flag set are not supported by quorum queues",
    );
    assert!(w.plan(queue_delete("q", false, false)).is_ok());
}

/// RabbitMQ 3.10.8's answers for arguments warren words differently or
/// does not check.
#[test]
fn invalid_arguments_as_rabbitmq_words_them() {
    let mut w = World::new();
    let t = |k: &str, v: FieldValue| table(&[(k, v)]);
    let ok = [
        t("x-message-ttl", FieldValue::I64(1 << 32)),
        t("x-message-ttl", FieldValue::I64(315_360_000_000)),
        t("x-expires", FieldValue::I64(315_360_000_000)),
    ];
    for args in ok {
        assert!(w.plan(QDecl::new("q").args(args.clone())).is_ok(), "{args:?}");
    }
    let cases = [
        (
            t("x-message-ttl", FieldValue::I64(315_360_000_001)),
            "invalid arg 'x-message-ttl' for queue 'q' in vhost '/': {value_too_large,315360000001}",
        ),
        (
            t("x-expires", FieldValue::I64(315_360_000_001)),
            "invalid arg 'x-expires' for queue 'q' in vhost '/': {value_too_large,315360000001}",
        ),
        (
            t("x-max-priority", FieldValue::I32(256)),
            "invalid arg 'x-max-priority' for queue 'q' in vhost '/': {max_value_exceeded,256}",
        ),
        (
            t("x-dead-letter-exchange", FieldValue::I32(5)),
            "invalid type 'signedint' for arg 'x-dead-letter-exchange' in queue 'q' in vhost '/'",
        ),
        (
            t("x-overflow", ls("foo")),
            "invalid arg 'x-overflow' for queue 'q' in vhost '/': invalid_overflow",
        ),
        (
            t("x-single-active-consumer", FieldValue::I32(5)),
            "invalid arg 'x-single-active-consumer' for queue 'q' in vhost '/': {unacceptable_type,signedint}",
        ),
        (
            t("x-queue-mode", ls("foo")),
            "invalid arg 'x-queue-mode' for queue 'q' in vhost '/': \"unsupported queue mode 'foo'\"",
        ),
        (
            t("x-dead-letter-routing-key", ls("k")),
            "invalid arg 'x-dead-letter-routing-key' for queue 'q' in vhost '/': routing_key_but_no_dlx_defined",
        ),
        (
            t("x-queue-type", ls("foo")),
            "invalid arg 'x-queue-type' for queue 'q' in vhost '/': \"unsupported queue type 'foo'\"",
        ),
    ];
    for (args, text) in cases {
        assert_amqp_err(
            w.plan(QDecl::new("q").args(args)),
            PRECONDITION_FAILED,
            &format!("PRECONDITION_FAILED - {text}"),
        );
    }
}

#[test]
fn queue_arguments_are_checked_in_rabbitmqs_order() {
    // Checked against RabbitMQ 3.10.8: its `declare_args/0` order, not the
    // table's; then arguments of other queue types, which a classic queue
    // refuses.
    let mut w = World::new();
    let cases = [
        (
            table(&[("x-message-ttl", ls("a")), ("x-expires", ls("b"))]),
            "invalid arg 'x-expires' for queue 'q' in vhost '/': \"expected integer, got longstr\"",
        ),
        (
            table(&[("x-overflow", ls("foo")), ("x-max-length", FieldValue::I32(-1))]),
            "invalid arg 'x-max-length' for queue 'q' in vhost '/': {value_negative,-1}",
        ),
        (
            table(&[("x-max-age", ls("1D")), ("x-message-ttl", FieldValue::I32(-1))]),
            "invalid arg 'x-message-ttl' for queue 'q' in vhost '/': {value_negative,-1}",
        ),
        (
            table(&[
                ("x-max-priority", FieldValue::I32(256)),
                ("x-queue-type", ls("foo")),
            ]),
            "invalid arg 'x-queue-type' for queue 'q' in vhost '/': \"unsupported queue type 'foo'\"",
        ),
        (
            // The dead-letter exchange's type comes first of all.
            table(&[
                ("x-message-ttl", ls("a")),
                ("x-dead-letter-exchange", FieldValue::I32(5)),
            ]),
            "invalid type 'signedint' for arg 'x-dead-letter-exchange' in queue 'q' in vhost '/'",
        ),
        (
            table(&[("x-queue-version", FieldValue::I32(3))]),
            "invalid arg 'x-queue-version' for queue 'q' in vhost '/': \"unsupported queue version '3'\"",
        ),
        (
            table(&[("x-queue-version", ls("a"))]),
            "invalid arg 'x-queue-version' for queue 'q' in vhost '/': \"expected integer, got longstr\"",
        ),
        (
            table(&[("x-max-age", ls("1D"))]),
            "invalid arg 'x-max-age' for queue 'q' in vhost '/' of queue type rabbit_classic_queue",
        ),
        (
            table(&[("x-delivery-limit", FieldValue::I32(5))]),
            "invalid arg 'x-delivery-limit' for queue 'q' in vhost '/' of queue type rabbit_classic_queue",
        ),
        (
            table(&[("x-max-in-memory-length", FieldValue::I32(5))]),
            "invalid arg 'x-max-in-memory-length' for queue 'q' in vhost '/' of queue type rabbit_classic_queue",
        ),
    ];
    for (args, text) in cases {
        assert_amqp_err(
            w.plan(QDecl::new("q").args(args)),
            PRECONDITION_FAILED,
            &format!("PRECONDITION_FAILED - {text}"),
        );
    }
    // x-queue-master-locator is a classic queue's argument, not checked.
    assert!(
        w.plan(QDecl::new("q").args(table(&[("x-queue-master-locator", ls("min-masters"))])))
            .is_ok()
    );
}

// ---- queue.bind / queue.unbind ----

#[test]
fn queue_bind_applies_once() {
    let mut w = World::new();
    w.declare_queue("q");
    let (q, x) = (w.qid("q"), w.xid("amq.topic"));
    let plan = w
        .run(queue_bind("q", "amq.topic", "a.#", FieldTable::new()))
        .unwrap();
    assert_eq!(
        describe(&plan),
        format!("apply [bind x{} -a.#-> q{}] then QueueBindOk", x.0, q.0)
    );
    let v = w.topo.version();
    assert_eq!(
        describe(
            &w.plan(queue_bind("q", "amq.topic", "a.#", FieldTable::new()))
                .unwrap()
        ),
        "reply QueueBindOk"
    );
    assert_eq!(w.topo.version(), v);
    // Another key is another binding.
    assert_eq!(
        describe(
            &w.plan(queue_bind("q", "amq.topic", "a.*", FieldTable::new()))
                .unwrap()
        ),
        format!("apply [bind x{} -a.*-> q{}] then QueueBindOk", x.0, q.0)
    );
}

#[test]
fn headers_bindings_differ_by_arguments_in_any_order() {
    let mut w = World::new();
    w.declare_queue("q");
    let args = table(&[("x-match", ls("any")), ("a", FieldValue::I32(1)), ("b", ls("2"))]);
    w.run(queue_bind("q", "amq.headers", "", args)).unwrap();
    // The same arguments in another order: the same binding.
    let reordered = table(&[("b", ls("2")), ("a", FieldValue::I32(1)), ("x-match", ls("any"))]);
    assert_eq!(
        describe(&w.plan(queue_bind("q", "amq.headers", "", reordered)).unwrap()),
        "reply QueueBindOk"
    );
    // Other arguments: another binding.
    let other = table(&[("x-match", ls("all")), ("a", FieldValue::I32(1))]);
    let plan = w.run(queue_bind("q", "amq.headers", "", other)).unwrap();
    assert!(matches!(plan, Plan::Apply { .. }), "{plan:?}");
    assert_eq!(w.topo.exchange(w.xid("amq.headers")).unwrap().bindings.len(), 2);
}

#[test]
fn headers_binding_with_a_bad_x_match_is_406() {
    let mut w = World::new();
    w.declare_queue("q");
    assert_amqp_err(
        w.plan(queue_bind(
            "q",
            "amq.headers",
            "",
            table(&[("x-match", ls("foo"))]),
        )),
        PRECONDITION_FAILED,
        "PRECONDITION_FAILED - Invalid x-match field value <<\"foo\">>; expected all, any, all-with-x, or any-with-x",
    );
    assert_amqp_err(
        w.plan(queue_bind(
            "q",
            "amq.headers",
            "",
            table(&[("x-match", FieldValue::I32(5))]),
        )),
        PRECONDITION_FAILED,
        "PRECONDITION_FAILED - Invalid x-match field type signedint (value 5); expected longstr",
    );
    for mode in ["all", "any", "all-with-x", "any-with-x"] {
        let plan = w
            .plan(queue_bind(
                "q",
                "amq.headers",
                "",
                table(&[("x-match", ls(mode))]),
            ))
            .unwrap();
        assert!(matches!(plan, Plan::Apply { .. }), "{mode}: {plan:?}");
    }
}

#[test]
fn queue_bind_to_missing_things_is_404() {
    let mut w = World::new();
    w.declare_queue("q");
    w.declare_exchange("x", Direct);
    assert_amqp_err(
        w.plan(queue_bind("nope", "x", "k", FieldTable::new())),
        NOT_FOUND,
        "NOT_FOUND - no queue 'nope' in vhost '/'",
    );
    assert_amqp_err(
        w.plan(queue_bind("q", "nope", "k", FieldTable::new())),
        NOT_FOUND,
        "NOT_FOUND - no exchange 'nope' in vhost '/'",
    );
}

#[test]
fn queue_bind_checks_the_exchange_first() {
    let mut w = World::new();
    assert_amqp_err(
        w.plan(queue_bind("nope", "x", "k", FieldTable::new())),
        NOT_FOUND,
        "NOT_FOUND - no exchange 'x' in vhost '/'",
    );
    assert_amqp_err(
        w.plan(queue_bind("nope", "", "k", FieldTable::new())),
        ACCESS_REFUSED,
        "ACCESS_REFUSED - operation not permitted on the default exchange",
    );
}

#[test]
fn binding_arguments_are_checked_before_exclusive_access() {
    // RabbitMQ validates the binding (`rabbit_exchange:validate_binding`)
    // before the queue's exclusivity.
    let mut w = World::new();
    w.run(QDecl::new("q").exclusive()).unwrap();
    assert_amqp_err(
        w.plan_as(
            GUEST.on(CONN_B, 0),
            queue_bind("q", "amq.headers", "", table(&[("x-match", ls("foo"))])),
        ),
        PRECONDITION_FAILED,
        "PRECONDITION_FAILED - Invalid x-match field value <<\"foo\">>; expected all, any, all-with-x, or any-with-x",
    );
}

#[test]
fn queue_bind_and_unbind_on_the_default_exchange_are_403() {
    let mut w = World::new();
    w.declare_queue("q");
    for req in [
        queue_bind("q", "", "q", FieldTable::new()),
        queue_unbind("q", "", "q", FieldTable::new()),
        queue_unbind("nope", "", "q", FieldTable::new()),
    ] {
        assert_amqp_err(
            w.plan(req),
            ACCESS_REFUSED,
            "ACCESS_REFUSED - operation not permitted on the default exchange",
        );
    }
}

#[test]
fn queue_bind_to_internal_exchanges_is_allowed() {
    let mut w = World::new();
    w.declare_queue("q");
    w.run(XDecl::new("i", Direct).internal()).unwrap();
    for x in ["i", "amq.rabbitmq.trace"] {
        let plan = w.plan(queue_bind("q", x, "k", FieldTable::new())).unwrap();
        assert!(matches!(plan, Plan::Apply { .. }), "{x}: {plan:?}");
    }
}

#[test]
fn queue_unbind_of_missing_things_is_ok() {
    let mut w = World::new();
    w.declare_queue("q");
    w.declare_exchange("x", Direct);
    for (q, x) in [("nope", "x"), ("q", "nope"), ("q", "x")] {
        assert_eq!(
            describe(&w.plan(queue_unbind(q, x, "k", FieldTable::new())).unwrap()),
            "reply QueueUnbindOk",
            "{q} {x}"
        );
    }
}

#[test]
fn queue_unbind_removes_the_binding_and_auto_deletes_the_exchange() {
    let mut w = World::new();
    w.declare_queue("q");
    w.run(XDecl::new("ad", Fanout).auto_delete()).unwrap();
    w.bind_queue("q", "ad", "a");
    w.bind_queue("q", "ad", "b");
    let (q, ad) = (w.qid("q"), w.xid("ad"));
    let plan = w.run(queue_unbind("q", "ad", "a", FieldTable::new())).unwrap();
    assert_eq!(
        describe(&plan),
        format!("apply [unbind x{} -a-> q{}] then QueueUnbindOk", ad.0, q.0)
    );
    assert_eq!(w.bindings_of("ad"), vec![("b".to_string(), Dest::Queue(q))]);
    let plan = w.run(queue_unbind("q", "ad", "b", FieldTable::new())).unwrap();
    assert_eq!(
        describe(&plan),
        format!(
            "apply [unbind x{} -b-> q{}, delete x{}] then QueueUnbindOk",
            ad.0, q.0, ad.0
        )
    );
    assert!(!w.has_exchange("ad"));
    // A plain exchange stays when its last binding goes.
    w.bind_queue("q", "amq.direct", "k");
    w.run(queue_unbind("q", "amq.direct", "k", FieldTable::new()))
        .unwrap();
    assert!(w.has_exchange("amq.direct"));
}

#[test]
fn unbind_matches_arguments_too() {
    let mut w = World::new();
    w.declare_queue("q");
    let args = table(&[("x-match", ls("all")), ("a", ls("1"))]);
    w.run(queue_bind("q", "amq.headers", "", args.clone())).unwrap();
    assert_eq!(
        describe(
            &w.plan(queue_unbind("q", "amq.headers", "", FieldTable::new()))
                .unwrap()
        ),
        "reply QueueUnbindOk"
    );
    let plan = w.run(queue_unbind("q", "amq.headers", "", args)).unwrap();
    assert!(matches!(plan, Plan::Apply { .. }), "{plan:?}");
    assert!(w.topo.exchange(w.xid("amq.headers")).unwrap().bindings.is_empty());
}

// ---- queue.delete ----

#[test]
fn queue_delete_asks_the_owner() {
    let mut w = World::new();
    w.run_as(GUEST.on(CONN_A, 4), QDecl::new("q")).unwrap();
    let cases = [
        (
            false,
            false,
            "delete q1 on shard 4 if_unused=false if_empty=false",
        ),
        (true, false, "delete q1 on shard 4 if_unused=true if_empty=false"),
        (false, true, "delete q1 on shard 4 if_unused=false if_empty=true"),
        (true, true, "delete q1 on shard 4 if_unused=true if_empty=true"),
    ];
    for (if_unused, if_empty, want) in cases {
        assert_eq!(
            describe(&w.plan(queue_delete("q", if_unused, if_empty)).unwrap()),
            want
        );
    }
}

#[test]
fn queue_delete_of_a_missing_queue_is_ok_with_no_messages() {
    let mut w = World::new();
    assert_eq!(
        describe(&w.plan(queue_delete("nope", true, true)).unwrap()),
        "reply delete-ok 0"
    );
}

#[test]
fn delete_queue_changes_cascade_to_auto_delete_exchanges() {
    let mut w = World::new();
    w.declare_queue("q");
    w.declare_queue("other");
    w.run(XDecl::new("ad1", Direct).auto_delete()).unwrap();
    w.run(XDecl::new("ad2", Fanout).auto_delete()).unwrap();
    w.run(XDecl::new("ad3", Fanout).auto_delete()).unwrap();
    w.run(XDecl::new("shared", Fanout).auto_delete()).unwrap();
    w.declare_exchange("plain", Direct);
    // ad2 -> ad1 -> q (transitive); shared -> q and other; plain -> q.
    w.bind_queue("q", "ad1", "k1");
    w.bind_queue("q", "ad1", "k2");
    w.bind_exchange("ad1", "ad2", "");
    w.bind_queue("q", "shared", "");
    w.bind_queue("other", "shared", "");
    w.bind_queue("q", "plain", "k");
    let (q, ad1, ad2) = (w.qid("q"), w.xid("ad1"), w.xid("ad2"));
    let changes = w.cp.delete_queue_changes(&w.topo, q);
    let got: Vec<_> = changes.iter().map(describe_change).collect();
    assert_eq!(
        got,
        vec![
            format!("delete q{}", q.0),
            format!("delete x{}", ad1.0),
            format!("delete x{}", ad2.0)
        ]
    );
    // Planning changes nothing by itself.
    assert!(w.has_exchange("ad1"));
    w.apply_all(&changes);
    assert!(!w.has_queue("q"));
    assert!(!w.has_exchange("ad1") && !w.has_exchange("ad2"));
    // ad3 never had a binding: it stays.
    assert!(w.has_exchange("ad3") && w.has_exchange("shared") && w.has_exchange("plain"));
    assert_eq!(
        w.bindings_of("shared"),
        vec![(String::new(), Dest::Queue(w.qid("other")))]
    );
    assert_eq!(w.bindings_of("plain"), vec![]);
}

#[test]
fn deleting_a_queue_frees_its_name_but_not_its_id() {
    let mut w = World::new();
    w.declare_queue("q");
    w.run(queue_delete("q", false, false)).unwrap();
    assert!(!w.has_queue("q"));
    let plan = w.plan(QDecl::new("q")).unwrap();
    assert_eq!(describe(&plan), "apply [declare q2 q] then declare-ok q 0 0");
}

// ---- ids ----

#[test]
fn resume_ids_continues_after_recovered_topology() {
    // A topology recovered from the log, built by another control plane.
    let mut w = World::new();
    w.declare_queue("a");
    w.declare_queue("b");
    w.declare_exchange("x", Topic);
    let mut fresh = ControlPlane::default();
    fresh.resume_ids(&w.topo);
    let r = Requester {
        vhost: w.vhost,
        conn: CONN_A,
        shard: 0,
        user: "guest",
    };
    let plan = fresh.plan(&w.topo, r, QDecl::new("c").into()).unwrap();
    assert_eq!(describe(&plan), "apply [declare q3 c] then declare-ok c 0 0");
    let plan = fresh.plan(&w.topo, r, XDecl::new("y", Direct).into()).unwrap();
    assert_eq!(describe(&plan), "apply [declare x9 y] then ExchangeDeclareOk");
    let changes = fresh.add_vhost(&w.topo, "v2").unwrap();
    match &changes[0] {
        Change::AddVhost { id, .. } => assert_eq!(*id, VhostId(2)),
        other => panic!("{other:?}"),
    }
    match &changes[1] {
        Change::DeclareExchange(d) => assert_eq!(d.id, ExchangeId(10)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn resume_ids_never_goes_backwards() {
    let mut w = World::new();
    w.declare_queue("a");
    w.declare_queue("b");
    w.run(queue_delete("b", false, false)).unwrap();
    // Only q1 is left, but this control plane already handed out q2.
    w.cp.resume_ids(&w.topo);
    assert_eq!(
        describe(&w.plan(QDecl::new("c")).unwrap()),
        "apply [declare q3 c] then declare-ok c 0 0"
    );
}

#[test]
fn queue_operations_sent_to_the_control_plane_are_internal_errors() {
    let mut w = World::new();
    w.declare_queue("q");
    for req in [
        Request::QueuePurge { queue: ss("q") },
        Request::Get {
            queue: ss("q"),
            no_ack: true,
        },
        Request::Barrier,
    ] {
        assert_amqp_err(
            w.plan(req),
            INTERNAL_ERROR,
            "INTERNAL_ERROR - queue operation sent to the control plane",
        );
    }
}

#[test]
fn topic_and_headers_exchanges_take_their_bindings() {
    let mut w = World::new();
    w.declare_queue("q");
    w.declare_exchange("t", Topic);
    w.declare_exchange("h", Headers);
    w.bind_queue("q", "t", "#");
    w.run(queue_bind(
        "q",
        "h",
        "ignored",
        table(&[("x-match", ls("any")), ("a", ls("1"))]),
    ))
    .unwrap();
    let q = w.qid("q");
    assert_eq!(w.bindings_of("t"), vec![("#".to_string(), Dest::Queue(q))]);
    assert_eq!(w.bindings_of("h"), vec![("ignored".to_string(), Dest::Queue(q))]);
}

/// Where each new queue lands when `who` declares them in turn.
fn owners(w: &mut World, decls: Vec<(Who, QDecl)>) -> Vec<ShardId> {
    decls
        .into_iter()
        .map(|(who, d)| declared(&w.run_as(who, d).unwrap()).owner)
        .collect()
}

#[test]
fn balanced_placement_spreads_queues_declared_from_one_shard() {
    let mut w = World::new();
    w.cp.balance_over = 2;
    let from0 = |n: &str| (GUEST.on(CONN_B, 0), QDecl::new(n));
    let got = owners(&mut w, vec![from0("a"), from0("b"), from0("c"), from0("d")]);
    assert_eq!(got, [0, 1, 0, 1]);
    // A deleted queue frees its place.
    w.run(queue_delete("b", false, false)).unwrap();
    assert_eq!(owners(&mut w, vec![from0("e")]), [1]);
}

#[test]
fn balanced_placement_prefers_the_declarer_among_equals() {
    let mut w = World::new();
    w.cp.balance_over = 3;
    let got = owners(
        &mut w,
        vec![
            (GUEST.on(CONN_B, 2), QDecl::new("a")),
            (GUEST.on(CONN_B, 2), QDecl::new("b")),
            (GUEST.on(CONN_B, 1), QDecl::new("c")),
            (GUEST.on(CONN_B, 1), QDecl::new("d")),
        ],
    );
    assert_eq!(got, [2, 0, 1, 1]);
}

#[test]
fn exclusive_and_client_local_queues_stay_with_their_declarer() {
    let mut w = World::new();
    w.cp.balance_over = 2;
    w.declare_queue("busy");
    let local = table(&[("x-queue-master-locator", ls("client-local"))]);
    let balanced = table(&[("x-queue-master-locator", ls("min-masters"))]);
    let got = owners(
        &mut w,
        vec![
            (GUEST.on(CONN_B, 0), QDecl::new("x").exclusive()),
            (GUEST.on(CONN_B, 0), QDecl::new("l").args(local)),
            (GUEST.on(CONN_B, 0), QDecl::new("m").args(balanced)),
        ],
    );
    assert_eq!(got, [0, 0, 1]);
}

#[test]
fn without_balancing_a_queue_lives_on_its_declarers_shard() {
    let mut w = World::new();
    let from1 = |n: &str| (GUEST.on(CONN_B, 1), QDecl::new(n));
    assert_eq!(owners(&mut w, vec![from1("a"), from1("b")]), [1, 1]);
}
