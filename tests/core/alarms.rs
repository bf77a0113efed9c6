//! Resource alarms as RabbitMQ raises and clears them.

use crate::common::{self, ChildBroker};
use lapin::BasicProperties;
use lapin::options::*;
use lapin::types::FieldTable;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..1500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

/// The memory alarm goes on when messages fill memory past the watermark,
/// blocks the publisher at its next publish, and clears once a purge frees
/// that memory (it used to compare resident memory, which the allocator
/// keeps after a purge, so it never cleared).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_alarm_clears_after_a_purge() {
    let (_d, dir) = common::temp_data_dir();
    let watermark = 64u64 << 20;
    let fraction = watermark as f64 / warren::config::physical_memory() as f64;
    let b = ChildBroker::start_with(
        &dir,
        1,
        0,
        &["--vm-memory-high-watermark", &format!("{fraction:.9}")],
    )
    .expect("warren starts");
    let publisher = common::connect(&b.uri).await;
    let ch = publisher.create_channel().await.unwrap();
    ch.queue_declare(
        "big".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    // Small messages, as applications send: freed, their memory stays
    // with the allocator (large ones are unmapped at once). Published from
    // a task: once blocked, a publish waits for the socket.
    let stop = Arc::new(AtomicBool::new(false));
    let publishing = tokio::spawn({
        let (ch, stop) = (ch.clone(), stop.clone());
        async move {
            let body = vec![7u8; 4096];
            for i in 0..100_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                ch.basic_publish(
                    "".into(),
                    "big".into(),
                    BasicPublishOptions::default(),
                    &body,
                    BasicProperties::default(),
                )
                .await
                .unwrap();
                if i % 256 == 0 {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        }
    });
    until("connection.blocked", || publisher.status().blocked()).await;
    stop.store(true, Ordering::Relaxed);

    let other = common::connect(&b.uri).await;
    let och = other.create_channel().await.unwrap();
    let purged = och
        .queue_purge("big".into(), QueuePurgeOptions::default())
        .await
        .unwrap();
    assert!(purged > 0);
    until("connection.unblocked", || !publisher.status().blocked()).await;
    tokio::time::timeout(Duration::from_secs(30), publishing)
        .await
        .expect("the blocked publish went through")
        .unwrap();

    // And publishing goes through again.
    let ch = publisher.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    let c = ch
        .basic_publish(
            "".into(),
            "big".into(),
            BasicPublishOptions::default(),
            b"after",
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(c.is_ack());
}

/// Below the disk free limit (RabbitMQ's `disk_free_limit`) publishers are
/// blocked at their next publish; once there is room again (here: the
/// limit is lowered, as `set_disk_free_limit` does) they resume, and the
/// blocked publish is confirmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_alarm_blocks_publishers_until_there_is_room() {
    let b = common::start(1);
    let admin = b.handle.admin();
    let c = b.connect().await;
    let ch = c.create_channel().await.unwrap();
    ch.queue_declare("d".into(), QueueDeclareOptions::default(), FieldTable::default())
        .await
        .unwrap();
    ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    admin.set_disk_free_limit(u64::MAX);
    until("the disk alarm", || {
        b.handle.stats().disk_alarm.load(Ordering::Relaxed)
    })
    .await;
    let publishing = tokio::spawn({
        let ch = ch.clone();
        async move {
            ch.basic_publish(
                "".into(),
                "d".into(),
                BasicPublishOptions::default(),
                b"while low on disk",
                BasicProperties::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap()
        }
    });
    until("connection.blocked", || c.status().blocked()).await;
    // Nothing of the blocked connection was processed (asked on another).
    let other = b.connect().await;
    let och = other.create_channel().await.unwrap();
    let got = och
        .basic_get("d".into(), BasicGetOptions::default())
        .await
        .unwrap();
    assert!(got.is_none(), "a message was published while blocked");
    admin.set_disk_free_limit(0);
    until("connection.unblocked", || !c.status().blocked()).await;
    let confirm = tokio::time::timeout(Duration::from_secs(30), publishing)
        .await
        .expect("the blocked publish went through")
        .unwrap();
    assert!(confirm.is_ack());
}
