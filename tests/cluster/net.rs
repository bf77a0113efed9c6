//! The cluster port over real TCP on 127.0.0.1 (port 0): calls, the
//! handshake's refusals, limits, the cookie file, and a 3-node openraft
//! cluster (the metadata group's types) on the transport.

use futures::future::{Either, join_all};
use glommio::net::TcpStream;
use glommio::timer::{Timer, sleep};
use glommio::{LocalExecutorBuilder, Placement};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::pin;
use std::rc::Rc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};
use warren::cluster::net::raft::{ClusterNetwork, KIND_SNAPSHOT, META_GROUP, RaftService};
use warren::cluster::net::{CallError, Limits, Transport, service_fn};
use warren::cluster::secret::Secret;

/// Runs `f` on a fresh glommio executor; fails the test after `secs`.
fn run<F: Future<Output = ()>>(secs: u64, f: F) {
    capture_logs();
    let ex = LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(512 * 1024)
        .make()
        .expect("executor");
    ex.run(async move {
        match futures::future::select(pin!(f), Timer::new(Duration::from_secs(secs))).await {
            Either::Left(_) => {}
            Either::Right(_) => panic!("test did not finish in {secs} s"),
        }
    });
}

// ------------------------------------------------------------- log capture

/// Warnings (and worse) logged by warren, for the tests that check them.
static LOGS: OnceLock<Mutex<Vec<String>>> = OnceLock::new();

struct Capture;
impl log::Log for Capture {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::Level::Warn && m.target().starts_with("warren")
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            LOGS.get_or_init(Default::default)
                .lock()
                .unwrap()
                .push(r.args().to_string());
        }
    }
    fn flush(&self) {}
}

fn capture_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let _ = log::set_logger(&Capture);
        log::set_max_level(log::LevelFilter::Warn);
    });
}

fn logged(needle: &str) -> Vec<String> {
    LOGS.get_or_init(Default::default)
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains(needle))
        .cloned()
        .collect()
}

// ------------------------------------------------------------- helpers

fn secret(s: &str) -> Secret {
    s.parse().unwrap()
}

