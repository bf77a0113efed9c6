//! Enqueue and the length limits: `x-max-length` / `x-max-length-bytes`
//! with `drop-head`, `reject-publish` and `reject-publish-dlx`, and what
//! happens to a publish for a queue that is gone.

use super::*;

fn limited(w: &mut W, durable: bool, args: &[(&str, FieldValue)]) -> QueueId {
    if durable {
        w.declare_durable("q", table(args))
    } else {
        w.declare("q", table(args))
    }
}

/// RabbitMQ: `x-max-length` 2, five publishes, then at once a get: "3",
/// then "4" (tests/core/compat.rs checks the same over the wire).
#[test]
fn drop_head_is_exact_for_the_next_get() {
    let mut w = W::new();
    let q = limited(&mut w, false, &[("x-max-length", int(2))]);
    for i in 0..5 {
        assert_eq!(w.publish(q, transient(&i.to_string()), 0), Enqueued::Now);
    }
    assert_eq!(w.ready(q), 2, "dropped on arrival, before any step");
    assert_eq!(w.get(q, true, 0), ["get-ok '3' remaining=1 no-ack"]);
    assert_eq!(w.get(q, true, 0), ["get-ok '4' remaining=0 no-ack"]);
    assert_eq!(w.get(q, true, 0), ["get-empty"]);
    assert!(w.fx.items.is_empty(), "no dead-letter exchange: dropped");
}

/// The same with persistent messages on a durable queue: they wait for
/// the end-of-step store write, which the get must not overtake.
#[test]
fn drop_head_is_exact_for_persistent_messages_waiting_for_the_store() {
    let mut w = W::new();
    let q = limited(&mut w, true, &[("x-max-length", int(2))]);
    for i in 0..5 {
        assert_eq!(w.publish(q, persistent(&i.to_string()), 0), Enqueued::Deferred);
    }
    assert_eq!(w.get(q, true, 0), ["get-ok '3' remaining=1 no-ack"]);
    assert_eq!(w.get(q, true, 0), ["get-ok '4' remaining=0 no-ack"]);
    assert_eq!(w.get(q, true, 0), ["get-empty"]);
}

#[test]
fn max_length_bytes_drops_from_the_head_until_the_bodies_fit() {
    let mut w = W::new();
    let q = limited(&mut w, false, &[("x-max-length-bytes", int(2))]);
    for i in 0..5 {
        w.publish(q, transient(&i.to_string()), 0);
    }
    assert_eq!(w.get(q, true, 0), ["get-ok '3' remaining=1 no-ack"]);
    assert_eq!(w.drain(q, 0), ["4"]);

    let mut w = W::new();
    let q = limited(&mut w, false, &[("x-max-length-bytes", int(10))]);
    for b in ["aaaa", "bbbb", "cccc"] {
        w.publish(q, transient(b), 0);
    }
    assert_eq!(
        w.owner.queue(q).unwrap().q.ready_bytes(),
        8,
        "12 > 10: one dropped"
    );
    w.publish(q, transient("dddddddddd"), 0);
    assert_eq!(w.drain(q, 0), ["dddddddddd"], "exactly 10 bytes fit");
}

/// Drop-head with a dead-letter exchange dead-letters what it drops, with
/// RabbitMQ's `x-death` (reason `maxlen`).
#[test]
fn drop_head_dead_letters_with_reason_maxlen() {
    let mut w = W::new();
    let dlq = with_dead_letter_queue(&mut w);
    let q = w.declare("q", dlx_args("dlx", &[("x-max-length", int(1))]));
    w.publish(q, transient("a"), 1_000);
    w.publish(q, transient("b"), 2_000);
    let dl = dead_lettered(&mut w.fx);
    assert_eq!(bodies(&dl), ["a"]);
    let (shard, queue, msg) = &dl[0];
    assert_eq!((*shard, *queue), (2, dlq), "to the owner of dlq");
    assert_eq!(
        (msg.exchange(), msg.routing_key(), msg.persistent),
        (&b"dlx"[..], &b"q"[..], false)
    );
    assert_eq!(
        deaths(msg),
        (
            vec!["maxlen queue=q count=1 exchange='' routing-keys=[q]".to_string()],
            "first: maxlen q ''".to_string()
        )
    );
    assert_eq!(w.drain(q, 2_000), ["b"]);
}

#[test]
fn reject_publish_nacks_what_does_not_fit() {
    let mut w = W::new();
    let q = limited(
        &mut w,
        false,
        &[("x-max-length", int(2)), ("x-overflow", ls("reject-publish"))],
    );
    for seq in 1..=3 {
        w.publish_item(q, transient(&seq.to_string()), seq, 0);
    }
    assert_eq!(w.fx.take(), ["confirm 1 ack", "confirm 2 ack", "confirm 3 nack"]);
    assert_eq!(w.publish(q, transient("x"), 0), Enqueued::Refused);
    assert_eq!(w.get(q, true, 0), ["get-ok '1' remaining=1 no-ack"]);
    assert_eq!(w.publish(q, transient("4"), 0), Enqueued::Now, "room again");
    assert_eq!(w.drain(q, 0), ["2", "4"]);
    assert!(w.fx.items.is_empty());
}

