//! Queue deletion: the owner is asked first (through the requester's
//! shard), then the deletion is committed; connections closing take their
//! exclusive queues; auto-deleted queues are committed without an answer.

use super::*;

/// `queue.delete` from shard 1 of a queue owned by shard 2: the owner is
/// asked through shard 1 (behind that channel's publishes), then the
/// deletion is logged, applied, broadcast; the reply carries the owner's
/// message count.
#[test]
fn delete_asks_the_owner_through_the_requesters_shard() {
    let mut c = C::new(3);
    c.put_queue("q", 2, true, None);
    c.request(chan(1, 1), delete("q", true, true));
    assert_eq!(
        c.poll(),
        ["send 1: via 2 owner-delete op=1 q1 if-unused if-empty"]
    );
    c.svc.owner_deleted(2, Ok(9));
    c.svc.persisted(true);
    c.svc.topology_applied(1);
    assert_eq!(c.poll(), Vec::<String>::new(), "waits for the owner's answer");
    c.svc.owner_deleted(1, Ok(5));
    assert_eq!(c.poll(), ["sync-log"]);
    assert!(c.has_queue("q"));
    c.sync_log(false);
    assert_eq!(
        c.poll(),
        [
            "apply [delete-queue q1]",
            "send 1: topology [delete-queue q1]",
            "send 2: topology [delete-queue q1]"
        ]
    );
    assert!(!c.has_queue("q"));
    c.all_applied(3);
    assert_eq!(c.poll(), ["reply conn1.1/1: delete-ok 5"]);
    assert!(c.svc.is_idle());
}

/// From shard 0, or from the owner's own shard, the item goes straight to
/// the owner; a transient queue's deletion is not logged.
#[test]
fn delete_from_shard_zero_or_the_owner_goes_direct() {
    let mut c = C::new(3);
    c.put_queue("a", 2, false, None);
    c.put_queue("b", 2, false, None);
    c.request(chan(0, 1), delete("a", false, false));
    assert_eq!(c.poll(), ["send 2: owner-delete op=1 q1"]);
    c.svc.owner_deleted(1, Ok(0));
    assert_eq!(
        c.poll(),
        [
            "apply [delete-queue q1]",
            "send 1: topology [delete-queue q1]",
            "send 2: topology [delete-queue q1]"
        ]
    );
    c.all_applied(3);
    assert_eq!(c.poll(), ["reply conn0.1/1: delete-ok 0"]);
    c.request(chan(2, 1), delete("b", false, false));
    assert_eq!(c.poll(), ["send 2: owner-delete op=2 q2"]);
}

/// The owner refuses (`if-unused`, `if-empty`): its error is the answer
/// and nothing changes.
#[test]
fn the_owners_refusal_is_the_answer() {
    let mut c = C::new(2);
    c.put_queue("q", 1, true, None);
    c.request(chan(1, 1), delete("q", true, false));
    assert_eq!(c.poll(), ["send 1: owner-delete op=1 q1 if-unused"]);
    c.svc
        .owner_deleted(1, Err(AmqpError::precondition("queue 'q' in vhost '/' in use")));
    assert_eq!(
        c.poll(),
        ["reply conn1.1/1: error 406 PRECONDITION_FAILED - queue 'q' in vhost '/' in use"]
    );
    assert!(c.has_queue("q") && c.svc.is_idle());
    // The next operation uses a new token.
    c.request(chan(1, 1), delete("q", false, false));
    assert_eq!(c.poll(), ["send 1: owner-delete op=2 q1"]);
    c.svc.owner_deleted(1, Ok(7));
    assert_eq!(c.poll(), Vec::<String>::new(), "a stale token is ignored");
}

/// If the queue went while the owner was asked (its connection closed, it
/// expired), there is nothing left to commit: the answer is the count.
#[test]
fn a_queue_gone_meanwhile_is_not_deleted_twice() {
    let mut c = C::new(2);
    let q = c.put_queue("q", 1, false, None);
    c.request(chan(1, 1), delete("q", false, false));
    assert_eq!(c.poll(), ["send 1: owner-delete op=1 q1"]);
    c.topo.apply(&Change::DeleteQueue { id: q });
    c.svc.owner_deleted(1, Ok(2));
    assert_eq!(c.poll(), ["reply conn1.1/1: delete-ok 2"]);
}

