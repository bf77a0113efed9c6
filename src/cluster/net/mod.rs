//! The cluster port: authenticated TCP between the nodes of a cluster, and
//! request/response calls over it ([`Transport`]). openraft's network runs on
//! it ([`raft`]).
//!
//! One [`Transport`] per node, on shard 0's executor (it is `!Send`). Each
//! connection starts with the handshake of [`super::wire`] (both ends prove
//! the shared secret) and then carries frames. A node calls a peer on one
//! pooled connection per peer address (opened on first use, reopened after
//! a failure, with a backoff between failed attempts) and serves calls on
//! the connections peers opened to it: each request goes to the
//! [`Service`] registered for its kind, in a task of its own, and its reply
//! goes back with the request's id.
//!
//! Everything is bounded ([`Limits`]): frame sizes (tiny before the
//! handshake), the handshake's time, inbound connections, calls in flight
//! per connection (a full connection stops reading: the peer's writes wait
//! in TCP), frames queued for writing, calls waiting for a connection.

mod conn;
pub mod raft;

use crate::cluster::secret::Secret;
use crate::cluster::wire::{self, Role};
use conn::{Conn, Dir, HandshakeFailure, handshake};
use futures::future::{Either, LocalBoxFuture};
use glommio::net::{TcpListener, TcpStream};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::pin::pin;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

/// The cluster port's limits.
#[derive(Clone, Debug)]
pub struct Limits {
    /// The largest frame body (a request or a reply): Raft appends and
    /// snapshot chunks.
    pub max_frame: usize,
    /// Time for a peer to complete the handshake (either direction).
    pub handshake_timeout: Duration,
    /// Time for a TCP connect.
    pub connect_timeout: Duration,
    /// Inbound connections at once, authenticated or not; more are closed
    /// at once.
    pub max_inbound: usize,
    /// Calls in flight on one connection (outbound: callers wait for a
    /// place; inbound: the connection stops reading).
    pub max_in_flight: usize,
    /// Frames queued for a connection's writer.
    pub write_queue: usize,
    /// Calls waiting for a peer's connection to open.
    pub max_waiting: usize,
    /// After a failed connect, calls to that peer fail at once for this
    /// long, doubling on each failure up to `backoff_max`.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// A call that times out on a connection that has received nothing for
    /// this long closes it (a peer gone without a FIN or RST: the next call
    /// reconnects instead of waiting on a dead socket).
    pub dead_after: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_frame: 64 << 20,
            handshake_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(3),
            max_inbound: 256,
            max_in_flight: 256,
            write_queue: 256,
            max_waiting: 1024,
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            dead_after: Duration::from_secs(10),
        }
    }
}

/// Why a call failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallError {
    /// No connection: connect failed, the connection broke (the call may
    /// or may not have been served), or the peer is in its backoff.
    Unreachable(String),
    /// The handshake failed: a wrong secret (on either side), or the peer
    /// speaks something else.
    Refused(String),
    /// No reply in time (the call may still be served).
    Timeout,
    /// The peer's service answered with an error.
    Remote(String),
    /// The request is over the frame limit.
    TooLarge(usize),
    /// This transport is shut down.
    Shutdown,
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Unreachable(e) => write!(f, "unreachable: {e}"),
            CallError::Refused(e) => write!(f, "refused: {e}"),
            CallError::Timeout => f.write_str("timed out"),
            CallError::Remote(e) => write!(f, "remote error: {e}"),
            CallError::TooLarge(n) => write!(f, "request of {n} bytes is over the frame limit"),
            CallError::Shutdown => f.write_str("the cluster transport is shut down"),
        }
    }
}

impl std::error::Error for CallError {}

/// A service's answer: the reply, or an error text (the caller sees
/// [`CallError::Remote`]).
pub type Reply = Result<Vec<u8>, String>;

/// What serves one or more request kinds of the cluster port.
pub trait Service {
    /// Serves a request of `kind` from the authenticated node `from`.
    fn call(&self, from: &str, kind: u8, body: Vec<u8>) -> LocalBoxFuture<'static, Reply>;
}

struct FnService<F>(F);

impl<F, Fut> Service for FnService<F>
where
    F: Fn(&str, u8, Vec<u8>) -> Fut,
    Fut: Future<Output = Reply> + 'static,
{
    fn call(&self, from: &str, kind: u8, body: Vec<u8>) -> LocalBoxFuture<'static, Reply> {
        Box::pin((self.0)(from, kind, body))
    }
}