fn local() -> std::net::SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A node answering kind 7 with "<caller>:<body>" (after a delay given by
/// the body's first byte, in ms, so that replies come out of order), kind 8
/// with an error, kind 9 after 2 s; counting the requests it served.
fn echo_node(name: &str, s: &str) -> (Rc<Transport>, String, Rc<Cell<usize>>) {
    let t = Transport::new(name, secret(s));
    let served = Rc::new(Cell::new(0));
    let n = served.clone();
    let svc = service_fn(move |from: &str, kind: u8, body: Vec<u8>| {
        n.set(n.get() + 1);
        let from = from.to_string();
        async move {
            match kind {
                7 => {
                    if let Some(&ms) = body.first() {
                        sleep(Duration::from_millis(u64::from(ms % 20))).await;
                    }
                    let mut out = format!("{from}:").into_bytes();
                    out.extend_from_slice(&body);
                    Ok(out)
                }
                8 => Err("nope".to_string()),
                _ => {
                    sleep(Duration::from_secs(2)).await;
                    Ok(vec![])
                }
            }
        }
    });
    for k in [7, 8, 9] {
        t.register(k, svc.clone());
    }
    let addr = t.listen(local()).unwrap().to_string();
    (t, addr, served)
}

const SEC: Duration = Duration::from_secs(1);

// ------------------------------------------------------------- calls

#[test]
fn calls_round_trip_and_multiplex_on_one_connection() {
    run(10, async {
        let (b, addr, served) = echo_node("warren@b", "cookie");
        let a = Transport::new("warren@a", secret("cookie"));
        let r = a.call(&addr, 7, b"\x01hi".to_vec(), SEC).await.unwrap();
        assert_eq!(r, b"warren@a:\x01hi");

        let calls = (0..100u8).map(|i| {
            let a = a.clone();
            let addr = addr.clone();
            async move {
                let body = vec![i.wrapping_mul(37), i];
                let r = a.call(&addr, 7, body.clone(), 5 * SEC).await.unwrap();
                let mut want = b"warren@a:".to_vec();
                want.extend_from_slice(&body);
                assert_eq!(r, want, "call {i}");
            }
        });
        join_all(calls).await;
        assert_eq!(served.get(), 101);
        assert_eq!(a.connections(), (1, 0), "one pooled connection");
        assert_eq!(a.connections(), (1, 0), "one pooled connection");
        assert_eq!(b.connections(), (0, 1));

        // A large request and reply (read in pieces), and one over the limit.
        let big: Vec<u8> = (0..8 << 20).map(|i: u32| (i % 251) as u8).collect();
        let r = a.call(&addr, 7, big.clone(), 5 * SEC).await.unwrap();
        assert_eq!(&r[9..], &big[..]);
        assert_eq!(
            a.call(&addr, 7, vec![0; (64 << 20) + 1], SEC).await,
            Err(CallError::TooLarge((64 << 20) + 1))
        );

        // A service's error, and a kind nobody serves.
        assert_eq!(
            a.call(&addr, 8, vec![], SEC).await,
            Err(CallError::Remote("nope".into()))
        );
        match a.call(&addr, 42, vec![], SEC).await {
            Err(CallError::Remote(e)) => assert!(e.contains("no service"), "{e}"),
            other => panic!("{other:?}"),
        }
        a.shutdown();
        b.shutdown();
    });
}

#[test]
fn a_dead_address_is_unreachable_at_once() {
    run(10, async {
        // A port nobody listens on.
        let dead = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let a = Transport::new("warren@a", secret("cookie"));
        let t0 = Instant::now();
        match a.call(&dead.to_string(), 7, vec![], 5 * SEC).await {
            Err(CallError::Unreachable(e)) => assert!(e.contains(&dead.to_string()), "{e}"),
            other => panic!("{other:?}"),
        }
        // In the backoff now: fails without trying.
        assert!(matches!(
            a.call(&dead.to_string(), 7, vec![], 5 * SEC).await,
            Err(CallError::Unreachable(_))
        ));
        assert!(t0.elapsed() < SEC, "{:?}", t0.elapsed());
        // An unresolvable name too.
        assert!(matches!(
            a.call("no-such-host.invalid:1", 7, vec![], 5 * SEC).await,
            Err(CallError::Unreachable(_))
        ));
    });
}

#[test]
fn a_call_times_out_and_the_connection_stays_usable() {
    run(10, async {
        let (b, addr, _) = echo_node("warren@b", "cookie");
        let a = Transport::new("warren@a", secret("cookie"));
        let t0 = Instant::now();
        assert_eq!(
            a.call(&addr, 9, vec![], Duration::from_millis(100)).await,
            Err(CallError::Timeout)
        );
        assert!(t0.elapsed() < Duration::from_millis(900), "{:?}", t0.elapsed());
        assert!(a.call(&addr, 7, vec![0], SEC).await.is_ok());
        assert_eq!(a.connections(), (1, 0));
        b.shutdown();
        a.shutdown();
        assert_eq!(a.call(&addr, 7, vec![0], SEC).await, Err(CallError::Shutdown));
    });
}

#[test]
fn a_connection_silent_for_too_long_is_dropped_on_a_timeout() {
    run(10, async {
        let (b, addr, _) = echo_node("warren@b", "cookie");
        let limits = Limits {
            dead_after: Duration::from_millis(200),
            ..Limits::default()
        };
        let a = Transport::with_limits("warren@a", secret("cookie"), limits);
        assert!(a.call(&addr, 7, vec![0], SEC).await.is_ok());
        // A reply just received: a timeout keeps the connection.
        assert_eq!(
            a.call(&addr, 9, vec![], Duration::from_millis(100)).await,
            Err(CallError::Timeout)
        );
        assert_eq!(a.connections(), (1, 0));
        // Nothing for longer than `dead_after`: the timeout drops it, the
        // next call opens another.
        assert_eq!(
            a.call(&addr, 9, vec![], Duration::from_millis(300)).await,
            Err(CallError::Timeout)
        );
        assert_eq!(a.connections(), (0, 0));
        assert!(a.call(&addr, 7, vec![0], SEC).await.is_ok());
        assert_eq!(a.connections(), (1, 0));
        a.shutdown();
        b.shutdown();
    });
}

#[test]
fn a_reconnect_follows_a_restart_of_the_peer() {
    run(10, async {
        let (b, addr, _) = echo_node("warren@b", "cookie");
        let a = Transport::new("warren@a", secret("cookie"));
        assert!(a.call(&addr, 7, vec![0], SEC).await.is_ok());
        b.shutdown();
        sleep(Duration::from_millis(50)).await;
        assert!(matches!(
            a.call(&addr, 7, vec![0], SEC).await,
            Err(CallError::Unreachable(_))
        ));
        // The same port again, after the backoff.
        let b2 = Transport::new("warren@b", secret("cookie"));
        b2.register(7, service_fn(|_: &str, _, _| async { Ok(b"again".to_vec()) }));
        b2.listen(addr.parse().unwrap()).unwrap();
        let t0 = Instant::now();
        loop {
            match a.call(&addr, 7, vec![0], SEC).await {
                Ok(r) => {
                    assert_eq!(r, b"again");
                    break;
                }
                Err(CallError::Unreachable(_)) if t0.elapsed() < 3 * SEC => {
                    sleep(Duration::from_millis(20)).await
                }
                Err(e) => panic!("{e}"),
            }
        }
        a.shutdown();
        b2.shutdown();
    });
}

/// A node stopped and started again in the same process binds its
/// cluster port at once: shutting the transport down frees the port
/// before it returns (a pending accept in the ring kept it bound).
#[test]
fn a_shut_down_transport_frees_its_port_at_once() {
    run(10, async {
        for round in 0..20 {
            let (b, addr, _) = echo_node("warren@b", "cookie");
            let a = Transport::new("warren@a", secret("cookie"));
            assert!(a.call(&addr, 7, vec![0], SEC).await.is_ok());
            b.shutdown();
            let b2 = Transport::new("warren@b", secret("cookie"));
            if let Err(e) = b2.listen(addr.parse().unwrap()) {
                panic!("round {round}: the port is still bound after shutdown: {e}");
            }
            a.shutdown();
            b2.shutdown();
        }
    });
}

// ------------------------------------------------------------- refusals

#[test]
fn a_wrong_secret_is_refused_on_both_sides() {
    run(10, async {
        let (b, b_addr, b_served) = echo_node("warren@b", "right secret");
        let (a, a_addr, a_served) = echo_node("warren@a", "wrong secret");
        match a.call(&b_addr, 7, vec![0], SEC).await {
            Err(CallError::Refused(e)) => assert!(e.contains("secret"), "{e}"),
            other => panic!("{other:?}"),
        }
        match b.call(&a_addr, 7, vec![0], SEC).await {
            Err(CallError::Refused(_)) => {}
            other => panic!("{other:?}"),
        }
        sleep(Duration::from_millis(50)).await;
        assert_eq!((a_served.get(), b_served.get()), (0, 0), "nothing dispatched");
        assert_eq!(a.connections(), (0, 0));
        assert_eq!(b.connections(), (0, 0));
        // Both ends said so, naming the peer's address, never the secret.
        assert!(!logged("refused a connection from 127.0.0.1:").is_empty());
        assert!(!logged(&b_addr).is_empty(), "the client names the server");
        assert!(
            logged("secret")
                .iter()
                .all(|l| !l.contains("right secret") && !l.contains("wrong secret"))
        );
        a.shutdown();
        b.shutdown();
    });
}

/// Reads until the server closes: what it sent.
async fn read_to_end(s: &mut TcpStream) -> Vec<u8> {
    use futures_lite::AsyncReadExt;
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

#[test]
fn garbage_and_silent_clients_are_disconnected() {
    run(10, async {
        use futures_lite::AsyncWriteExt;
        let limits = Limits {
            handshake_timeout: Duration::from_millis(300),
            max_inbound: 2,
            ..Limits::default()
        };
        let b = Transport::with_limits("warren@b", secret("cookie"), limits);
        let served = Rc::new(Cell::new(0));
        let n = served.clone();
        b.register(
            7,
            service_fn(move |_: &str, _, _| {
                n.set(n.get() + 1);
                async { Ok(vec![]) }
            }),
        );
        let addr = b.listen(local()).unwrap();

        // Garbage: the server's hello, then the end.
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let t0 = Instant::now();
        let got = read_to_end(&mut s).await;
        assert!(got.starts_with(b"WRNC"), "{got:?}");
        assert!(got.len() < 300);
        assert!(t0.elapsed() < Duration::from_millis(250), "closed at once");

        // A hello-sized frame of garbage after a valid magic.
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"WRNC\x01\x00\x07").await.unwrap();
        read_to_end(&mut s).await;

        // Silent clients: closed at the handshake deadline; over the cap,
        // closed at once.
        let mut s1 = TcpStream::connect(addr).await.unwrap();
        let mut s2 = TcpStream::connect(addr).await.unwrap();
        sleep(Duration::from_millis(30)).await;
        let mut s3 = TcpStream::connect(addr).await.unwrap();
        let t0 = Instant::now();
        assert!(read_to_end(&mut s3).await.is_empty(), "over the cap: no hello");
        assert!(t0.elapsed() < Duration::from_millis(250));
        let got = read_to_end(&mut s1).await;
        assert!(got.starts_with(b"WRNC"));
        read_to_end(&mut s2).await;
        let waited = t0.elapsed();
        assert!(
            waited >= Duration::from_millis(200) && waited < 2 * SEC,
            "{waited:?}"
        );
        assert!(!logged("no handshake in time").is_empty());
        assert!(!logged("connections already").is_empty());

        // After all that, a real peer still gets in.
        let a = Transport::new("warren@a", secret("cookie"));
        sleep(Duration::from_millis(50)).await;
        assert!(a.call(&addr.to_string(), 7, vec![], SEC).await.is_ok());
        assert_eq!(served.get(), 1);
        a.shutdown();
        b.shutdown();
    });
}

// ------------------------------------------------------------- the cookie

#[test]
fn the_cookie_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let s = Secret::load_or_create(dir.path()).unwrap();
    let path = dir.path().join("cluster.cookie");
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.len(), 64);
    assert!(text.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(s.bytes(), text.as_bytes());
    assert!(!format!("{s:?}").contains(&text));
    // Reloaded equal; another data dir gets another cookie.
    assert_eq!(Secret::load_or_create(dir.path()).unwrap(), s);
    let other = tempfile::tempdir().unwrap();
    assert_ne!(Secret::load_or_create(other.path()).unwrap(), s);
    // An operator's own cookie (a copy of another node's), trailing newline ignored.
    std::fs::write(&path, "shared-cookie\n").unwrap();
    assert_eq!(
        Secret::load_or_create(dir.path()).unwrap(),
        secret("shared-cookie")
    );
    // Readable by others: refused.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = Secret::load_or_create(dir.path()).unwrap_err();
    assert!(e.to_string().contains("must be accessible by owner only"), "{e}");
    // Empty: refused.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&path, "\n").unwrap();
    assert!(Secret::load_or_create(dir.path()).is_err());
    assert!("".parse::<Secret>().is_err());
}

