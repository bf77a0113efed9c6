//! One connection of the cluster port: the handshake on a new socket, then
//! a reader task (frames in: replies to our calls, or requests to serve)
//! and a writer task (frames out, everything queued written at once).

use super::{CallError, Transport};
use crate::cluster::wire::{self, Handshake, Outcome, Role};
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use glommio::sync::Semaphore;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::future::poll_fn;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::time::Instant;

fn nonce() -> [u8; wire::NONCE_LEN] {
    let mut n = [0u8; wire::NONCE_LEN];
    rand::Rng::fill_bytes(&mut rand::rng(), &mut n);
    n
}

pub(super) enum HandshakeFailure {
    Io(io::Error),
    Closed,
    Protocol(wire::HandshakeError),
}

impl fmt::Display for HandshakeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeFailure::Io(e) => write!(f, "{e}"),
            HandshakeFailure::Closed => f.write_str("closed during the handshake"),
            HandshakeFailure::Protocol(e) => write!(f, "{e}"),
        }
    }
}

/// Runs the handshake on a new connection: the peer's name, and what it
/// sent after it.
pub(super) async fn handshake(
    stream: &mut TcpStream,
    role: Role,
    key: &[u8],
    me: &str,
) -> Result<(String, Vec<u8>), HandshakeFailure> {
    let (mut hs, hello) = Handshake::new(role, key, me, nonce());
    stream.write_all(&hello).await.map_err(HandshakeFailure::Io)?;
    let mut buf = [0u8; 512];
    loop {
        let n = stream.read(&mut buf).await.map_err(HandshakeFailure::Io)?;
        if n == 0 {
            return Err(HandshakeFailure::Closed);
        }
        let step = hs.push(&buf[..n]);
        if !step.send.is_empty() {
            let sent = stream.write_all(&step.send).await;
            if let Outcome::Failed(e) = step.outcome {
                return Err(HandshakeFailure::Protocol(e));
            }
            sent.map_err(HandshakeFailure::Io)?;
        }
        match step.outcome {
            Outcome::More => {}
            Outcome::Authenticated { peer, rest } => return Ok((peer, rest)),
            Outcome::Failed(e) => return Err(HandshakeFailure::Protocol(e)),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Dir {
    /// We connected: we send requests, it replies.
    Outbound,
    /// It connected: it sends requests, we reply.
    Inbound,
}

type Waiter = futures::channel::oneshot::Sender<Result<Vec<u8>, CallError>>;

/// An authenticated connection: a reader task and a writer task around
/// one socket.
pub(super) struct Conn {
    pub(super) id: u64,
    dir: Dir,
    /// The peer's node name (from the handshake) and address.
    peer: String,
    addr: String,
    stream: RefCell<TcpStream>,
    fd: RawFd,
    max_frame: usize,
    out: RefCell<Option<flume::Sender<Vec<u8>>>>,
    pending: RefCell<HashMap<u64, Waiter>>,
    next_id: Cell<u64>,
    /// Places for calls in flight.
    slots: Rc<Semaphore>,
    pub(super) closed: Cell<bool>,
    /// When the last frame came.
    pub(super) last_rx: Cell<Instant>,
    writer: Cell<Option<glommio::task::JoinHandle<()>>>,
}

impl Conn {
    pub(super) fn start(
        t: &Transport,
        stream: TcpStream,
        dir: Dir,
        peer: String,
        addr: String,
        rest: Vec<u8>,
    ) -> Rc<Conn> {
        let (tx, rx) = flume::bounded(t.limits.write_queue);
        let id = t.next_conn.get();
        t.next_conn.set(id + 1);
        let conn = Rc::new(Conn {
            id,
            dir,
            peer,
            addr,
            fd: stream.as_raw_fd(),
            stream: RefCell::new(stream),
            max_frame: t.limits.max_frame,
            out: RefCell::new(Some(tx)),
            pending: RefCell::default(),
            next_id: Cell::new(1),
            slots: Rc::new(Semaphore::new(t.limits.max_in_flight as u64)),
            closed: Cell::new(false),
            last_rx: Cell::new(Instant::now()),
            writer: Cell::new(None),
        });
        let writer = glommio::spawn_local(writer(conn.clone(), rx)).detach();
        conn.writer.set(Some(writer));
        glommio::spawn_local(reader(conn.clone(), t.this.clone(), rest)).detach();
        conn
    }

    async fn send(&self, frame: Vec<u8>) -> Result<(), CallError> {
        let tx = self.out.borrow().clone();
        match tx {
            Some(tx) => tx.send_async(frame).await.map_err(|_| self.lost("closed")),
            None => Err(self.lost("closed")),
        }
    }

    fn lost(&self, why: &str) -> CallError {
        CallError::Unreachable(format!("{} ({}): connection {why}", self.addr, self.peer))
    }

    pub(super) async fn request(&self, kind: u8, body: Vec<u8>) -> Result<Vec<u8>, CallError> {
        let _place = self
            .slots
            .acquire_permit(1)
            .await
            .map_err(|_| self.lost("closed"))?;
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let (tx, rx) = futures::channel::oneshot::channel();
        self.pending.borrow_mut().insert(id, tx);
        // A call given up (timeout) forgets its id; a late reply is dropped.
        struct Forget<'a>(&'a Conn, u64);
        impl Drop for Forget<'_> {
            fn drop(&mut self) {
                self.0.pending.borrow_mut().remove(&self.1);
            }
        }
        let _forget = Forget(self, id);
        let frame = wire::frame(kind, id, &body);
        drop(body);
        self.send(frame).await?;
        rx.await.unwrap_or_else(|_| Err(self.lost("closed")))
    }

    /// Closes the socket (both tasks end) and fails the calls in flight.
    pub(super) fn close(&self, why: &str) {
        if self.closed.replace(true) {
            return;
        }
        log::debug!(
            "cluster port: connection to {} ({}) closed: {why}",
            self.peer,
            self.addr
        );
        self.out.borrow_mut().take();
        if let Some(w) = self.writer.take() {
            w.cancel();
        }
        // SAFETY: `fd` is our stream's, open as long as `self` is.
        unsafe { libc::shutdown(self.fd, libc::SHUT_RDWR) };
        self.slots.close();
        let pending = std::mem::take(&mut *self.pending.borrow_mut());
        for (_, w) in pending {
            let _ = w.send(Err(self.lost(why)));
        }
    }

    async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        poll_fn(|cx| {
            let mut s = self.stream.borrow_mut();
            futures_lite::io::AsyncRead::poll_read(Pin::new(&mut *s), cx, buf)
        })
        .await
    }

    async fn write_all(&self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let n = poll_fn(|cx| {
                let mut s = self.stream.borrow_mut();
                futures_lite::io::AsyncWrite::poll_write(Pin::new(&mut *s), cx, buf)
            })
            .await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            buf = &buf[n..];
        }
        Ok(())
    }

    /// Takes one frame from the peer; an error closes the connection.
    async fn on_frame(self: &Rc<Self>, f: wire::Frame, t: &Weak<Transport>) -> Result<(), String> {
        match (self.dir, f.kind) {
            (Dir::Outbound, wire::RESP_OK | wire::RESP_ERR) => {
                if let Some(w) = self.pending.borrow_mut().remove(&f.id) {
                    let r = if f.kind == wire::RESP_OK {
                        Ok(f.body)
                    } else {
                        Err(CallError::Remote(String::from_utf8_lossy(&f.body).into_owned()))
                    };
                    let _ = w.send(r);
                }
                Ok(())
            }
            (Dir::Inbound, kind) if kind <= wire::MAX_SERVICE_KIND => {
                // A full connection stops reading until a request ends.
                let place = self
                    .slots
                    .acquire_static_permit(1)
                    .await
                    .map_err(|_| "closed".to_string())?;
                let service = t.upgrade().and_then(|t| t.services.borrow().get(&kind).cloned());
                let conn = self.clone();
                glommio::spawn_local(async move {
                    let reply = match service {
                        Some(s) => s.call(&conn.peer, kind, f.body).await,
                        None => Err(format!("no service for kind {kind}")),
                    };
                    let frame = match reply {
                        Ok(b) if b.len() <= conn.max_frame => wire::frame(wire::RESP_OK, f.id, &b),
                        Ok(b) => wire::frame(
                            wire::RESP_ERR,
                            f.id,
                            format!("reply of {} bytes is too large", b.len()).as_bytes(),
                        ),
                        Err(mut e) => {
                            let mut cut = e.len().min(4096);
                            while !e.is_char_boundary(cut) {
                                cut -= 1;
                            }
                            e.truncate(cut);
                            wire::frame(wire::RESP_ERR, f.id, e.as_bytes())
                        }
                    };
                    let _ = conn.send(frame).await;
                    drop(place);
                })
                .detach();
                Ok(())
            }
            (_, kind) => Err(format!("unexpected frame kind {kind:#x}")),
        }
    }
}

