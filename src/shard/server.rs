//! Starting and stopping the broker: one pinned glommio executor per shard,
//! each accepting on the same port (SO_REUSEPORT), joined by a full mesh of
//! bounded SPSC rings.

use super::conn;
use super::state::{Shard, hostname, now_ms};
use crate::admin::SharedStats;
use crate::broker::topology::Change;
use crate::config::Config;
use crate::ids::ShardId;
use crate::owner::Batch;
use crate::storage::datadir::DataDir;
use crate::storage::topolog::TopoLog;
use glommio::channels::channel_mesh::{MeshBuilder, Receivers, Senders};
use glommio::net::TcpListener;
use glommio::{LocalExecutorBuilder, Placement};
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

/// A running broker. Dropping it stops the broker.
pub struct ServerHandle {
    stats: Arc<SharedStats>,
    addr: SocketAddr,
    threads: Vec<JoinHandle<()>>,
    admin: crate::admin::Admin,
    /// Holds the data dir lock until the shards are gone.
    _data: Option<DataDir>,
}

impl ServerHandle {
    /// The AMQP listening address (with the real port when 0 was asked).
    pub fn amqp_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The AMQPS listening address, when TLS is on.
    pub fn amqps_addr(&self) -> Option<SocketAddr> {
        self.admin.amqps_addr
    }

    /// Closes every connection with 320 CONNECTION_FORCED and stops.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.admin.stop();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }

    /// Blocks until the broker stops on its own (it does not, unless asked).
    pub fn wait(mut self) {
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }

    /// Asks the broker to stop (e.g. from a signal handler thread).
    pub fn stopper(&self) -> impl Fn() + Send + 'static {
        let admin = self.admin.clone();
        move || admin.stop()
    }

    /// A management handle (thread-safe, cloneable).
    pub fn admin(&self) -> crate::admin::Admin {
        self.admin.clone()
    }

    pub fn stats(&self) -> &SharedStats {
        &self.stats
    }

    /// Open connections per shard.
    pub fn connections_per_shard(&self) -> Vec<usize> {
        self.stats
            .connections
            .iter()
            .map(|c| c.load(Ordering::SeqCst))
            .collect()
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// The CPUs this process may run on.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: sched_getaffinity fills a zeroed cpu_set_t of the size given.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0 {
            let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
                .filter(|&c| libc::CPU_ISSET(c, &set))
                .collect();
            if !cpus.is_empty() {
                return cpus;
            }
        }
    }
    (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect()
}

/// glommio refuses to start below 512 KiB of lockable memory (io_uring
/// rings and buffers are locked). Raise the soft limit toward the hard one
/// (and the hard one too when privileged) so a stingy default does not
/// stop the broker.
fn raise_memlock_limit() {
    const WANT: libc::rlim_t = 64 << 20;
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) != 0 || lim.rlim_cur >= WANT {
            return;
        }
        let raised = libc::rlimit {
            rlim_cur: WANT,
            rlim_max: lim.rlim_max.max(WANT),
        };
        if libc::setrlimit(libc::RLIMIT_MEMLOCK, &raised) != 0 {
            let soft = libc::rlimit {
                rlim_cur: lim.rlim_max.min(WANT),
                rlim_max: lim.rlim_max,
            };
            libc::setrlimit(libc::RLIMIT_MEMLOCK, &soft);
        }
    }
}

/// Every connection and segment file is a descriptor: raise the soft
/// limit to the hard one (a default soft limit of 1024 let 1 100 idle
/// sockets on the management port stop AMQP accepts), and say what it is.
fn raise_nofile_limit() {
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return;
        }
        let was = lim.rlim_cur;
        if was < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                log::info!("file descriptor limit raised from {was} to {}", lim.rlim_max);
                return;
            }
        }
        log::info!("file descriptor limit: {was}");
    }
}

