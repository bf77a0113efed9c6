//! What happens to queues over time and from outside: TTL sweeps with
//! dead-lettering, `x-expires`, policies, `owner_delete` and its
//! conditions, get/purge/counts, the management plane's operations,
//! barriers, and replicated deletes.

use super::*;
use crate::admin::{GetMode, QueueAction, QueueResult};

/// `x-message-ttl`: a message expires `ttl` ms after it was published (the
/// sweep is inclusive), dead-lettered with reason `expired`.
#[test]
fn queue_ttl_expires_and_dead_letters() {
    let mut w = W::new();
    let dlq = with_dead_letter_queue(&mut w);
    let q = w.declare("q", dlx_args("dlx", &[("x-message-ttl", int(1000))]));
    w.publish(q, transient("a"), 0);
    w.publish(q, transient("b"), 500);
    w.owner.sweep(&w.topo, &mut w.fx, 999);
    assert_eq!((w.ready(q), w.fx.items.len()), (2, 0));
    w.owner.sweep(&w.topo, &mut w.fx, 1000);
    assert_eq!(w.ready(q), 1);
    let dl = dead_lettered(&mut w.fx);
    assert_eq!(bodies(&dl), ["a"]);
    assert_eq!((dl[0].0, dl[0].1), (2, dlq));
    assert_eq!(
        deaths(&dl[0].2),
        (
            vec!["expired queue=q count=1 exchange='' routing-keys=[q]".to_string()],
            "first: expired q ''".to_string()
        )
    );
    // A get past the TTL finds nothing (and dead-letters it).
    assert_eq!(w.get(q, true, 1501), ["get-empty"]);
    assert_eq!(bodies(&dead_lettered(&mut w.fx)), ["b"]);
}

/// A per-message `expiration`: expired at the head only (as RabbitMQ),
/// recorded as `original-expiration` and removed from the dead letter.
#[test]
fn per_message_ttl_expires_at_the_head() {
    let mut w = W::new();
    with_dead_letter_queue(&mut w);
    let q = w.declare("q", dlx_args("dlx", &[]));
    w.publish(q, expiring("a", "500"), 0);
    w.publish(q, transient("b"), 0);
    w.publish(q, expiring("c", "100"), 0);
    w.owner.sweep(&w.topo, &mut w.fx, 499);
    assert_eq!(w.ready(q), 3);
    w.owner.sweep(&w.topo, &mut w.fx, 500);
    let dl = dead_lettered(&mut w.fx);
    assert_eq!(bodies(&dl), ["a"], "'c' is past its TTL but not at the head");
    assert_eq!(
        deaths(&dl[0].2).0,
        ["expired queue=q count=1 exchange='' routing-keys=[q] original-expiration=500"]
    );
    assert_eq!(dl[0].2.ttl(), None);
    assert_eq!(w.get(q, true, 600), ["get-ok 'b' remaining=1 no-ack"]);
    assert_eq!(w.get(q, true, 600), ["get-empty"]);
    assert_eq!(bodies(&dead_lettered(&mut w.fx)), ["c"]);
}

/// The lower of the queue's and the message's TTL applies.
#[test]
fn the_lower_ttl_wins() {
    let mut w = W::new();
    let q = w.declare("q", table(&[("x-message-ttl", int(1000))]));
    w.publish(q, expiring("short", "100"), 0);
    w.publish(q, expiring("long", "5000"), 0);
    w.owner.sweep(&w.topo, &mut w.fx, 100);
    assert_eq!(w.ready(q), 1);
    w.owner.sweep(&w.topo, &mut w.fx, 999);
    assert_eq!(w.ready(q), 1);
    w.owner.sweep(&w.topo, &mut w.fx, 1000);
    assert_eq!(w.ready(q), 0);
}

/// `x-message-ttl` 0: delivered at once if a consumer can take it,
/// dropped (dead-lettered) at the end of the step otherwise.
#[test]
fn ttl_zero_delivers_now_or_never() {
    let mut w = W::new();
    with_dead_letter_queue(&mut w);
    let q = w.declare("q", dlx_args("dlx", &[("x-message-ttl", int(0))]));
    w.publish(q, transient("lost"), 7);
    w.step(7);
    assert_eq!(w.ready(q), 0);
    assert_eq!(bodies(&dead_lettered(&mut w.fx)), ["lost"]);
    w.consume(q, spec(1, 0, false), 7);
    w.publish(q, transient("kept"), 7);
    w.step(7);
    assert_eq!(w.fx.take(), ["consume-ok q2 c1", "deliver c1 'kept'"]);
    assert!(w.fx.items.is_empty());
}