// ------------------------------------------------------------- openraft

mod store {
    //! An in-memory log store and state machine for the metadata group's
    //! types; the state machine keeps the tokens and bytes it applied.
    use futures::{Stream, TryStreamExt};
    use openraft::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf, VoteOf};
    use openraft::entry::RaftEntry;
    use openraft::storage::{EntryResponder, IOFlushed, RaftLogStorage, RaftStateMachine};
    use openraft::{EntryPayload, LogState, OptionalSend, RaftLogReader, RaftSnapshotBuilder};
    use std::cell::RefCell;
    use std::collections::BTreeMap;
    use std::fmt::Debug;
    use std::io;
    use std::ops::RangeBounds;
    use std::rc::Rc;
    use warren::cluster::{Meta, MetaReply};

    type Entry = <Meta as openraft::RaftTypeConfig>::Entry;

    #[derive(Default)]
    pub struct LogInner {
        last_purged: Option<LogIdOf<Meta>>,
        log: BTreeMap<u64, Entry>,
        committed: Option<LogIdOf<Meta>>,
        vote: Option<VoteOf<Meta>>,
    }

    #[derive(Clone, Default)]
    pub struct LogStore(Rc<RefCell<LogInner>>);

    impl RaftLogReader<Meta> for LogStore {
        async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
            &mut self,
            range: RB,
        ) -> Result<Vec<Entry>, io::Error> {
            Ok(self.0.borrow().log.range(range).map(|(_, e)| e.clone()).collect())
        }
        async fn read_vote(&mut self) -> Result<Option<VoteOf<Meta>>, io::Error> {
            Ok(self.0.borrow().vote)
        }
    }

    impl RaftLogStorage<Meta> for LogStore {
        type LogReader = LogStore;
        async fn get_log_state(&mut self) -> Result<LogState<Meta>, io::Error> {
            let i = self.0.borrow();
            let last = i.log.values().next_back().map(|e| e.log_id()).or(i.last_purged);
            Ok(LogState {
                last_purged_log_id: i.last_purged,
                last_log_id: last,
            })
        }
        async fn get_log_reader(&mut self) -> LogStore {
            self.clone()
        }
        async fn save_vote(&mut self, vote: &VoteOf<Meta>) -> Result<(), io::Error> {
            self.0.borrow_mut().vote = Some(*vote);
            Ok(())
        }
        async fn save_committed(&mut self, c: Option<LogIdOf<Meta>>) -> Result<(), io::Error> {
            self.0.borrow_mut().committed = c;
            Ok(())
        }
        async fn read_committed(&mut self) -> Result<Option<LogIdOf<Meta>>, io::Error> {
            Ok(self.0.borrow().committed)
        }
        async fn append<I>(&mut self, entries: I, callback: IOFlushed<Meta>) -> Result<(), io::Error>
        where
            I: IntoIterator<Item = Entry> + OptionalSend,
            I::IntoIter: OptionalSend,
        {
            let mut i = self.0.borrow_mut();
            for e in entries {
                i.log.insert(e.index(), e);
            }
            callback.io_completed(Ok(()));
            Ok(())
        }
        async fn truncate_after(&mut self, last: Option<LogIdOf<Meta>>) -> Result<(), io::Error> {
            let start = last.map(|l| l.index() + 1).unwrap_or(0);
            self.0.borrow_mut().log.split_off(&start);
            Ok(())
        }
        async fn purge(&mut self, upto: LogIdOf<Meta>) -> Result<(), io::Error> {
            let mut i = self.0.borrow_mut();
            let keep = i.log.split_off(&(upto.index() + 1));
            i.log = keep;
            i.last_purged = Some(upto);
            Ok(())
        }
    }

    #[derive(Default)]
    pub struct SmInner {
        pub applied: Option<LogIdOf<Meta>>,
        pub membership: StoredMembershipOf<Meta>,
        /// (token, changes) of every command applied, in order.
        pub cmds: Vec<(u64, Vec<u8>)>,
        pub snapshot: Option<(SnapshotMetaOf<Meta>, Vec<u8>)>,
        pub installed: usize,
    }

    #[derive(Clone, Default)]
    pub struct Sm(pub Rc<RefCell<SmInner>>);

    impl RaftSnapshotBuilder<Meta> for Sm {
        type SnapshotData = Vec<u8>;
        async fn build_snapshot(&mut self) -> Result<SnapshotOf<Meta, Vec<u8>>, io::Error> {
            let mut i = self.0.borrow_mut();
            let data = postcard::to_stdvec(&i.cmds).map_err(io::Error::other)?;
            let meta = SnapshotMetaOf::<Meta> {
                last_log_id: i.applied,
                last_membership: i.membership.clone(),
            };
            i.snapshot = Some((meta.clone(), data.clone()));
            Ok(openraft::Snapshot { meta, snapshot: data })
        }
    }

    impl RaftStateMachine<Meta> for Sm {
        type SnapshotData = Vec<u8>;
        type SnapshotBuilder = Sm;
        async fn applied_state(
            &mut self,
        ) -> Result<(Option<LogIdOf<Meta>>, StoredMembershipOf<Meta>), io::Error> {
            let i = self.0.borrow();
            Ok((i.applied, i.membership.clone()))
        }
        async fn apply<S>(&mut self, mut entries: S) -> Result<(), io::Error>
        where
            S: Stream<Item = Result<EntryResponder<Meta>, io::Error>> + Unpin + OptionalSend,
        {
            while let Some((entry, responder)) = entries.try_next().await? {
                let mut i = self.0.borrow_mut();
                i.applied = Some(entry.log_id());
                match &entry.payload {
                    EntryPayload::Blank => {}
                    EntryPayload::Normal(cmd) => i.cmds.push((cmd.token, cmd.changes.clone())),
                    EntryPayload::Membership(m) => {
                        i.membership = openraft::StoredMembership::new(Some(entry.log_id()), m.clone());
                    }
                }
                drop(i);
                if let Some(r) = responder {
                    r.send(MetaReply { accepted: true });
                }
            }
            Ok(())
        }
        async fn get_snapshot_builder(&mut self) -> Sm {
            self.clone()
        }
        async fn install_snapshot(
            &mut self,
            meta: &SnapshotMetaOf<Meta>,
            data: Vec<u8>,
        ) -> Result<(), io::Error> {
            let mut i = self.0.borrow_mut();
            i.cmds = postcard::from_bytes(&data).map_err(io::Error::other)?;
            i.applied = meta.last_log_id;
            i.membership = meta.last_membership.clone();
            i.snapshot = Some((meta.clone(), data));
            i.installed += 1;
            Ok(())
        }
        async fn get_current_snapshot(&mut self) -> Result<Option<SnapshotOf<Meta, Vec<u8>>>, io::Error> {
            Ok(self
                .0
                .borrow()
                .snapshot
                .clone()
                .map(|(meta, snapshot)| openraft::Snapshot { meta, snapshot }))
        }
    }
}

