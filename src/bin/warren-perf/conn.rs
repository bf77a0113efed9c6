//! A blocking AMQP 0-9-1 connection over warren's codec: handshake,
//! synchronous calls, and a read buffer that yields frames in place.

use crate::args::Uri;
use bytes::{Bytes, BytesMut};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use warren::protocol::methods::*;
use warren::protocol::{
    FRAME_BODY, FRAME_END, FRAME_HEADER, FRAME_HEARTBEAT, FRAME_METHOD, FieldTable, FieldValue, LongStr,
    Method, PROTOCOL_HEADER, ShortStr, reply, write_heartbeat, write_method_frame,
};

/// How long a blocking read or write waits before looking at the stop flag.
pub const POLL: Duration = Duration::from_millis(100);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest frame we ask for.
const OUR_FRAME_MAX: u32 = 131_072;

#[derive(Debug)]
pub enum Error {
    Io(io::Error),
    /// The broker closed the connection (channel 0) or a channel.
    Closed {
        channel: u16,
        code: u16,
        text: String,
        class_id: u16,
        method_id: u16,
    },
    Protocol(String),
    /// The run is over (stop flag set while waiting).
    Stopped,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "I/O error: {e}"),
            Error::Closed {
                channel,
                code,
                text,
                class_id,
                method_id,
            } => {
                let what = if *channel == 0 {
                    "connection".to_string()
                } else {
                    format!("channel {channel}")
                };
                write!(f, "broker closed the {what}: {code} {text}")?;
                if *class_id != 0 {
                    write!(f, " (in method {class_id}.{method_id})")?;
                }
                Ok(())
            }
            Error::Protocol(s) => write!(f, "protocol error: {s}"),
            Error::Stopped => write!(f, "stopped"),
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}

pub type Result<T> = std::result::Result<T, Error>;

fn stopping() -> bool {
    crate::STOP.load(Ordering::Relaxed)
}

fn timed_out(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

/// Incoming bytes; frames are parsed where they lie.
pub struct ReadBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

/// A frame inside a [`ReadBuf`]: payload is `buf[at..at + len]`.
#[derive(Clone, Copy, Debug)]
pub struct FrameRef {
    pub kind: u8,
    pub channel: u16,
    pub at: usize,
    pub len: usize,
}

impl ReadBuf {
    pub fn new(cap: usize) -> Self {
        ReadBuf {
            buf: vec![0; cap],
            start: 0,
            end: 0,
        }
    }

    pub fn payload(&self, f: &FrameRef) -> &[u8] {
        &self.buf[f.at..f.at + f.len]
    }

    /// The next complete frame, if there is one.
    pub fn next_frame(&mut self) -> Result<Option<FrameRef>> {
        let avail = &self.buf[self.start..self.end];
        if avail.len() < 7 {
            return Ok(None);
        }
        let kind = avail[0];
        let channel = u16::from_be_bytes([avail[1], avail[2]]);
        let len = u32::from_be_bytes([avail[3], avail[4], avail[5], avail[6]]) as usize;
        if !matches!(kind, FRAME_METHOD | FRAME_HEADER | FRAME_BODY | FRAME_HEARTBEAT) {
            return Err(Error::Protocol(format!("unknown frame type {kind}")));
        }
        if avail.len() < len + 8 {
            return Ok(None);
        }
        if avail[len + 7] != FRAME_END {
            return Err(Error::Protocol("bad frame end octet".into()));
        }
        let f = FrameRef {
            kind,
            channel,
            at: self.start + 7,
            len,
        };
        self.start += len + 8;
        Ok(Some(f))
    }

    /// Reads what the socket has. `block`: wait up to [`POLL`]. Returns the
    /// number of bytes read (0: nothing yet). Invalidates [`FrameRef`]s.
    pub fn fill(&mut self, sock: &mut TcpStream, block: bool) -> Result<usize> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.buf.len() - self.end < self.buf.len() / 4 {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.end == self.buf.len() {
                // One frame larger than the buffer.
                let n = self.buf.len() * 2;
                self.buf.resize(n, 0);
            }
        }
        let room = &mut self.buf[self.end..];
        let n = if block {
            match sock.read(room) {
                Ok(n) => n,
                Err(e) if timed_out(&e) || e.kind() == io::ErrorKind::Interrupted => return Ok(0),
                Err(e) => return Err(e.into()),
            }
        } else {
            // SAFETY: recv into a valid, writable buffer of the given length.
            let r = unsafe {
                libc::recv(
                    sock.as_raw_fd(),
                    room.as_mut_ptr().cast(),
                    room.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                if timed_out(&e) || e.kind() == io::ErrorKind::Interrupted {
                    return Ok(0);
                }
                return Err(e.into());
            }
            r as usize
        };
        if n == 0 {
            return Err(Error::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed by the broker (EOF)",
            )));
        }
        self.end += n;
        Ok(n)
    }
}

