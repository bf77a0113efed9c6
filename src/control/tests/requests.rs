//! Channel requests through the control plane: the commit pipeline (log,
//! sync, apply, broadcast, every shard's acknowledgement, reply), one
//! operation at a time, answers that need no change, and declares of
//! existing queues answered by their owner.

use super::*;

/// A durable change: appended to the log, synced, applied, broadcast to
/// shards 1..n, answered once every shard applied it.
#[test]
fn durable_declare_goes_through_log_sync_apply_broadcast_and_acks() {
    let mut c = C::new(3);
    let ch = chan(1, 4);
    c.request(ch, declare("q", true));
    assert_eq!(c.poll(), ["sync-log"]);
    assert!(!c.has_queue("q"), "not applied before the sync");
    assert_eq!(c.poll(), Vec::<String>::new(), "waits for the sync");
    c.svc.topology_applied(1);
    c.svc.owner_deleted(1, Ok(3));
    assert_eq!(c.poll(), Vec::<String>::new(), "other completions are ignored");
    assert!(c.sync_log(false));
    assert_eq!(
        c.poll(),
        [
            "apply [declare-queue q1 q owner=1 durable]",
            "send 1: topology [declare-queue q1 q owner=1 durable]",
            "send 2: topology [declare-queue q1 q owner=1 durable]"
        ]
    );
    assert!(c.has_queue("q"));
    c.svc.topology_applied(1);
    assert_eq!(c.poll(), Vec::<String>::new(), "one shard of two");
    assert!(!c.svc.is_idle());
    c.svc.topology_applied(2);
    assert_eq!(c.poll(), ["reply conn1.4/1: declare-ok q messages=0 consumers=0"]);
    assert!(c.svc.is_idle());
    assert_eq!(c.logged_queues_after_power_loss(), ["q"]);
}

/// A transient change skips the log.
#[test]
fn transient_declare_is_not_logged() {
    let mut c = C::new(2);
    c.request(chan(0, 1), declare("t", false));
    assert_eq!(
        c.poll(),
        [
            "apply [declare-queue q1 t owner=0]",
            "send 1: topology [declare-queue q1 t owner=0]"
        ]
    );
    c.all_applied(2);
    assert_eq!(c.poll(), ["reply conn0.1/1: declare-ok t messages=0 consumers=0"]);
    assert_eq!(c.logged_queues_after_power_loss(), Vec::<String>::new());
}

/// With one shard there is nobody to wait for.
#[test]
fn single_shard_answers_after_applying() {
    let mut c = C::new(1);
    c.request(chan(0, 1), declare("q", true));
    assert_eq!(c.poll(), ["sync-log"]);
    c.sync_log(false);
    assert_eq!(
        c.poll(),
        [
            "apply [declare-queue q1 q owner=0 durable]",
            "reply conn0.1/1: declare-ok q messages=0 consumers=0"
        ]
    );
}

/// Without a topology log nothing is durable: no sync is asked for.
#[test]
fn without_a_log_durable_changes_apply_at_once() {
    let mut c = C::without_log(2);
    c.request(chan(1, 1), declare("q", true));
    assert_eq!(
        c.poll(),
        [
            "apply [declare-queue q1 q owner=1 durable]",
            "send 1: topology [declare-queue q1 q owner=1 durable]"
        ]
    );
}

/// Operations are serialized: the second waits for the first's reply and
/// is planned against the topology the first left.
#[test]
fn one_operation_at_a_time() {
    let mut c = C::new(2);
    c.request(chan(1, 1), declare("a", true));
    c.request(chan(1, 2), declare("a", true));
    c.request(chan(1, 3), declare("b", false));
    assert_eq!(c.poll(), ["sync-log"]);
    assert_eq!(c.poll(), Vec::<String>::new());
    c.sync_log(false);
    assert_eq!(
        c.poll(),
        [
            "apply [declare-queue q1 a owner=1 durable]",
            "send 1: topology [declare-queue q1 a owner=1 durable]"
        ]
    );
    c.all_applied(2);
    // The first is answered; the second finds `a` and asks its owner (on
    // the requester's own shard) for the counts; the third starts.
    assert_eq!(
        c.poll(),
        [
            "reply conn1.1/1: declare-ok a messages=0 consumers=0",
            "send 1: declare-counts q1 a for conn1.2/1",
            "apply [declare-queue q2 b owner=1]",
            "send 1: topology [declare-queue q2 b owner=1]"
        ]
    );
    c.all_applied(2);
    assert_eq!(c.poll(), ["reply conn1.3/1: declare-ok b messages=0 consumers=0"]);
    assert!(c.svc.is_idle());
}