/// Messages waiting for the store write count toward the limit.
#[test]
fn reject_publish_counts_pending_store_writes() {
    let mut w = W::new();
    let q = limited(
        &mut w,
        true,
        &[("x-max-length", int(1)), ("x-overflow", ls("reject-publish"))],
    );
    assert_eq!(w.publish(q, persistent("a"), 0), Enqueued::Deferred);
    assert_eq!(w.publish(q, persistent("b"), 0), Enqueued::Refused);
    assert_eq!(w.publish(q, transient("c"), 0), Enqueued::Refused);

    let mut w = W::new();
    let q = limited(
        &mut w,
        true,
        &[
            ("x-max-length-bytes", int(5)),
            ("x-overflow", ls("reject-publish")),
        ],
    );
    assert_eq!(w.publish(q, persistent("abc"), 0), Enqueued::Deferred);
    assert_eq!(
        w.publish(q, persistent("de"), 0),
        Enqueued::Deferred,
        "5 bytes fit"
    );
    assert_eq!(w.publish(q, persistent("f"), 0), Enqueued::Refused, "6 do not");
    w.step(0);
    assert_eq!(w.drain(q, 0), ["abc", "de"]);
}

/// `reject-publish-dlx`: the publisher gets a nack and the refused
/// message is dead-lettered (reason `maxlen`); the queue keeps its own.
#[test]
fn reject_publish_dlx_nacks_and_dead_letters_the_refused_message() {
    let mut w = W::new();
    let dlq = with_dead_letter_queue(&mut w);
    let q = w.declare(
        "q",
        dlx_args(
            "dlx",
            &[("x-max-length", int(1)), ("x-overflow", ls("reject-publish-dlx"))],
        ),
    );
    w.publish_item(q, transient("a"), 1, 0);
    w.publish_item(q, transient("b"), 2, 0);
    assert_eq!(w.fx.take(), ["confirm 1 ack", "confirm 2 nack"]);
    let dl = dead_lettered(&mut w.fx);
    assert_eq!(bodies(&dl), ["b"]);
    assert_eq!((dl[0].0, dl[0].1), (2, dlq));
    assert_eq!(
        deaths(&dl[0].2).0,
        ["maxlen queue=q count=1 exchange='' routing-keys=[q]"]
    );
    assert_eq!(w.drain(q, 0), ["a"]);
}

/// Plain `reject-publish` never dead-letters, even with a DLX.
#[test]
fn reject_publish_with_a_dlx_does_not_dead_letter() {
    let mut w = W::new();
    with_dead_letter_queue(&mut w);
    let q = w.declare(
        "q",
        dlx_args(
            "dlx",
            &[("x-max-length", int(0)), ("x-overflow", ls("reject-publish"))],
        ),
    );
    w.publish_item(q, transient("a"), 1, 0);
    assert_eq!(w.fx.take(), ["confirm 1 nack"]);
    assert!(w.fx.items.is_empty());
}

/// A publish racing the queue's deletion is taken silently (and
/// confirmed), as RabbitMQ does.
#[test]
fn publish_to_a_queue_that_is_gone_is_confirmed() {
    let mut w = W::new();
    let q = w.declare("q", FieldTable::new());
    assert_eq!(w.delete(q, false, false), Ok(0));
    assert_eq!(w.publish(q, transient("a"), 0), Enqueued::Now);
    w.publish_item(q, persistent("b"), 7, 0);
    assert_eq!(w.fx.take(), ["confirm 7 ack"]);
    assert!(!w.owner.has_work());
}

/// RabbitMQ hands a message straight to a consumer that can take it; only
/// what stays ready counts toward `x-max-length`. With a consumer waiting
/// (no prefetch limit), three publishes into `x-max-length` 1 all reach it.
#[test]
fn drop_head_does_not_drop_what_a_waiting_consumer_takes() {
    let mut w = W::new();
    let q = limited(&mut w, false, &[("x-max-length", int(1))]);
    w.consume(q, spec(1, 0, false), 0);
    w.step(0);
    assert_eq!(w.fx.take(), ["consume-ok q1 c1"]);
    for i in 0..3 {
        w.publish(q, transient(&i.to_string()), 0);
    }
    w.step(0);
    assert_eq!(
        w.fx.take(),
        ["deliver c1 '0'", "deliver c1 '1'", "deliver c1 '2'"]
    );
}

/// The same for `reject-publish`: RabbitMQ counts ready messages only, so
/// with a consumer taking each message on arrival nothing is refused.
#[test]
fn reject_publish_does_not_refuse_what_a_waiting_consumer_takes() {
    let mut w = W::new();
    let q = limited(
        &mut w,
        false,
        &[("x-max-length", int(1)), ("x-overflow", ls("reject-publish"))],
    );
    w.consume(q, spec(1, 0, false), 0);
    w.step(0);
    w.fx.take();
    for seq in 1..=3 {
        w.publish_item(q, transient(&seq.to_string()), seq, 0);
    }
    w.step(0);
    assert_eq!(
        w.fx.take(),
        [
            "confirm 1 ack",
            "deliver c1 '1'",
            "confirm 2 ack",
            "deliver c1 '2'",
            "confirm 3 ack",
            "deliver c1 '3'"
        ]
    );
}