/// A [`Service`] from a closure.
pub fn service_fn<F, Fut>(f: F) -> Rc<dyn Service>
where
    F: Fn(&str, u8, Vec<u8>) -> Fut + 'static,
    Fut: Future<Output = Reply> + 'static,
{
    Rc::new(FnService(f))
}

/// A peer address's outbound connection.
enum Peer {
    Up(Rc<Conn>),
    /// A connect task runs; calls wait for it. `backoff`: the wait after it
    /// if it fails.
    Connecting {
        waiters: Vec<futures::channel::oneshot::Sender<Result<Rc<Conn>, CallError>>>,
        backoff: Duration,
    },
    /// The last connect failed: calls fail with `error` until `until`.
    Down {
        until: Instant,
        backoff: Duration,
        error: CallError,
    },
}

/// One node's end of the cluster port. Lives on one executor (shard 0),
/// until [`Transport::shutdown`].
pub struct Transport {
    name: String,
    secret: Secret,
    limits: Limits,
    this: Weak<Transport>,
    services: RefCell<HashMap<u8, Rc<dyn Service>>>,
    peers: RefCell<HashMap<String, Peer>>,
    inbound: RefCell<HashMap<u64, Rc<Conn>>>,
    /// Inbound connections still in their handshake.
    handshaking: Cell<usize>,
    /// Listening sockets (their fds) and the tasks that own them.
    listeners: RefCell<Vec<(std::os::fd::RawFd, glommio::task::JoinHandle<()>)>>,
    next_conn: Cell<u64>,
    stopped: Cell<bool>,
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// `fut`, unless `deadline` comes first.
async fn within<T>(deadline: Instant, fut: impl Future<Output = T>) -> Option<T> {
    let timer = glommio::timer::Timer::new(deadline.saturating_duration_since(Instant::now()));
    match futures::future::select(pin!(fut), timer).await {
        Either::Left((v, _)) => Some(v),
        Either::Right(_) => None,
    }
}

/// `host:port` to a socket address; a name is resolved off the reactor.
async fn resolve(addr: &str) -> io::Result<SocketAddr> {
    if let Ok(a) = addr.parse() {
        return Ok(a);
    }
    let name = addr.to_string();
    glommio::executor()
        .spawn_blocking(move || {
            use std::net::ToSocketAddrs;
            name.to_socket_addrs()?
                .next()
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))
        })
        .await
}

impl Transport {
    /// A node's transport: `name` is what it says in handshakes (its node
    /// name), `secret` what it proves.
    pub fn new(name: &str, secret: Secret) -> Rc<Transport> {
        Self::with_limits(name, secret, Limits::default())
    }

