//! `kill -9` of a quorum queue's leader while clients publish with
//! confirms and consume, round after round (20 by default,
//! `WARREN_QUORUM_ROUNDS` to change): a checker then requires that every
//! confirmed message was consumed at least once and that nothing was
//! consumed that was never published.

use super::processes::{Proc, connect};
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const QUEUE: &str = "qk";

#[derive(Default)]
struct Record {
    /// Every id a publisher sent (confirmed or not).
    sent: HashSet<u64>,
    confirmed: HashSet<u64>,
    consumed: HashSet<u64>,
    deliveries: u64,
    /// Times the consumer was cancelled by the broker (its stream ended),
    /// and times it consumed again for any reason.
    cancels: u64,
    resubscribes: u64,
    /// Setup methods (channel.open, basic.qos, basic.consume) the broker
    /// never answered (within [`UNANSWERED`]), by node index and method.
    unanswered: Vec<(usize, &'static str)>,
    /// Delivered bodies that are no published id (their first bytes).
    bad_bodies: Vec<String>,
    /// What the consumer did, for a failure's message: its first 20
    /// steps and its last 60.
    first_steps: Vec<String>,
    timeline: std::collections::VecDeque<String>,
}

impl Record {
    fn note(&mut self, t0: Instant, what: String) {
        let step = format!("{:.1}s {what}", t0.elapsed().as_secs_f64());
        if self.first_steps.len() < 20 {
            self.first_steps.push(step);
            return;
        }
        if self.timeline.len() == 60 {
            self.timeline.pop_front();
        }
        self.timeline.push_back(step);
    }
}

/// Far beyond any answer a live broker owes: a method not answered by then
/// never will be (the client would wait forever).
const UNANSWERED: Duration = Duration::from_secs(20);

/// The nodes' AMQP URIs and which of them are up.
struct Nodes {
    uris: Vec<String>,
    up: Mutex<Vec<bool>>,
    /// Per node: times it was killed.
    kills: Vec<AtomicUsize>,
}

impl Nodes {
    /// A node that is up, starting the search at `from`.
    fn pick(&self, from: usize) -> (usize, String) {
        let up = self.up.lock().unwrap();
        for k in 0..self.uris.len() {
            let i = (from + k) % self.uris.len();
            if up[i] {
                return (i, self.uris[i].clone());
            }
        }
        (from % self.uris.len(), self.uris[from % self.uris.len()].clone())
    }
}

async fn try_connect(uri: &str) -> Option<lapin::Connection> {
    tokio::time::timeout(
        Duration::from_secs(3),
        lapin::Connection::connect(uri, lapin::ConnectionProperties::default()),
    )
    .await
    .ok()?
    .ok()
}

/// Publishes ids 0, 1, 2, ... in batches of 20 with confirms, moving to
/// another node whenever something fails.
async fn publisher(nodes: Arc<Nodes>, rec: Arc<Mutex<Record>>, stop: Arc<AtomicBool>) {
    let mut next = 0u64;
    let mut at = 1;
    while !stop.load(Ordering::SeqCst) {
        let (i, uri) = nodes.pick(at);
        at = i + 1;
        let Some(conn) = try_connect(&uri).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Ok(ch) = conn.create_channel().await else {
            continue;
        };
        if ch.confirm_select(ConfirmSelectOptions::default()).await.is_err() {
            continue;
        }
        'conn: while !stop.load(Ordering::SeqCst) {
            let mut pending = Vec::new();
            for _ in 0..20 {
                let id = next;
                next += 1;
                rec.lock().unwrap().sent.insert(id);
                match ch
                    .basic_publish(
                        "".into(),
                        QUEUE.into(),
                        BasicPublishOptions::default(),
                        id.to_string().as_bytes(),
                        lapin::BasicProperties::default().with_delivery_mode(2),
                    )
                    .await
                {
                    Ok(p) => pending.push((id, p)),
                    Err(_) => break 'conn,
                }
            }
            for (id, p) in pending {
                match tokio::time::timeout(Duration::from_secs(10), p).await {
                    Ok(Ok(c)) if c.is_ack() => {
                        rec.lock().unwrap().confirmed.insert(id);
                    }
                    Ok(Ok(_)) => {}
                    _ => break 'conn,
                }
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), conn.close(200, "bye".into())).await;
    }
}