/// `x-expires`: an unused queue (no consumers, no get or declare) is
/// deleted after that long, and the control plane told.
#[test]
fn x_expires_deletes_an_unused_queue() {
    let mut w = W::new();
    let q = w.declare("q", table(&[("x-expires", int(1000))]));
    w.owner.sweep(&w.topo, &mut w.fx, 999);
    assert!(w.owner.queue(q).is_some());
    // A get is a use: the clock starts again.
    assert_eq!(w.get(q, true, 600), ["get-empty"]);
    w.owner.sweep(&w.topo, &mut w.fx, 1000);
    assert!(w.owner.queue(q).is_some());
    // So is a passive declare (its counts).
    w.owner
        .declare_counts(&w.topo, &mut w.fx, q, CONS_CH, ss("q"), 1500);
    w.owner.sweep(&w.topo, &mut w.fx, 2499);
    assert!(w.owner.queue(q).is_some());
    w.owner.sweep(&w.topo, &mut w.fx, 2500);
    assert!(
        w.owner.queue(q).is_some(),
        "until the control plane commits the deletion"
    );
    assert_eq!(w.fx.take_items(), ["to 0: auto-deleted q1"]);
    w.delete_from_topology(q);
    assert!(w.owner.queue(q).is_none());
}

/// A queue with a consumer is in use, however long.
#[test]
fn x_expires_spares_a_consumed_queue_until_its_consumer_goes() {
    let mut w = W::new();
    let q = w.declare("q", table(&[("x-expires", int(1000))]));
    w.consume(q, spec(1, 0, false), 100);
    w.owner.sweep(&w.topo, &mut w.fx, 10_000);
    assert!(w.owner.queue(q).is_some());
    w.queue_op(q, "q", CONS_CH, QueueOp::Cancel(cref(1)), 10_000);
    w.owner.sweep(&w.topo, &mut w.fx, 10_999);
    assert!(w.owner.queue(q).is_some(), "unused since the cancel only");
    w.owner.sweep(&w.topo, &mut w.fx, 11_000);
    assert!(
        w.owner.queue(q).is_some(),
        "until the control plane commits the deletion"
    );
    assert_eq!(w.fx.take_items(), ["to 0: auto-deleted q1"]);
    w.delete_from_topology(q);
    assert!(w.owner.queue(q).is_none());
}

/// Policies apply to the queues they match, arguments win over them, and
/// clearing one lifts its settings.
#[test]
fn policies_apply_arguments_win_and_clearing_lifts_them() {
    let mut w = W::new();
    let q = w.declare("q", FieldTable::new());
    let own = w.declare("own", table(&[("x-max-length", int(10))]));
    let other = w.declare("other", FieldTable::new());
    for i in 0..4 {
        for id in [q, own, other] {
            w.publish(id, transient(&i.to_string()), 0);
        }
    }
    w.set_policy("limit", "^(q|own)$", table(&[("max-length", int(1))]));
    assert_eq!(w.ready(q), 1, "trimmed at once (drop-head)");
    assert_eq!(w.ready(own), 4, "its argument wins");
    assert_eq!(w.ready(other), 4, "not matched");
    assert_eq!(w.drain(q, 0), ["3"]);
    w.clear_policy("limit");
    for i in 0..3 {
        w.publish(q, transient(&i.to_string()), 0);
    }
    assert_eq!(w.ready(q), 3);
}

/// A policy's dead-letter exchange and TTL act like the arguments.
#[test]
fn policy_ttl_and_dead_letter_exchange() {
    let mut w = W::new();
    let dlq = with_dead_letter_queue(&mut w);
    let q = w.declare("q", FieldTable::new());
    w.set_policy(
        "dl",
        "^q$",
        table(&[("message-ttl", int(50)), ("dead-letter-exchange", ls("dlx"))]),
    );
    w.publish(q, transient("a"), 0);
    w.owner.sweep(&w.topo, &mut w.fx, 50);
    let dl = dead_lettered(&mut w.fx);
    assert_eq!((bodies(&dl), dl[0].1), (vec!["a".to_string()], dlq));
}