type MetaRaft = openraft::Raft<warren::cluster::Meta, store::Sm>;

struct Node {
    id: u64,
    info: warren::cluster::NodeInfo,
    raft: MetaRaft,
    sm: store::Sm,
    transport: Rc<Transport>,
    service: Rc<RaftService>,
}

async fn start_node(name: &str) -> Node {
    let cfg = openraft::Config {
        heartbeat_interval: 100,
        election_timeout_min: 400,
        election_timeout_max: 800,
        install_snapshot_timeout: 1000,
        // Several chunks for the snapshot test.
        snapshot_max_chunk_size: 2048,
        max_in_snapshot_log_to_keep: 0,
        enable_pre_vote: Some(true),
        ..Default::default()
    }
    .validate()
    .unwrap();
    let transport = Transport::new(name, secret("cluster cookie"));
    let addr = transport.listen(local()).unwrap();
    let id = warren::cluster::node_id(name);
    let service = RaftService::new();
    service.serve_on(&transport);
    let sm = store::Sm::default();
    let net = ClusterNetwork::new(transport.clone(), META_GROUP, id);
    let raft = openraft::Raft::new(
        id,
        std::sync::Arc::new(cfg),
        net,
        store::LogStore::default(),
        sm.clone(),
    )
    .await
    .unwrap();
    service.add_group(META_GROUP, raft.clone());
    let info = warren::cluster::NodeInfo {
        name: name.to_string(),
        addr: addr.to_string(),
        ram: false,
    };
    Node {
        id,
        info,
        raft,
        sm,
        transport,
        service,
    }
}

