//! Consumers: QoS and channel-wide credit, delivery tags, ack/nack/reject,
//! recover, get, the transport window, cancels.

use super::*;
use crate::queue::{ConsumerSpec, Entry};

fn qos(prefetch_count: u16, global: bool) -> Method {
    Method::BasicQos(BasicQos {
        prefetch_size: 0,
        prefetch_count,
        global,
    })
}

fn qos_ok() -> Frame {
    m(1, Method::BasicQosOk(BasicQosOk {}))
}

fn one_channel() -> Peer {
    let mut p = Peer::open();
    p.open_channel(1);
    p
}

fn spec_of(p: &Peer) -> ConsumerSpec {
    match p.last_request() {
        Request::Consume { spec, .. } => spec.clone(),
        other => panic!("expected a consume request, got {other:?}"),
    }
}

#[test]
fn per_consumer_prefetch_goes_in_the_consumer_spec() {
    let mut p = one_channel();
    p.send(1, qos(10, false));
    assert_eq!(p.frames(), vec![qos_ok()]);
    let args: FieldTable = [(ShortStr::from_static("x-priority"), FieldValue::I32(5))]
        .into_iter()
        .collect();
    p.send(
        1,
        Method::BasicConsume(BasicConsume {
            queue: "q".into(),
            exclusive: true,
            arguments: args,
            ..Default::default()
        }),
    );
    let (cref, vhost, user, Request::Consume { queue, spec }) = p.b.requests.last().unwrap().clone() else {
        panic!()
    };
    assert_eq!(
        (cref.channel, vhost, user.as_str(), queue.to_string()),
        (1, VHOST, "guest", "q".into())
    );
    assert_eq!(
        (
            spec.prefetch,
            spec.channel_limited,
            spec.no_ack,
            spec.exclusive,
            spec.priority,
            spec.cref.ch
        ),
        (10, false, false, true, 5, cref)
    );
    // The server names the consumer.
    p.reply(
        1,
        Reply::ConsumeOk {
            queue: Q,
            consumer: spec.cref,
        },
    );
    let tag = "amq.ctag-0000000000000000000001";
    assert_eq!(
        p.frames(),
        vec![m(
            1,
            Method::BasicConsumeOk(BasicConsumeOk {
                consumer_tag: tag.into()
            })
        )]
    );
    // prefetch_size is not supported, as in RabbitMQ: a connection error.
    p.send(
        1,
        Method::BasicQos(BasicQos {
            prefetch_size: 10,
            ..Default::default()
        }),
    );
    let text = "NOT_IMPLEMENTED - prefetch_size!=0 (10)";
    assert_eq!(p.frames(), vec![m(0, connection_close(540, text, 60, 10))]);
}

#[test]
fn reusing_a_consumer_tag_is_530() {
    let mut p = one_channel();
    p.consume(1, "c1", false);
    p.send(
        1,
        Method::BasicConsume(BasicConsume {
            queue: "q".into(),
            consumer_tag: "c1".into(),
            ..Default::default()
        }),
    );
    let text = "NOT_ALLOWED - attempt to reuse consumer tag 'c1'";
    assert_eq!(p.frames(), vec![m(0, connection_close(530, text, 60, 20))]);
}

fn credit_request(c: ConsumerRef) -> Event {
    Event::CreditRequest {
        queue: Q,
        consumer: c,
    }
}

#[test]
fn global_prefetch_is_granted_as_credit() {
    let mut p = one_channel();
    p.send(1, qos(3, true));
    assert_eq!(p.frames(), vec![qos_ok()]);
    let c = p.consume(1, "c1", false);
    let spec = spec_of(&p);
    assert_eq!((spec.channel_limited, spec.prefetch), (true, 0));
    // A lone consumer gets all the free credit at once.
    p.event(credit_request(c));
    assert_eq!(p.calls(), vec![Call::GrantCredit(Q, c, 3)]);
    p.event(credit_request(c));
    assert_eq!(p.calls(), vec![], "no credit left: the request waits");
    for seq in 1..=3 {
        p.deliver(c, seq);
    }
    p.frames();
    p.send(1, ack(1, false));
    assert_eq!(
        p.calls(),
        vec![Call::Settle(Q, 1, Settle::Ack), Call::GrantCredit(Q, c, 1)]
    );
    // Credit the queue could not use comes back.
    p.event(Event::CreditReturn {
        queue: Q,
        consumer: c,
        n: 2,
    });
    assert_eq!(p.calls(), vec![]);
    p.event(credit_request(c));
    assert_eq!(p.calls(), vec![Call::GrantCredit(Q, c, 2)]);
    // Lifting the limit: whatever is asked.
    p.send(1, qos(0, true));
    p.event(credit_request(c));
    assert_eq!(p.calls(), vec![Call::GrantCredit(Q, c, 65535)]);
}