/// Finds the port to use: refuses one another process listens on, and
/// resolves port 0 to a concrete free port.
///
/// What a previous run left does not count: a supervisor must be able to
/// restart warren at once after a `kill -9`, as it restarts RabbitMQ. Its
/// connections (FIN_WAIT, TIME_WAIT) are told apart from a listener by
/// binding with SO_REUSEADDR and SO_REUSEPORT (the kernel lets a
/// TIME_WAIT socket of a listener that had only SO_REUSEPORT, as warren's
/// before this rule, block a bind with SO_REUSEADDR alone). Its listeners
/// outlive it briefly (the kernel
/// tears down the dead process's io_uring, which holds them, after the
/// process is gone): a listener no process holds is waited for, up to
/// [`ORPHAN_WAIT`]. A listener that set SO_REUSEPORT (another warren),
/// which the kernel would let us join silently, is found in the kernel's
/// socket table.
fn probe_port(addr: SocketAddr) -> io::Result<SocketAddr> {
    let in_use = || {
        io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("port {} is already in use on {}", addr.port(), addr.ip()),
        )
    };
    if addr.port() != 0 {
        let until = std::time::Instant::now() + ORPHAN_WAIT;
        loop {
            let listeners = listeners_on(addr);
            if listeners.is_empty() {
                break;
            }
            if held_by_a_process(&listeners) || std::time::Instant::now() > until {
                return Err(in_use());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // Live listeners were refused above: joining one with SO_REUSEPORT is
    // not possible here.
    let sock = listener_socket(addr).map_err(|e| {
        if e.kind() == io::ErrorKind::AddrInUse {
            in_use()
        } else {
            io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"))
        }
    })?;
    sock.local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("not an IP socket"))
}

/// How long a dead process's listeners may take to go away.
const ORPHAN_WAIT: Duration = Duration::from_secs(10);

/// A bound TCP socket with SO_REUSEADDR and SO_REUSEPORT (every shard
/// accepts on the same port; see [`probe_port`] for the probe).
fn listener_socket(addr: SocketAddr) -> io::Result<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sock.set_reuse_address(true)?;
    sock.set_reuse_port(true)?;
    sock.bind(&addr.into())?;
    Ok(sock)
}

/// A shard's listener: SO_REUSEPORT so the kernel spreads connections over
/// the shards, SO_REUSEADDR so a restart is not refused by the previous
/// run's connections.
fn shard_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    use std::os::fd::{FromRawFd, IntoRawFd};
    let sock = listener_socket(addr)?;
    sock.listen(1024)?;
    // SAFETY: a listening socket we own, handed over whole.
    Ok(unsafe { TcpListener::from_raw_fd(sock.into_raw_fd()) })
}

/// The sockets (by inode) on this host, in our network namespace, that
/// listen on `addr`'s port at an address that overlaps `addr`'s.
fn listeners_on(addr: SocketAddr) -> Vec<u64> {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .flat_map(|table| {
            table
                .lines()
                .skip(1)
                .filter_map(parse_listener)
                .filter(|&(ip, port, _)| port == addr.port() && overlaps(ip, addr.ip()))
                .map(|(_, _, inode)| inode)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Whether a process (one we may look at) has one of these sockets open.
fn held_by_a_process(inodes: &[u64]) -> bool {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return true;
    };
    let names: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    procs
        .flatten()
        .filter(|p| {
            p.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|p| std::fs::read_dir(p.path().join("fd")).ok())
        .flat_map(|fds| fds.flatten())
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .any(|target| names.iter().any(|n| target.as_os_str() == n.as_str()))
}

/// (address, port, inode) of a LISTEN entry of /proc/net/tcp{,6}.
fn parse_listener(line: &str) -> Option<(std::net::IpAddr, u16, u64)> {
    let cols: Vec<&str> = line.split_whitespace().collect();
    let (local, state) = (*cols.get(1)?, *cols.get(3)?);
    if state != "0A" {
        return None;
    }
    let inode = cols.get(9).and_then(|i| i.parse().ok()).unwrap_or(0);
    let (ip_hex, port_hex) = local.split_once(':')?;
    let port = u16::from_str_radix(port_hex, 16).ok()?;
    // The kernel prints each 32-bit word of the address in host order.
    let words: Vec<u32> = (0..ip_hex.len() / 8)
        .map(|i| u32::from_str_radix(&ip_hex[i * 8..i * 8 + 8], 16).map(u32::from_be))
        .collect::<Result<_, _>>()
        .ok()?;
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_be_bytes()).collect();
    let ip = match bytes.len() {
        4 => std::net::IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?),
        16 => std::net::IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?),
        _ => return None,
    };
    Some((ip, port, inode))
}

/// Two listening addresses collide when they are equal or either is the
/// wildcard (an IPv4-mapped IPv6 address counts as its IPv4 address).
fn overlaps(a: std::net::IpAddr, b: std::net::IpAddr) -> bool {
    let canon = |ip: std::net::IpAddr| ip.to_canonical();
    a.is_unspecified() || b.is_unspecified() || canon(a) == canon(b)
}