pub struct Conn {
    pub sock: TcpStream,
    pub rd: ReadBuf,
    pub out: BytesMut,
    pub frame_max: u32,
    /// connection.blocked received and not yet unblocked.
    pub blocked: bool,
    /// Channels paused by channel.flow(active=false), by number.
    flow_off: Vec<u16>,
}

fn ss(s: &str) -> ShortStr {
    ShortStr::from_string_lossy(s)
}

fn client_properties(name: &str) -> FieldTable {
    let caps = [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "connection.blocked",
        "authentication_failure_close",
        "per_consumer_qos",
    ]
    .into_iter()
    .map(|c| (ss(c), FieldValue::Bool(true)))
    .collect();
    FieldTable(vec![
        (ss("product"), FieldValue::from("warren-perf")),
        (ss("version"), FieldValue::from(env!("CARGO_PKG_VERSION"))),
        (ss("platform"), FieldValue::from("Rust")),
        (ss("capabilities"), FieldValue::Table(caps)),
        (
            ss("connection_name"),
            FieldValue::LongStr(LongStr::from(name.to_string())),
        ),
    ])
}

impl Conn {
    /// Connects and runs the whole handshake (PLAIN auth, tune with
    /// heartbeats off, open the vhost).
    pub fn open(uri: &Uri, name: &str) -> Result<Conn> {
        let sock = TcpStream::connect((uri.host.as_str(), uri.port))?;
        sock.set_nodelay(true)?;
        sock.set_read_timeout(Some(POLL))?;
        sock.set_write_timeout(Some(POLL))?;
        let mut c = Conn {
            sock,
            rd: ReadBuf::new(256 * 1024),
            out: BytesMut::with_capacity(128 * 1024),
            frame_max: OUR_FRAME_MAX,
            blocked: false,
            flow_off: Vec::new(),
        };
        c.write_raw(&PROTOCOL_HEADER)?;
        let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
        let start = match c.wait_method(0, deadline)? {
            Method::ConnectionStart(s) => s,
            m => {
                return Err(Error::Protocol(format!(
                    "expected connection.start, got {}",
                    m.name()
                )));
            }
        };
        if !start.mechanisms.as_str().split(' ').any(|m| m == "PLAIN") {
            return Err(Error::Protocol(format!(
                "broker offers no PLAIN authentication (mechanisms: {})",
                start.mechanisms.as_str()
            )));
        }
        let mut resp = Vec::with_capacity(uri.user.len() + uri.pass.len() + 2);
        resp.push(0);
        resp.extend_from_slice(uri.user.as_bytes());
        resp.push(0);
        resp.extend_from_slice(uri.pass.as_bytes());
        c.send(
            0,
            &Method::ConnectionStartOk(ConnectionStartOk {
                client_properties: client_properties(name),
                mechanism: ss("PLAIN"),
                response: LongStr::new(Bytes::from(resp)),
                locale: ss("en_US"),
            }),
        );
        c.flush()?;
        let tune = match c.wait_method(0, deadline) {
            Ok(Method::ConnectionTune(t)) => t,
            Ok(m) => {
                return Err(Error::Protocol(format!(
                    "expected connection.tune, got {}",
                    m.name()
                )));
            }
            Err(Error::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(Error::Protocol(format!(
                    "broker closed the socket after start-ok: authentication failed for user {:?}?",
                    uri.user
                )));
            }
            Err(e) => return Err(e),
        };
        c.frame_max = match tune.frame_max {
            0 => OUR_FRAME_MAX,
            f => f.min(OUR_FRAME_MAX),
        };
        c.send(
            0,
            &Method::ConnectionTuneOk(ConnectionTuneOk {
                channel_max: tune.channel_max,
                frame_max: c.frame_max,
                heartbeat: 0,
            }),
        );
        c.send(
            0,
            &Method::ConnectionOpen(ConnectionOpen {
                virtual_host: ss(&uri.vhost),
                ..Default::default()
            }),
        );
        c.flush()?;
        match c.wait_method(0, deadline)? {
            Method::ConnectionOpenOk(_) => Ok(c),
            m => Err(Error::Protocol(format!(
                "expected connection.open-ok, got {}",
                m.name()
            ))),
        }
    }

    /// Queues a method frame for the next [`Conn::flush`].
    pub fn send(&mut self, channel: u16, m: &Method) {
        write_method_frame(&mut self.out, channel, m);
    }

