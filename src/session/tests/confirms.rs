//! Publisher confirms and transactions.

use super::*;

fn confirming() -> Peer {
    let mut p = Peer::open();
    p.open_channel(1);
    p.send(1, Method::ConfirmSelect(ConfirmSelect { nowait: false }));
    assert_eq!(
        p.frames(),
        vec![m(1, Method::ConfirmSelectOk(ConfirmSelectOk {}))]
    );
    p
}

fn pending(n: u32) -> Result<PublishOutcome, AmqpError> {
    Ok(PublishOutcome {
        routed: true,
        pending_confirms: n,
        rejected: false,
    })
}

/// Publishes `n` messages on channel 1 in one read.
fn publish_n(p: &mut Peer, n: usize) -> Status {
    let mut bytes = BytesMut::new();
    for i in 0..n {
        bytes.extend_from_slice(&publish_bytes(
            1,
            "",
            "q",
            NO_PROPS,
            format!("{i}").as_bytes(),
            131_072,
        ));
    }
    p.send_raw(&bytes)
}

fn confirm(p: &Peer, seq: u64, ok: bool) -> Event {
    Event::Confirm {
        ch: p.cref(1),
        seq,
        ok,
    }
}

#[test]
fn confirm_select_nowait_and_again() {
    let mut p = confirming();
    p.send(1, Method::ConfirmSelect(ConfirmSelect { nowait: true }));
    assert_eq!(p.frames(), vec![]);
    publish_n(&mut p, 1);
    assert_eq!(p.b.publishes()[0].confirm, Some(1), "sequence numbers start once");
    assert_eq!(p.frames(), vec![m(1, ack(1, false))]);
}

/// Confirms that are ready when a read is done go out as one
/// `basic.ack multiple`.
#[test]
fn immediate_confirms_coalesce_per_read() {
    let mut p = confirming();
    publish_n(&mut p, 3);
    let seqs: Vec<_> = p.b.publishes().iter().map(|x| x.confirm).collect();
    assert_eq!(seqs, vec![Some(1), Some(2), Some(3)]);
    assert_eq!(p.frames(), vec![m(1, ack(3, true))]);
    publish_n(&mut p, 1);
    assert_eq!(p.frames(), vec![m(1, ack(4, false))]);
}

#[test]
fn pending_confirms_wait_for_every_queue_in_order() {
    let mut p = confirming();
    p.b.outcomes.extend([pending(1), pending(0), pending(2)]);
    publish_n(&mut p, 3);
    assert_eq!(p.frames(), vec![], "publish 1 holds back 2");
    p.event(confirm(&p, 3, true));
    assert_eq!(p.frames(), vec![]);
    p.event(confirm(&p, 1, true));
    assert_eq!(p.frames(), vec![m(1, ack(2, true))]);
    p.event(confirm(&p, 3, true));
    assert_eq!(p.frames(), vec![m(1, ack(3, false))]);
    // A stale or repeated confirm changes nothing.
    p.event(confirm(&p, 3, true));
    p.event(confirm(&p, 99, true));
    assert_eq!(p.frames(), vec![]);
}

#[test]
fn confirms_of_one_batch_coalesce_at_end_batch() {
    let mut p = confirming();
    p.b.outcomes
        .extend([pending(1), pending(1), pending(1), pending(1)]);
    publish_n(&mut p, 4);
    assert_eq!(p.frames(), vec![]);
    let evs = [4, 2, 1, 3].map(|s| confirm(&p, s, true));
    for ev in evs {
        p.s.on_event(ev, &mut p.b);
    }
    assert_eq!(p.frames(), vec![], "confirms wait for the end of the batch");
    p.s.end_batch(&mut p.b);
    assert_eq!(p.frames(), vec![m(1, ack(4, true))]);
}

#[test]
fn refused_publishes_are_nacked() {
    let mut p = confirming();
    let refused = Ok(PublishOutcome {
        routed: true,
        pending_confirms: 0,
        rejected: true,
    });
    p.b.outcomes.extend([
        pending(0),
        pending(0),
        refused,
        pending(0),
        pending(1),
        pending(1),
    ]);
    publish_n(&mut p, 6);
    assert_eq!(
        p.frames(),
        vec![
            m(1, ack(2, true)),
            m(1, nack(3, false, false)),
            m(1, ack(4, false))
        ]
    );
    p.events([confirm(&p, 5, false), confirm(&p, 6, true)]);
    assert_eq!(p.frames(), vec![m(1, nack(5, false, false)), m(1, ack(6, false))]);
}