/// Starts the broker and returns once every shard accepts connections.
pub fn start(mut cfg: Config) -> io::Result<ServerHandle> {
    raise_memlock_limit();
    raise_nofile_limit();
    let cpus = allowed_cpus();
    let nshards = if cfg.shards == 0 { cpus.len() } else { cfg.shards };
    if nshards == 0 || nshards > u16::MAX as usize {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "invalid number of shards",
        ));
    }
    let data = DataDir::open(&cfg.data_dir)?;
    cfg.cluster.id = crate::cluster::node::load_or_create_id(&cfg.data_dir, &cfg.cluster.node_name)?;
    // A cluster member's topology comes from the cluster's metadata log,
    // replayed by shard 0 once it runs; the topology log is not used.
    let member = crate::cluster::node::is_member(&cfg.data_dir);
    let (topolog, initial) = if member {
        (None, Vec::new())
    } else {
        let (log, initial) = crate::hub::recover_topology(
            &crate::storage::RealDisk,
            &cfg,
            nshards,
            super::state::random_salt(),
        )?;
        (Some(log), initial)
    };
    let initial = Arc::new(initial);
    let mut topolog = topolog;
    let addr = probe_port(SocketAddr::new(cfg.bind, cfg.port))?;
    // A broker that cannot load its certificates does not start: clients
    // configured for AMQPS would find nothing, or worse, plain AMQP.
    let tls = match &cfg.tls {
        Some(t) => {
            let server = crate::tls::server_config(&t.options, &[])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("TLS: {e}")))?;
            Some((probe_port(SocketAddr::new(cfg.bind, t.port))?, server))
        }
        None => None,
    };
    let cfg = Arc::new(cfg);
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(SharedStats {
        connections: (0..nshards).map(|_| Default::default()).collect(),
        shard_cpu: (0..nshards).map(|_| Default::default()).collect(),
        round_free: (0..nshards).map(|_| Default::default()).collect(),
        memory_alarm: AtomicBool::new(false),
        disk_alarm: AtomicBool::new(false),
        app_stopped: AtomicBool::new(member),
        app_stopped_by_user: AtomicBool::new(false),
        disk_free: Default::default(),
        disk_free_limit: cfg.limits.disk_free_limit.into(),
    });
    let mesh: MeshBuilder<Batch, _> = MeshBuilder::full(nshards, cfg.limits.ring_capacity);
    let (ready_tx, ready_rx) = mpsc::channel::<io::Result<()>>();
    // One wake-up socket per shard for the management plane's mailboxes.
    let mut wakes = Vec::new();
    let mut mailboxes = Vec::new();
    for _ in 0..nshards {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
        ours.set_nonblocking(true)?;
        let ours = std::sync::Mutex::new(ours);
        mailboxes.push(crate::admin::Mailbox::new(move || {
            use std::io::Write;
            // A full socket means a wake-up is already pending.
            let _ = ours.lock().map(|mut s| s.write(&[1]));
        }));
        wakes.push(Some(theirs));
    }
    let mut admin = crate::admin::Admin::new(
        mailboxes,
        addr,
        stop.clone(),
        stats.clone(),
        cfg.clone(),
        std::time::SystemTime::now(),
    );
    admin.amqps_addr = tls.as_ref().map(|t| t.0);
    let base_seed = super::state::random_u64();
    let replies = Arc::new(crate::broker::reply_to::LiveReplies::default());
    let mut threads = Vec::new();
    for i in 0..nshards {
        let cpu = cpus[i % cpus.len()];
        let cfg = cfg.clone();
        let abort_on_panic = cfg.abort_on_shard_panic;
        let stop = stop.clone();
        let mesh = mesh.clone();
        let ready = ready_tx.clone();
        let initial = initial.clone();
        let stats = stats.clone();
        let admin = admin.clone();
        let wake = wakes[i].take().expect("one per shard");
        let tls = tls.clone();
        let replies = replies.clone();
        let log = if i == 0 { topolog.take() } else { None };
        let seed = base_seed ^ ((i as u64 + 1) << 32);
        let builder = LocalExecutorBuilder::new(Placement::Fixed(cpu))
            .name(&format!("warren-shard-{i}"))
            // Networking does not use registered buffers; keep locked memory
            // small so the default 8 MiB RLIMIT_MEMLOCK fits many shards.
            .io_memory(512 * 1024);
        let h = builder
            .spawn(move || async move {
                let boot = Boot {
                    id: i as ShardId,
                    nshards,
                    cfg,
                    addr,
                    seed,
                    initial,
                    log,
                    stats,
                    admin,
                    wake,
                    tls,
                    replies,
                };
                run_shard(boot, mesh, stop, ready).await;
            })
            .map_err(|e| io::Error::other(format!("cannot start shard {i}: {e}")))?;
        threads.push(std::thread::spawn(move || {
            if let Err(glommio::GlommioError::BuilderError(glommio::BuilderErrorKind::ThreadPanic(_))) =
                h.join()
                && abort_on_panic
            {
                log::error!("shard {i} panicked: ending the process (the node restarts from its data)");
                std::process::abort();
            }
        }));
    }
    drop(ready_tx);
    for _ in 0..nshards {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                admin.stop();
                return Err(e);
            }
            Err(_) => {
                admin.stop();
                return Err(io::Error::other("a shard failed to start"));
            }
        }
    }
    Ok(ServerHandle {
        admin,
        stats,
        addr,
        threads,
        _data: Some(data),
    })
}