fn cmd(origin: u64, token: u64) -> warren::cluster::MetaCmd {
    warren::cluster::MetaCmd {
        origin,
        token,
        base: token,
        next_ids: [token, 0, 0],
        changes: vec![token as u8; 100],
    }
}

async fn wait_applied(n: &Node, index: u64, what: &str) {
    n.raft
        .wait(Some(Duration::from_secs(10)))
        .applied_index_at_least(Some(index), what)
        .await
        .unwrap_or_else(|e| panic!("{}: {what}: {e}", n.info.name));
}

#[test]
fn a_three_node_cluster_over_the_cluster_port() {
    run(60, async {
        let t0 = Instant::now();
        let mut nodes = Vec::new();
        for name in ["warren@n1", "warren@n2", "warren@n3"] {
            nodes.push(start_node(name).await);
        }
        let members: BTreeMap<u64, warren::cluster::NodeInfo> =
            nodes.iter().map(|n| (n.id, n.info.clone())).collect();
        nodes[0].raft.initialize(members).await.unwrap();

        // A leader.
        let m = nodes[0]
            .raft
            .wait(Some(Duration::from_secs(10)))
            .metrics(|m| m.current_leader.is_some(), "a leader")
            .await
            .unwrap();
        let leader_id = m.current_leader.unwrap();
        let li = nodes.iter().position(|n| n.id == leader_id).unwrap();
        // Writable once a quorum acked the new leader (its lease).
        nodes[li]
            .raft
            .wait(Some(Duration::from_secs(10)))
            .leader_with_quorum_acked(None, "a lease")
            .await
            .unwrap();
        eprintln!("leader {} after {:?}", nodes[li].info.name, t0.elapsed());

        // 50 writes, committed and applied everywhere.
        let mut last = 0;
        for token in 0..50 {
            let r = nodes[li].raft.client_write(cmd(leader_id, token)).await.unwrap();
            assert!(r.data.accepted);
            last = r.log_id.index;
        }
        for n in &nodes {
            wait_applied(n, last, "the 50 writes").await;
            let tokens: Vec<u64> = n.sm.0.borrow().cmds.iter().map(|c| c.0).collect();
            assert_eq!(tokens, (0..50).collect::<Vec<_>>(), "{}", n.info.name);
        }
        eprintln!("50 writes applied on 3 nodes after {:?}", t0.elapsed());

        // One follower's transport stops: the other two still commit.
        let fi = (li + 1) % 3;
        let other = (li + 2) % 3;
        nodes[fi].transport.shutdown();
        for token in 50..60 {
            let r = nodes[li].raft.client_write(cmd(leader_id, token)).await.unwrap();
            last = r.log_id.index;
        }
        wait_applied(&nodes[other], last, "writes with a follower cut off").await;
        assert_eq!(nodes[other].sm.0.borrow().cmds.len(), 60);
        assert_eq!(
            nodes[fi].sm.0.borrow().cmds.len(),
            50,
            "the cut-off follower got nothing"
        );
        eprintln!("10 writes on 2 of 3 after {:?}", t0.elapsed());

        // A snapshot, the log purged: a new learner can only get the state
        // as a snapshot, through full_snapshot over the cluster port.
        let leader = &nodes[li].raft;
        leader.trigger().snapshot().await.unwrap();
        leader
            .wait(Some(Duration::from_secs(10)))
            .metrics(|m| m.snapshot.is_some_and(|s| s.index >= last), "a snapshot")
            .await
            .unwrap();
        leader.trigger().purge_log(last).await.unwrap();
        leader
            .wait(Some(Duration::from_secs(10)))
            .metrics(|m| m.purged.is_some_and(|p| p.index >= last), "the log purged")
            .await
            .unwrap();
        let n4 = start_node("warren@n4").await;
        let chunks = Rc::new(Cell::new(0));
        let (count, svc) = (chunks.clone(), n4.service.clone());
        n4.transport.register(
            KIND_SNAPSHOT,
            service_fn(move |from: &str, kind, body| {
                count.set(count.get() + 1);
                warren::cluster::net::Service::call(&*svc, from, kind, body)
            }),
        );
        leader.add_learner(n4.id, n4.info.clone(), true).await.unwrap();
        wait_applied(&n4, last, "the learner caught up").await;
        {
            let sm = n4.sm.0.borrow();
            assert_eq!(sm.installed, 1, "installed from a snapshot");
            assert!(chunks.get() >= 3, "in chunks of 2 KiB: {}", chunks.get());
            assert_eq!(sm.cmds.len(), 60);
            assert_eq!(sm.cmds[59], (59, vec![59; 100]));
        }
        // And it follows later writes through appends.
        let r = leader.client_write(cmd(leader_id, 60)).await.unwrap();
        wait_applied(&n4, r.log_id.index, "a write after the snapshot").await;
        assert_eq!(n4.sm.0.borrow().cmds.len(), 61);
        eprintln!("snapshot to a new learner after {:?}", t0.elapsed());

        // Leadership handed to the other connected voter (TransferLeader).
        let to = nodes[other].id;
        leader.trigger().transfer_leader(to).await.unwrap();
        nodes[other]
            .raft
            .wait(Some(Duration::from_secs(10)))
            .current_leader(to, "the transferred leadership")
            .await
            .unwrap();
        eprintln!("leadership transferred after {:?}", t0.elapsed());

        for n in nodes.iter().chain([&n4]) {
            n.raft.shutdown().await.unwrap();
            n.transport.shutdown();
        }
    });
}
