//! Persistent messages on durable queues: deferred to the end-of-step
//! store write, confirmed only after the sync that covers them (group
//! commit); failed syncs and a full disk; recovery after a process crash
//! and after a power loss, on the simulated disk.

use super::*;

/// A persistent message for a durable queue waits for the store write,
/// and its confirm for the sync after it.
#[test]
fn persistent_confirm_waits_for_the_write_and_the_sync() {
    let mut w = W::new();
    let q = w.declare_durable("q", FieldTable::new());
    assert_eq!(w.publish_confirmed(q, persistent("a"), 1, 0), Enqueued::Deferred);
    assert!(w.fx.events.is_empty());
    assert!(w.owner.has_work(), "the write is left for the end of the step");
    assert!(!w.owner.wants_sync(), "nothing written yet");
    assert_eq!(w.ready(q), 1, "counted while it waits");
    assert_eq!(
        w.owner.queue(q).unwrap().q.ready_count(),
        0,
        "not in the engine yet"
    );
    w.step(0);
    assert!(w.fx.events.is_empty(), "written, not synced: no confirm");
    assert!(w.owner.wants_sync());
    assert_eq!(w.owner.queue(q).unwrap().q.ready_count(), 1);
    // The new segment and the queue's directory.
    assert_eq!(w.sync(), (2, 1));
    assert_eq!(w.fx.take(), ["confirm 1 ack"]);
    assert_eq!(w.sync(), (0, 0), "nothing left to sync");
    // An Item::Publish from another shard: the same, no confirm until the
    // sync.
    w.publish_item(q, persistent("b"), 2, 0);
    w.step(0);
    assert!(w.fx.events.is_empty());
    assert_eq!(w.sync(), (1, 1), "the segment only");
    assert_eq!(w.fx.take(), ["confirm 2 ack"]);
}

/// A transient message behind a persistent one waits with it (FIFO), and
/// is confirmed at the write, not at the sync.
#[test]
fn transient_messages_behind_pending_ones_keep_their_order() {
    let mut w = W::new();
    let q = w.declare_durable("q", FieldTable::new());
    w.publish_item(q, persistent("p"), 1, 0);
    w.publish_item(q, transient("t"), 2, 0);
    assert!(w.fx.events.is_empty());
    w.step(0);
    assert_eq!(w.fx.take(), ["confirm 2 ack"]);
    w.sync();
    assert_eq!(w.fx.take(), ["confirm 1 ack"]);
    assert_eq!(w.drain(q, 0), ["p", "t"]);
    // With nothing pending, a transient message goes in at once.
    assert_eq!(w.publish_confirmed(q, transient("now"), 3, 0), Enqueued::Now);
    w.publish_item(q, transient("now2"), 4, 0);
    assert_eq!(w.fx.take(), ["confirm 4 ack"]);
}

/// Transient queues keep persistent messages in memory: confirmed at once.
#[test]
fn persistent_messages_on_transient_queues_are_confirmed_at_once() {
    let mut w = W::new();
    let q = w.declare("q", FieldTable::new());
    w.publish_item(q, persistent("a"), 1, 0);
    assert_eq!(w.fx.take(), ["confirm 1 ack"]);
    w.step(0);
    assert!(!w.owner.wants_sync());
    assert_eq!(w.sync(), (0, 0));
    assert!(!w.store_exists(q));
}