#[test]
fn delete_counts_ready_messages_and_cancels_consumers() {
    let mut w = W::new();
    let q = w.declare("q", FieldTable::new());
    for i in 0..3 {
        w.publish(q, transient(&i.to_string()), 0);
    }
    w.consume(q, spec(1, 1, false), 0);
    w.step(0);
    w.fx.take();
    assert_eq!(w.delete(q, false, false), Ok(2), "the unacked one does not count");
    assert_eq!(w.fx.take(), ["cancelled c1"]);
    assert!(w.owner.queue(q).is_none());
    // Gone already: nothing to delete, nothing to say.
    assert_eq!(w.delete(q, true, true), Ok(0));
    assert!(w.fx.events.is_empty());
}

/// RabbitMQ's texts: 406 "queue 'q' in vhost '/' in use" / "not empty";
/// `if-empty` counts ready messages only.
#[test]
fn delete_if_unused_and_if_empty() {
    let mut w = W::new();
    let q = w.declare("q", FieldTable::new());
    w.publish(q, transient("a"), 0);
    w.consume(q, spec(1, 1, false), 0);
    let e = w
        .owner
        .owner_delete(&w.topo, &mut w.fx, q, true, false, 0)
        .unwrap_err();
    assert_eq!(
        (e.code, e.reply_text()),
        (
            406,
            "PRECONDITION_FAILED - queue 'q' in vhost '/' in use".to_string()
        )
    );
    let e = w
        .owner
        .owner_delete(&w.topo, &mut w.fx, q, false, true, 0)
        .unwrap_err();
    assert_eq!(
        (e.code, e.reply_text()),
        (
            406,
            "PRECONDITION_FAILED - queue 'q' in vhost '/' not empty".to_string()
        )
    );
    assert!(w.owner.queue(q).is_some());
    // Delivered and unacked: empty for if-empty.
    w.step(0);
    assert_eq!(w.fx.take(), ["consume-ok q1 c1", "deliver c1 'a'"]);
    assert_eq!(w.delete(q, false, true), Ok(0));
    assert_eq!(w.fx.take(), ["cancelled c1"]);
}

/// Pending store writes count for `if-empty` and in the answer, and their
/// confirms are not lost: they are answered (once synced) as the queue
/// goes; its store goes with it.
#[test]
fn delete_sees_pending_writes_and_removes_the_store() {
    let mut w = W::new();
    let q = w.declare_durable("q", FieldTable::new());
    w.publish_confirmed(q, persistent("a"), 1, 0);
    w.publish_confirmed(q, persistent("b"), 2, 0);
    assert!(w.store_exists(q));
    assert!(w.delete(q, false, true).is_err());
    assert_eq!(w.delete(q, false, false), Ok(2));
    assert!(!w.store_exists(q));
    w.sync();
    assert_eq!(w.fx.take(), ["confirm 1 ack", "confirm 2 ack"]);
}

/// Operations on a queue its owner no longer has: RabbitMQ's 404, and a
/// cancel is simply acknowledged.
#[test]
fn operations_on_a_deleted_queue() {
    let mut w = W::new();
    let q = w.declare("q", FieldTable::new());
    w.delete(q, false, false).unwrap();
    let gone = "error 404 NOT_FOUND - no queue 'q' in vhost '/'";
    for op in [
        QueueOp::Get { no_ack: true },
        QueueOp::Purge,
        QueueOp::Consume(spec(1, 0, false)),
    ] {
        w.queue_op(q, "q", CONS_CH, op, 0);
        assert_eq!(w.fx.take(), [gone]);
    }
    w.queue_op(q, "q", CONS_CH, QueueOp::Cancel(cref(1)), 0);
    assert_eq!(w.fx.take(), ["cancel-ok c1"]);
    w.owner.declare_counts(&w.topo, &mut w.fx, q, CONS_CH, ss("q"), 0);
    assert_eq!(w.fx.take(), [gone]);
    // Settles and written reports for it are ignored.
    w.settle(q, 1, Settle::Ack, 0);
    w.owner.written(q, cref(1), 1);
    w.owner.drop_consumer(&mut w.fx, q, cref(1), 0);
    assert!(w.fx.events.is_empty() && w.fx.items.is_empty() && !w.owner.has_work());
}

