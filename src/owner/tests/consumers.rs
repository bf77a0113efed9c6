//! Consumers through the owner: consume/cancel replies, dispatch with
//! prefetch, consumer priorities, single active consumer, exclusive
//! consumers, settles (ack, reject, requeue), channel credit, the
//! transport window, auto-delete, and publisher flow control.

use super::*;
use crate::broker::request::Settle::{Ack, Reject, Requeue};

fn queue_with(w: &mut W, n: usize) -> QueueId {
    let q = w.declare("q", FieldTable::new());
    for i in 0..n {
        w.publish(q, transient(&i.to_string()), 0);
    }
    q
}

/// The `consume-ok` precedes the deliveries it enables.
#[test]
fn consume_ok_comes_before_the_deliveries() {
    let mut w = W::new();
    let q = queue_with(&mut w, 2);
    w.consume(q, spec(1, 0, false), 0);
    assert!(w.owner.has_work(), "dispatch is left for the end of the step");
    assert_eq!(w.fx.take(), ["consume-ok q1 c1"]);
    w.step(0);
    assert_eq!(w.fx.take(), ["deliver c1 '0'", "deliver c1 '1'"]);
    let slot = w.owner.queue(q).unwrap();
    assert_eq!(
        (slot.q.ready_count(), slot.q.unacked_count(), slot.had_consumers),
        (0, 2, true)
    );
}

#[test]
fn prefetch_round_robin_and_acks() {
    let mut w = W::new();
    let q = queue_with(&mut w, 5);
    w.consume(q, spec(1, 1, false), 0);
    w.consume(q, spec(2, 1, false), 0);
    w.step(0);
    assert_eq!(
        w.fx.take(),
        [
            "consume-ok q1 c1",
            "consume-ok q1 c2",
            "deliver c1 '0'",
            "deliver c2 '1'"
        ]
    );
    // Delivery seqs are the queue's: 1 and 2.
    w.settle(q, 1, Ack, 0);
    w.step(0);
    assert_eq!(w.fx.take(), ["deliver c1 '2'"]);
    w.settle(q, 1, Ack, 0);
    w.step(0);
    assert_eq!(w.fx.take(), Vec::<String>::new(), "a second ack of 1 is ignored");
    w.settle(q, 2, Ack, 0);
    w.step(0);
    assert_eq!(w.fx.take(), ["deliver c2 '3'"]);
    assert_eq!(w.owner.queue(q).unwrap().q.stats.acked, 2);
}

/// Consumer priorities (`x-priority`): the highest priority consumer with
/// capacity takes everything it can before a lower one gets any.
#[test]
fn consumer_priorities() {
    let mut w = W::new();
    let q = queue_with(&mut w, 5);
    let mut low = spec(1, 0, false);
    low.priority = 1;
    let mut high = spec(2, 2, false);
    high.priority = 5;
    w.consume(q, low, 0);
    w.consume(q, high, 0);
    w.step(0);
    assert_eq!(
        w.fx.take()[2..],
        [
            "deliver c2 '0'",
            "deliver c2 '1'",
            "deliver c1 '2'",
            "deliver c1 '3'",
            "deliver c1 '4'"
        ]
    );
    // Freed capacity on the high one: it takes the next message.
    w.settle(q, 1, Ack, 0);
    w.publish(q, transient("5"), 0);
    w.step(0);
    assert_eq!(w.fx.take(), ["deliver c2 '5'"]);
}

/// `x-single-active-consumer`: only the first consumer receives; when it
/// goes, the next one takes over (its unacked messages stay with its
/// channel until settled).
#[test]
fn single_active_consumer_fails_over() {
    let mut w = W::new();
    let q = w.declare(
        "q",
        table(&[("x-single-active-consumer", FieldValue::Bool(true))]),
    );
    for i in 0..3 {
        w.publish(q, transient(&i.to_string()), 0);
    }
    w.consume(q, spec(1, 1, false), 0);
    w.consume(q, spec(2, 1, false), 0);
    w.step(0);
    assert_eq!(
        w.fx.take(),
        ["consume-ok q1 c1", "consume-ok q1 c2", "deliver c1 '0'"]
    );
    w.settle(q, 1, Ack, 0);
    w.step(0);
    assert_eq!(w.fx.take(), ["deliver c1 '1'"], "still the active one");
    w.queue_op(q, "q", CONS_CH, QueueOp::Cancel(cref(1)), 0);
    w.step(0);
    assert_eq!(w.fx.take(), ["cancel-ok c1", "deliver c2 '2'"]);
    // c1's unacked '1' is requeued by its channel: c2 gets it once free.
    w.settle(q, 2, Requeue, 0);
    w.step(0);
    assert_eq!(w.fx.take(), Vec::<String>::new(), "c2 is at its prefetch");
    w.settle(q, 3, Ack, 0);
    w.step(0);
    assert_eq!(w.fx.take(), ["deliver c2 '1' redelivered"]);
    assert_eq!(w.owner.queue(q).unwrap().q.consumer_count(), 1);
}