    pub fn with_limits(name: &str, secret: Secret, limits: Limits) -> Rc<Transport> {
        Rc::new_cyclic(|this| Transport {
            name: name.to_string(),
            secret,
            limits,
            this: this.clone(),
            services: RefCell::default(),
            peers: RefCell::default(),
            inbound: RefCell::default(),
            handshaking: Cell::new(0),
            listeners: RefCell::default(),
            next_conn: Cell::new(0),
            stopped: Cell::new(false),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Serves requests of `kind` (`0..=0x7f`) with `service` (replacing any).
    pub fn register(&self, kind: u8, service: Rc<dyn Service>) {
        assert!(kind <= wire::MAX_SERVICE_KIND, "service kinds are 0..=0x7f");
        self.services.borrow_mut().insert(kind, service);
    }

    /// Listens on `addr` (port 0: any) and accepts peers until
    /// [`Transport::shutdown`]; the address bound.
    pub fn listen(&self, addr: SocketAddr) -> io::Result<SocketAddr> {
        if self.stopped.get() {
            return Err(io::Error::other("the cluster transport is shut down"));
        }
        // Not SO_REUSEPORT (glommio's bind sets it): a second node on the
        // same port must fail, not share it.
        let domain = socket2::Domain::for_address(addr);
        let sock = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
        sock.set_reuse_address(true)?;
        sock.bind(&addr.into())?;
        sock.listen(128)?;
        let fd = sock.into_raw_fd();
        // SAFETY: a listening socket we own, handed over whole.
        let listener = unsafe { TcpListener::from_raw_fd(fd) };
        let local = listener.local_addr()?;
        let this = self.this.clone();
        let task = glommio::spawn_local(async move {
            loop {
                match listener.accept().await {
                    Ok(stream) => match this.upgrade() {
                        Some(t) => t.accepted(stream),
                        None => return,
                    },
                    // Shut down (see `shutdown`): the listener goes with
                    // this task.
                    Err(_) if this.upgrade().is_none_or(|t| t.stopped.get()) => return,
                    Err(e) => {
                        log::warn!("cluster port {local}: accept failed: {e}");
                        glommio::timer::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        })
        .detach();
        self.listeners.borrow_mut().push((fd, task));
        log::info!("cluster port listening on {local} as {}", self.name);
        Ok(local)
    }

    fn accepted(&self, mut stream: TcpStream) {
        let from = stream
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "?".into());
        if self.stopped.get() {
            return;
        }
        let open = self.inbound.borrow().len() + self.handshaking.get();
        if open >= self.limits.max_inbound {
            log::warn!(
                "cluster port: refused a connection from {from}: {open} connections already (the limit)"
            );
            return;
        }
        let _ = stream.set_nodelay(true);
        self.handshaking.set(self.handshaking.get() + 1);
        let this = self.this.clone();
        let key = self.secret.clone();
        let me = self.name.clone();
        let deadline = Instant::now() + self.limits.handshake_timeout;
        glommio::spawn_local(async move {
            let r = within(deadline, handshake(&mut stream, Role::Server, key.bytes(), &me)).await;
            let Some(t) = this.upgrade() else { return };
            t.handshaking.set(t.handshaking.get() - 1);
            let (peer, rest) = match r {
                Some(Ok(v)) => v,
                Some(Err(e)) => {
                    log::warn!("cluster port: refused a connection from {from}: {e}");
                    return;
                }
                None => {
                    log::warn!("cluster port: refused a connection from {from}: no handshake in time");
                    return;
                }
            };
            if t.stopped.get() {
                return;
            }
            log::debug!("cluster port: {peer} connected from {from}");
            let conn = Conn::start(&t, stream, Dir::Inbound, peer, from, rest);
            t.inbound.borrow_mut().insert(conn.id, conn);
        })
        .detach();
    }

    /// Calls `kind` on the node at `addr` (`host:port`) with `body`: its
    /// reply, or why not within `timeout`.
    pub async fn call(
        &self,
        addr: &str,
        kind: u8,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, CallError> {
        assert!(kind <= wire::MAX_SERVICE_KIND, "service kinds are 0..=0x7f");
        if self.stopped.get() {
            return Err(CallError::Shutdown);
        }
        if body.len() > self.limits.max_frame {
            return Err(CallError::TooLarge(body.len()));
        }
        let deadline = Instant::now() + timeout;
        let conn = match within(deadline, self.connection(addr)).await {
            Some(c) => c?,
            None => {
                return Err(CallError::Unreachable(format!(
                    "{addr}: not connected within {timeout:?}"
                )));
            }
        };
        match within(deadline, conn.request(kind, body)).await {
            Some(r) => r,
            None => {
                if conn.last_rx.get().elapsed() > self.limits.dead_after {
                    conn.close("no frame received for too long");
                }
                Err(CallError::Timeout)
            }
        }
    }

    /// The open connection to `addr`, opening one if needed.
    async fn connection(&self, addr: &str) -> Result<Rc<Conn>, CallError> {
        let (tx, rx) = futures::channel::oneshot::channel();
        let mut tx = Some(tx);
        {
            let mut peers = self.peers.borrow_mut();
            let start = match peers.get_mut(addr) {
                Some(Peer::Up(c)) if !c.closed.get() => return Ok(c.clone()),
                Some(Peer::Down { until, error, .. }) if Instant::now() < *until => return Err(error.clone()),
                Some(Peer::Connecting { waiters, .. }) => {
                    if waiters.len() >= self.limits.max_waiting {
                        return Err(CallError::Unreachable(format!("{addr}: too many calls waiting")));
                    }
                    waiters.extend(tx.take());
                    None
                }
                Some(Peer::Down { backoff, .. }) => Some(*backoff),
                _ => Some(self.limits.backoff_min),
            };
            if let Some(backoff) = start {
                peers.insert(
                    addr.to_string(),
                    Peer::Connecting {
                        waiters: tx.take().into_iter().collect(),
                        backoff,
                    },
                );
                let this = self.this.clone();
                let addr = addr.to_string();
                glommio::spawn_local(async move {
                    if let Some(t) = this.upgrade() {
                        t.connect(addr).await;
                    }
                })
                .detach();
            }
        }
        rx.await.unwrap_or(Err(CallError::Shutdown))
    }

    /// Opens the connection to `addr` and hands it to the calls waiting.
    async fn connect(&self, addr: String) {
        let deadline = Instant::now() + self.limits.connect_timeout + self.limits.handshake_timeout;
        let r = within(deadline, self.dial(&addr))
            .await
            .unwrap_or_else(|| Err(CallError::Unreachable(format!("{addr}: connect timed out"))));
        let (waiters, backoff) = match self.peers.borrow_mut().remove(&addr) {
            Some(Peer::Connecting { waiters, backoff }) => (waiters, backoff),
            // Shut down meanwhile.
            _ => (Vec::new(), self.limits.backoff_min),
        };
        let r = match r {
            Ok(c) if self.stopped.get() => {
                c.close("shut down");
                Err(CallError::Shutdown)
            }
            r => r,
        };
        if !self.stopped.get() {
            let state = match &r {
                Ok(c) => Peer::Up(c.clone()),
                Err(e) => Peer::Down {
                    until: Instant::now() + backoff,
                    backoff: (backoff * 2).min(self.limits.backoff_max),
                    error: e.clone(),
                },
            };
            self.peers.borrow_mut().insert(addr, state);
        }
        for w in waiters {
            let _ = w.send(r.clone());
        }
    }

    async fn dial(&self, addr: &str) -> Result<Rc<Conn>, CallError> {
        let unreachable = |e: &dyn fmt::Display| CallError::Unreachable(format!("{addr}: {e}"));
        let sa = resolve(addr).await.map_err(|e| unreachable(&e))?;
        let mut stream = TcpStream::connect_timeout(sa, self.limits.connect_timeout)
            .await
            .map_err(|e| unreachable(&e))?;
        let _ = stream.set_nodelay(true);
        let deadline = Instant::now() + self.limits.handshake_timeout;
        let hs = within(
            deadline,
            handshake(&mut stream, Role::Client, self.secret.bytes(), &self.name),
        )
        .await;
        let (peer, rest) = match hs {
            Some(Ok(v)) => v,
            Some(Err(HandshakeFailure::Protocol(e))) => {
                log::warn!("cluster port: handshake with {addr} failed: {e}");
                return Err(CallError::Refused(format!("{addr}: {e}")));
            }
            Some(Err(e)) => return Err(unreachable(&e)),
            None => return Err(unreachable(&"no handshake in time")),
        };
        log::debug!("cluster port: connected to {peer} at {addr}");
        Ok(Conn::start(
            self,
            stream,
            Dir::Outbound,
            peer,
            addr.to_string(),
            rest,
        ))
    }

    /// Stops listening, closes every connection, fails calls waiting;
    /// later calls fail with [`CallError::Shutdown`].
    pub fn shutdown(&self) {
        if self.stopped.replace(true) {
            return;
        }
        for (fd, task) in self.listeners.borrow_mut().drain(..) {
            // The port is free when this returns (a node restarted in the
            // same process binds it again at once). Dropping the listener
            // is not enough: the pending accept in the ring holds the
            // socket until the reactor gets to cancel it. Shutting a
            // listening socket down takes it out of listening now, and
            // fails that accept, which ends the task.
            // SAFETY: `fd` is the listener the task still owns: the task
            // ends only after `stopped` is set, which happens once, above.
            unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
            task.cancel();
        }
        let peers = std::mem::take(&mut *self.peers.borrow_mut());
        for (_, p) in peers {
            match p {
                Peer::Up(c) => c.close("shut down"),
                Peer::Connecting { waiters, .. } => {
                    for w in waiters {
                        let _ = w.send(Err(CallError::Shutdown));
                    }
                }
                Peer::Down { .. } => {}
            }
        }
        let inbound = std::mem::take(&mut *self.inbound.borrow_mut());
        for (_, c) in inbound {
            c.close("shut down");
        }
    }

    /// Open connections: (outbound, inbound). For tests and metrics.
    pub fn connections(&self) -> (usize, usize) {
        let out = self
            .peers
            .borrow()
            .values()
            .filter(|p| matches!(p, Peer::Up(c) if !c.closed.get()))
            .count();
        (out, self.inbound.borrow().len())
    }
}
