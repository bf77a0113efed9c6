//! A client connection's task: socket ↔ session glue. Reads are batched
//! (every complete frame in the buffer is processed before the next read)
//! and so are writes (all output of a step goes out in one write).

use super::state::{ConnHandle, ConnMeta, Shard, now_ms};
use crate::hub::ConnState;
use crate::session::{Phase, Session, Status};
use bytes::{Buf, BytesMut};
use futures_lite::io::{AsyncBufRead, AsyncWrite, AsyncWriteExt};
use glommio::net::{Preallocated, TcpStream};
use glommio::timer::Timer;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

const RECV_BUFFER: usize = 64 * 1024;

/// A connection's byte stream: plain TCP, or TLS over it. Either can
/// move to another shard at a quiet point: glommio reads by polling for
/// readiness and then receiving at once, so nothing of the input is in
/// flight, and a duplicate descriptor carries the socket whole (closing
/// ours, not shutting it down, leaves it open).
trait Transport: AsyncBufRead + AsyncWrite + Unpin + Sized {
    /// A duplicate of the socket, for the shard it moves to.
    fn dup_socket(&self) -> std::io::Result<std::os::fd::OwnedFd>;
    /// What travels besides the socket: a TLS session (keys, sequence
    /// numbers, records received and not yet read).
    fn park(self) -> Option<ParkedTls>;
    /// Holds no input the session has not taken (always so between
    /// steps: each step takes all of it).
    fn quiet(&self) -> bool;
}

type Plain = TcpStream<Preallocated>;
type Tls = futures_lite::io::BufReader<futures_rustls::server::TlsStream<Socket>>;

fn dup(fd: std::os::fd::RawFd) -> std::io::Result<std::os::fd::OwnedFd> {
    // SAFETY: the caller's stream keeps the descriptor open for the call.
    unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }.try_clone_to_owned()
}

impl Transport for Plain {
    fn dup_socket(&self) -> std::io::Result<std::os::fd::OwnedFd> {
        use std::os::fd::AsRawFd;
        dup(self.as_raw_fd())
    }
    fn park(self) -> Option<ParkedTls> {
        None
    }
    fn quiet(&self) -> bool {
        true
    }
}