#[test]
fn confirms_for_a_closed_channel_are_dropped() {
    let mut p = confirming();
    p.b.outcomes.push_back(pending(1));
    publish_n(&mut p, 1);
    let ev = confirm(&p, 1, true);
    p.send(1, Method::ChannelClose(Default::default()));
    assert_eq!(p.frames(), vec![m(1, Method::ChannelCloseOk(ChannelCloseOk {}))]);
    p.open_channel(1);
    p.event(ev);
    assert_eq!(p.frames(), vec![]);
}

#[test]
fn tx_and_confirm_modes_exclude_each_other() {
    let mut p = Peer::open();
    p.open_channel(1);
    p.open_channel(2);
    p.send(1, Method::TxSelect(TxSelect {}));
    assert_eq!(p.frames(), vec![m(1, Method::TxSelectOk(TxSelectOk {}))]);
    p.send(1, Method::ConfirmSelect(ConfirmSelect { nowait: false }));
    let text = "PRECONDITION_FAILED - cannot switch from tx to confirm mode";
    assert_eq!(p.frames(), vec![m(1, channel_close(406, text, 85, 10))]);
    p.send(2, Method::ConfirmSelect(ConfirmSelect { nowait: false }));
    p.frames();
    p.send(2, Method::TxSelect(TxSelect {}));
    let text = "PRECONDITION_FAILED - cannot switch from confirm to tx mode";
    assert_eq!(p.frames(), vec![m(2, channel_close(406, text, 90, 10))]);
}

fn transactional() -> Peer {
    let mut p = Peer::open();
    p.open_channel(1);
    p.send(1, Method::TxSelect(TxSelect {}));
    assert_eq!(p.frames(), vec![m(1, Method::TxSelectOk(TxSelectOk {}))]);
    p
}

fn commit_ok() -> Frame {
    m(1, Method::TxCommitOk(TxCommitOk {}))
}

#[test]
fn tx_publishes_are_routed_at_commit_and_commit_ok_waits_for_the_barrier() {
    let mut p = transactional();
    p.send_raw(&publish_bytes(1, "ex", "a", NO_PROPS, b"1", 131_072));
    p.send_raw(&publish_bytes(1, "ex", "b", NO_PROPS, b"2", 131_072));
    assert_eq!(
        p.calls(),
        vec![
            Call::ExchangeExists(b"ex".to_vec()),
            Call::ExchangeExists(b"ex".to_vec())
        ]
    );
    let mut bytes = method_bytes(1, Method::TxCommit(TxCommit {}));
    bytes.extend_from_slice(&method_bytes(1, Method::BasicQos(Default::default())));
    assert_eq!(p.send_raw(&bytes), Status::Paused);
    let tracked = |key, body: &[u8], seq| Published {
        confirm: Some(seq),
        ..Published::plain(1, "ex", key, body)
    };
    assert_eq!(
        p.calls(),
        vec![
            Call::Publish(tracked("a", b"1", 1)),
            Call::Publish(tracked("b", b"2", 2)),
            Call::Request(1, (90, 20)),
        ]
    );
    assert!(matches!(p.last_request(), Request::Barrier));
    assert_eq!(p.frames(), vec![]);
    p.reply(1, Reply::BarrierDone);
    assert_eq!(p.frames(), vec![commit_ok()]);
    assert!(p.s.has_unprocessed_frames());
    p.resume();
    assert_eq!(p.frames(), vec![m(1, Method::BasicQosOk(BasicQosOk {}))]);
    // The transaction goes on: the next commit has nothing to route.
    p.send(1, Method::TxCommit(TxCommit {}));
    assert_eq!(p.calls(), vec![Call::Request(1, (90, 20))]);
}

