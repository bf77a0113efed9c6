//! Messages forwarded to the node that holds their queue: the body of a
//! `KIND_PUBLISH` request on the cluster port, and its answer.
//!
//! ```text
//! batch   := message*
//! message := queue:u64le ex_len:u8 exchange rk_len:u8 routing_key
//!            props_len:u32le properties body_len:u32le body
//! answer  := ok:u8 per message (1: enqueued or confirmed, 0: refused)
//! ```
//! Decoding never panics: a malformed batch is refused whole.

use crate::ids::QueueId;
use crate::message::Message;
use bytes::{BufMut, Bytes};
use std::io;

/// Request kind of a batch of forwarded messages.
pub const KIND_PUBLISH: u8 = 40;

/// Appends one message of a batch.
pub fn encode(out: &mut Vec<u8>, queue: QueueId, msg: &Message) {
    out.reserve(
        8 + 2 + 8 + msg.exchange().len() + msg.routing_key().len() + msg.props().len() + msg.body_len(),
    );
    out.put_u64_le(queue.0);
    out.put_u8(msg.exchange().len() as u8);
    out.extend_from_slice(msg.exchange());
    out.put_u8(msg.routing_key().len() as u8);
    out.extend_from_slice(msg.routing_key());
    out.put_u32_le(msg.props().len() as u32);
    out.extend_from_slice(msg.props());
    out.put_u32_le(msg.body_len() as u32);
    out.extend_from_slice(msg.body());
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("forwarded batch: {what}"))
}

/// The messages of a batch, as slices of `buf` (no copy).
pub fn decode(buf: Bytes) -> io::Result<Vec<(QueueId, Message)>> {
    if buf.len() > Message::MAX_BUF {
        return Err(bad("too large"));
    }
    let mut out = Vec::new();
    let mut at = 0usize;
    let take = |at: &mut usize, n: usize| -> io::Result<std::ops::Range<usize>> {
        let end = at
            .checked_add(n)
            .filter(|&e| e <= buf.len())
            .ok_or_else(|| bad("truncated"))?;
        let r = *at..end;
        *at = end;
        Ok(r)
    };
    while at < buf.len() {
        let q = take(&mut at, 8)?;
        let queue = QueueId(u64::from_le_bytes(buf[q].try_into().expect("8 bytes")));
        let n = take(&mut at, 1)?;
        let exchange = take(&mut at, buf[n.start] as usize)?;
        let n = take(&mut at, 1)?;
        let routing_key = take(&mut at, buf[n.start] as usize)?;
        let n = take(&mut at, 4)?;
        let props = take(
            &mut at,
            u32::from_le_bytes(buf[n].try_into().expect("4 bytes")) as usize,
        )?;
        let n = take(&mut at, 4)?;
        let body = take(
            &mut at,
            u32::from_le_bytes(buf[n].try_into().expect("4 bytes")) as usize,
        )?;
        let msg =
            Message::from_ranges(buf.clone(), exchange, routing_key, props, body).with_properties_from_raw();
        out.push((queue, msg));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(body: &[u8]) -> Message {
        // delivery-mode 2: flags 0x1000, then the octet.
        let props = [0x10, 0x00, 2];
        Message::assemble(b"ex", b"rk", &props, body).with_properties_from_raw()
    }

    #[test]
    fn batches_round_trip() {
        let mut b = Vec::new();
        encode(&mut b, QueueId(7), &msg(b"hello"));
        encode(&mut b, QueueId(9), &msg(b""));
        let got = decode(Bytes::from(b)).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, QueueId(7));
        assert_eq!(got[0].1.body(), b"hello");
        assert_eq!(got[0].1.exchange(), b"ex");
        assert_eq!(got[0].1.routing_key(), b"rk");
        assert!(got[0].1.persistent);
        assert_eq!(got[1].0, QueueId(9));
        assert_eq!(got[1].1.body(), b"");
    }

    #[test]
    fn every_truncation_is_refused_and_garbage_never_panics() {
        let mut b = Vec::new();
        encode(&mut b, QueueId(7), &msg(b"hello"));
        for cut in 1..b.len() {
            assert!(decode(Bytes::copy_from_slice(&b[..cut])).is_err(), "cut at {cut}");
        }
        let mut x = 0x9e37_79b9u32;
        for _ in 0..2000 {
            let n = (x % 64) as usize;
            let g: Vec<u8> = (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            let _ = decode(Bytes::from(g));
        }
    }
}