#[test]
fn global_prefetch_is_shared_one_credit_at_a_time() {
    let mut p = one_channel();
    p.send(1, qos(2, true));
    assert_eq!(p.frames(), vec![qos_ok()]);
    let a = p.consume(1, "a", false);
    let b = p.consume(1, "b", false);
    let unlimited = p.consume(1, "noack", true);
    p.events([credit_request(a), credit_request(b), credit_request(a)]);
    assert_eq!(
        p.calls(),
        vec![Call::GrantCredit(Q, a, 1), Call::GrantCredit(Q, b, 1)]
    );
    p.deliver(a, 1);
    p.deliver(b, 2);
    p.event(delivery(unlimited, 3, false, false));
    p.frames();
    // A multiple ack frees both; the waiting request is served once.
    p.send(1, ack(2, true));
    assert_eq!(
        p.calls(),
        vec![
            Call::Settle(Q, 1, Settle::Ack),
            Call::Settle(Q, 2, Settle::Ack),
            Call::GrantCredit(Q, a, 1)
        ]
    );
}

#[test]
fn ack_nack_reject_settle_by_delivery_tag() {
    let mut p = one_channel();
    let c = p.consume(1, "c1", false);
    for seq in 11..=15 {
        p.deliver(c, seq);
    }
    let frames = p.frames();
    assert_eq!(frames[..3], deliver_frames(1, "c1", 1, b"m11")[..]);
    assert_eq!(frames[12..], deliver_frames(1, "c1", 5, b"m15")[..]);
    p.send(1, ack(2, false));
    p.send(1, ack(3, true));
    p.send(1, nack(5, false, true));
    p.send(1, reject(4, false));
    assert_eq!(
        p.calls(),
        vec![
            Call::Settle(Q, 12, Settle::Ack),
            Call::Settle(Q, 11, Settle::Ack),
            Call::Settle(Q, 13, Settle::Ack),
            Call::Settle(Q, 15, Settle::Reject { requeue: true }),
            Call::Settle(Q, 14, Settle::Reject { requeue: false }),
        ]
    );
    p.deliver(c, 16);
    p.deliver(c, 17);
    assert_eq!(p.frames()[..3], deliver_frames(1, "c1", 6, b"m16")[..]);
    // Tag 0 with multiple: everything outstanding.
    p.send(1, nack(0, true, false));
    assert_eq!(
        p.calls(),
        vec![
            Call::Settle(Q, 16, Settle::Reject { requeue: false }),
            Call::Settle(Q, 17, Settle::Reject { requeue: false }),
        ]
    );
    assert_eq!(p.frames(), vec![]);
}

#[test]
fn unknown_delivery_tags_close_the_channel() {
    // (what the client sends after deliveries 1 and 2, the tag refused)
    let cases: Vec<(Vec<Method>, u64)> = vec![
        (vec![ack(5, false)], 5),
        (vec![ack(5, true)], 5),
        (vec![ack(1, false), ack(1, false)], 1),
        (vec![ack(2, true), ack(1, false)], 1),
        (vec![nack(0, true, true), ack(2, false)], 2),
    ];
    for (methods, tag) in cases {
        let mut p = one_channel();
        let c = p.consume(1, "c1", false);
        p.deliver(c, 1);
        p.deliver(c, 2);
        p.frames();
        for method in methods {
            p.send(1, method);
        }
        let text = format!("PRECONDITION_FAILED - unknown delivery tag {tag}");
        assert_eq!(p.frames(), vec![m(1, channel_close(406, &text, 60, 80))]);
    }
    // A delivery that needs no ack has no tag to ack.
    let mut p = one_channel();
    let c = p.consume(1, "c1", true);
    p.event(delivery(c, 1, false, false));
    p.frames();
    p.send(1, ack(1, false));
    let text = "PRECONDITION_FAILED - unknown delivery tag 1";
    assert_eq!(p.frames(), vec![m(1, channel_close(406, text, 60, 80))]);
}