/// `basic.get-ok` carries the count left after the message; an
/// acknowledged get is held until settled.
#[test]
fn get_counts_and_ack_mode() {
    let mut w = W::new();
    let q = w.declare("q", FieldTable::new());
    for i in 0..3 {
        w.publish(q, transient(&i.to_string()), 0);
    }
    assert_eq!(w.get(q, false, 0), ["get-ok '0' remaining=2"]);
    assert_eq!(w.get(q, true, 0), ["get-ok '1' remaining=1 no-ack"]);
    let slot = w.owner.queue(q).unwrap();
    assert_eq!(
        (slot.q.ready_count(), slot.q.unacked_count(), slot.q.stats.get),
        (1, 1, 2)
    );
    w.settle(q, 1, Settle::Ack, 0);
    assert_eq!(w.owner.queue(q).unwrap().q.unacked_count(), 0);
}

/// `queue.purge` removes ready messages (and those waiting for the store
/// write), not unacknowledged ones, and says how many.
#[test]
fn purge_counts_ready_and_pending_messages() {
    let mut w = W::new();
    let q = w.declare_durable("q", FieldTable::new());
    w.publish(q, persistent("0"), 0);
    w.step(0);
    assert_eq!(w.get(q, false, 0), ["get-ok '0' remaining=0"]);
    w.publish(q, persistent("1"), 0);
    w.publish(q, transient("2"), 0);
    w.publish(q, persistent("3"), 0);
    w.queue_op(q, "q", PUB_CH, QueueOp::Purge, 0);
    assert_eq!(w.fx.take(), ["purge-ok 3"]);
    assert_eq!(w.ready(q), 0);
    assert_eq!(w.owner.queue(q).unwrap().q.unacked_count(), 1);
    w.queue_op(q, "q", PUB_CH, QueueOp::Purge, 0);
    assert_eq!(w.fx.take(), ["purge-ok 0"]);
    // On disk too: after a crash only the unacked one comes back.
    w.step(0);
    w.restart();
    assert_eq!(w.get(q, true, 0), ["get-ok '0' remaining=0 redelivered no-ack"]);
}

/// `queue.declare-ok` for an existing queue: ready messages (counting
/// those waiting for the store write) and consumers.
#[test]
fn declare_counts_include_pending_writes() {
    let mut w = W::new();
    let q = w.declare_durable("q", FieldTable::new());
    w.publish(q, persistent("a"), 0);
    w.publish(q, transient("b"), 0);
    w.consume(q, spec(1, 1, false), 0);
    w.fx.take();
    w.owner.declare_counts(&w.topo, &mut w.fx, q, CONS_CH, ss("q"), 0);
    assert_eq!(w.fx.take(), ["declare-ok q messages=2 consumers=1"]);
    w.step(0);
    w.owner.declare_counts(&w.topo, &mut w.fx, q, CONS_CH, ss("q"), 0);
    assert_eq!(
        w.fx.take(),
        ["deliver c1 'a'", "declare-ok q messages=1 consumers=1"]
    );
}

fn peeked(r: Result<QueueResult, crate::protocol::AmqpError>) -> Vec<String> {
    match r {
        Ok(QueueResult::Messages(m)) => m
            .iter()
            .map(|p| {
                format!(
                    "'{}' {}B left={}{} ex='{}' rk='{}'",
                    String::from_utf8_lossy(&p.payload),
                    p.payload_bytes,
                    p.message_count,
                    if p.redelivered { " redelivered" } else { "" },
                    p.exchange,
                    p.routing_key
                )
            })
            .collect(),
        other => panic!("{other:?}"),
    }
}

/// The management plane's get (requeue or remove) and purge.
#[test]
fn admin_get_and_purge() {
    let mut w = W::new();
    let q = w.declare_durable("q", FieldTable::new());
    for i in 0..3 {
        w.publish(q, persistent(&i.to_string()), 0);
    }
    let get = |mode, count| QueueAction::Get { count, mode };
    let r = w
        .owner
        .admin_queue(&w.topo, &mut w.fx, q, get(GetMode::Requeue, 2), 0);
    assert_eq!(
        peeked(r),
        ["'0' 1B left=2 ex='' rk='q'", "'1' 1B left=1 ex='' rk='q'"]
    );
    assert_eq!(w.ready(q), 3, "put back");
    let r = w
        .owner
        .admin_queue(&w.topo, &mut w.fx, q, get(GetMode::Remove, 5), 0);
    assert_eq!(
        peeked(r),
        [
            "'0' 1B left=2 redelivered ex='' rk='q'",
            "'1' 1B left=1 redelivered ex='' rk='q'",
            "'2' 1B left=0 ex='' rk='q'"
        ]
    );
    assert_eq!(w.ready(q), 0);
    for i in 3..5 {
        w.publish(q, persistent(&i.to_string()), 0);
    }
    let r = w.owner.admin_queue(&w.topo, &mut w.fx, q, QueueAction::Purge, 0);
    assert!(matches!(r, Ok(QueueResult::Purged(2))), "{r:?}");
    assert!(w.fx.events.is_empty());
    // Removed on disk as well.
    w.step(0);
    w.restart();
    assert_eq!(w.ready(q), 0);
    w.delete(q, false, false).unwrap();
    let e = w
        .owner
        .admin_queue(&w.topo, &mut w.fx, q, QueueAction::Purge, 0)
        .unwrap_err();
    assert_eq!(e.reply_text(), "NOT_FOUND - queue deleted");
}