/// Errors from the planner and answers that change nothing are sent at
/// once, with RabbitMQ's codes and texts.
#[test]
fn answers_without_changes() {
    let mut c = C::new(2);
    let ch = chan(1, 1);
    c.request(
        ch,
        Request::QueueDeclare {
            name: ss("nope"),
            generated: false,
            passive: true,
            durable: false,
            exclusive: false,
            auto_delete: false,
            args: FieldTable::new(),
        },
    );
    c.request(
        ch,
        Request::ExchangeDeclare {
            name: ss("amq.direct"),
            kind: crate::routing::ExchangeKind::Direct,
            passive: false,
            durable: true,
            auto_delete: false,
            internal: false,
            args: FieldTable::new(),
        },
    );
    c.request(ch, delete("nope", false, false));
    c.request(
        ch,
        Request::Get {
            queue: ss("nope"),
            no_ack: true,
        },
    );
    c.request(
        ch,
        Request::QueueDeclare {
            name: ss("amq.q"),
            generated: false,
            passive: false,
            durable: false,
            exclusive: false,
            auto_delete: false,
            args: FieldTable::new(),
        },
    );
    assert_eq!(
        c.poll(),
        [
            "reply conn1.1/1: error 404 NOT_FOUND - no queue 'nope' in vhost '/'",
            "reply conn1.1/1: exchange-declare-ok",
            "reply conn1.1/1: delete-ok 0",
            "reply conn1.1/1: error 541 INTERNAL_ERROR - queue operation sent to the control plane",
            "reply conn1.1/1: error 403 ACCESS_REFUSED - queue name 'amq.q' contains reserved prefix 'amq.*'"
        ]
    );
    assert!(c.svc.is_idle());
}

/// A declare of an existing queue is answered by its owner (with its
/// counts), through the requester's shard unless that is shard 0 or the
/// owner itself.
#[test]
fn declare_of_an_existing_queue_goes_to_its_owner() {
    let mut c = C::new(3);
    c.put_queue("q", 2, false, None);
    for (shard, expected) in [
        (1, "send 1: via 2 declare-counts q1 q for conn1.1/1"),
        (0, "send 2: declare-counts q1 q for conn0.1/1"),
        (2, "send 2: declare-counts q1 q for conn2.1/1"),
    ] {
        c.request(chan(shard, 1), declare("q", false));
        assert_eq!(c.poll(), [expected]);
    }
    // An inequivalent redeclare is refused here.
    c.request(chan(1, 1), declare("q", true));
    assert_eq!(
        c.poll(),
        [
            "reply conn1.1/1: error 406 PRECONDITION_FAILED - inequivalent arg 'durable' for queue 'q' in vhost '/': received 'true' but current is 'false'"
        ]
    );
}

/// Bindings are durable when both ends are.
#[test]
fn bindings_are_logged_when_both_ends_are_durable() {
    let mut c = C::new(2);
    c.put_queue("d", 1, true, None);
    c.put_queue("t", 1, false, None);
    let bind = |q: &str| Request::QueueBind {
        queue: ss(q),
        exchange: ss("amq.direct"),
        routing_key: ss("k"),
        args: FieldTable::new(),
    };
    c.request(chan(1, 1), bind("d"));
    assert_eq!(c.poll(), ["sync-log"]);
    c.sync_log(false);
    assert_eq!(
        c.poll(),
        [
            "apply [bind amq.direct -> q1 'k']",
            "send 1: topology [bind amq.direct -> q1 'k']"
        ]
    );
    c.all_applied(2);
    assert_eq!(c.poll(), ["reply conn1.1/1: bind-ok"]);
    c.request(chan(1, 1), bind("t"));
    assert_eq!(
        c.poll(),
        [
            "apply [bind amq.direct -> q2 'k']",
            "send 1: topology [bind amq.direct -> q2 'k']"
        ]
    );
    c.all_applied(2);
    assert_eq!(c.poll(), ["reply conn1.1/1: bind-ok"]);
    // Binding again: nothing to do.
    c.request(chan(1, 1), bind("t"));
    assert_eq!(c.poll(), ["reply conn1.1/1: bind-ok"]);
}