/// Consumes and acks, consuming again (on another node if need be)
/// whenever the consumer is cancelled, fails or goes quiet.
async fn consumer(nodes: Arc<Nodes>, rec: Arc<Mutex<Record>>, stop: Arc<AtomicBool>) {
    use futures::StreamExt;
    let t0 = Instant::now();
    let note = |what: String| rec.lock().unwrap().note(t0, what);
    let mut at = 2;
    while !stop.load(Ordering::SeqCst) {
        let (i, uri) = nodes.pick(at);
        at = i + 1;
        let Some(conn) = try_connect(&uri).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let kills = nodes.kills[i].load(Ordering::SeqCst);
        let unanswered = |what: &'static str| {
            rec.lock().unwrap().unanswered.push((i, what));
        };
        let ch = match tokio::time::timeout(UNANSWERED, conn.create_channel()).await {
            Ok(Ok(ch)) => ch,
            Ok(Err(_)) => continue,
            Err(_) => {
                unanswered("channel.open");
                continue;
            }
        };
        if tokio::time::timeout(UNANSWERED, ch.basic_qos(50, BasicQosOptions::default()))
            .await
            .is_err()
        {
            unanswered("basic.qos");
            continue;
        }
        let consume = ch.basic_consume(
            QUEUE.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        );
        let mut c = match tokio::time::timeout(UNANSWERED, consume).await {
            Ok(Ok(c)) => {
                note(format!("consuming on node {}", i + 1));
                c
            }
            Ok(Err(e)) => {
                note(format!("consume on node {} refused: {e}", i + 1));
                let _ = tokio::time::timeout(Duration::from_secs(1), conn.close(200, "bye".into())).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Err(_) => {
                unanswered("basic.consume");
                let _ = tokio::time::timeout(Duration::from_secs(1), conn.close(200, "bye".into())).await;
                continue;
            }
        };
        let mut n = 0u64;
        while !stop.load(Ordering::SeqCst) {
            match tokio::time::timeout(Duration::from_secs(3), c.next()).await {
                Ok(Some(Ok(d))) => {
                    // A body that is no id would be a broker bug: kept
                    // (and failed at the end), not a panic that would end
                    // this task and stall consumption silently.
                    match std::str::from_utf8(&d.data)
                        .ok()
                        .and_then(|t| t.parse::<u64>().ok())
                    {
                        Some(id) => {
                            let mut r = rec.lock().unwrap();
                            r.consumed.insert(id);
                            r.deliveries += 1;
                        }
                        None => {
                            let bad = format!("{:?}", &d.data[..d.data.len().min(40)]);
                            note(format!("a body that is no id: {bad} ({} bytes)", d.data.len()));
                            rec.lock().unwrap().bad_bodies.push(bad);
                        }
                    }
                    n += 1;
                    match tokio::time::timeout(UNANSWERED, d.ack(BasicAckOptions::default())).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => {
                            note(format!("ack failed after {n} deliveries: {e}"));
                            break;
                        }
                        Err(_) if nodes.kills[i].load(Ordering::SeqCst) != kills => {
                            // lapin can lose a frame queued as its
                            // connection dies (the node was killed): its
                            // send never completes. Not the broker's.
                            note(format!("ack lost with node {}'s connection (killed)", i + 1));
                            break;
                        }
                        Err(_) => {
                            unanswered("basic.ack (never sent)");
                            break;
                        }
                    }
                }
                Ok(None) => {
                    rec.lock().unwrap().cancels += 1;
                    note(format!("cancelled after {n} deliveries"));
                    break;
                }
                Ok(Some(Err(e))) => {
                    note(format!("failed after {n} deliveries: {e}"));
                    break;
                }
                Err(_) => {
                    note(format!("3 s quiet after {n} deliveries"));
                    break;
                }
            }
        }
        rec.lock().unwrap().resubscribes += 1;
        let _ = tokio::time::timeout(Duration::from_secs(1), conn.close(200, "bye".into())).await;
    }
}

/// The leader of the queue as node `p` reports it (`warrenctl
/// list_queues name leader`).
fn leader(p: &Proc) -> Option<String> {
    let (ok, out) = p.ctl(&["-q", "list_queues", "name", "leader"]);
    if !ok {
        return None;
    }
    out.lines()
        .find_map(|l| {
            let mut it = l.split('\t');
            (it.next() == Some(QUEUE)).then(|| it.next().map(str::to_string))?
        })
        .filter(|l| !l.is_empty())
}