/// A barrier is answered (to the channel's shard) once a sync covers
/// everything before it.
#[test]
fn barrier_waits_for_the_next_sync() {
    let mut w = W::new();
    let q = w.declare_durable("q", FieldTable::new());
    w.publish_confirmed(q, persistent("a"), 1, 0);
    let ch = ChannelRef {
        conn: ConnId::new(3, 5),
        channel: 2,
        epoch: 1,
    };
    w.owner.barrier(ch, 7);
    assert!(w.owner.wants_sync());
    w.step(0);
    let batch = w.owner.take_sync();
    assert_eq!(
        batch.waiters.iter().map(waiter).collect::<Vec<_>>(),
        ["barrier 7", "confirm 1 q1"]
    );
    assert!(!w.owner.wants_sync());
    w.owner.synced(batch.waiters, &[], &mut w.fx);
    assert_eq!(w.fx.take(), ["confirm 1 ack"]);
    assert_eq!(w.fx.take_items(), ["to 3: barrier-done conn3.5/2 7"]);
}

/// A replicated queue delete (or vhost delete) drops the engines and
/// tells their consumers; queues owned elsewhere are not touched.
#[test]
fn replicated_deletes_drop_engines() {
    let mut w = W::new();
    let a = w.declare("a", FieldTable::new());
    let b = w.declare("b", FieldTable::new());
    w.consume(a, spec(1, 0, false), 0);
    w.consume(b, spec(2, 0, false), 0);
    w.fx.take();
    w.delete_from_topology(a);
    assert_eq!(w.fx.take(), ["cancelled c1"]);
    assert!(w.owner.queue(a).is_none() && w.owner.queue(b).is_some());
    let elsewhere = w.declare_on(2, "c", false, FieldTable::new());
    assert!(w.owner.queue(elsewhere).is_none(), "owned by shard 2");
    let v = w.vhost;
    w.apply(&[Change::DeleteVhost { id: v }]);
    assert_eq!(w.fx.take(), ["cancelled c2"]);
    assert_eq!(w.owner.queues().count(), 0);
}

/// Publishing is not a use for `x-expires` (RabbitMQ: only consumers,
/// `basic.get` and redeclares are).
#[test]
fn x_expires_publishing_is_not_a_use() {
    let mut w = W::new();
    let q = w.declare("q", table(&[("x-expires", int(1000))]));
    w.publish(q, transient("a"), 900);
    w.step(900);
    w.owner.sweep(&w.topo, &mut w.fx, 1000);
    assert!(w.owner.queue(q).is_some(), "deleted with its message");
    assert_eq!(w.fx.take_items(), ["to 0: auto-deleted q1"]);
    w.delete_from_topology(q);
    assert!(w.owner.queue(q).is_none());
}

/// `x-dead-letter-routing-key` replaces the key the dead letter is routed
/// with; `x-death` keeps the original keys.
#[test]
fn dead_letter_routing_key_replaces_the_key() {
    let mut w = W::new();
    w.declare_exchange("dlx", ExchangeKind::Direct);
    let other = w.declare_on(3, "other", false, FieldTable::new());
    w.bind("other", "dlx", "elsewhere");
    let mut args = dlx_args("dlx", &[("x-max-length", int(0))]);
    args.insert(ss("x-dead-letter-routing-key"), ls("elsewhere"));
    let q = w.declare("q", args);
    w.publish(q, transient("a"), 0);
    assert_eq!(
        w.fx.take_items(),
        [format!("to 3: publish q{} 'a' ex='dlx' rk='elsewhere'", other.0)]
    );
}