/// As RabbitMQ: `commit-ok` waits until every queue took the commit's
/// publishes (a quorum queue's majority, another node's queue), as
/// confirms would; none of those confirms reaches the client.
#[test]
fn commit_ok_waits_for_the_queues_to_take_the_publishes() {
    let mut p = transactional();
    p.send_raw(&publish_bytes(1, "ex", "a", NO_PROPS, b"1", 131_072));
    p.send_raw(&publish_bytes(1, "ex", "b", NO_PROPS, b"2", 131_072));
    let waits = PublishOutcome {
        routed: true,
        pending_confirms: 1,
        rejected: false,
    };
    p.b.outcomes.push_back(Ok(waits));
    p.b.outcomes.push_back(Ok(waits));
    p.send(1, Method::TxCommit(TxCommit {}));
    p.calls();
    p.reply(1, Reply::BarrierDone);
    assert_eq!(p.frames(), vec![], "the publishes are not confirmed yet");
    let ch = p.cref(1);
    p.event(Event::Confirm { ch, seq: 2, ok: true });
    assert_eq!(p.frames(), vec![]);
    p.event(Event::Confirm { ch, seq: 1, ok: true });
    assert_eq!(p.frames(), vec![commit_ok()]);
    // The next commit starts afresh.
    p.send_raw(&publish_bytes(1, "ex", "c", NO_PROPS, b"3", 131_072));
    p.send(1, Method::TxCommit(TxCommit {}));
    let published = p.b.publishes();
    assert_eq!(published.last().map(|m| m.confirm), Some(Some(3)));
    p.reply(1, Reply::BarrierDone);
    assert_eq!(p.frames(), vec![commit_ok()]);
}

/// A transaction of one publish, whose routing gives `outcome`, committed.
fn commit_one(outcome: PublishOutcome) -> Peer {
    let mut p = transactional();
    p.send_raw(&publish_bytes(1, "ex", "a", NO_PROPS, b"1", 131_072));
    p.b.outcomes.push_back(Ok(outcome));
    p.send(1, Method::TxCommit(TxCommit {}));
    p
}

const PARTIAL: &str = "PRECONDITION_FAILED - partial tx completion";

/// A queue that refuses a publish of the commit (a quorum queue without
/// a majority) fails it: 406 "partial tx completion", as RabbitMQ.
#[test]
fn a_refused_publish_fails_the_commit() {
    for barrier_first in [true, false] {
        let mut p = commit_one(PublishOutcome {
            routed: true,
            pending_confirms: 1,
            rejected: false,
        });
        let refusal = Event::Confirm {
            ch: p.cref(1),
            seq: 1,
            ok: false,
        };
        if barrier_first {
            p.reply(1, Reply::BarrierDone);
            p.event(refusal);
        } else {
            p.event(refusal);
            assert_eq!(p.frames(), vec![]);
            p.reply(1, Reply::BarrierDone);
        }
        assert_eq!(p.frames(), vec![m(1, channel_close(406, PARTIAL, 90, 20))]);
    }
    // Refused at routing time (e.g. a queue over its length limit with
    // reject-publish) counts the same.
    let mut p = commit_one(PublishOutcome {
        routed: true,
        pending_confirms: 0,
        rejected: true,
    });
    p.reply(1, Reply::BarrierDone);
    assert_eq!(p.frames(), vec![m(1, channel_close(406, PARTIAL, 90, 20))]);
}

#[test]
fn rollback_discards_publishes_and_acks() {
    let mut p = transactional();
    let c = p.consume(1, "c1", false);
    p.deliver(c, 11);
    p.frames();
    p.send_raw(&publish_bytes(1, "", "q", NO_PROPS, b"gone", 131_072));
    p.send(1, ack(1, false));
    p.send(1, Method::TxRollback(TxRollback {}));
    assert_eq!(p.frames(), vec![m(1, Method::TxRollbackOk(TxRollbackOk {}))]);
    p.send(1, Method::TxCommit(TxCommit {}));
    assert_eq!(
        p.calls(),
        vec![Call::ExchangeExists(vec![]), Call::Request(1, (90, 20))]
    );
    p.reply(1, Reply::BarrierDone);
    assert_eq!(p.frames(), vec![commit_ok()]);
    // The delivery is still unacked after the rollback.
    p.send(1, ack(1, false));
    p.send(1, Method::TxCommit(TxCommit {}));
    assert_eq!(
        p.calls(),
        vec![Call::Settle(Q, 11, Settle::Ack), Call::Request(1, (90, 20))]
    );
}

