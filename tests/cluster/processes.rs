//! A cluster of `warren` processes joined with `warrenctl`, as an operator
//! does it, and `kill -9`: a consuming node lost with unacked deliveries,
//! and the queue's own node killed and restarted from its data dir.

use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SECRET: &str = "process-cluster-secret";

use super::common::free_port;

pub(super) struct Proc {
    pub(super) name: String,
    pub(super) dir: PathBuf,
    pub(super) amqp: u16,
    pub(super) mgmt: u16,
    pub(super) cluster: u16,
    pub(super) child: Option<Child>,
}

impl Proc {
    pub(super) fn new(root: &Path, i: usize) -> Proc {
        let mut p = Proc {
            name: format!("p{i}@127.0.0.1"),
            dir: root.join(format!("p{i}")),
            amqp: free_port(),
            mgmt: free_port(),
            cluster: free_port(),
            child: None,
        };
        p.start();
        p
    }

    pub(super) fn start(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_warren"))
            .args([
                "--bind",
                "127.0.0.1",
                "--mgmt-bind",
                "127.0.0.1",
                "--cluster-bind",
                "127.0.0.1",
            ])
            .args(["--port", &self.amqp.to_string()])
            .args(["--mgmt-port", &self.mgmt.to_string()])
            .args(["--cluster-port", &self.cluster.to_string()])
            .args(["--node-name", &self.name, "--shards", "2", "--data-dir"])
            .arg(&self.dir)
            .env("WARREN_CLUSTER_SECRET", SECRET)
            .env("RUST_LOG", "info,openraft=warn")
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.dir.with_extension("log"))
                    .map(Stdio::from)
                    .unwrap_or(Stdio::null()),
            )
            .spawn()
            .expect("spawn warren");
        self.child = Some(child);
        let out = self.ctl(&["-t", "30", "await_startup"]);
        assert!(out.0, "{} did not start: {}", self.name, out.1);
    }

    pub(super) fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Runs warrenctl against this node: (success, output).
    pub(super) fn ctl(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_warrenctl"))
            .args(["--port", &self.mgmt.to_string()])
            .args(args)
            .output()
            .expect("run warrenctl");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    pub(super) fn must(&self, args: &[&str]) -> String {
        let (ok, text) = self.ctl(args);
        assert!(ok, "warrenctl {args:?} on {}: {text}", self.name);
        text
    }

    pub(super) fn uri(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.amqp)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Connects, retrying while the node is not serving yet (a restarted
/// member catches up with its cluster first).
pub(super) async fn connect(uri: &str) -> Connection {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match Connection::connect(uri, ConnectionProperties::default()).await {
            Ok(c) => return c,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("cannot connect to {uri}: {e}"),
        }
    }
}

fn ready_count(p: &Proc, queue: &str) -> Option<u64> {
    let out = p.must(&["-q", "list_queues", "name", "messages_ready"]);
    out.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next() == Some(queue)).then(|| it.next().and_then(|n| n.parse().ok()))?
    })
}