#[test]
fn unknown_delivery_tag_names_the_method() {
    let mut wrong = Mismatches::default();
    for (method, mid) in [(nack(5, false, true), 120), (reject(5, true), 90)] {
        let mut p = one_channel();
        p.send(1, method.clone());
        let text = "PRECONDITION_FAILED - unknown delivery tag 5";
        wrong.check(method, p.frames(), vec![m(1, channel_close(406, text, 60, mid))]);
    }
    wrong.assert_none();
}

#[test]
fn recover_requeues_everything_and_tags_go_on() {
    let mut p = one_channel();
    let c = p.consume(1, "c1", false);
    p.deliver(c, 1);
    p.deliver(c, 2);
    p.frames();
    p.send(1, Method::BasicRecover(BasicRecover { requeue: true }));
    assert_eq!(p.frames(), vec![m(1, Method::BasicRecoverOk(BasicRecoverOk {}))]);
    assert_eq!(
        p.calls(),
        vec![
            Call::Settle(Q, 1, Settle::Requeue),
            Call::Settle(Q, 2, Settle::Requeue)
        ]
    );
    p.deliver(c, 1);
    assert_eq!(p.frames()[..1], deliver_frames(1, "c1", 3, b"m1")[..1]);
    p.send(1, Method::BasicRecoverAsync(BasicRecoverAsync { requeue: true }));
    assert_eq!(p.frames(), vec![]);
    assert_eq!(p.calls(), vec![Call::Settle(Q, 1, Settle::Requeue)]);
    // requeue=false is not supported, as in RabbitMQ: a connection error.
    for (method, mid) in [
        (Method::BasicRecover(BasicRecover { requeue: false }), 110),
        (
            Method::BasicRecoverAsync(BasicRecoverAsync { requeue: false }),
            100,
        ),
    ] {
        let mut p = one_channel();
        p.send(1, method);
        let text = "NOT_IMPLEMENTED - requeue=false";
        assert_eq!(p.frames(), vec![m(0, connection_close(540, text, 60, mid))]);
    }
}

#[test]
fn basic_get_ok_and_empty() {
    let mut p = one_channel();
    p.send(
        1,
        Method::BasicGet(BasicGet {
            queue: "q".into(),
            ..Default::default()
        }),
    );
    assert!(matches!(p.last_request(), Request::Get { queue, no_ack: false } if queue.as_bytes() == b"q"));
    assert!(p.s.is_paused());
    let entry = Entry {
        seq: 7,
        msg: message(b"got"),
        expires_at: 0,
        loc: None,
        redelivered: true,
    };
    p.reply(
        1,
        Reply::GetOk {
            queue: Q,
            entry,
            remaining: 4,
            needs_ack: true,
        },
    );
    let mut want = vec![m(
        1,
        Method::BasicGetOk(BasicGetOk {
            delivery_tag: 1,
            redelivered: true,
            exchange: "ex".into(),
            routing_key: "rk".into(),
            message_count: 4,
        }),
    )];
    want.extend(content(1, NO_PROPS, b"got"));
    assert_eq!(p.frames(), want);
    assert!(!p.s.is_paused());
    p.send(1, ack(1, false));
    assert_eq!(
        p.calls(),
        vec![Call::Request(1, (60, 70)), Call::Settle(Q, 7, Settle::Ack)]
    );
    p.send(
        1,
        Method::BasicGet(BasicGet {
            queue: "q".into(),
            no_ack: true,
            ..Default::default()
        }),
    );
    p.reply(1, Reply::GetEmpty);
    assert_eq!(
        p.frames(),
        vec![m(1, Method::BasicGetEmpty(BasicGetEmpty::default()))]
    );
}

#[test]
fn tracked_deliveries_are_reported_written() {
    let mut p = one_channel();
    let a = p.consume(1, "a", false);
    let b = p.consume(1, "b", true);
    p.events([
        delivery(a, 1, true, true),
        delivery(a, 2, true, true),
        delivery(a, 3, true, false),
        delivery(a, 4, true, true),
        delivery(b, 5, false, true),
    ]);
    assert_eq!(p.frames().len(), 15);
    assert_eq!(p.calls(), vec![]);
    p.s.report_written(&mut p.b);
    assert_eq!(p.calls(), vec![Call::Written(Q, a, 3), Call::Written(Q, b, 1)]);
    p.s.report_written(&mut p.b);
    assert_eq!(p.calls(), vec![]);
}

fn cancel(tag: &'static str) -> Method {
    Method::BasicCancel(BasicCancel {
        consumer_tag: tag.into(),
        nowait: true,
    })
}

