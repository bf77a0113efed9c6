//! A real full disk: the data dir on a small tmpfs the test mounts, filled
//! while durable queues are declared and persistent messages published.
//! Writes that hit ENOSPC are refused (the client gets an error or a
//! nack), never left half-written in the logs: once space is back, what is
//! declared and confirmed after survives `kill -9`, and so does everything
//! confirmed before.

use crate::common::ChildBroker;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Tmpfs {
    fn mount(test: &str, bytes: u64) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fs");
        std::fs::create_dir(&path).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(&path)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return crate::prereq::missing(test, "mounting a tmpfs (root)");
        }
        Some(Tmpfs { _dir: dir, path })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Fills the file system until a write fails; returns the filler's path.
fn fill(dir: &Path) -> PathBuf {
    let p = dir.join("filler");
    let mut f = std::fs::File::create(&p).unwrap();
    for size in [1 << 16, 4096, 512, 1] {
        let chunk = vec![0u8; size];
        while f.write_all(&chunk).is_ok() {}
    }
    let _ = f.sync_all();
    p
}

async fn connect(uri: &str) -> Connection {
    Connection::connect(uri, ConnectionProperties::default())
        .await
        .expect("connects")
}

/// Declares a durable queue on a fresh channel; Ok when declared.
async fn declare(conn: &Connection, name: &str) -> Result<(), lapin::Error> {
    let ch = conn.create_channel().await?;
    ch.queue_declare(
        name.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .map(|_| ())
}

/// Publishes `n` persistent messages with confirms; how many were acked
/// (a refused write is a nack or a closed channel, never an ack).
async fn publish(conn: &Connection, queue: &str, n: usize) -> usize {
    let Ok(ch) = conn.create_channel().await else {
        return 0;
    };
    if ch.confirm_select(ConfirmSelectOptions::default()).await.is_err() {
        return 0;
    }
    let mut pending = Vec::new();
    for i in 0..n {
        // 2 KiB: a few hundred fill more than the 64 KiB segment the queue
        // has reserved.
        let mut body = format!("{queue} {i} ").into_bytes();
        body.resize(2048, b'.');
        match ch
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
        {
            Ok(c) => pending.push(c),
            Err(_) => break,
        }
    }
    let mut acked = 0;
    for c in pending {
        if c.await.is_ok_and(|c| c.is_ack()) {
            acked += 1;
        }
    }
    acked
}

async fn depth(conn: &Connection, queue: &str) -> Option<u32> {
    let ch = conn.create_channel().await.ok()?;
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .ok()
    .map(|q| q.message_count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_refuses_writes_and_loses_nothing_confirmed() {
    let Some(fs) = Tmpfs::mount("full_disk_refuses_writes_and_loses_nothing_confirmed", 16 << 20) else {
        return;
    };
    let data = fs.path.join("data");
    // No disk-free alarm: the writes themselves must meet the full disk.
    let extra = ["--disk-free-limit", "0", "--segment-size", "65536"];
    let b = ChildBroker::start_with(&data, 1, 0, &extra).expect("starts");
    let conn = connect(&b.uri).await;
    declare(&conn, "before").await.unwrap();
    assert_eq!(publish(&conn, "before", 20).await, 20);

    let filler = fill(&fs.path);
    let mut declared_during = Vec::new();
    let mut refused = 0;
    // Appends fit in the last page of the log while it has room: declare
    // until a few are refused (a page holds about a hundred).
    let mut last = String::new();
    for i in 0..2000 {
        let name = format!("during-{i}");
        match declare(&conn, &name).await {
            Ok(()) => declared_during.push(name),
            Err(_) => {
                refused += 1;
                last = name;
                if refused == 3 {
                    break;
                }
            }
        }
    }
    assert!(refused > 0, "a full disk refused no durable declare");
    // Persistent messages to a queue whose store cannot write are not
    // confirmed.
    let conn2 = connect(&b.uri).await;
    declare(&conn2, "before").await.unwrap();
    let acked_full = publish(&conn2, "before", 200).await;
    assert!(acked_full < 200, "every write on a full disk was confirmed");

    std::fs::remove_file(&filler).unwrap();
    let conn3 = connect(&b.uri).await;
    declare(&conn3, "after")
        .await
        .expect("declares once there is space");
    assert_eq!(publish(&conn3, "after", 20).await, 20);
    b.kill9();

    let b = ChildBroker::start_with(&data, 1, 0, &extra).expect("restarts after a full disk");
    let conn = connect(&b.uri).await;
    assert_eq!(
        depth(&conn, "after").await,
        Some(20),
        "confirmed after the disk filled"
    );
    let before = depth(&conn, "before").await.expect("the old queue is there");
    assert!(
        before as usize >= 20 + acked_full,
        "{before} messages in 'before', {} were confirmed",
        20 + acked_full
    );
    for name in &declared_during {
        assert!(
            depth(&conn, name).await.is_some(),
            "{name} was declared, then lost"
        );
    }
    // A queue whose declare was refused is not half there: it can be
    // declared now.
    assert_eq!(
        depth(&conn, &last).await,
        None,
        "{last} was refused, yet it is there"
    );
    declare(&conn, &last).await.unwrap();
}