/// What a shard starts from.
struct Boot {
    id: ShardId,
    nshards: usize,
    cfg: Arc<Config>,
    addr: SocketAddr,
    seed: u64,
    initial: Arc<Vec<Change>>,
    log: Option<TopoLog>,
    stats: Arc<SharedStats>,
    admin: crate::admin::Admin,
    wake: std::os::unix::net::UnixStream,
    /// The AMQPS address and server configuration.
    tls: Option<(SocketAddr, Arc<rustls::ServerConfig>)>,
    replies: Arc<crate::broker::reply_to::LiveReplies>,
}

async fn run_shard(
    boot: Boot,
    mesh: MeshBuilder<Batch, glommio::channels::channel_mesh::Full>,
    stop: Arc<AtomicBool>,
    ready: mpsc::Sender<io::Result<()>>,
) {
    let Boot {
        id,
        nshards,
        cfg,
        addr,
        seed,
        initial,
        log,
        stats,
        admin,
        wake,
        tls,
        replies,
    } = boot;
    let hub = crate::hub::Hub::new(
        id,
        nshards,
        cfg.clone(),
        session_config(&cfg),
        crate::storage::RealDisk::shared(),
        seed,
        &initial,
        log,
        now_ms(),
    );
    let shard = hub.map(|mut h| {
        h.replies = replies;
        Shard::new(h, cfg, stats)
    });
    let listener = shard_listener(addr);
    let tls_listener = tls.as_ref().map(|(a, _)| shard_listener(*a));
    // Join the mesh even when this shard cannot start, so the others are
    // not left waiting for it; the failure is reported after.
    let (senders, receivers) = if nshards > 1 {
        match mesh.join().await {
            Ok(x) => (Some(x.0), Some(x.1)),
            Err(_) => {
                let _ = ready.send(Err(io::Error::other("cannot join the shard mesh")));
                return;
            }
        }
    } else {
        (None, None)
    };
    let shard = match shard {
        Ok(s) => Rc::new(s),
        Err(e) => {
            let _ = ready.send(Err(io::Error::other(e)));
            return;
        }
    };
    let listener = match listener {
        Ok(l) => l,
        Err(e) => {
            let _ = ready.send(Err(io::Error::other(format!("cannot listen on {addr}: {e}"))));
            return;
        }
    };
    let tls_listener = match tls_listener {
        Some(Ok(l)) => tls.map(|(_, cfg)| (l, cfg)),
        Some(Err(e)) => {
            let a = tls.map(|t| t.0);
            let _ = ready.send(Err(io::Error::other(format!("cannot listen on {a:?}: {e}"))));
            return;
        }
        None => None,
    };
    let mut tasks = Vec::new();
    if let (Some(senders), Some(receivers)) = (senders, receivers) {
        let senders = Rc::new(senders);
        let receivers = Rc::new(receivers);
        for peer in 0..nshards {
            if peer == id as usize {
                continue;
            }
            tasks.push(glommio::spawn_local(flusher(shard.clone(), senders.clone(), peer)).detach());
            tasks.push(glommio::spawn_local(receiver(shard.clone(), receivers.clone(), peer)).detach());
        }
    }
    tasks.push(glommio::spawn_local(syncer(shard.clone())).detach());
    tasks.push(glommio::spawn_local(sweeper(shard.clone())).detach());
    tasks.push(glommio::spawn_local(super::batching::control(shard.clone())).detach());
    tasks.push(glommio::spawn_local(super::balance::run(shard.clone())).detach());
    {
        use std::os::fd::{FromRawFd, IntoRawFd};
        // SAFETY: the fd comes from a socket we own and hand over whole.
        let wake = unsafe { glommio::net::UnixStream::from_raw_fd(wake.into_raw_fd()) };
        tasks.push(glommio::spawn_local(super::admin::run(shard.clone(), admin.mailboxes(), wake)).detach());
    }
    if id == 0 {
        tasks.push(glommio::spawn_local(memory_monitor(shard.clone())).detach());
        if let Err(e) = super::cluster::start(&shard, admin.mailboxes()).await {
            let _ = ready.send(Err(io::Error::other(format!(
                "cluster port {}: {e}",
                shard.cfg.cluster.port
            ))));
            return;
        }
    }
    let acceptor = accept(shard.clone(), listener, conn::run);
    let tls_acceptor = tls_listener.map(|(listener, server)| {
        accept(shard.clone(), listener, move |shard, stream| {
            conn::run_tls(shard, stream, server.clone())
        })
    });
    let _ = ready.send(Ok(()));
    if id == 0 {
        if let Some(a) = admin.amqps_addr {
            log::info!("accepting AMQPS (TLS) connections on {a}");
        }
        log::info!(
            "warren {} ready: accepting AMQP connections on {addr} with {nshards} shard(s)",
            env!("CARGO_PKG_VERSION")
        );
    }
    // Woken by Admin::stop through the admin task; the timer is a
    // fallback only (an idle broker must not wake for nothing).
    while !stop.load(Ordering::SeqCst) {
        futures_lite::future::or(
            shard.stop_notify.wait(),
            glommio::timer::sleep(Duration::from_secs(1)),
        )
        .await;
    }
    shard.stopping.set(true);
    acceptor.cancel();
    if let Some(a) = tls_acceptor {
        a.cancel();
    }
    let conns: Vec<_> = shard.conns.borrow().values().cloned().collect();
    for c in &conns {
        c.push(crate::session::Event::ForceClose {
            code: crate::protocol::reply::CONNECTION_FORCED,
            text: "broker forced connection closure with reason 'shutdown'".into(),
        });
    }
    // Give connections a moment to send their close frames.
    for _ in 0..40 {
        if shard.conns.borrow().is_empty() {
            break;
        }
        glommio::timer::sleep(Duration::from_millis(25)).await;
    }
    for t in tasks {
        t.cancel();
    }
    let node = shard.cluster.borrow_mut().take();
    if let Some(node) = node {
        node.quorum.shutdown(&node.node.rpc()).await;
        node.node.shutdown().await;
    }
    // Whatever was written but not yet synced (acks, deliveries).
    shard.after_step(now_ms());
    let batch = shard.hub.borrow_mut().take_sync_all();
    for (_, f) in batch.files {
        let _ = f.sync();
    }
}