/// Reads frames until the connection ends, then closes it.
async fn reader(conn: Rc<Conn>, t: Weak<Transport>, mut buf: Vec<u8>) {
    const READ: usize = 64 * 1024;
    let why = 'conn: loop {
        let mut off = 0;
        loop {
            match wire::decode_frame(&buf[off..], conn.max_frame) {
                Ok(Some((f, n))) => {
                    off += n;
                    conn.last_rx.set(Instant::now());
                    if let Err(e) = conn.on_frame(f, &t).await {
                        break 'conn e;
                    }
                }
                Ok(None) => break,
                Err(e) => break 'conn e.to_string(),
            }
        }
        buf.drain(..off);
        if buf.is_empty() && buf.capacity() > 1 << 20 {
            // Not kept after a large frame.
            buf = Vec::new();
        }
        if conn.closed.get() {
            break "closed".to_string();
        }
        let need = match wire::frame_size(&buf, conn.max_frame) {
            Ok(Some(n)) if n > buf.len() => n - buf.len(),
            _ => 0,
        };
        buf.reserve(need.max(READ));
        let len = buf.len();
        buf.resize(len + need.clamp(READ, 1 << 20), 0);
        let r = conn.read(&mut buf[len..]).await;
        match r {
            Ok(0) => {
                buf.truncate(len);
                break "closed by the peer".to_string();
            }
            Ok(n) => buf.truncate(len + n),
            Err(e) => break e.to_string(),
        }
    };
    conn.close(&why);
    if let Some(t) = t.upgrade()
        && conn.dir == Dir::Inbound
    {
        t.inbound.borrow_mut().remove(&conn.id);
    }
}

/// Writes queued frames, all those queued at once in one write.
async fn writer(conn: Rc<Conn>, rx: flume::Receiver<Vec<u8>>) {
    const BATCH: usize = 256 * 1024;
    while let Ok(mut batch) = rx.recv_async().await {
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(f) => batch.extend_from_slice(&f),
                Err(_) => break,
            }
        }
        if let Err(e) = conn.write_all(&batch).await {
            log::debug!("cluster port: write to {} failed: {e}", conn.addr);
            // The reader sees the end and closes the connection.
            // SAFETY: `fd` is our stream's, open as long as `conn` is.
            unsafe { libc::shutdown(conn.fd, libc::SHUT_RDWR) };
            return;
        }
    }
}