/// RabbitMQ: 403 "queue 'q' in vhost '/' in exclusive use", whichever
/// side is exclusive.
#[test]
fn exclusive_consumer_conflicts_are_refused() {
    let mut w = W::new();
    let q = w.declare("q", FieldTable::new());
    let mut ex = spec(1, 0, false);
    ex.exclusive = true;
    w.consume(q, ex.clone(), 0);
    w.consume(q, spec(2, 0, false), 0);
    assert_eq!(
        w.fx.take(),
        [
            "consume-ok q1 c1",
            "error 403 ACCESS_REFUSED - queue 'q' in vhost '/' in exclusive use"
        ]
    );
    let mut w = W::new();
    let q = w.declare("q", FieldTable::new());
    w.consume(q, spec(1, 0, false), 0);
    ex.cref = cref(2);
    w.consume(q, ex, 0);
    assert_eq!(
        w.fx.take(),
        [
            "consume-ok q1 c1",
            "error 403 ACCESS_REFUSED - queue 'q' in vhost '/' in exclusive use"
        ]
    );
    assert_eq!(w.owner.queue(q).unwrap().q.consumer_count(), 1);
}

/// A requeued message goes back to its original position, redelivered.
#[test]
fn reject_and_requeue_restore_the_original_position() {
    let mut w = W::new();
    let q = queue_with(&mut w, 3);
    assert_eq!(w.get(q, false, 0), ["get-ok '0' remaining=2"]);
    assert_eq!(w.get(q, false, 0), ["get-ok '1' remaining=1"]);
    w.settle(q, 2, Reject { requeue: true }, 0);
    w.settle(q, 1, Requeue, 0);
    assert_eq!(w.get(q, true, 0), ["get-ok '0' remaining=2 redelivered no-ack"]);
    assert_eq!(w.get(q, true, 0), ["get-ok '1' remaining=1 redelivered no-ack"]);
    assert_eq!(w.get(q, true, 0), ["get-ok '2' remaining=0 no-ack"]);
    assert!(w.fx.items.is_empty());
}

/// `basic.reject` without requeue dead-letters with reason `rejected`; a
/// queue without a DLX just drops the message.
#[test]
fn reject_without_requeue_dead_letters() {
    let mut w = W::new();
    let dlq = with_dead_letter_queue(&mut w);
    let q = w.declare("q", dlx_args("dlx", &[]));
    w.publish(q, transient("a"), 0);
    w.consume(q, spec(1, 0, false), 0);
    w.step(0);
    w.fx.take();
    w.settle(q, 1, Reject { requeue: false }, 5_000);
    let dl = dead_lettered(&mut w.fx);
    assert_eq!(bodies(&dl), ["a"]);
    assert_eq!((dl[0].0, dl[0].1), (2, dlq));
    assert_eq!(
        deaths(&dl[0].2),
        (
            vec!["rejected queue=q count=1 exchange='' routing-keys=[q]".to_string()],
            "first: rejected q ''".to_string()
        )
    );
    let slot = w.owner.queue(q).unwrap();
    assert_eq!((slot.q.ready_count(), slot.q.unacked_count()), (0, 0));

    let mut w = W::new();
    let q = queue_with(&mut w, 1);
    w.get(q, false, 0);
    w.settle(q, 1, Reject { requeue: false }, 0);
    assert!(w.fx.items.is_empty());
    assert_eq!(w.get(q, true, 0), ["get-empty"]);
}