impl Transport for Tls {
    fn dup_socket(&self) -> std::io::Result<std::os::fd::OwnedFd> {
        use std::os::fd::AsRawFd;
        match &self.get_ref().get_ref().0.0 {
            Some(s) => dup(s.as_raw_fd()),
            None => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }
    fn park(mut self) -> Option<ParkedTls> {
        // The session travels; this shard's socket handle stays and closes.
        self.get_mut().get_mut().0.0 = None;
        Some(ParkedTls(self))
    }
    fn quiet(&self) -> bool {
        self.buffer().is_empty()
    }
}

/// The socket under a TLS session, so that the session can move to
/// another shard without it (glommio's sockets belong to one executor)
/// and get the socket back there.
struct Socket(Option<TcpStream>);

/// A TLS session on its way to another shard, its socket taken out.
struct ParkedTls(Tls);

// SAFETY: a `ParkedTls` holds no socket (`park` took it out; its
// `Socket` is `None`), and everything else in it (the rustls session, the
// read buffer) is `Send`; only the socket, an executor's own, is not.
unsafe impl Send for ParkedTls {}

impl futures_lite::io::AsyncRead for Socket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        match &mut self.0 {
            Some(s) => Pin::new(s).poll_read(cx, buf),
            None => Poll::Ready(Err(std::io::ErrorKind::NotConnected.into())),
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match &mut self.0 {
            Some(s) => Pin::new(s).poll_write(cx, buf),
            None => Poll::Ready(Err(std::io::ErrorKind::NotConnected.into())),
        }
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.0 {
            Some(s) => Pin::new(s).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }
    fn poll_close(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.0 {
            Some(s) => Pin::new(s).poll_close(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}

/// Names and meta of a new connection, and its session.
fn accepted(shard: &Shard, stream: &TcpStream) -> (crate::ids::ConnId, ConnMeta, Conn) {
    let (id, session_cfg) = {
        let mut hub = shard.hub.borrow_mut();
        (hub.new_conn_id(), hub.session_cfg.clone())
    };
    // An IPv4 client of a dual-stack listener is shown as IPv4, as
    // RabbitMQ names it ("127.0.0.1:5555 -> 127.0.0.1:5672"): clients and
    // tools find their connection by that name.
    let canon = |a: std::net::SocketAddr| std::net::SocketAddr::new(a.ip().to_canonical(), a.port());
    let peer = stream.peer_addr().ok().map(canon);
    let _ = stream.set_nodelay(true);
    let local = stream.local_addr().ok().map(canon);
    let name = match (peer, local) {
        (Some(p), Some(l)) => format!("{p} -> {l}"),
        _ => format!("{id:?}"),
    };
    let meta = ConnMeta {
        name,
        peer,
        local,
        connected_at_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        state: "starting",
        ..Default::default()
    };
    let conn = Conn {
        session: Session::new(id, session_cfg, mono_ms()),
        state: ConnState::new(peer),
        rbuf: BytesMut::with_capacity(RECV_BUFFER),
        recv_oct: 0,
        send_oct: 0,
    };
    (id, meta, conn)
}

pub async fn run(shard: Rc<Shard>, stream: TcpStream) {
    let (id, meta, conn) = accepted(&shard, &stream);
    let stream = stream.buffered_with(Preallocated::new(RECV_BUFFER));
    live(shard, id, stream, meta, conn).await
}

/// An AMQPS connection: the TLS handshake (within the AMQP handshake
/// timeout), then AMQP inside it. It stays on this shard.
pub async fn run_tls(shard: Rc<Shard>, stream: TcpStream, tls: std::sync::Arc<rustls::ServerConfig>) {
    let (id, mut meta, mut conn) = accepted(&shard, &stream);
    let accept = futures_rustls::TlsAcceptor::from(tls).accept(Socket(Some(stream)));
    let timeout = shard.cfg.limits.handshake_timeout;
    let handshake = futures_lite::future::or(async { Some(accept.await) }, async {
        Timer::new(timeout).await;
        None
    })
    .await;
    let stream = match handshake {
        Some(Ok(s)) => s,
        Some(Err(e)) => {
            log::info!("TLS handshake with {:?} failed: {e}", meta.peer);
            return;
        }
        None => {
            log::info!("TLS handshake with {:?} timed out", meta.peer);
            return;
        }
    };
    let peer = crate::tls::describe(stream.get_ref().1);
    let tls_opts = shard
        .cfg
        .tls
        .as_ref()
        .map(|t| t.options.cert_login_from)
        .unwrap_or_default();
    conn.session.set_tls_login(match &peer.cert {
        Some(c) => c.login(tls_opts).ok_or("no name found"),
        None => Err("connection peer presented no TLS (x.509) certificate"),
    });
    meta.tls = Some(peer);
    let stream = futures_lite::io::BufReader::with_capacity(RECV_BUFFER, stream);
    live(shard, id, stream, meta, conn).await
}

/// What a connection's task holds besides its socket and handle: all of
/// it moves when the connection moves to another shard.
struct Conn {
    session: Session,
    state: ConnState,
    /// Input read but not yet taken by the session.
    rbuf: BytesMut,
    recv_oct: u64,
    send_oct: u64,
}

/// A connection on its way to another shard (inside an `Item::Adopt`).
struct Moving {
    fd: std::os::fd::OwnedFd,
    tls: Option<ParkedTls>,
    meta: ConnMeta,
    conn: Conn,
}

/// Runs a connection another shard handed over: the same socket, session
/// and buffered input, under a new id of this shard.
pub fn adopt(shard: &Rc<Shard>, a: crate::owner::Adoption) {
    let Ok(m) = a.0.downcast::<Moving>() else {
        log::error!("a shard handed over something that is not a connection");
        return;
    };
    let Moving {
        fd,
        tls,
        meta,
        mut conn,
    } = *m;
    let id = shard.hub.borrow_mut().new_conn_id();
    conn.session.rebind(id);
    conn.state.handoff_to = None;
    use std::os::fd::{FromRawFd, IntoRawFd};
    // SAFETY: the fd is a connected TCP socket this process owns, handed
    // over whole (the old shard closed its own descriptor of it).
    let stream = unsafe { TcpStream::from_raw_fd(fd.into_raw_fd()) };
    match tls {
        Some(ParkedTls(mut tls)) => {
            tls.get_mut().get_mut().0.0 = Some(stream);
            glommio::spawn_local(live(shard.clone(), id, tls, meta, conn)).detach();
        }
        None => {
            let stream = stream.buffered_with(Preallocated::new(RECV_BUFFER));
            glommio::spawn_local(live(shard.clone(), id, stream, meta, conn)).detach();
        }
    }
}

/// How [`serve`] ended.
enum End {
    Closed(String),
    /// The session stopped before a frame another shard should process.
    Moves(crate::ids::ShardId),
}

async fn live<S: Transport>(
    shard: Rc<Shard>,
    id: crate::ids::ConnId,
    mut stream: S,
    meta: ConnMeta,
    mut conn: Conn,
) {
    let peer = meta.peer;
    let handle = Rc::new(ConnHandle {
        inbox: RefCell::new(VecDeque::new()),
        notify: Default::default(),
        meta: RefCell::new(meta),
    });
    shard.conns.borrow_mut().insert(id, handle.clone());
    shard.stats.connections[shard.id as usize].fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let reason = match serve(&shard, &handle, &mut stream, &mut conn).await {
        End::Closed(reason) => reason,
        End::Moves(to) => match hand_over(&shard, id, &handle, stream, conn, to).await {
            Ok(()) => return,
            Err((reason, back, s)) => {
                conn = back;
                stream = s;
                reason
            }
        },
    };
    let Conn {
        mut session,
        mut state,
        ..
    } = conn;
    let wall = now_ms();
    {
        let mut hub = shard.hub.borrow_mut();
        session.abort(&reason, &mut hub.client(&mut state, wall));
    }
    if !session.output().is_empty() {
        let out = std::mem::take(session.output());
        let _ = write_all(&mut stream, &out).await;
    }
    shard.conns.borrow_mut().remove(&id);
    shard.stats.connections[shard.id as usize].fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    let left: Vec<_> = handle.inbox.borrow_mut().drain(..).collect();
    {
        let mut hub = shard.hub.borrow_mut();
        let mut b = hub.client(&mut state, wall);
        for ev in left {
            session.on_event(ev, &mut b);
        }
    }
    shard.after_step(wall);
    let _ = stream.close().await;
    match session.close_reason.as_deref() {
        Some(r) if r != "client closed" && r != "bad protocol header" => {
            log::info!("connection {:?} from {:?} closed: {r}", id, peer)
        }
        _ => log::debug!("connection {:?} from {:?} closed", id, peer),
    }
}

/// Moves a quiet connection to shard `to`: its output goes out first,
/// then socket, session and unread input travel on the ring behind
/// everything the connection sent before. On an error the connection is
/// handed back, to be closed with the reason.
async fn hand_over<S: Transport>(
    shard: &Rc<Shard>,
    id: crate::ids::ConnId,
    handle: &Rc<ConnHandle>,
    mut stream: S,
    mut conn: Conn,
    to: crate::ids::ShardId,
) -> Result<(), (String, Conn, S)> {
    let out = std::mem::take(conn.session.output());
    if !out.is_empty() {
        if let Err(e) = write_all(&mut stream, &out).await {
            return Err((format!("socket error: {e}"), conn, stream));
        }
        conn.send_oct += out.len() as u64;
    }
    let fd = match stream.dup_socket() {
        Ok(fd) => fd,
        Err(e) => return Err((format!("cannot hand the connection over: {e}"), conn, stream)),
    };
    let tls = stream.park();
    shard.conns.borrow_mut().remove(&id);
    shard.stats.connections[shard.id as usize].fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    shard.handoffs.set(shard.handoffs.get() + 1);
    let mut meta = handle.meta.borrow().clone();
    meta.recv_oct = conn.recv_oct;
    meta.send_oct = conn.send_oct;
    let wall = now_ms();
    {
        let mut hub = shard.hub.borrow_mut();
        // Nothing of a quiet connection is addressed to it but notices
        // (flow control, management): give anything else back.
        for ev in handle.inbox.borrow_mut().drain(..) {
            match ev {
                crate::session::Event::Describe
                | crate::session::Event::Throttle { .. }
                | crate::session::Event::QueueMoved { .. } => {}
                ev => hub.orphan(ev),
            }
        }
        let moving = Moving { fd, tls, meta, conn };
        hub.out.items[to as usize].push(crate::owner::Item::Adopt(crate::owner::Adoption(Box::new(
            moving,
        ))));
    }
    shard.after_step(wall);
    log::debug!("connection {id:?} moves to shard {to}");
    Ok(())
}

async fn write_all<S: AsyncWrite + Unpin>(stream: &mut S, mut buf: &[u8]) -> std::io::Result<()> {
    while !buf.is_empty() {
        let n = poll_fn(|cx| Pin::new(&mut *stream).poll_write(cx, buf)).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        buf = &buf[n..];
    }
    // TLS holds records it could not write yet.
    poll_fn(|cx| Pin::new(&mut *stream).poll_flush(cx)).await
}

/// Milliseconds on a monotonic clock shared by the whole process: the
/// sessions' time.
pub fn mono_ms() -> u64 {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// Runs the connection until it ends; returns why.
async fn serve<S: Transport>(
    shard: &Rc<Shard>,
    handle: &Rc<ConnHandle>,
    stream: &mut S,
    conn: &mut Conn,
) -> End {
    let Conn {
        session,
        state,
        rbuf,
        recv_oct,
        send_oct,
    } = conn;
    let limits = &shard.cfg.limits;
    let mut described = (Phase::Header, mono_ms());
    // Queues that asked this connection to stop publishing for now.
    let mut throttled_by: Vec<crate::ids::QueueId> = Vec::new();
    let mut eof = false;
    // Output the session handed over that the transport still holds.
    let mut unflushed = false;
    // The session's next deadline, and the timer armed for it.
    let mut armed: Option<u64> = None;
    let mut timer = Timer::new(Duration::from_secs(3600));
    loop {
        let mono = mono_ms();
        session.set_clock(mono);
        let congested = shard.outbox_congested();
        let mut describe_now = false;
        let wall = now_ms();
        let can_feed = {
            let mut hub = shard.hub.borrow_mut();
            let mut b = hub.client(state, wall);
            // Events from queues and other shards.
            let mut any = false;
            loop {
                let ev = handle.inbox.borrow_mut().pop_front();
                let Some(ev) = ev else { break };
                match ev {
                    crate::session::Event::Describe => {
                        describe_now = true;
                        continue;
                    }
                    crate::session::Event::Throttle { queue, on } => {
                        throttled_by.retain(|q| *q != queue);
                        if on {
                            throttled_by.push(queue);
                        }
                        continue;
                    }
                    _ => {}
                }
                session.on_event(ev, &mut b);
                any = true;
            }
            if any {
                session.end_batch(&mut b);
            }
            // Input.
            let out_high = session.output().len() >= limits.write_buffer_high;
            // Under the memory alarm a connection stops at its next
            // basic.publish (consumers keep going and free memory).
            session.set_alarm(shard.stats.alarm_reason());
            // A lingering session only waits for the client to hang up.
            let can_feed = session.phase() == Phase::Lingering
                || !out_high && !congested && throttled_by.is_empty() && !session.over_limits();
            let unprocessed = !rbuf.is_empty() || session.has_unprocessed_frames();
            if can_feed && unprocessed && !session.is_paused() && session.feed(rbuf, &mut b) == Status::Close
            {
                session.abort("closed", &mut b);
            }
            can_feed
        };
        if session.handoff_pending() {
            match state.handoff_to.take() {
                Some(to) if stream.quiet() && !shard.stopping.get() => return End::Moves(to),
                _ => session.stay(),
            }
        }
        if session.stats.replies_dropped > 0 {
            let n = std::mem::take(&mut session.stats.replies_dropped);
            shard.replies_dropped.set(shard.replies_dropped.get() + n);
        }
        shard.after_step(wall);
        // Keep the management view fresh: at once when the phase changes,
        // otherwise about once a second.
        if describe_now || described.0 != session.phase() || mono.saturating_sub(described.1) > 1000 {
            describe(&handle.meta, session, *recv_oct, *send_oct);
            described = (session.phase(), mono);
        }
        if session.phase() == Phase::Closed {
            if !session.output().is_empty() {
                let out = std::mem::take(session.output());
                let _ = write_all(stream, &out).await;
            }
            return End::Closed(session.close_reason.clone().unwrap_or_else(|| "closed".into()));
        }
        let unprocessed = !rbuf.is_empty() || session.has_unprocessed_frames();
        if eof && (!unprocessed || !session.is_paused() && can_feed) {
            return End::Closed(
                session
                    .close_reason
                    .clone()
                    .unwrap_or_else(|| "client closed TCP connection".into()),
            );
        }
        let want_read =
            can_feed && !eof && rbuf.len() < limits.read_buffer.max(limits.frame_max as usize * 2);
        // Arm the timer for the session's next deadline when it came
        // closer (a deadline that moved later is handled by a harmless
        // early call); under the memory alarm, look again soon for it to
        // clear.
        let mut deadline = session.poll_timeout();
        if session.alarm_blocked() {
            let soon = mono + 250;
            deadline = Some(deadline.map_or(soon, |d| d.min(soon)));
        }
        if let Some(d) = deadline
            && armed.is_none_or(|a| d < a)
        {
            timer.reset(Duration::from_millis(d.saturating_sub(mono)));
            armed = Some(d);
        }
        // Wait for something to do: socket readable/writable, an event, or
        // the timer.
        let mut fired = false;
        let mut wrote_all = false;
        let mut wrote_any = false;
        let mut read_any = false;
        let mut read_full = false;
        let io = poll_fn(|cx| {
            let mut ready = false;
            if congested {
                shard.drain_waiters.borrow_mut().push(cx.waker().clone());
            }
            let out = session.output();
            let had_output = !out.is_empty() || unflushed;
            while !out.is_empty() {
                match Pin::new(&mut *stream).poll_write(cx, out) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(n)) => {
                        out.advance(n);
                        *send_oct += n as u64;
                        wrote_any = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => break,
                }
            }
            if had_output && out.is_empty() {
                // TLS may hold records the socket did not take yet.
                match Pin::new(&mut *stream).poll_flush(cx) {
                    Poll::Ready(Ok(())) => {
                        unflushed = false;
                        wrote_all = true;
                        ready = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => unflushed = true,
                }
            }
            if want_read {
                match Pin::new(&mut *stream).poll_fill_buf(cx) {
                    Poll::Ready(Ok(data)) => {
                        let n = data.len();
                        if n == 0 {
                            eof = true;
                        } else {
                            rbuf.extend_from_slice(data);
                            read_full = n >= RECV_BUFFER;
                            Pin::new(&mut *stream).consume(n);
                            *recv_oct += n as u64;
                            shard.recv_bytes.set(shard.recv_bytes.get() + n as u64);
                            read_any = true;
                        }
                        ready = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {}
                }
            }
            if !handle.inbox.borrow().is_empty() {
                ready = true;
            } else {
                handle.notify.register(cx);
                if !handle.inbox.borrow().is_empty() {
                    ready = true;
                }
            }
            if armed.is_some() && Pin::new(&mut timer).poll(cx).is_ready() {
                fired = true;
                ready = true;
            }
            if ready { Poll::Ready(Ok(())) } else { Poll::Pending }
        })
        .await;
        if let Err(e) = io {
            return End::Closed(format!("socket error: {e}"));
        }
        let now = mono_ms();
        if read_any {
            session.note_read(now);
        }
        if wrote_any {
            session.note_written(now);
        }
        if wrote_all || fired {
            let mut hub = shard.hub.borrow_mut();
            let mut b = hub.client(state, now_ms());
            if wrote_all {
                session.report_written(&mut b);
            }
            if fired {
                armed = None;
                session.handle_timeout(now, &mut b);
            }
        }
        // glommio polls sockets only when no task is runnable (or at its
        // 100 ms preemption tick). A connection with input always waiting
        // would stay runnable and leave every other socket unpolled, so
        // after a full buffer of input (more is probably waiting) it waits
        // for the reactor's next turn (a timer fires only from there)
        // instead of just yielding. A short read drained the socket: the
        // next read parks on the reactor anyway, and a timer per wake-up
        // would cost more than the message at low rates.
        if read_full {
            Timer::new(Duration::from_micros(20)).await;
        } else {
            glommio::yield_if_needed().await;
        }
    }
}

fn describe(meta: &RefCell<ConnMeta>, session: &Session, recv_oct: u64, send_oct: u64) {
    let mut m = meta.borrow_mut();
    m.state = match session.phase() {
        Phase::Header | Phase::Start | Phase::Tune | Phase::Open => "starting",
        Phase::Running => "running",
        Phase::Closing | Phase::Lingering | Phase::Closed => "closing",
    };
    if m.user.is_empty() && !session.user().is_empty() {
        m.user = session.user().to_string();
        m.auth_mechanism = session.auth_mechanism();
        m.client_properties = crate::admin::json::table_to_json(&session.client_properties);
    }
    if let Some((_, vhost)) = session.vhost()
        && m.vhost.is_empty()
    {
        m.vhost = vhost.to_string();
    }
    m.frame_max = session.frame_max();
    m.heartbeat = session.heartbeat();
    m.channels = session.channel_summaries();
    m.recv_oct = recv_oct;
    m.send_oct = send_oct;
    m.published = session.stats.published;
    m.delivered = session.stats.delivered;
    m.confirmed = session.stats.confirmed;
}