#[test]
fn client_cancel() {
    let mut p = one_channel();
    let c = p.consume(1, "c1", false);
    p.send(
        1,
        Method::BasicCancel(BasicCancel {
            consumer_tag: "c1".into(),
            nowait: false,
        }),
    );
    assert!(matches!(p.last_request(), Request::Cancel { queue: Q, consumer } if *consumer == c));
    p.reply(1, Reply::CancelOk { consumer: c });
    let ok = |t: &'static str| {
        m(
            1,
            Method::BasicCancelOk(BasicCancelOk {
                consumer_tag: t.into(),
            }),
        )
    };
    assert_eq!(p.frames(), vec![ok("c1")]);
    // An unknown tag is answered at once, as RabbitMQ does.
    p.send(
        1,
        Method::BasicCancel(BasicCancel {
            consumer_tag: "nope".into(),
            nowait: false,
        }),
    );
    assert_eq!(p.frames(), vec![ok("nope")]);
    // Deliveries still in flight for the cancelled consumer go back.
    p.deliver(c, 9);
    assert_eq!(p.frames(), vec![]);
    assert_eq!(
        p.calls(),
        vec![Call::Request(1, (60, 30)), Call::Settle(Q, 9, Settle::Requeue)]
    );
}

/// A queue deleted from the channel that consumes it: `delete-ok` first,
/// then the server's `basic.cancel` (kombu relies on this order).
#[test]
fn server_cancel_waits_for_the_pending_reply() {
    let mut p = one_channel();
    let c = p.consume(1, "c1", false);
    p.send(
        1,
        Method::QueueDelete(QueueDelete {
            queue: "q".into(),
            ..Default::default()
        }),
    );
    p.event(Event::ConsumerCancelled { consumer: c });
    assert_eq!(p.frames(), vec![]);
    p.reply(1, Reply::QueueDeleteOk { messages: 3 });
    assert_eq!(
        p.frames(),
        vec![
            m(1, Method::QueueDeleteOk(QueueDeleteOk { message_count: 3 })),
            m(1, cancel("c1"))
        ]
    );
}

#[test]
fn server_cancel_without_a_pending_reply_is_sent_at_once() {
    let mut p = one_channel();
    let c = p.consume(1, "c1", false);
    p.event(Event::ConsumerCancelled { consumer: c });
    assert_eq!(p.frames(), vec![m(1, cancel("c1"))]);
    // Gone: the client's own cancel of it needs no request.
    p.send(1, cancel("c1"));
    assert_eq!(p.calls(), vec![]);
}

#[test]
fn no_server_cancel_without_consumer_cancel_notify() {
    let mut p = Peer::open_with(cfg(), &["basic.nack"], 2047, 131_072, 0);
    p.open_channel(1);
    let a = p.consume(1, "a", false);
    let b = p.consume(1, "b", false);
    p.send(
        1,
        Method::QueueDelete(QueueDelete {
            queue: "q".into(),
            ..Default::default()
        }),
    );
    p.event(Event::ConsumerCancelled { consumer: a });
    p.reply(1, Reply::QueueDeleteOk { messages: 0 });
    p.event(Event::ConsumerCancelled { consumer: b });
    assert_eq!(
        p.frames(),
        vec![m(1, Method::QueueDeleteOk(QueueDeleteOk { message_count: 0 }))]
    );
    // Both are gone all the same.
    p.send(1, cancel("a"));
    p.send(1, cancel("b"));
    assert_eq!(p.calls(), vec![Call::Request(1, (50, 40))]);
}

/// The channel-wide limit counts unacked deliveries whoever consumed them:
/// acking those of a cancelled consumer frees credit for the others (as
/// RabbitMQ's limiter does).
#[test]
fn acks_after_a_cancel_free_global_credit() {
    let mut p = one_channel();
    p.send(1, qos(1, true));
    p.frames();
    let a = p.consume(1, "a", false);
    p.event(credit_request(a));
    p.deliver(a, 1);
    p.send(1, cancel("a"));
    p.reply(1, Reply::CancelOk { consumer: a });
    assert_eq!(p.frames().len(), 3, "the delivery");
    let b = p.consume(1, "b", false);
    p.event(credit_request(b));
    assert_eq!(p.calls(), vec![], "the only credit is in use");
    p.send(1, ack(1, false));
    assert_eq!(
        p.calls(),
        vec![Call::Settle(Q, 1, Settle::Ack), Call::GrantCredit(Q, b, 1)]
    );
}