/// A dead-letter exchange routing back to the same queue: an expiry that
/// would cycle is dropped (RabbitMQ's cycle detection: the queue is in
/// the history with no rejection since); a rejection is never a cycle.
#[test]
fn dead_letter_cycles_are_dropped_unless_rejected() {
    let mut w = W::new();
    let mut args = dlx_args("", &[("x-message-ttl", int(10))]);
    args.insert(ss("x-dead-letter-routing-key"), ls("q"));
    let q = w.declare("q", args);
    w.publish(q, transient("a"), 0);
    w.owner.sweep(&w.topo, &mut w.fx, 10);
    assert_eq!(w.ready(q), 0);
    assert_eq!(
        w.fx.take_items(),
        Vec::<String>::new(),
        "expired into itself: dropped"
    );

    w.publish(q, transient("b"), 0);
    w.get(q, false, 0);
    w.settle(q, 2, Reject { requeue: false }, 0);
    let dl = dead_lettered(&mut w.fx);
    assert_eq!(bodies(&dl), ["b"]);
    assert_eq!((dl[0].0, dl[0].1), (SHARD, q));
    assert_eq!(
        deaths(&dl[0].2),
        (
            vec!["rejected queue=q count=1 exchange='' routing-keys=[q]".to_string()],
            "first: rejected q ''".to_string()
        )
    );
    // Back in the queue (as the hub delivers it), it expires: the latest
    // death there is automatic, so that is a cycle and it is dropped.
    let (_, _, msg) = dl.into_iter().next().unwrap();
    w.owner
        .publish_item(&w.topo, &mut w.fx, q, msg, None, ConnId(0), 0);
    assert_eq!(w.ready(q), 1);
    w.owner.sweep(&w.topo, &mut w.fx, 10);
    assert_eq!(w.ready(q), 0);
    assert_eq!(w.fx.take_items(), Vec::<String>::new());
}

/// Channel-wide prefetch: the queue asks the channel for credit once,
/// delivers what it is granted, and gives back what it cannot use.
#[test]
fn channel_credit_is_requested_used_and_returned() {
    let mut w = W::new();
    let q = queue_with(&mut w, 2);
    let mut s = spec(1, 0, false);
    s.channel_limited = true;
    w.consume(q, s, 0);
    w.step(0);
    assert_eq!(w.fx.take(), ["consume-ok q1 c1", "credit-request q1 c1"]);
    w.step(0);
    assert_eq!(w.fx.take(), Vec::<String>::new(), "asked once");
    w.owner.credit(&mut w.fx, q, cref(1), 5);
    w.step(0);
    assert_eq!(
        w.fx.take(),
        ["deliver c1 '0'", "deliver c1 '1'", "credit-return q1 c1 3"]
    );
    // Credit for a consumer (or queue) that is gone goes straight back.
    w.owner.credit(&mut w.fx, q, cref(9), 4);
    w.owner.credit(&mut w.fx, QueueId(99), cref(1), 2);
    assert_eq!(w.fx.take(), ["credit-return q1 c9 4", "credit-return q99 c1 2"]);
}

/// Consumers without a prefetch bound are bounded by the transport
/// window; `written` opens it again.
#[test]
fn the_transport_window_bounds_unlimited_consumers() {
    let mut cfg = owner_config();
    cfg.consumer_window = 2;
    let mut w = W::with_config(cfg);
    let q = queue_with(&mut w, 5);
    w.consume(q, spec(1, 0, true), 0);
    w.step(0);
    assert_eq!(
        w.fx.take(),
        [
            "consume-ok q1 c1",
            "deliver c1 '0' no-ack",
            "deliver c1 '1' no-ack"
        ]
    );
    w.owner.written(q, cref(1), 1);
    w.step(0);
    assert_eq!(w.fx.take(), ["deliver c1 '2' no-ack"]);
    w.owner.written(q, cref(1), 2);
    w.step(0);
    assert_eq!(w.fx.take(), ["deliver c1 '3' no-ack", "deliver c1 '4' no-ack"]);
}