#[test]
fn acks_in_a_transaction_are_applied_at_commit() {
    let mut p = transactional();
    let c = p.consume(1, "c1", false);
    for seq in [11, 12, 13, 14] {
        p.deliver(c, seq);
    }
    p.frames();
    p.send(1, ack(1, false));
    p.send(1, nack(2, false, true));
    p.send(1, reject(3, false));
    p.send(1, ack(4, false));
    assert_eq!(p.calls(), vec![], "nothing settles before the commit");
    assert_eq!(p.frames(), vec![]);
    p.send(1, Method::TxCommit(TxCommit {}));
    assert_eq!(
        p.calls(),
        vec![
            Call::Settle(Q, 11, Settle::Ack),
            Call::Settle(Q, 12, Settle::Reject { requeue: true }),
            Call::Settle(Q, 13, Settle::Reject { requeue: false }),
            Call::Settle(Q, 14, Settle::Ack),
            Call::Request(1, (90, 20)),
        ]
    );
    p.reply(1, Reply::BarrierDone);
    assert_eq!(p.frames(), vec![commit_ok()]);
    // A tag unknown at ack time is refused at once.
    p.send(1, ack(9, false));
    let text = "PRECONDITION_FAILED - unknown delivery tag 9";
    assert_eq!(p.frames(), vec![m(1, channel_close(406, text, 60, 80))]);
}

#[test]
fn mandatory_returns_of_a_commit_come_before_commit_ok() {
    let mut p = transactional();
    let mut bytes = method_bytes(1, publish_method("", "nowhere", true));
    write_content(&mut bytes, 1, 60, NO_PROPS, b"r", 131_072);
    p.send_raw(&bytes);
    p.b.outcomes.push_back(Ok(PublishOutcome::default()));
    p.send(1, Method::TxCommit(TxCommit {}));
    p.reply(1, Reply::BarrierDone);
    let mut want = vec![m(
        1,
        Method::BasicReturn(BasicReturn {
            reply_code: 312,
            reply_text: "NO_ROUTE".into(),
            exchange: "".into(),
            routing_key: "nowhere".into(),
        }),
    )];
    want.extend(content(1, NO_PROPS, b"r"));
    want.push(commit_ok());
    assert_eq!(p.frames(), want);
}

#[test]
fn commit_or_rollback_outside_a_transaction() {
    for (method, mid) in [
        (Method::TxCommit(TxCommit {}), 20),
        (Method::TxRollback(TxRollback {}), 30),
    ] {
        let mut p = Peer::open();
        p.open_channel(1);
        p.send(1, method);
        let text = "PRECONDITION_FAILED - channel is not transactional";
        assert_eq!(p.frames(), vec![m(1, channel_close(406, text, 90, mid))]);
    }
}

#[test]
fn transaction_limits() {
    let limited = |messages: usize, bytes: usize| {
        let mut p = Peer::open_with(
            SessionConfig {
                tx_max_messages: messages,
                tx_max_bytes: bytes,
                ..cfg()
            },
            CLIENT_CAPS,
            2047,
            131_072,
            0,
        );
        p.open_channel(1);
        p.send(1, Method::TxSelect(TxSelect {}));
        p.frames();
        p
    };
    let mut p = limited(2, 1 << 20);
    for _ in 0..3 {
        p.send_raw(&publish_bytes(1, "", "q", NO_PROPS, b"x", 131_072));
    }
    let text = "PRECONDITION_FAILED - transaction holds more than 2 messages or 1048576 bytes";
    assert_eq!(close_text(&p.frames()), (1, 406, text.to_string()));

    let mut p = limited(100, 10);
    p.send_raw(&publish_bytes(1, "", "q", NO_PROPS, &[0; 6], 131_072));
    p.send_raw(&publish_bytes(1, "", "q", NO_PROPS, &[0; 5], 131_072));
    let text = "PRECONDITION_FAILED - transaction holds more than 100 messages or 10 bytes";
    assert_eq!(close_text(&p.frames()), (1, 406, text.to_string()));

    let mut p = limited(2, 1 << 20);
    let c = p.consume(1, "c1", false);
    for seq in 1..=3 {
        p.deliver(c, seq);
    }
    p.frames();
    p.send(1, ack(1, false));
    p.send(1, ack(2, false));
    p.send(1, nack(3, false, true));
    let text = "PRECONDITION_FAILED - too many acknowledgements in one transaction";
    assert_eq!(close_text(&p.frames()), (1, 406, text.to_string()));
    assert_eq!(
        p.calls(),
        vec![
            Call::DropConsumer(Q, c),
            Call::Settle(Q, 1, Settle::Requeue),
            Call::Settle(Q, 2, Settle::Requeue),
            Call::Settle(Q, 3, Settle::Requeue)
        ]
    );
}

#[test]
fn tx_publish_to_a_missing_exchange_closes_the_channel() {
    let mut p = transactional();
    p.b.exchange = Err(AmqpError::not_found("no exchange 'nope' in vhost '/'"));
    p.send_raw(&publish_bytes(1, "nope", "q", NO_PROPS, b"", 131_072));
    let text = "NOT_FOUND - no exchange 'nope' in vhost '/'";
    assert_eq!(close_text(&p.frames()), (1, 404, text.to_string()));
}

