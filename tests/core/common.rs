//! Brokers for tests: in-process on an ephemeral port with a temporary data
//! dir, or a child `warren` process (for kill -9).

use lapin::{Connection, ConnectionProperties};
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Broker {
    pub handle: warren::ServerHandle,
    pub uri: String,
    _dir: tempfile::TempDir,
}

pub fn start(shards: usize) -> Broker {
    start_with(shards, true)
}

/// A broker whose connections stay on the shard that accepted them (no
/// hand-off to the shard of their queue): for tests of cross-shard paths.
pub fn start_fixed(shards: usize) -> Broker {
    start_with(shards, false)
}

fn start_with(shards: usize, connection_handoff: bool) -> Broker {
    start_configured(shards, |c| c.connection_handoff = connection_handoff)
}

/// A broker with `shards` shards and whatever else `f` sets.
pub fn start_configured(shards: usize, f: impl FnOnce(&mut warren::Config)) -> Broker {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = warren::Config {
        bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port: 0,
        shards,
        data_dir: dir.path().to_path_buf(),
        // A shard that panics ends the test run at once, loudly, instead
        // of leaving a test waiting on a dead shard.
        abort_on_shard_panic: true,
        ..Default::default()
    };
    f(&mut cfg);
    let handle = warren::start(cfg).expect("broker starts");
    let uri = format!("amqp://guest:guest@{}/%2f", handle.amqp_addr());
    Broker {
        handle,
        uri,
        _dir: dir,
    }
}

/// An in-process broker on a given data dir (for restart tests).
pub fn start_in(data_dir: &Path, shards: usize) -> warren::ServerHandle {
    let cfg = warren::Config {
        bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port: 0,
        shards,
        data_dir: data_dir.to_path_buf(),
        abort_on_shard_panic: true,
        ..Default::default()
    };
    warren::start(cfg).expect("broker starts")
}

pub fn uri_of(h: &warren::ServerHandle) -> String {
    format!("amqp://guest:guest@{}/%2f", h.amqp_addr())
}

pub async fn connect(uri: &str) -> Connection {
    Connection::connect(uri, ConnectionProperties::default())
        .await
        .expect("connects")
}

impl Broker {
    pub async fn connect(&self) -> Connection {
        connect(&self.uri).await
    }

    /// A connection that the kernel placed on `shard` (SO_REUSEPORT picks
    /// the shard; we open connections until one lands there).
    pub async fn connect_on_shard(&self, shard: usize) -> Connection {
        let mut others = Vec::new();
        for _ in 0..200 {
            let before = self.handle.connections_per_shard();
            let c = self.connect().await;
            let after = self.handle.connections_per_shard();
            if after[shard] > before[shard] {
                return c;
            }
            others.push(c);
        }
        panic!("no connection landed on shard {shard}");
    }
}

/// A `warren` child process, killed (-9) when dropped.
pub struct ChildBroker {
    child: Child,
    pub uri: String,
    /// The management plane's address, once it logged it.
    mgmt: std::sync::Arc<std::sync::Mutex<Option<String>>>,
}

impl ChildBroker {
    pub fn start(data_dir: &Path, shards: usize) -> ChildBroker {
        ChildBroker::start_on(data_dir, shards, 0).expect("warren became ready")
    }

    /// A broker on a given AMQP port; the error is what it printed when it
    /// refused to start.
    pub fn start_on(data_dir: &Path, shards: usize, port: u16) -> Result<ChildBroker, String> {
        ChildBroker::start_with(data_dir, shards, port, &[])
    }

    /// A broker with more command-line arguments.
    pub fn start_with(
        data_dir: &Path,
        shards: usize,
        port: u16,
        extra: &[&str],
    ) -> Result<ChildBroker, String> {
        ChildBroker::launch(data_dir, shards, port, "127.0.0.1", extra, None)
    }

    /// A broker listening on `::`, `warren`'s default, instead of 127.0.0.1.
    pub fn start_dual_stack(data_dir: &Path, shards: usize, port: u16) -> Result<ChildBroker, String> {
        ChildBroker::launch(data_dir, shards, port, "::", &[], None)
    }

    /// A broker started with a soft limit of `nofile` file descriptors.
    pub fn start_with_fd_limit(data_dir: &Path, nofile: u64) -> Result<ChildBroker, String> {
        ChildBroker::launch(data_dir, 1, 0, "127.0.0.1", &[], Some(nofile))
    }