/// A failed sync nacks the confirms waiting on that queue and makes it
/// refuse persistent messages from then on; other queues keep
/// confirming, and the failed one still takes transient messages.
#[test]
fn failed_sync_nacks_and_poisons_only_that_queue() {
    let mut w = W::new();
    let a = w.declare_durable("a", FieldTable::new());
    let b = w.declare_durable("b", FieldTable::new());
    w.publish_item(a, persistent("a1"), 1, 0);
    w.publish_item(b, persistent("b1"), 2, 0);
    w.step(0);
    w.sync_failing(&[a]);
    assert_eq!(w.fx.take(), ["confirm 1 nack", "confirm 2 ack"]);
    assert_eq!(w.disk.sync_counts().1, 2, "a's segment and directory failed");
    assert!(w.owner.queue(a).unwrap().store_failed);
    assert!(!w.owner.queue(b).unwrap().store_failed);

    assert_eq!(w.publish(a, persistent("a2"), 0), Enqueued::Refused);
    w.publish_item(a, persistent("a3"), 3, 0);
    w.publish_item(a, transient("a4"), 4, 0);
    w.publish_item(b, persistent("b2"), 5, 0);
    assert_eq!(w.fx.take(), ["confirm 3 nack", "confirm 4 ack"]);
    w.step(0);
    w.sync();
    assert_eq!(w.fx.take(), ["confirm 5 ack"]);
    // The nacked message had been written and enqueued before the sync
    // failed: it stays (a nack means "may be lost", not "dropped").
    assert_eq!(w.drain(a, 0), ["a1", "a4"]);
    assert_eq!(w.drain(b, 0), ["b1", "b2"]);
}

/// Two group commits on their way at once: the first fails for a queue,
/// the second (its files taken before the failure was known) succeeds.
/// The second's confirms for that queue are nacks: after a failed fsync
/// the kernel may have dropped the pages a later fsync "succeeds" over
/// (found by the simulation, seed 20172).
#[test]
fn a_sync_after_a_failed_one_confirms_nothing_of_that_queue() {
    let mut w = W::new();
    let a = w.declare_durable("a", FieldTable::new());
    let b = w.declare_durable("b", FieldTable::new());
    w.publish_item(a, persistent("a1"), 1, 0);
    w.step(0);
    let first = w.owner.take_sync();
    w.publish_item(a, persistent("a2"), 2, 0);
    w.publish_item(b, persistent("b1"), 3, 0);
    w.step(0);
    let second = w.owner.take_sync();
    w.owner.synced(first.waiters, &[a], &mut w.fx);
    assert_eq!(w.fx.take(), ["confirm 1 nack"]);
    w.owner.synced(second.waiters, &[], &mut w.fx);
    assert_eq!(w.fx.take(), ["confirm 2 nack", "confirm 3 ack"]);
}

/// A full disk refuses the write: the confirm is a nack, the message is
/// not taken, and the queue is not poisoned — once there is room again,
/// persistent messages are taken and confirmed.
#[test]
fn full_disk_nacks_without_poisoning() {
    let mut w = W::new();
    let q = w.declare_durable("q", FieldTable::new());
    assert_eq!(w.disk.used(), 0);
    w.disk.set_capacity(Some(0));
    w.publish_item(q, persistent("a"), 1, 0);
    assert!(w.fx.events.is_empty());
    w.step(0);
    assert_eq!(w.fx.take(), ["confirm 1 nack"]);
    assert_eq!(w.ready(q), 0);
    assert!(!w.owner.queue(q).unwrap().store_failed);
    w.disk.set_capacity(None);
    w.publish_item(q, persistent("b"), 2, 0);
    w.step(0);
    w.sync();
    assert_eq!(w.fx.take(), ["confirm 2 ack"]);
    assert_eq!(w.drain(q, 0), ["b"]);
}

/// A batch the disk cannot take whole is nacked whole — and must then not
/// come back after a restart either (the write is rolled back, as the
/// storage contract says of every write).
#[test]
fn a_partly_written_batch_is_not_recovered_after_a_nack() {
    let mut cfg = owner_config();
    cfg.segment_size = 4096;
    let mut w = W::with_config(cfg);
    let q = w.declare_durable("q", FieldTable::new());
    let big = "x".repeat(3000);
    w.publish_item(q, persistent(&big), 1, 0);
    w.step(0);
    w.sync();
    assert_eq!(w.fx.take(), ["confirm 1 ack"]);
    assert_eq!(w.get(q, true, 0).len(), 1);
    w.step(0);
    // Room for the first segment only: "y" fits in it, "z" needs a second.
    w.disk.set_capacity(Some(w.disk.used()));
    w.publish_item(q, persistent("y"), 2, 0);
    w.publish_item(q, persistent(&"z".repeat(3000)), 3, 0);
    w.step(0);
    assert_eq!(w.fx.take(), ["confirm 2 nack", "confirm 3 nack"]);
    assert_eq!(w.ready(q), 0);
    w.disk.set_capacity(None);
    w.step(0);
    w.sync();
    w.restart();
    assert_eq!(w.drain(q, 0), Vec::<String>::new(), "nacked, and not taken");
}

