//! The message as it travels through the broker: one reference-counted buffer
//! plus the byte ranges of its parts.
//!
//! A message published in one piece is a slice of the connection's read buffer
//! (no copy: the method, header and body frames are already contiguous); one
//! that arrived across reads or interleaved with other channels is assembled
//! into a fresh buffer once. Cloning is one atomic increment, so fan-out to many
//! queues, and hops between shards, copy nothing.

use bytes::{BufMut, Bytes, BytesMut};
use std::fmt;
use std::ops::Range;

/// An immutable message. Shared by every queue it was routed to; `Send` so it
/// can cross shards.
#[derive(Clone)]
pub struct Message {
    buf: Bytes,
    exchange: (u32, u8),
    routing_key: (u32, u8),
    props: (u32, u32),
    body: (u32, u32),
    /// `delivery-mode = 2`.
    pub persistent: bool,
    /// The `priority` property (0 when absent).
    pub priority: u8,
}

fn span8(r: &Range<usize>) -> (u32, u8) {
    debug_assert!(r.len() <= 255);
    (r.start as u32, r.len() as u8)
}

fn span32(r: &Range<usize>) -> (u32, u32) {
    (r.start as u32, r.len() as u32)
}

impl Message {
    /// Largest buffer a message may live in: offsets are 32-bit.
    pub const MAX_BUF: usize = u32::MAX as usize;

    /// A message whose parts are ranges of `buf` (zero-copy path). The ranges
    /// must lie within `buf` and `buf` must be under [`Message::MAX_BUF`].
    pub fn from_ranges(
        buf: Bytes,
        exchange: Range<usize>,
        routing_key: Range<usize>,
        props: Range<usize>,
        body: Range<usize>,
    ) -> Message {
        assert!(buf.len() <= Self::MAX_BUF);
        for r in [&exchange, &routing_key, &props, &body] {
            assert!(r.start <= r.end && r.end <= buf.len());
        }
        Message {
            exchange: span8(&exchange),
            routing_key: span8(&routing_key),
            props: span32(&props),
            body: span32(&body),
            buf,
            persistent: false,
            priority: 0,
        }
    }

    /// Copies the parts into one new buffer.
    pub fn assemble(exchange: &[u8], routing_key: &[u8], props: &[u8], body: &[u8]) -> Message {
        let mut b = MessageBuilder::new(exchange, routing_key, props, body.len());
        b.push_body(body);
        b.finish()
    }

    /// The buffer the message lives in; the ranges below index into it.
    pub fn buffer(&self) -> &Bytes {
        &self.buf
    }
    pub fn exchange(&self) -> &[u8] {
        let (o, l) = self.exchange;
        &self.buf[o as usize..o as usize + l as usize]
    }
    pub fn routing_key(&self) -> &[u8] {
        let (o, l) = self.routing_key;
        &self.buf[o as usize..o as usize + l as usize]
    }
    /// Raw property flags and list, as in the content header frame.
    pub fn props(&self) -> &[u8] {
        let (o, l) = self.props;
        &self.buf[o as usize..(o + l) as usize]
    }
    pub fn props_bytes(&self) -> Bytes {
        let (o, l) = self.props;
        self.buf.slice(o as usize..(o + l) as usize)
    }
    pub fn body(&self) -> &[u8] {
        let (o, l) = self.body;
        &self.buf[o as usize..(o + l) as usize]
    }
    pub fn body_len(&self) -> usize {
        self.body.1 as usize
    }
    /// Bytes the message pins in memory, for accounting (`x-max-length-bytes`
    /// counts only the body, as RabbitMQ does: see [`Message::body_len`]).
    pub fn footprint(&self) -> usize {
        self.buf.len() + std::mem::size_of::<Message>()
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("exchange", &String::from_utf8_lossy(self.exchange()))
            .field("routing_key", &String::from_utf8_lossy(self.routing_key()))
            .field("props_len", &self.props.1)
            .field("body_len", &self.body.1)
            .field("persistent", &self.persistent)
            .finish()
    }
}

/// Builds a message whose body arrives in several frames: the buffer is sized
/// once from the content header's body size, so assembling costs one
/// allocation whatever the number of frames.
pub struct MessageBuilder {
    buf: BytesMut,
    exchange: Range<usize>,
    routing_key: Range<usize>,
    props: Range<usize>,
    body_start: usize,
    body_size: usize,
}

impl MessageBuilder {
    pub fn new(exchange: &[u8], routing_key: &[u8], props: &[u8], body_size: usize) -> Self {
        // The declared size is the peer's claim: reserve at most 1 MiB up
        // front so a client cannot make us allocate memory it never sends.
        let total = exchange.len() + routing_key.len() + props.len() + body_size.min(1 << 20);
        let mut buf = BytesMut::with_capacity(total);
        let mut put = |s: &[u8]| {
            let start = buf.len();
            buf.put_slice(s);
            start..buf.len()
        };
        let exchange = put(exchange);
        let routing_key = put(routing_key);
        let props = put(props);
        let body_start = buf.len();
        MessageBuilder {
            buf,
            exchange,
            routing_key,
            props,
            body_start,
            body_size,
        }
    }

    /// Body bytes received so far.
    pub fn body_received(&self) -> usize {
        self.buf.len() - self.body_start
    }

    pub fn body_size(&self) -> usize {
        self.body_size
    }

    pub fn push_body(&mut self, chunk: &[u8]) {
        self.buf.put_slice(chunk);
    }

    pub fn is_complete(&self) -> bool {
        self.body_received() >= self.body_size
    }

    pub fn finish(self) -> Message {
        let body = self.body_start..self.buf.len();
        Message::from_ranges(
            self.buf.freeze(),
            self.exchange,
            self.routing_key,
            self.props,
            body,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assemble_keeps_parts() {
        let m = Message::assemble(b"ex", b"rk", b"\x00\x00", b"hello");
        assert_eq!(m.exchange(), b"ex");
        assert_eq!(m.routing_key(), b"rk");
        assert_eq!(m.props(), b"\x00\x00");
        assert_eq!(m.body(), b"hello");
        assert_eq!(m.body_len(), 5);
    }

    #[test]
    fn builder_concatenates_frames() {
        let mut b = MessageBuilder::new(b"", b"q", b"", 6);
        b.push_body(b"abc");
        assert!(!b.is_complete());
        b.push_body(b"def");
        assert!(b.is_complete());
        let m = b.finish();
        assert_eq!(m.body(), b"abcdef");
        assert_eq!(m.exchange(), b"");
    }

    #[test]
    fn zero_copy_ranges() {
        let buf = Bytes::from_static(b"xxEXxRKxPPBODY");
        let m = Message::from_ranges(buf.clone(), 2..4, 5..7, 8..10, 10..14);
        assert_eq!(m.exchange(), b"EX");
        assert_eq!(m.body(), b"BODY");
        assert_eq!(m.buffer().as_ptr(), buf.as_ptr());
    }
}