/// Accepts connections on `listener` and runs each in a task of its own
/// (`serve`), until cancelled; none once the shard is stopping.
fn accept<F, Fut>(shard: Rc<Shard>, listener: TcpListener, serve: F) -> glommio::task::JoinHandle<()>
where
    F: Fn(Rc<Shard>, glommio::net::TcpStream) -> Fut + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    glommio::spawn_local(async move {
        loop {
            match listener.accept().await {
                Ok(stream) => {
                    // Stopping, or the app is stopped (`stop_app`, or a
                    // cluster member still catching up): refused.
                    if shard.stopping.get() || shard.stats.app_stopped.load(Ordering::SeqCst) {
                        continue;
                    }
                    glommio::spawn_local(serve(shard.clone(), stream)).detach();
                }
                Err(e) => {
                    log::warn!("accept failed: {e}");
                    glommio::timer::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    })
    .detach()
}

/// Group commit: syncs every file written since the last sync in one go,
/// off the reactor, then releases the confirms that waited for it. Writes
/// made while a sync runs are covered by the next one. A queue whose file
/// fails to sync stops taking persistent messages (see
/// [`crate::owner::Owner::synced`]).
async fn syncer(shard: Rc<Shard>) {
    let linger = shard.cfg.limits.fsync_interval;
    // Waiters the last sync released: lingering for more writes pays only
    // when several publishers wait together; a lone one-at-a-time
    // publisher (pika's BlockingConnection) would wait the linger on
    // every message for nothing. Writes that come while a sync runs are
    // covered by the next one anyway.
    let mut last_waiters = 0u64;
    loop {
        shard.sync_notify.wait().await;
        if !linger.is_zero() && last_waiters > 1 {
            glommio::timer::sleep(linger).await;
        } else {
            // What is already runnable adds its writes first.
            glommio::executor().yield_now().await;
        }
        loop {
            let batch = shard.hub.borrow_mut().take_sync();
            if batch.is_empty() {
                break;
            }
            let n_files = batch.files.len() as u64;
            let n_waiters = batch.waiters.len() as u64;
            let began = std::time::Instant::now();
            for (_, f) in &batch.files {
                f.begin_sync();
            }
            let files = batch.files;
            let failed = if files.is_empty() {
                Vec::new()
            } else {
                glommio::executor()
                    .spawn_blocking(move || {
                        let mut failed = Vec::new();
                        for (queue, f) in &files {
                            if let Err(e) = f.sync() {
                                log::error!("fsync failed: {e}");
                                failed.push(*queue);
                            }
                        }
                        failed
                    })
                    .await
            };
            if n_files > 0 {
                last_waiters = n_waiters;
                let mut st = shard.sync_stats.borrow_mut();
                st.fsyncs += 1;
                st.files += n_files;
                st.waiters += n_waiters;
                let _ = st.latency.record(began.elapsed().as_micros().max(1) as u64);
            }
            let now = now_ms();
            shard.hub.borrow_mut().synced(batch.waiters, &failed, now);
            shard.after_step(now);
        }
    }
}

/// Sets and clears the memory alarm, as RabbitMQ's memory monitor does
/// (on allocated memory, RabbitMQ's default strategy), and gives freed
/// memory back to the kernel when much of what is resident is free.
async fn memory_monitor(shard: Rc<Shard>) {
    let limit = shard.cfg.limits.memory_high_watermark;
    let mut last_trim = std::time::Instant::now();
    loop {
        let used = super::alloc::allocated();
        let alarm = used > limit;
        if shard.stats.memory_alarm.swap(alarm, Ordering::SeqCst) != alarm {
            if alarm {
                log::warn!(
                    "memory resource limit alarm set: {} MiB allocated, limit {} MiB; publishers blocked",
                    used >> 20,
                    limit >> 20
                );
            } else {
                log::warn!(
                    "memory resource limit alarm cleared: {} MiB allocated",
                    used >> 20
                );
            }
        }
        // More than 64 MiB and half of the resident set free in the
        // allocator (a burst of connections came and went, a queue was
        // purged): trim, at most every 5 s, off the shard's thread.
        let rss = resident_memory();
        if rss > used + (64 << 20) && rss > used * 2 && last_trim.elapsed() > Duration::from_secs(5) {
            last_trim = std::time::Instant::now();
            glommio::executor()
                .spawn_blocking(super::alloc::release_free_memory)
                .await;
        }
        check_disk(&shard);
        // RabbitMQ checks every 500 ms (memory_monitor_interval).
        glommio::timer::sleep(Duration::from_millis(500)).await;
    }
}

/// Sets and clears the disk alarm, as RabbitMQ's disk monitor does.
fn check_disk(shard: &Shard) {
    let Some(free) = disk_free(&shard.cfg.data_dir) else {
        return;
    };
    let stats = &shard.stats;
    stats.disk_free.store(free, Ordering::Relaxed);
    let limit = stats.disk_free_limit.load(Ordering::Relaxed);
    let alarm = free < limit;
    if stats.disk_alarm.swap(alarm, Ordering::SeqCst) != alarm {
        if alarm {
            log::warn!(
                "disk resource limit alarm set: {} MB free, limit {} MB; publishers blocked",
                free / 1_000_000,
                limit / 1_000_000
            );
        } else {
            log::warn!("disk resource limit alarm cleared: {} MB free", free / 1_000_000);
        }
    }
}

/// Bytes available to the broker on the file system of `dir`.
fn disk_free(dir: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs fills the struct we pass; the path is a valid C string.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        (libc::statvfs(c.as_ptr(), &mut st) == 0).then(|| st.f_bavail as u64 * st.f_frsize as u64)
    }
}

/// This process's resident memory in bytes.
pub fn resident_memory() -> u64 {
    let page = {
        // SAFETY: sysconf has no preconditions.
        let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if p > 0 { p as u64 } else { 4096 }
    };
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|r| r.parse::<u64>().ok()))
        .map_or(0, |pages| pages * page)
}