#[test]
fn a_moved_queue_s_consumers_carry_on_with_what_they_hold() {
    let mut p = one_channel();
    p.send(1, qos(10, false));
    let _ = p.frames();
    let c = p.consume(1, "c1", false);
    for seq in 11..=14 {
        p.deliver(c, seq);
    }
    p.send(1, ack(2, false));
    let _ = (p.frames(), p.calls());
    // The leader moved: the consumer resumes there with what the channel
    // holds (11, 13, 14), and the client sees nothing.
    p.event(Event::QueueMoved { queue: Q });
    assert_eq!(p.calls(), vec![Call::Resume(Q, c, 10, vec![11, 13, 14])]);
    assert_eq!(p.frames(), vec![]);
    p.event(Event::Resumed {
        consumer: c,
        queue: Q,
        claimed: Some(vec![11, 13, 14]),
    });
    assert_eq!(p.frames(), vec![]);
    // Tags go on; the old ones settle as before.
    p.deliver(c, 15);
    assert_eq!(p.frames()[..3], deliver_frames(1, "c1", 5, b"m15")[..]);
    p.send(1, ack(4, true));
    assert_eq!(
        p.calls(),
        vec![
            Call::Settle(Q, 11, Settle::Ack),
            Call::Settle(Q, 13, Settle::Ack),
            Call::Settle(Q, 14, Settle::Ack),
        ]
    );
    // Another queue's move leaves it alone.
    p.event(Event::QueueMoved { queue: QueueId(99) });
    assert_eq!(p.calls(), vec![]);
    // Refused by the new leader (the queue went): a server cancel.
    p.event(Event::QueueMoved { queue: Q });
    assert_eq!(p.calls(), vec![Call::Resume(Q, c, 10, vec![15])]);
    p.event(Event::Resumed {
        consumer: c,
        queue: Q,
        claimed: None,
    });
    assert_eq!(p.frames(), vec![m(1, cancel("c1"))]);
}

#[test]
fn a_resumption_for_a_closed_channel_gives_back_what_it_took() {
    let mut p = one_channel();
    let c = p.consume(1, "c1", false);
    let _ = (p.frames(), p.calls());
    p.send(1, Method::ChannelClose(ChannelClose::default()));
    let _ = (p.frames(), p.calls());
    p.event(Event::Resumed {
        consumer: c,
        queue: Q,
        claimed: Some(vec![7]),
    });
    assert_eq!(
        p.calls(),
        vec![Call::Settle(Q, 7, Settle::Requeue), Call::DropConsumer(Q, c)]
    );
}

#[test]
fn a_consume_answered_after_its_queue_moved_resumes_at_the_new_leader() {
    let mut p = one_channel();
    p.send(
        1,
        Method::BasicConsume(BasicConsume {
            queue: "q".into(),
            consumer_tag: "c1".into(),
            ..Default::default()
        }),
    );
    let Request::Consume { spec, .. } = p.last_request() else {
        panic!("expected a consume request, got {:?}", p.last_request())
    };
    let c = spec.cref;
    let _ = p.calls();
    // Another queue moving changes nothing for it.
    p.event(Event::QueueMoved { queue: QueueId(99) });
    p.reply(
        1,
        Reply::ConsumeOk {
            queue: Q,
            consumer: c,
        },
    );
    let _ = p.frames();
    assert_eq!(p.calls(), vec![]);
    // Its queue moved while it was on its way: the answer may come from
    // the old leader, whose idle engine feeds nobody; once added, the
    // consumer carries on at the new one.
    p.send(
        1,
        Method::BasicConsume(BasicConsume {
            queue: "q".into(),
            consumer_tag: "c2".into(),
            ..Default::default()
        }),
    );
    let Request::Consume { spec, .. } = p.last_request() else {
        panic!("expected a consume request, got {:?}", p.last_request())
    };
    let c2 = spec.cref;
    let _ = p.calls();
    p.event(Event::QueueMoved { queue: Q });
    // c1 resumes at once; c2 is not added yet.
    assert_eq!(p.calls(), vec![Call::Resume(Q, c, 0, vec![])]);
    p.reply(
        1,
        Reply::ConsumeOk {
            queue: Q,
            consumer: c2,
        },
    );
    assert_eq!(
        p.frames(),
        vec![m(
            1,
            Method::BasicConsumeOk(BasicConsumeOk {
                consumer_tag: "c2".into()
            })
        )]
    );
    let calls = p.calls();
    assert!(calls.contains(&Call::Resume(Q, c2, 0, vec![])), "{calls:?}");
}