#[test]
fn kill_9_of_the_leader_round_after_round_loses_no_confirmed_message() {
    let rounds: usize = std::env::var("WARREN_QUORUM_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let mut root = tempfile::tempdir().unwrap();
    if std::env::var_os("WARREN_TEST_LOG").is_some() {
        // The nodes' logs stay for a look after a failure.
        root.disable_cleanup(true);
        eprintln!("nodes' data dirs and logs: {}", root.path().display());
    }
    let mut p: Vec<Proc> = (1..=3).map(|i| Proc::new(root.path(), i)).collect();
    let seed = format!("127.0.0.1:{}", p[0].cluster);
    let seed_name = p[0].name.clone();
    for n in &p[1..] {
        n.must(&["stop_app"]);
        n.must(&["join_cluster", "--address", &seed, &seed_name]);
        n.must(&["start_app"]);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = connect(&p[0].uri()).await;
        let ch = c.create_channel().await.unwrap();
        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
        ch.queue_declare(
            QUEUE.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            args,
        )
        .await
        .unwrap();
        let _ = c.close(200, "bye".into()).await;
    });
    let out = p[0].must(&["-q", "list_queues", "name", "type", "members"]);
    assert!(out.contains("quorum"), "{out}");
    for n in &p {
        assert!(out.contains(&n.name), "{n:?} is no member: {out}", n = n.name);
    }

    let nodes = Arc::new(Nodes {
        uris: p.iter().map(Proc::uri).collect(),
        up: Mutex::new(vec![true; 3]),
        kills: (0..3).map(|_| AtomicUsize::new(0)).collect(),
    });
    let rec = Arc::new(Mutex::new(Record::default()));
    let stop_pub = Arc::new(AtomicBool::new(false));
    let stop_con = Arc::new(AtomicBool::new(false));
    let publishing = rt.spawn(publisher(nodes.clone(), rec.clone(), stop_pub.clone()));
    let consuming = rt.spawn(consumer(nodes.clone(), rec.clone(), stop_con.clone()));
    let confirmed_now = || rec.lock().unwrap().confirmed.len();
    let killed = AtomicUsize::new(0);

    for round in 0..rounds {
        let t0 = Instant::now();
        // Wait for some confirmed traffic, then find the leader.
        let before = confirmed_now();
        let deadline = Instant::now() + Duration::from_secs(30);
        while confirmed_now() < before + 50 {
            assert!(
                Instant::now() < deadline,
                "round {round}: publishing stalled at {before}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let victim = loop {
            assert!(Instant::now() < deadline, "round {round}: no leader");
            let l = p.iter().find_map(leader);
            if let Some(i) = l.and_then(|l| p.iter().position(|n| n.name == l)) {
                break i;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        nodes.up.lock().unwrap()[victim] = false;
        nodes.kills[victim].fetch_add(1, Ordering::SeqCst);
        p[victim].kill9();
        killed.fetch_add(1, Ordering::SeqCst);
        // Publishing resumes on the others: a new leader took over.
        let before = confirmed_now();
        let deadline = Instant::now() + Duration::from_secs(30);
        while confirmed_now() < before + 50 {
            assert!(
                Instant::now() < deadline,
                "round {round}: no new leader took over (confirmed {before})"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let t_over = t0.elapsed();
        p[victim].start();
        nodes.up.lock().unwrap()[victim] = true;
        if std::env::var_os("WARREN_TEST_LOG").is_some() {
            if round == 0 {
                let log = std::fs::read_to_string(p[victim].dir.with_extension("log")).unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                eprintln!("{}", lines[lines.len().saturating_sub(25)..].join("\n"));
            }
            eprintln!(
                "round {round}: killed {} (taken over after {t_over:?}, back after {:?})",
                p[victim].name,
                t0.elapsed()
            );
        }
    }
    stop_pub.store(true, Ordering::SeqCst);
    rt.block_on(async { publishing.await.unwrap() });
    // Everything confirmed must come out.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let missing: Vec<u64> = {
            let r = rec.lock().unwrap();
            r.confirmed.difference(&r.consumed).copied().take(10).collect()
        };
        if missing.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            let views: Vec<String> = p
                .iter()
                .map(|n| {
                    n.ctl(&[
                        "-q",
                        "list_queues",
                        "name",
                        "leader",
                        "messages_ready",
                        "messages_unacknowledged",
                        "consumers",
                    ])
                    .1
                })
                .collect();
            // What the nodes said about the queue's leadership, last.
            for n in &p {
                let log = std::fs::read_to_string(n.dir.with_extension("log")).unwrap_or_default();
                let lines: Vec<&str> = log
                    .lines()
                    .filter(|l| {
                        l.contains("quorum queue") || l.contains("leader") || l.contains("cluster node")
                    })
                    .collect();
                eprintln!(
                    "---- {} (last leadership lines)\n{}",
                    n.name,
                    lines[lines.len().saturating_sub(30)..].join("\n")
                );
            }
            let r = rec.lock().unwrap();
            panic!(
                "confirmed and never consumed (first 10): {missing:?}; {} of {} confirmed consumed; queues as the nodes see them: {views:?}; \
                 methods the broker never answered (node, method): {:?}; bodies that are no id: {:?}; \
                 consumer task ended: {}; the consumer's first steps: {:#?}; its last steps: {:#?}",
                r.confirmed.intersection(&r.consumed).count(),
                r.confirmed.len(),
                r.unanswered,
                r.bad_bodies,
                consuming.is_finished(),
                r.first_steps,
                r.timeline
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    stop_con.store(true, Ordering::SeqCst);
    rt.block_on(async { consuming.await.unwrap() });
    let r = rec.lock().unwrap();
    let invented: Vec<&u64> = r.consumed.difference(&r.sent).take(10).collect();
    assert!(invented.is_empty(), "consumed but never published: {invented:?}");
    assert_eq!(killed.load(Ordering::SeqCst), rounds);
    assert!(
        r.bad_bodies.is_empty(),
        "delivered bodies that are no id: {:?}",
        r.bad_bodies
    );
    assert!(
        r.unanswered.is_empty(),
        "methods the broker never answered (node, method): {:?}",
        r.unanswered
    );
    eprintln!(
        "{rounds} leader kills: {} sent, {} confirmed, {} consumed ({} deliveries); the consumer \
         subscribed {} times, cancelled by the broker {} times",
        r.sent.len(),
        r.confirmed.len(),
        r.consumed.len(),
        r.deliveries,
        r.resubscribes,
        r.cancels
    );
}