/// A process crash (`kill -9`) keeps the page cache: every message not
/// acked comes back, those delivered before marked redelivered.
#[test]
fn process_crash_recovers_unacked_messages_with_redelivered() {
    let mut w = W::new();
    let q = w.declare_durable("q", FieldTable::new());
    for i in 0..5 {
        w.publish(q, persistent(&i.to_string()), 0);
    }
    w.step(0);
    w.consume(q, spec(1, 3, false), 0);
    w.step(0);
    assert_eq!(
        w.fx.take(),
        [
            "consume-ok q1 c1",
            "deliver c1 '0'",
            "deliver c1 '1'",
            "deliver c1 '2'"
        ]
    );
    w.settle(q, 1, Settle::Ack, 0);
    w.step(0);
    assert_eq!(w.fx.take(), ["deliver c1 '3'"]);
    // Never synced: a process crash does not need it.
    w.restart();
    assert_eq!(w.get(q, false, 0), ["get-ok '1' remaining=3 redelivered"]);
    assert_eq!(w.get(q, false, 0), ["get-ok '2' remaining=2 redelivered"]);
    assert_eq!(w.get(q, false, 0), ["get-ok '3' remaining=1 redelivered"]);
    assert_eq!(w.get(q, false, 0), ["get-ok '4' remaining=0"]);
}

/// Settled and dropped messages do not come back: acks, rejects, no-ack
/// deliveries and drop-head all remove them from the store.
#[test]
fn process_crash_does_not_bring_back_what_left_the_queue() {
    let mut w = W::new();
    let q = w.declare_durable("q", table(&[("x-max-length", int(4))]));
    for i in 0..6 {
        w.publish(q, persistent(&i.to_string()), 0);
    }
    w.step(0);
    // '0' and '1' were dropped (drop-head); get '2' without ack, '3' and
    // '4' with ack, then ack '3' and reject '4'.
    assert_eq!(w.get(q, true, 0), ["get-ok '2' remaining=3 no-ack"]);
    assert_eq!(w.get(q, false, 0), ["get-ok '3' remaining=2"]);
    assert_eq!(w.get(q, false, 0), ["get-ok '4' remaining=1"]);
    w.settle(q, 4, Settle::Ack, 0);
    w.settle(q, 5, Settle::Reject { requeue: false }, 0);
    w.step(0);
    w.restart();
    assert_eq!(w.drain(q, 0), ["5"]);
}

/// A power loss keeps only what was synced (and, torn, maybe some of
/// what was written after): every message whose confirm was released
/// comes back, in order, and nothing else but unconfirmed messages, in
/// order. Over several disk seeds, unsynced messages are lost in some.
#[test]
fn power_loss_keeps_every_confirmed_message() {
    let mut lost_some = false;
    for seed in 1..=16 {
        let mut w = W::on_disk(SimDisk::new(seed));
        let q = w.declare_durable("q", FieldTable::new());
        for seq in 1..=3 {
            w.publish_item(q, persistent(&format!("c{seq}")), seq, 0);
        }
        w.step(0);
        w.sync();
        assert_eq!(w.fx.take(), ["confirm 1 ack", "confirm 2 ack", "confirm 3 ack"]);
        for seq in 4..=6 {
            w.publish_item(q, persistent(&format!("u{seq}")), seq, 0);
        }
        w.step(0);
        assert!(w.fx.events.is_empty(), "not synced: not confirmed");
        w.power_loss();
        let got = w.drain(q, 0);
        assert_eq!(got[..3], ["c1", "c2", "c3"], "seed {seed}");
        let rest: Vec<&str> = got[3..].iter().map(String::as_str).collect();
        let mut unconfirmed = ["u4", "u5", "u6"].into_iter();
        assert!(
            rest.iter().all(|m| unconfirmed.any(|u| u == *m)),
            "seed {seed}: only unconfirmed messages, in order: {rest:?}"
        );
        lost_some |= rest.len() < 3;
    }
    assert!(lost_some, "the power losses never dropped an unsynced write");
}