#[test]
fn tx_publish_refusal_names_basic_publish() {
    let mut p = transactional();
    p.b.exchange = Err(AmqpError::not_found("no exchange 'nope' in vhost '/'"));
    p.send_raw(&publish_bytes(1, "nope", "q", NO_PROPS, b"", 131_072));
    let text = "NOT_FOUND - no exchange 'nope' in vhost '/'";
    assert_eq!(p.frames(), vec![m(1, channel_close(404, text, 60, 40))]);
}

/// RabbitMQ resolves the tags of an ack when it arrives, even in a
/// transaction: acking a tag twice is refused at once, and `multiple` with
/// tag 0 covers only what was delivered before it (checked on 3.10.8 for
/// the first).
#[test]
fn tx_acks_are_resolved_when_received() {
    let mut p = transactional();
    let c = p.consume(1, "c1", false);
    p.deliver(c, 11);
    p.deliver(c, 12);
    p.frames();
    p.send(1, ack(0, true));
    p.deliver(c, 13);
    p.send(1, Method::TxCommit(TxCommit {}));
    assert_eq!(
        p.calls(),
        vec![
            Call::Settle(Q, 11, Settle::Ack),
            Call::Settle(Q, 12, Settle::Ack),
            Call::Request(1, (90, 20))
        ]
    );
    p.reply(1, Reply::BarrierDone);
    p.frames();
    p.send(1, ack(3, false));
    p.send(1, ack(3, false));
    let text = "PRECONDITION_FAILED - unknown delivery tag 3";
    assert_eq!(p.frames(), vec![m(1, channel_close(406, text, 60, 80))]);
}

/// Acks taken into a transaction are unacked again after a rollback (in
/// tag order with the rest), and requeued if the channel closes first.
#[test]
fn tx_acks_come_back_on_rollback_and_close() {
    let mut p = transactional();
    let c = p.consume(1, "c1", false);
    for seq in [11, 12, 13] {
        p.deliver(c, seq);
    }
    p.frames();
    p.send(1, ack(2, false));
    p.send(1, Method::TxRollback(TxRollback {}));
    assert_eq!(p.frames(), vec![m(1, Method::TxRollbackOk(TxRollbackOk {}))]);
    // Tag 2 is unacked again: `multiple` covers it.
    p.send(1, ack(3, true));
    p.send(1, Method::TxCommit(TxCommit {}));
    assert_eq!(
        p.calls(),
        vec![
            Call::Settle(Q, 11, Settle::Ack),
            Call::Settle(Q, 12, Settle::Ack),
            Call::Settle(Q, 13, Settle::Ack),
            Call::Request(1, (90, 20))
        ]
    );
    p.reply(1, Reply::BarrierDone);
    p.frames();
    for seq in [14, 15, 16] {
        p.deliver(c, seq);
    }
    p.send(1, nack(5, false, false));
    p.send(1, Method::ChannelClose(Default::default()));
    assert_eq!(
        p.calls(),
        vec![
            Call::DropConsumer(Q, c),
            Call::Settle(Q, 14, Settle::Requeue),
            Call::Settle(Q, 15, Settle::Requeue),
            Call::Settle(Q, 16, Settle::Requeue)
        ]
    );
}

/// Channel-wide credit held by deliveries acked in a transaction is
/// freed at commit, when RabbitMQ tells its limiter.
#[test]
fn tx_acks_free_global_credit_at_commit() {
    let mut p = transactional();
    p.send(
        1,
        Method::BasicQos(BasicQos {
            prefetch_count: 1,
            global: true,
            ..Default::default()
        }),
    );
    p.frames();
    let a = p.consume(1, "a", false);
    let b = p.consume(1, "b", false);
    p.event(Event::CreditRequest {
        queue: Q,
        consumer: a,
    });
    p.deliver(a, 11);
    p.event(Event::CreditRequest {
        queue: Q,
        consumer: b,
    });
    p.calls();
    p.send(1, ack(1, false));
    assert_eq!(p.calls(), vec![]);
    p.send(1, Method::TxCommit(TxCommit {}));
    assert_eq!(
        p.calls(),
        vec![
            Call::Settle(Q, 11, Settle::Ack),
            Call::GrantCredit(Q, b, 1),
            Call::Request(1, (90, 20))
        ]
    );
}
