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
///
/// Offsets and lengths are separate fields (not pairs) so the struct packs
/// into 64 bytes: it is the bulk of what a waiting message costs in memory.
#[derive(Clone)]
pub struct Message {
    buf: Bytes,
    exchange_at: u32,
    routing_key_at: u32,
    props_at: u32,
    props_len: u32,
    body_at: u32,
    body_len: u32,
    exchange_len: u8,
    routing_key_len: u8,
    /// `delivery-mode = 2`.
    pub persistent: bool,
    /// The `priority` property (0 when absent).
    pub priority: u8,
    /// The `expiration` property in ms ([`Message::NO_EXPIRATION`] when
    /// absent; longer ones are capped just below it, about 49 days).
    pub expiration: u32,
}

impl Message {
    /// Largest buffer a message may live in: offsets are 32-bit.
    pub const MAX_BUF: usize = u32::MAX as usize;
    pub const NO_EXPIRATION: u32 = u32::MAX;

    /// The per-message TTL, if the message has one.
    pub fn ttl(&self) -> Option<u64> {
        (self.expiration != Self::NO_EXPIRATION).then_some(self.expiration as u64)
    }

    /// Reads the properties the broker acts on (persistence, priority,
    /// expiration) from the raw properties.
    pub fn with_properties_from_raw(mut self) -> Message {
        if let Ok(p) = crate::protocol::scan_properties(self.props()) {
            self.persistent = p.delivery_mode == 2;
            self.priority = p.priority.unwrap_or(0);
            self.expiration = p
                .expiration
                .and_then(|(a, b)| parse_expiration(&self.props()[a..b]))
                .map_or(Self::NO_EXPIRATION, |ms| {
                    ms.min(Self::NO_EXPIRATION as u64 - 1) as u32
                });
        }
        self
    }

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
        debug_assert!(exchange.len() <= 255 && routing_key.len() <= 255);
        Message {
            exchange_at: exchange.start as u32,
            exchange_len: exchange.len() as u8,
            routing_key_at: routing_key.start as u32,
            routing_key_len: routing_key.len() as u8,
            props_at: props.start as u32,
            props_len: props.len() as u32,
            body_at: body.start as u32,
            body_len: body.len() as u32,
            buf,
            persistent: false,
            priority: 0,
            expiration: Self::NO_EXPIRATION,
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
    fn span(&self, at: u32, len: usize) -> &[u8] {
        &self.buf[at as usize..at as usize + len]
    }
    pub fn exchange(&self) -> &[u8] {
        self.span(self.exchange_at, self.exchange_len as usize)
    }
    pub fn routing_key(&self) -> &[u8] {
        self.span(self.routing_key_at, self.routing_key_len as usize)
    }
    /// Raw property flags and list, as in the content header frame.
    pub fn props(&self) -> &[u8] {
        self.span(self.props_at, self.props_len as usize)
    }
    pub fn props_bytes(&self) -> Bytes {
        self.buf
            .slice(self.props_at as usize..(self.props_at + self.props_len) as usize)
    }
    pub fn body(&self) -> &[u8] {
        self.span(self.body_at, self.body_len as usize)
    }
    pub fn body_len(&self) -> usize {
        self.body_len as usize
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
            .field("props_len", &self.props_len)
            .field("body_len", &self.body_len)
            .field("persistent", &self.persistent)
            .finish()
    }
}

/// The `expiration` property: a non-negative integer of milliseconds, as
/// RabbitMQ requires (anything else is refused at publish).
pub fn parse_expiration(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
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