/// A message removed (acked) and synced stays gone after a power loss.
#[test]
fn power_loss_does_not_bring_back_synced_acks() {
    let mut w = W::new();
    let q = w.declare_durable("q", FieldTable::new());
    for i in 0..3 {
        w.publish(q, persistent(&i.to_string()), 0);
    }
    w.step(0);
    w.sync();
    assert_eq!(w.drain(q, 0), ["0", "1", "2"]);
    w.step(0);
    assert!(w.owner.wants_sync(), "the new ack log's directory entry");
    assert_eq!(w.sync(), (1, 0), "the directory, not the ack log");
    assert_eq!(w.get(q, true, 0), ["get-empty"]);
    w.publish(q, persistent("3"), 0);
    w.step(0);
    assert_eq!(w.drain(q, 0), ["3"]);
    w.step(0);
    assert!(w.owner.wants_sync(), "the message");
    assert_eq!(w.sync(), (1, 0), "the segment, not the ack log");
    assert!(!w.owner.wants_sync(), "acks alone wait for the sweep");
    w.sweep(0);
    assert!(w.owner.wants_sync(), "the sweep makes the written acks due");
    assert_eq!(w.sync(), (1, 0), "the ack log");
    assert_eq!(w.sync(), (0, 0));
    w.power_loss();
    assert_eq!(w.drain(q, 0), Vec::<String>::new());
}

/// Acks not yet synced may come back after a power loss, as redeliveries
/// (at-least-once); after a process crash they never do (the page cache
/// keeps them).
#[test]
fn unsynced_acks_come_back_only_after_a_power_loss() {
    let mut came_back = false;
    for seed in 1..=16 {
        let mut w = W::on_disk(SimDisk::new(seed));
        let q = w.declare_durable("q", FieldTable::new());
        for i in 0..3 {
            w.publish(q, persistent(&i.to_string()), 0);
        }
        w.step(0);
        w.sync();
        assert_eq!(w.drain(q, 0), ["0", "1", "2"]);
        w.step(0);
        w.restart();
        assert_eq!(
            w.drain(q, 0),
            Vec::<String>::new(),
            "seed {seed}: a process crash"
        );
        w.step(0);
        w.power_loss();
        let got = w.drain(q, 0);
        // The ack log keeps a prefix of what was written: the rest of the
        // messages come back, in order.
        let all = ["0", "1", "2"];
        assert!(
            got.len() <= 3 && got == all[3 - got.len()..],
            "seed {seed}: {got:?}"
        );
        came_back |= !got.is_empty();
    }
    assert!(came_back, "no power loss dropped an unsynced ack");
}

/// A delivery mark that was synced (with the directory entry of its ack
/// log: here a new segment dirties the directory) survives a power loss.
#[test]
fn power_loss_keeps_synced_delivery_marks() {
    let mut cfg = owner_config();
    cfg.segment_size = 4096;
    let mut w = W::with_config(cfg);
    let q = w.declare_durable("q", FieldTable::new());
    w.publish(q, persistent("a"), 0);
    w.step(0);
    w.sync();
    assert_eq!(w.get(q, false, 0), ["get-ok 'a' remaining=0"]);
    w.publish(q, persistent(&"b".repeat(4064)), 0);
    w.step(0);
    w.sweep(0);
    assert_eq!(w.sync(), (3, 0), "the ack log, the new segment, the directory");
    w.power_loss();
    assert_eq!(w.get(q, true, 0), ["get-ok 'a' remaining=1 redelivered no-ack"]);
    assert_eq!(w.drain(q, 0), ["b".repeat(4064)]);
}