/// Message TTLs and queue expiry, checked every 100 ms while a queue of
/// this shard has any (every second otherwise, so an idle shard sleeps).
async fn sweeper(shard: Rc<Shard>) {
    loop {
        let timed = shard.hub.borrow().owner.wants_sweep();
        if timed {
            glommio::timer::sleep(Duration::from_millis(100)).await;
        } else {
            // Woken early when a TTL appears (a declare, a message).
            futures_lite::future::or(
                shard.sweep_notify.wait(),
                glommio::timer::sleep(Duration::from_secs(1)),
            )
            .await;
        }
        let now = now_ms();
        shard.hub.borrow_mut().sweep(now);
        shard.after_step(now);
    }
}

async fn flusher(shard: Rc<Shard>, senders: Rc<Senders<Batch>>, peer: usize) {
    loop {
        shard.flush[peer].wait().await;
        loop {
            let batch = std::mem::take(&mut shard.hub.borrow_mut().out.items[peer]);
            if batch.is_empty() {
                break;
            }
            shard.ring_items.set(shard.ring_items.get() + batch.len() as u64);
            shard.ring_batches.set(shard.ring_batches.get() + 1);
            if senders.send_to(peer, batch).await.is_err() {
                return;
            }
            for w in shard.drain_waiters.borrow_mut().drain(..) {
                w.wake();
            }
        }
    }
}

