use crate::common::{self, ChildBroker};
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

async fn get_all(ch: &Channel, q: &str) -> Vec<(String, bool, u64)> {
    let mut v = Vec::new();
    while let Some(m) = ch
        .basic_get(q.into(), BasicGetOptions { no_ack: false })
        .await
        .unwrap()
    {
        v.push((
            String::from_utf8(m.delivery.data.clone()).unwrap(),
            m.delivery.redelivered,
            m.delivery.delivery_tag,
        ));
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_topology_survives_and_transient_state_does_not() {
    let dir = tempfile::tempdir().unwrap();
    {
        let h = common::start_in(dir.path(), 2);
        let c = common::connect(&common::uri_of(&h)).await;
        let ch = c.create_channel().await.unwrap();
        let mut args = FieldTable::default();
        args.insert("x-message-ttl".into(), AMQPValue::LongInt(60_000));
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        ch.queue_declare("dq".into(), durable, args).await.unwrap();
        ch.queue_declare("tq".into(), QueueDeclareOptions::default(), FieldTable::default())
            .await
            .unwrap();
        let dx = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        ch.exchange_declare("dx".into(), lapin::ExchangeKind::Topic, dx, FieldTable::default())
            .await
            .unwrap();
        ch.exchange_declare(
            "tx".into(),
            lapin::ExchangeKind::Fanout,
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.queue_bind(
            "dq".into(),
            "dx".into(),
            "a.#".into(),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.queue_bind(
            "tq".into(),
            "dx".into(),
            "b.#".into(),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.confirm_select(Default::default()).await.unwrap();
        for (rk, props, body) in [
            ("a.1", persistent(), "p1"),
            ("a.2", BasicProperties::default(), "t1"),
            ("b.1", persistent(), "p-on-transient-queue"),
            ("a.3", persistent(), "p2"),
        ] {
            let c = ch
                .basic_publish("dx".into(), rk.into(), Default::default(), body.as_bytes(), props)
                .await
                .unwrap()
                .await
                .unwrap();
            assert!(c.is_ack());
        }
        h.shutdown();
    }
    let h = common::start_in(dir.path(), 3);
    let c = common::connect(&common::uri_of(&h)).await;
    let ch = c.create_channel().await.unwrap();
    let passive = QueueDeclareOptions {
        passive: true,
        durable: true,
        ..Default::default()
    };
    let q = ch
        .queue_declare("dq".into(), passive, FieldTable::default())
        .await
        .unwrap();
    assert_eq!(
        q.message_count(),
        2,
        "persistent messages survive, transient ones do not"
    );
    let got: Vec<String> = get_all(&ch, "dq").await.into_iter().map(|m| m.0).collect();
    assert_eq!(got, vec!["p1", "p2"]);
    // The binding survived: routing still works after the restart.
    ch.basic_publish(
        "dx".into(),
        "a.9".into(),
        Default::default(),
        b"after",
        persistent(),
    )
    .await
    .unwrap();
    let mut tries = 0;
    let m = loop {
        if let Some(m) = ch
            .basic_get("dq".into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            break m;
        }
        tries += 1;
        assert!(tries < 100);
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(m.delivery.data, b"after");
    // Redeclaring with the same arguments works; different ones are refused.
    let mut args = FieldTable::default();
    args.insert("x-message-ttl".into(), AMQPValue::LongInt(1));
    let err = ch
        .queue_declare(
            "dq".into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            args,
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("PRECONDITION_FAILED - inequivalent arg"),
        "{err}"
    );
    let ch = c.create_channel().await.unwrap();
    let tq = ch
        .queue_declare(
            "tq".into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await;
    assert!(tq.is_err(), "non-durable queue is gone");
    let ch = c.create_channel().await.unwrap();
    let tx = ch
        .exchange_declare(
            "tx".into(),
            lapin::ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await;
    assert!(tx.is_err(), "non-durable exchange is gone");
}

/// What a queue must hold, as the test's model sees it.
#[derive(Default)]
struct Model {
    /// Confirmed and not acked, in queue order per publisher.
    must: HashSet<String>,
    /// Acked in a committed transaction: must never come back.
    gone: HashSet<String>,
    /// Published but unconfirmed when the broker died: may or may not be there.
    maybe: HashSet<String>,
}

fn seq_of(m: &str) -> (String, u64) {
    let (p, s) = m.rsplit_once('-').unwrap();
    (p.to_string(), s.parse().unwrap())
}

async fn publisher(
    uri: String,
    id: String,
    queues: [&'static str; 2],
    stop: Instant,
) -> (Vec<String>, Vec<String>) {
    let (mut confirmed, mut unconfirmed) = (Vec::new(), Vec::new());
    // The broker may be killed before the publisher even got going.
    let Ok(conn) = lapin::Connection::connect(&uri, Default::default()).await else {
        return (confirmed, unconfirmed);
    };
    let Ok(ch) = conn.create_channel().await else {
        return (confirmed, unconfirmed);
    };
    if ch.confirm_select(Default::default()).await.is_err() {
        return (confirmed, unconfirmed);
    }
    let mut window = VecDeque::new();
    let mut seq = 0u64;
    // A cap keeps each round's verification short in release builds.
    const MAX_PER_ROUND: u64 = 3000;
    loop {
        if Instant::now() < stop && seq < MAX_PER_ROUND && window.len() < 64 {
            let body = format!("{id}-{seq}");
            let q = queues[(seq % 2) as usize];
            seq += 1;
            match ch
                .basic_publish(
                    "".into(),
                    q.into(),
                    Default::default(),
                    body.as_bytes(),
                    persistent(),
                )
                .await
            {
                Ok(c) => window.push_back((body, c)),
                Err(_) => {
                    unconfirmed.push(body);
                    break;
                }
            }
            continue;
        }
        let Some((body, c)) = window.pop_front() else {
            break;
        };
        match c.await {
            Ok(c) if c.is_ack() => confirmed.push(body),
            _ => {
                unconfirmed.push(body);
                break;
            }
        }
    }
    unconfirmed.extend(window.into_iter().map(|(b, _)| b));
    (confirmed, unconfirmed)
}

/// Publishers with confirms, kill -9 at a random moment, restart, check:
/// every confirmed message is there exactly once, in FIFO order per
/// publisher, and messages acked in committed transactions never return.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_loses_no_confirmed_message() {
    let seed = std::env::var("WARREN_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("crash test seed {seed} (WARREN_CRASH_SEED to replay)");
    let mut rng = seed | 1;
    let mut rand = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let (_tmp, data) = common::temp_data_dir();
    let queues = ["crash-a", "crash-b"];
    let mut models: HashMap<&str, Model> = queues.iter().map(|q| (*q, Model::default())).collect();
    let rounds = 6;
    let mut total_confirmed = 0;
    for round in 0..rounds {
        let broker = ChildBroker::start(&data, 2);
        let conn = common::connect(&broker.uri).await;
        let ch = conn.create_channel().await.unwrap();
        for q in queues {
            ch.queue_declare(
                q.into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        }
        // Verify what survived, then ack (and commit) a random part of it.
        ch.tx_select().await.unwrap();
        for q in queues {
            let got = get_all(&ch, q).await;
            let model = models.get_mut(q).unwrap();
            let mut seen = HashSet::new();
            let mut last: HashMap<String, u64> = HashMap::new();
            for (m, _, _) in &got {
                assert!(
                    seen.insert(m.clone()),
                    "round {round}: {m} delivered twice from {q}"
                );
                assert!(
                    !model.gone.contains(m),
                    "round {round}: acked {m} came back in {q}"
                );
                assert!(
                    model.must.contains(m) || model.maybe.contains(m),
                    "round {round}: unknown {m} in {q}"
                );
                let (p, s) = seq_of(m);
                if let Some(prev) = last.insert(p.clone(), s) {
                    assert!(
                        prev < s,
                        "round {round}: FIFO broken in {q}: {p} {prev} before {s}"
                    );
                }
            }
            for m in &model.must {
                assert!(seen.contains(m), "round {round}: confirmed {m} lost from {q}");
            }
            // Messages that made it now must stay.
            model.must = seen.clone();
            model.maybe.clear();
            let mut acked = Vec::new();
            for (m, _, tag) in &got {
                if rand(3) == 0 {
                    ch.basic_ack(*tag, BasicAckOptions::default()).await.unwrap();
                    acked.push(m.clone());
                }
            }
            ch.tx_commit().await.unwrap();
            for m in acked {
                model.must.remove(&m);
                model.gone.insert(m);
            }
        }
        // Unacked gets go back to their queues when the channel closes.
        ch.close(200, "done".into()).await.unwrap();
        conn.close(200, "done".into()).await.unwrap();
        if round == rounds - 1 {
            break;
        }
        // Load, then kill -9 at a random point while publishing.
        let run_for = Duration::from_millis(40 + rand(400));
        let stop = Instant::now() + Duration::from_secs(30);
        let tasks: Vec<_> = (0..3)
            .map(|p| {
                tokio::spawn(publisher(
                    broker.uri.clone(),
                    format!("r{round}p{p}"),
                    queues,
                    stop,
                ))
            })
            .collect();
        tokio::time::sleep(run_for).await;
        broker.kill9();
        for t in tasks {
            let (confirmed, unconfirmed) = t.await.unwrap();
            total_confirmed += confirmed.len();
            for m in confirmed {
                let q = queues[(seq_of(&m).1 % 2) as usize];
                models.get_mut(q).unwrap().must.insert(m);
            }
            for m in unconfirmed {
                let q = queues[(seq_of(&m).1 % 2) as usize];
                models.get_mut(q).unwrap().maybe.insert(m);
            }
        }
    }
    assert!(
        total_confirmed > 0,
        "the test confirmed nothing: it proved nothing"
    );
    eprintln!("crash test: {total_confirmed} confirmed messages over {rounds} rounds");
}

/// Consuming and acking a large backlog gives the disk space back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_use_follows_the_backlog() {
    let (_tmp, data) = common::temp_data_dir();
    let mut cfg = warren::Config {
        bind: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        port: 0,
        shards: 1,
        data_dir: data.clone(),
        ..Default::default()
    };
    cfg.limits.segment_size = 256 * 1024;
    let h = warren::start(cfg).unwrap();
    let c = common::connect(&common::uri_of(&h)).await;
    let ch = c.create_channel().await.unwrap();
    ch.queue_declare(
        "big".into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    let body = vec![7u8; 1000];
    let mut pending = VecDeque::new();
    for _ in 0..5000 {
        pending.push_back(
            ch.basic_publish("".into(), "big".into(), Default::default(), &body, persistent())
                .await
                .unwrap(),
        );
        if pending.len() > 200 {
            assert!(pending.pop_front().unwrap().await.unwrap().is_ack());
        }
    }
    for p in pending {
        assert!(p.await.unwrap().is_ack());
    }
    let dir_size = |p: &std::path::Path| -> u64 {
        walk(p)
            .iter()
            .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
            .sum()
    };
    let full = dir_size(&data.join("queues"));
    assert!(full > 5_000_000, "5 MB of messages on disk, got {full}");
    ch.basic_qos(500, BasicQosOptions::default()).await.unwrap();
    let mut consumer = ch
        .basic_consume(
            "big".into(),
            "c".into(),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    use futures_lite::StreamExt;
    for i in 0..5000 {
        let d = consumer.next().await.unwrap().unwrap();
        if i % 100 == 99 {
            ch.basic_ack(d.delivery_tag, BasicAckOptions { multiple: true })
                .await
                .unwrap();
        }
    }
    ch.basic_qos(1, BasicQosOptions::default()).await.unwrap();
    let empty = dir_size(&data.join("queues"));
    assert!(
        empty <= 512 * 1024,
        "after acking everything only the current segment remains, got {empty}"
    );
}

fn walk(p: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let path = e.path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}
