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