/// An auto-delete queue goes when its last consumer does (cancel or
/// channel close), and tells the control plane; one never consumed from
/// stays.
#[test]
fn auto_delete_queue_goes_with_its_last_consumer() {
    let mut w = W::new();
    let q = w.declare_auto_delete("q");
    w.owner.drop_consumer(&mut w.fx, q, cref(7), 0);
    assert!(w.owner.queue(q).is_some(), "never had a consumer");
    assert_eq!(w.fx.take_items(), Vec::<String>::new());
    w.consume(q, spec(1, 0, false), 0);
    w.consume(q, spec(2, 0, false), 0);
    w.queue_op(q, "q", CONS_CH, QueueOp::Cancel(cref(1)), 0);
    assert!(w.owner.queue(q).is_some(), "one consumer left");
    w.owner.drop_consumer(&mut w.fx, q, cref(2), 0);
    assert!(
        w.owner.queue(q).is_some(),
        "until the control plane commits the deletion"
    );
    assert_eq!(
        w.fx.take(),
        ["consume-ok q1 c1", "consume-ok q1 c2", "cancel-ok c1"]
    );
    assert_eq!(w.fx.take_items(), ["to 0: auto-deleted q1"]);
    w.delete_from_topology(q);
    assert!(w.owner.queue(q).is_none());
}

/// Publishers pause once a consumed queue holds more than `flow_backlog`
/// ready messages, and resume once it is down to half.
#[test]
fn throttle_on_past_the_backlog_and_off_at_half() {
    let mut cfg = owner_config();
    cfg.flow_backlog = 4;
    let mut w = W::with_config(cfg);
    let q = w.declare("q", FieldTable::new());
    w.consume(q, spec(1, 1, false), 0);
    w.publish(q, transient("0"), 0);
    w.step(0);
    assert_eq!(w.fx.take(), ["consume-ok q1 c1", "deliver c1 '0'"]);
    for i in 1..=5 {
        w.publish(q, transient(&i.to_string()), 0);
    }
    assert_eq!(w.fx.take(), Vec::<String>::new(), "5 ready: not past 4 yet");
    w.publish(q, transient("6"), 0);
    assert_eq!(w.fx.take(), ["throttle conn1.1 q1 on"]);
    w.publish(q, transient("7"), 0);
    assert_eq!(w.fx.take(), Vec::<String>::new(), "paused once");
    // Dead-lettering (connection 0) and the consumer's own connection are
    // never paused.
    w.owner
        .enqueue(&w.topo, &mut w.fx, q, transient("8"), None, ConnId(0), 0);
    w.owner
        .enqueue(&w.topo, &mut w.fx, q, transient("9"), None, CONS, 0);
    assert_eq!(w.fx.take(), Vec::<String>::new());
    assert_eq!(w.ready(q), 9);
    let mut seq = 1;
    let mut log = Vec::new();
    while w.ready(q) > 2 {
        w.settle(q, seq, Ack, 0);
        seq += 1;
        w.step(0);
        log.extend(w.fx.take());
    }
    assert_eq!(log.len(), 8);
    assert_eq!(log[6..], ["deliver c1 '7'", "throttle conn1.1 q1 off"]);
}

/// Paused publishers resume when the last consumer goes (nothing to wait
/// for) and when the queue is deleted.
#[test]
fn throttle_released_without_consumers_and_on_delete() {
    let mut cfg = owner_config();
    cfg.flow_backlog = 1;
    let mut w = W::with_config(cfg);
    let q = w.declare("q", FieldTable::new());
    for i in 0..3 {
        w.publish(q, transient(&i.to_string()), 0);
    }
    assert_eq!(w.fx.take(), Vec::<String>::new(), "no consumer: no pause");
    w.consume(q, spec(1, 1, false), 0);
    w.publish(q, transient("3"), 0);
    assert_eq!(w.fx.take(), ["consume-ok q1 c1", "throttle conn1.1 q1 on"]);
    w.queue_op(q, "q", CONS_CH, QueueOp::Cancel(cref(1)), 0);
    w.step(0);
    assert_eq!(
        w.fx.take(),
        ["cancel-ok c1", "throttle conn1.1 q1 off"],
        "no delivery: cancelled before the end of the step"
    );

    w.consume(q, spec(2, 1, false), 0);
    w.step(0);
    w.publish(q, transient("4"), 0);
    assert_eq!(
        w.fx.take(),
        ["consume-ok q1 c2", "deliver c2 '0'", "throttle conn1.1 q1 on"]
    );
    assert_eq!(w.delete(q, false, false), Ok(4));
    assert_eq!(w.fx.take(), ["throttle conn1.1 q1 off", "cancelled c2"]);
}