/// Deleting a queue deletes the auto-delete exchanges it was the last
/// binding of, in the same commit.
#[test]
fn delete_cascades_to_auto_delete_exchanges() {
    let mut c = C::new(1);
    c.put_queue("q", 0, false, None);
    let reply = c.run(
        1,
        chan(0, 1),
        Request::ExchangeDeclare {
            name: ss("ax"),
            kind: crate::routing::ExchangeKind::Fanout,
            passive: false,
            durable: false,
            auto_delete: true,
            internal: false,
            args: FieldTable::new(),
        },
    );
    assert_eq!(reply, "reply conn0.1/1: exchange-declare-ok");
    let bind = Request::QueueBind {
        queue: ss("q"),
        exchange: ss("ax"),
        routing_key: ss(""),
        args: FieldTable::new(),
    };
    assert_eq!(c.run(1, chan(0, 1), bind), "reply conn0.1/1: bind-ok");
    c.request(chan(0, 1), delete("q", false, false));
    assert_eq!(c.poll(), ["send 0: owner-delete op=1 q1"]);
    c.svc.owner_deleted(1, Ok(0));
    assert_eq!(
        c.poll(),
        [
            "apply [delete-queue q1, delete-exchange ax]",
            "reply conn0.1/1: delete-ok 0"
        ]
    );
    assert!(c.topo.exchange_by_name(c.vhost, b"ax").is_none());
}

/// A closed connection's exclusive queues are deleted, each through its
/// owner first; nobody is answered; other queues stay.
#[test]
fn connection_closed_deletes_its_exclusive_queues() {
    let mut c = C::new(3);
    let conn = ConnId::new(1, 5);
    let e1 = c.put_queue("e1", 0, false, Some(conn));
    let e2 = c.put_queue("e2", 2, false, Some(conn));
    c.put_queue("other", 2, false, Some(ConnId::new(1, 6)));
    c.put_queue("shared", 1, true, None);
    c.svc.submit(ControlMsg::ConnectionClosed(conn));
    let mut deleted = Vec::new();
    for _ in 0..2 {
        let step = c.poll();
        assert_eq!(step.len(), 1, "{step:?}");
        let (q, owner) = if step[0].ends_with(&format!(" q{}", e1.0)) {
            (e1, 0)
        } else {
            (e2, 2)
        };
        let op = deleted.len() as u64 + 1;
        assert_eq!(step, [format!("send {owner}: owner-delete op={op} q{}", q.0)]);
        c.svc.owner_deleted(op, Ok(0));
        assert_eq!(
            c.poll(),
            [
                format!("apply [delete-queue q{}]", q.0),
                format!("send 1: topology [delete-queue q{}]", q.0),
                format!("send 2: topology [delete-queue q{}]", q.0)
            ]
        );
        c.all_applied(3);
        deleted.push(q);
    }
    assert_eq!(c.poll(), Vec::<String>::new(), "nobody to answer");
    assert!(c.svc.is_idle());
    deleted.sort();
    assert_eq!(deleted, [e1, e2]);
    assert!(!c.has_queue("e1") && !c.has_queue("e2"));
    assert!(c.has_queue("other") && c.has_queue("shared"));
    // A connection without exclusive queues: nothing at all.
    c.svc.submit(ControlMsg::ConnectionClosed(ConnId::new(2, 1)));
    assert_eq!(c.poll(), Vec::<String>::new());
    assert!(c.svc.is_idle());
}

/// An auto-deleted queue (its owner already dropped it) is committed
/// without asking anyone and without an answer; a durable one is logged.
#[test]
fn auto_deleted_queues_are_committed() {
    let mut c = C::new(2);
    let t = c.put_queue("t", 1, false, None);
    let d = c.put_queue("d", 1, true, None);
    c.svc.submit(ControlMsg::AutoDeleted(t));
    assert_eq!(
        c.poll(),
        ["apply [delete-queue q1]", "send 1: topology [delete-queue q1]"]
    );
    c.all_applied(2);
    c.svc.submit(ControlMsg::AutoDeleted(d));
    assert_eq!(c.poll(), ["sync-log"]);
    c.sync_log(false);
    assert_eq!(
        c.poll(),
        ["apply [delete-queue q2]", "send 1: topology [delete-queue q2]"]
    );
    c.all_applied(2);
    assert_eq!(c.poll(), Vec::<String>::new());
    // Already gone: nothing.
    c.svc.submit(ControlMsg::AutoDeleted(d));
    assert_eq!(c.poll(), Vec::<String>::new());
    assert!(c.svc.is_idle());
    assert_eq!(c.logged_queues_after_power_loss(), Vec::<String>::new());
}