    fn launch(
        data_dir: &Path,
        shards: usize,
        port: u16,
        bind: &str,
        extra: &[&str],
        nofile: Option<u64>,
    ) -> Result<ChildBroker, String> {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_warren"));
        if let Some(n) = nofile {
            use std::os::unix::process::CommandExt;
            // SAFETY: only async-signal-safe calls between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    let mut lim: libc::rlimit = std::mem::zeroed();
                    libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
                    lim.rlim_cur = n.min(lim.rlim_max);
                    libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
                    Ok(())
                });
            }
        }
        let mut child = cmd
            .args(["--bind", bind])
            .args([
                "--port",
                &port.to_string(),
                "--mgmt-bind",
                "127.0.0.1",
                "--mgmt-port",
                "0",
                "--shards",
                &shards.to_string(),
                "--data-dir",
            ])
            .arg(data_dir)
            .args(extra)
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn warren");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let mgmt = std::sync::Arc::new(std::sync::Mutex::new(None));
        let mgmt_seen = mgmt.clone();
        std::thread::spawn(move || {
            let mut sent = false;
            let mut said = Vec::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.split("management plane listening on ").nth(1) {
                    *mgmt_seen.lock().unwrap() = Some(addr.trim().to_string());
                }
                if !sent && line.contains("ready: accepting AMQP connections on ") {
                    let addr = line
                        .split("connections on ")
                        .nth(1)
                        .and_then(|s| s.split_whitespace().next())
                        .unwrap()
                        .to_string();
                    let _ = tx.send(Ok(addr));
                    sent = true;
                }
                if !sent {
                    said.push(line.clone());
                }
                if line.contains("ERROR") || line.contains("WARN") || line.contains("panicked") {
                    eprintln!("warren: {line}");
                }
            }
            if !sent {
                let _ = tx.send(Err(said.join("\n")));
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(addr)) => addr,
            failed => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(match failed {
                    Ok(Err(said)) => said,
                    _ => "not ready within 30 s".into(),
                });
            }
        };
        Ok(ChildBroker {
            child,
            uri: format!("amqp://guest:guest@{addr}/%2f"),
            mgmt,
        })
    }

    /// The management API's base URL (`http://addr`).
    pub fn mgmt_base(&self) -> String {
        let addr = wait_for("the management plane's address", || {
            self.mgmt.lock().unwrap().clone()
        });
        format!("http://{addr}")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the broker as a supervisor does (SIGTERM) and waits for it.
    pub fn terminate(mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }

    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn temp_data_dir() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("data");
    (d, p)
}

/// A broker with its management plane, both on ephemeral ports.
pub struct MgmtBroker {
    pub broker: Broker,
    pub _mgmt: warren::mgmt::MgmtHandle,
    pub base: String,
}

pub fn start_with_mgmt(shards: usize) -> MgmtBroker {
    let broker = start(shards);
    let mgmt = mgmt_for(
        &broker.handle,
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        Duration::from_millis(200),
    );
    let base = format!("http://{}", mgmt.addr());
    MgmtBroker {
        broker,
        _mgmt: mgmt,
        base,
    }
}

/// A management plane on an ephemeral port for a running broker.
pub fn mgmt_for(
    handle: &warren::ServerHandle,
    bind: IpAddr,
    sample_interval: Duration,
) -> warren::mgmt::MgmtHandle {
    warren::mgmt::start(
        handle.admin(),
        warren::mgmt::MgmtConfig {
            sample_interval,
            ..warren::mgmt::MgmtConfig::new(bind, 0)
        },
    )
    .expect("management plane starts")
}

/// One HTTP call: the status and the body as JSON (`Null` when empty or
/// not JSON).
pub fn http(
    method: &str,
    url: &str,
    auth: Option<(&str, &str)>,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let (status, text) = http_text(method, url, auth, body);
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

pub fn http_text(
    method: &str,
    url: &str,
    auth: Option<(&str, &str)>,
    body: Option<serde_json::Value>,
) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into();
    let auth = auth.map(|(u, p)| {
        format!(
            "Basic {}",
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, format!("{u}:{p}"))
        )
    });
    let resp = match method {
        "GET" | "DELETE" => {
            let mut r = if method == "GET" {
                agent.get(url)
            } else {
                agent.delete(url)
            };
            if let Some(a) = &auth {
                r = r.header("authorization", a);
            }
            r.call()
        }
        _ => {
            let mut r = if method == "PUT" {
                agent.put(url)
            } else {
                agent.post(url)
            };
            if let Some(a) = &auth {
                r = r.header("authorization", a);
            }
            let b = body.map(|b| b.to_string()).unwrap_or_default();
            r.content_type("application/json").send(b.as_bytes())
        }
    };
    let mut resp = resp.expect("HTTP request");
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_to_string().unwrap_or_default())
}

/// Polls `f` until it gives a value (20 s at most).
pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    for _ in 0..400 {
        if let Some(v) = f() {
            return v;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what}: not reached in 20 s");
}