async fn receiver(shard: Rc<Shard>, receivers: Rc<Receivers<Batch>>, peer: usize) {
    loop {
        match receivers.recv_from(peer).await {
            Ok(Some(batch)) => {
                let now = now_ms();
                {
                    let mut hub = shard.hub.borrow_mut();
                    for item in batch {
                        hub.handle_item(item, now);
                    }
                }
                shard.after_step(now);
            }
            _ => return,
        }
    }
}

/// The sessions' settings, from the broker's configuration.
fn session_config(cfg: &Config) -> crate::session::SessionConfig {
    let l = &cfg.limits;
    crate::session::SessionConfig {
        frame_max: l.frame_max,
        channel_max: l.channel_max,
        heartbeat: l.heartbeat.as_secs().min(u16::MAX as u64) as u16,
        max_message_size: l.max_message_size,
        max_unconfirmed: l.max_unconfirmed,
        tx_max_messages: l.tx_max_messages,
        tx_max_bytes: l.tx_max_bytes,
        cluster_name: format!("warren@{}", hostname()),
        product_version: env!("CARGO_PKG_VERSION").into(),
        consumer_timeout_ms: l.consumer_timeout.as_millis() as u64,
        handshake_timeout_ms: l.handshake_timeout.as_millis() as u64,
        reply_output_max: 4 * l.write_buffer_high,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_listeners_from_the_kernel_table() {
        let v4 = "   0: 0100007F:1628 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0";
        assert_eq!(parse_listener(v4), Some(("127.0.0.1".parse().unwrap(), 5672, 1)));
        let est = "   1: 0100007F:1628 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0";
        assert_eq!(parse_listener(est), None);
        let v6 = "   0: 00000000000000000000000000000000:1628 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0";
        assert_eq!(parse_listener(v6), Some(("::".parse().unwrap(), 5672, 1)));
        let lo6 = "   0: 00000000000000000000000001000000:1628 00000000000000000000000000000000:0000 0A 0 0 0 0 0 77";
        assert_eq!(parse_listener(lo6), Some(("::1".parse().unwrap(), 5672, 77)));
    }

    #[test]
    fn a_listener_on_the_port_is_found_and_a_closed_one_is_not() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let held = listeners_on(addr);
        assert_eq!(held.len(), 1);
        assert!(held_by_a_process(&held));
        assert_eq!(
            listeners_on(SocketAddr::new("0.0.0.0".parse().unwrap(), addr.port())),
            held
        );
        assert!(probe_port(addr).is_err());
        drop(l);
        assert!(listeners_on(addr).is_empty());
        assert_eq!(probe_port(addr).unwrap(), addr);
    }
}
