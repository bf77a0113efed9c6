//! The management listener: a cap on open connections, and a deadline on
//! each. A connection must get a response within the deadline of being
//! accepted or of its last response: half-sent requests (slowloris) and
//! idle keep-alives are closed, and an abusive client cannot hold more
//! than the cap of descriptors.

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

pub struct Capped {
    inner: TcpListener,
    slots: Arc<Semaphore>,
    max: usize,
    deadline: Duration,
    refused: u64,
}

impl Capped {
    pub fn new(inner: TcpListener, max_connections: usize, deadline: Duration) -> Capped {
        Capped {
            inner,
            slots: Arc::new(Semaphore::new(max_connections.max(1))),
            max: max_connections.max(1),
            deadline,
            refused: 0,
        }
    }
}

impl Listener for Capped {
    type Io = Guarded;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Guarded, SocketAddr) {
        loop {
            let (stream, addr) = match self.inner.accept().await {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors and the like: wait, do not spin.
                    log::warn!("management accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            match self.slots.clone().try_acquire_owned() {
                Ok(permit) => {
                    let _ = stream.set_nodelay(true);
                    return (
                        Guarded {
                            stream,
                            _permit: permit,
                            timer: Box::pin(tokio::time::sleep(self.deadline)),
                            deadline: self.deadline,
                        },
                        addr,
                    );
                }
                Err(_) => {
                    self.refused += 1;
                    if self.refused.is_power_of_two() {
                        log::warn!(
                            "management connection from {addr} refused: all {} slots in use ({} refused so far)",
                            self.max,
                            self.refused
                        );
                    }
                    drop(stream);
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// An accepted management connection: holds its slot until it closes and
/// fails its reads once its deadline passes without a response.
pub struct Guarded {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    timer: Pin<Box<Sleep>>,
    deadline: Duration,
}

impl Guarded {
    fn progress(&mut self) {
        let d = self.deadline;
        self.timer.as_mut().reset(Instant::now() + d);
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no complete request in time",
            )));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.stream).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.progress();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.progress();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The client's address, for the handlers.
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub SocketAddr);

impl Connected<IncomingStream<'_, Capped>> for PeerAddr {
    fn connect_info(stream: IncomingStream<'_, Capped>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

/// HTTPS: connections from a [`Capped`] listener (cap and deadline hold
/// through the handshake), each handshake in a task of its own so a slow
/// one never holds up the next accept.
pub struct TlsCapped {
    rx: tokio::sync::mpsc::Receiver<(tokio_rustls::server::TlsStream<Guarded>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsCapped {
    /// Must be called inside the management runtime.
    pub fn new(mut inner: Capped, server: Arc<rustls::ServerConfig>) -> io::Result<TlsCapped> {
        let local = inner.local_addr()?;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let acceptor = tokio_rustls::TlsAcceptor::from(server);
        tokio::spawn(async move {
            loop {
                let (io, addr) = inner.accept().await;
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match acceptor.accept(io).await {
                        Ok(s) => {
                            let _ = tx.send((s, addr)).await;
                        }
                        Err(e) => log::debug!("management TLS handshake with {addr} failed: {e}"),
                    }
                });
            }
        });
        Ok(TlsCapped { rx, local })
    }
}

impl Listener for TlsCapped {
    type Io = tokio_rustls::server::TlsStream<Guarded>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, SocketAddr) {
        match self.rx.recv().await {
            Some(x) => x,
            // The accept task ended (runtime shutting down): wait for the
            // shutdown to drop this listener.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

impl Connected<IncomingStream<'_, TlsCapped>> for PeerAddr {
    fn connect_info(stream: IncomingStream<'_, TlsCapped>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}