    pub fn flush(&mut self) -> Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let out = std::mem::take(&mut self.out);
        let r = self.write_raw(&out);
        self.out = out;
        self.out.clear();
        r
    }

    /// Writes everything, waiting as long as the broker reads (gives up
    /// once the run is stopping).
    pub fn write_raw(&mut self, mut data: &[u8]) -> Result<()> {
        while !data.is_empty() {
            match self.sock.write(data) {
                Ok(0) => return Err(Error::Io(io::ErrorKind::WriteZero.into())),
                Ok(n) => data = &data[n..],
                Err(e) if timed_out(&e) => {
                    if stopping() {
                        return Err(Error::Stopped);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    pub fn flow_active(&self, channel: u16) -> bool {
        !self.flow_off.contains(&channel)
    }

    /// Handles what any connection must: closes, heartbeats, flow and
    /// blocked notifications. Returns the method back when it is something
    /// else.
    pub fn handle_common(&mut self, channel: u16, m: Method) -> Result<Option<Method>> {
        match m {
            Method::ConnectionClose(c) => {
                self.send(0, &Method::ConnectionCloseOk(ConnectionCloseOk {}));
                let _ = self.flush();
                Err(Error::Closed {
                    channel: 0,
                    code: c.reply_code,
                    text: c.reply_text.as_str().into_owned(),
                    class_id: c.class_id,
                    method_id: c.method_id,
                })
            }
            Method::ChannelClose(c) => {
                self.send(channel, &Method::ChannelCloseOk(ChannelCloseOk {}));
                let _ = self.flush();
                Err(Error::Closed {
                    channel,
                    code: c.reply_code,
                    text: c.reply_text.as_str().into_owned(),
                    class_id: c.class_id,
                    method_id: c.method_id,
                })
            }
            Method::ConnectionBlocked(b) => {
                if !self.blocked {
                    eprintln!("warren-perf: connection blocked by the broker: {}", b.reason);
                }
                self.blocked = true;
                Ok(None)
            }
            Method::ConnectionUnblocked(_) => {
                self.blocked = false;
                Ok(None)
            }
            Method::ChannelFlow(f) => {
                self.flow_off.retain(|&c| c != channel);
                if !f.active {
                    self.flow_off.push(channel);
                }
                self.send(
                    channel,
                    &Method::ChannelFlowOk(ChannelFlowOk { active: f.active }),
                );
                self.flush()?;
                Ok(None)
            }
            m => Ok(Some(m)),
        }
    }

    /// Decodes a method frame's payload with the generic codec.
    pub fn decode(payload: &[u8]) -> Result<Method> {
        Method::decode(&Bytes::copy_from_slice(payload))
            .map_err(|e| Error::Protocol(format!("undecodable method: {e:?}")))
    }

    /// Reads until a method arrives on `channel` that is not handled by
    /// [`Conn::handle_common`]. Content frames and methods on other
    /// channels are skipped (only used outside the hot loops).
    pub fn wait_method(&mut self, channel: u16, deadline: Instant) -> Result<Method> {
        loop {
            while let Some(f) = self.rd.next_frame()? {
                match f.kind {
                    FRAME_HEARTBEAT => {
                        write_heartbeat(&mut self.out);
                        self.flush()?;
                    }
                    FRAME_METHOD => {
                        let m = Self::decode(self.rd.payload(&f))?;
                        if let Some(m) = self.handle_common(f.channel, m)?
                            && f.channel == channel
                        {
                            return Ok(m);
                        }
                    }
                    _ => {}
                }
            }
            if Instant::now() > deadline {
                return Err(Error::Protocol("timed out waiting for the broker".into()));
            }
            self.rd.fill(&mut self.sock, true)?;
        }
    }

    /// Sends a method and waits for the reply on the same channel.
    pub fn call(&mut self, channel: u16, m: &Method) -> Result<Method> {
        self.send(channel, m);
        self.flush()?;
        self.wait_method(channel, Instant::now() + HANDSHAKE_TIMEOUT)
    }

    pub fn open_channel(&mut self, channel: u16) -> Result<()> {
        match self.call(channel, &Method::ChannelOpen(ChannelOpen::default()))? {
            Method::ChannelOpenOk(_) => Ok(()),
            m => Err(Error::Protocol(format!(
                "expected channel.open-ok, got {}",
                m.name()
            ))),
        }
    }

    /// connection.close and wait (briefly) for close-ok.
    pub fn close(mut self) -> Result<()> {
        self.send(
            0,
            &Method::ConnectionClose(ConnectionClose {
                reply_code: reply::SUCCESS,
                reply_text: ss("bye"),
                class_id: 0,
                method_id: 0,
            }),
        );
        self.flush()?;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            while let Some(f) = self.rd.next_frame()? {
                if f.kind == FRAME_METHOD && f.channel == 0 {
                    let p = self.rd.payload(&f);
                    if p.len() >= 4 && p[..4] == [0, 10, 0, 51] {
                        return Ok(());
                    }
                }
            }
            if Instant::now() > deadline {
                return Err(Error::Protocol("no connection.close-ok".into()));
            }
            match self.rd.fill(&mut self.sock, true) {
                Ok(_) => {}
                // Some brokers close the socket right after close-ok.
                Err(Error::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }
}