/// A recovered message keeps its per-message TTL, counted from when it
/// was stored, not from the restart.
#[test]
fn recovered_messages_expire_from_their_original_time() {
    let mut w = W::new();
    let q = w.declare_durable("q", FieldTable::new());
    let props = BasicProperties {
        delivery_mode: Some(2),
        expiration: Some(ShortStr::from_static("500")),
        ..Default::default()
    };
    w.publish(q, message("", "q", &props, "a"), 1_000);
    w.step(1_000);
    w.restart();
    w.owner.sweep(&w.topo, &mut w.fx, 1_499);
    assert_eq!(w.ready(q), 1);
    w.owner.sweep(&w.topo, &mut w.fx, 1_500);
    assert_eq!(w.ready(q), 0);
}

/// A store that cannot be opened: the owner reports it, and the queue
/// refuses persistent messages (transient ones still go in).
#[test]
fn a_store_that_cannot_be_opened_refuses_persistent_messages() {
    let mut w = W::new();
    w.disk.create_dir_all(&data_dir().join("queues")).unwrap();
    w.disk
        .write_synced(&data_dir().join("queues").join("1"), b"not a directory")
        .unwrap();
    let q = w.declare_durable("q", FieldTable::new());
    assert_eq!(
        w.owner.take_boot_error().as_deref(),
        Some("cannot open the store of queue 'q' at /data/queues/1: no such directory")
    );
    assert_eq!(w.owner.take_boot_error(), None, "taken");
    assert!(w.owner.queue(q).unwrap().store_failed);
    w.publish_item(q, persistent("p"), 1, 0);
    w.publish_item(q, transient("t"), 2, 0);
    assert_eq!(w.fx.take(), ["confirm 1 nack", "confirm 2 ack"]);
}

/// Segments roll over at the segment size, and a fully acked segment that
/// is not the current one is deleted.
#[test]
fn fully_acked_segments_are_deleted() {
    let mut cfg = owner_config();
    cfg.segment_size = 4096;
    let mut w = W::with_config(cfg);
    let q = w.declare_durable("q", FieldTable::new());
    let body = "x".repeat(1500);
    for _ in 0..6 {
        w.publish(q, persistent(&body), 0);
    }
    w.step(0);
    let segments = |w: &W| w.owner.queue(q).unwrap().store.as_ref().unwrap().segment_count();
    assert_eq!(segments(&w), 3, "two 1.5 KB records per 4 KB segment");
    assert_eq!(w.owner.queue(q).unwrap().disk_bytes(), 3 * 4096);
    assert_eq!(w.drain(q, 0).len(), 6);
    w.step(0);
    assert_eq!(segments(&w), 1, "the current one stays");
    assert_eq!(w.owner.queue(q).unwrap().disk_bytes(), 4096);
}

/// A persistent message that expires leaves the store (and is
/// dead-lettered persistent).
#[test]
fn expired_persistent_messages_leave_the_store() {
    let mut w = W::new();
    with_dead_letter_queue(&mut w);
    let q = w.declare_durable("q", dlx_args("dlx", &[("x-message-ttl", int(100))]));
    w.publish(q, persistent("old"), 0);
    w.step(0);
    w.publish(q, persistent("new"), 50);
    w.step(50);
    w.owner.sweep(&w.topo, &mut w.fx, 100);
    assert_eq!(
        w.fx.take_items(),
        ["to 2: publish q1 'old' ex='dlx' rk='q' persistent"]
    );
    w.step(100);
    w.restart();
    w.owner.sweep(&w.topo, &mut w.fx, 100);
    assert_eq!(w.drain(q, 100), ["new"]);
}