pub(super) fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn warrenctl_forms_a_cluster_and_kill_9_loses_nothing() {
    let root = tempfile::tempdir().unwrap();
    let mut p: Vec<Proc> = (1..=3).map(|i| Proc::new(root.path(), i)).collect();
    let seed = format!("127.0.0.1:{}", p[0].cluster);
    for n in &p[1..] {
        let out = n.must(&["stop_app"]);
        assert!(out.contains("Stopping rabbit application on node"), "{out}");
        let out = n.must(&["join_cluster", "--address", &seed, &p[0].name.clone()]);
        assert!(
            out.contains(&format!("Clustering node {} with {}", n.name, p[0].name)),
            "{out}"
        );
        n.must(&["start_app"]);
    }
    let status = p[0].must(&["cluster_status"]);
    let disk = status
        .split("Disk Nodes")
        .nth(1)
        .unwrap()
        .split("Running Nodes")
        .next()
        .unwrap();
    let running = status
        .split("Running Nodes")
        .nth(1)
        .unwrap()
        .split("Versions")
        .next()
        .unwrap();
    for n in &p {
        assert!(disk.contains(&n.name) && running.contains(&n.name), "{status}");
    }

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // A durable queue on p1 with 20 persistent, confirmed messages,
    // published on p3.
    rt.block_on(async {
        let c1 = connect(&p[0].uri()).await;
        let ch1 = c1.create_channel().await.unwrap();
        ch1.queue_declare(
            "jobs".into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
        let _ = c1.close(200, "bye".into()).await;
    });
    wait_for("the queue on p3", || {
        p[2].must(&["-q", "list_queues", "name"]).contains("jobs")
    });
    rt.block_on(async {
        let c3 = connect(&p[2].uri()).await;
        let ch3 = c3.create_channel().await.unwrap();
        ch3.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
        for i in 0..20 {
            let confirm = ch3
                .basic_publish(
                    "".into(),
                    "jobs".into(),
                    BasicPublishOptions::default(),
                    format!("job-{i}").as_bytes(),
                    lapin::BasicProperties::default().with_delivery_mode(2),
                )
                .await
                .unwrap()
                .await
                .unwrap();
            assert!(confirm.is_ack());
        }
        let _ = c3.close(200, "bye".into()).await;
    });
    assert_eq!(ready_count(&p[0], "jobs"), Some(20));

    // p2 consumes 5 without acking, then is killed: p1 requeues them.
    rt.block_on(async {
        use futures::StreamExt;
        let c2 = connect(&p[1].uri()).await;
        let ch2 = c2.create_channel().await.unwrap();
        ch2.basic_qos(5, BasicQosOptions::default()).await.unwrap();
        let mut c = ch2
            .basic_consume(
                "jobs".into(),
                "held".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        for _ in 0..5 {
            tokio::time::timeout(Duration::from_secs(10), c.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
        }
        std::mem::forget(c2);
    });
    wait_for("5 deliveries held by p2", || {
        ready_count(&p[0], "jobs") == Some(15)
    });
    p[1].kill9();
    let killed = Instant::now();
    wait_for("p1 to requeue what p2 held", || {
        ready_count(&p[0], "jobs") == Some(20)
    });
    eprintln!("requeued {:?} after p2's kill -9", killed.elapsed());

    // The queue's own node is killed and restarted from its data dir: the
    // queue (metadata from the cluster's log) and its messages (its
    // segment files) are back.
    p[0].kill9();
    p[0].start();
    wait_for("p1 to serve again", || {
        p[0].ctl(&["-q", "list_queues", "name", "messages_ready"])
            .1
            .contains("jobs")
    });
    assert_eq!(ready_count(&p[0], "jobs"), Some(20));
    rt.block_on(async {
        let c3 = connect(&p[2].uri()).await;
        let ch3 = c3.create_channel().await.unwrap();
        let mut got = Vec::new();
        while let Some(m) = ch3
            .basic_get("jobs".into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            got.push(String::from_utf8(m.delivery.data.clone()).unwrap());
        }
        got.sort();
        let mut want: Vec<String> = (0..20).map(|i| format!("job-{i}")).collect();
        want.sort();
        assert_eq!(got, want, "every confirmed message, consumed through p3");
        let _ = c3.close(200, "bye".into()).await;
    });

    // rabbitmq-queues' shrink: p2 (still down) leaves a quorum queue
    // replicated on all three; the table says so.
    rt.block_on(super::quorum::declare_quorum(&p[0].uri(), "qq", &[]));
    let out = p[0].must(&["shrink", &p[1].name.clone()]);
    assert!(
        out.contains(&format!("Shrinking quorum queues on {}...", p[1].name)),
        "{out}"
    );
    assert!(out.contains("vhost\tname\tsize\tresult\n/\tqq\t2\tok"), "{out}");
    let out = p[0].must(&["-q", "shrink", "--errors-only", &p[1].name.clone()]);
    assert_eq!(out.trim(), "", "nothing left to shrink");
}

/// pika (RabbitMQ's Python client) against the cluster: a classic queue
/// and a quorum queue declared on p1, published to with confirms through
/// p2, consumed and acked through p3 (`tests/pika/cluster.py`).
#[test]
fn pika_publishes_and_consumes_across_nodes() {
    let Some(pp) = super::prereq::python_path("pika_publishes_and_consumes_across_nodes") else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let p: Vec<Proc> = (1..=3).map(|i| Proc::new(root.path(), i)).collect();
    let seed = format!("127.0.0.1:{}", p[0].cluster);
    for n in &p[1..] {
        n.must(&["stop_app"]);
        n.must(&["join_cluster", "--address", &seed, &p[0].name.clone()]);
        n.must(&["start_app"]);
    }
    let out = Command::new("python3")
        .arg(super::prereq::root().join("tests/pika/cluster.py"))
        .args(p.iter().map(|n| n.amqp.to_string()))
        .env("PYTHONPATH", pp)
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "cluster.py failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("ok ")).count(),
        2,
        "{stdout}"
    );
}
