//! The on-disk message record and its checks.
//!
//! ```text
//! record := len:u32le crc:u32le payload[len]
//! payload := flags:u8 timestamp_ms:u64le
//!            ex_len:u8 exchange  rk_len:u8 routing_key
//!            props_len:u32le properties  body
//! ```
//! `crc` is CRC-32 (IEEE) over `len` and `payload`, so a torn length is
//! caught as well as torn data. A zero `len` marks the end of the written
//! part of a pre-allocated (zero-filled) segment.

use crate::message::Message;

/// Bytes before the payload.
pub const RECORD_PREFIX: usize = 8;
/// Fixed payload bytes before the variable parts.
const FIXED: usize = 1 + 8 + 1 + 1 + 4;

/// Record flags.
pub mod flags {
    /// Written by a publisher with `delivery-mode = 2` (always set today;
    /// transient messages are never written).
    pub const PERSISTENT: u8 = 1;
}

/// Size of the record that [`encode`] writes for `msg`.
pub fn encoded_len(msg: &Message) -> usize {
    RECORD_PREFIX
        + FIXED
        + msg.exchange().len()
        + msg.routing_key().len()
        + msg.props().len()
        + msg.body_len()
}

/// Writes `msg` as a record at the start of `out`, which must be at least
/// [`encoded_len`] long. Returns the bytes written.
pub fn encode(msg: &Message, timestamp_ms: u64, out: &mut [u8]) -> usize {
    let total = encoded_len(msg);
    assert!(out.len() >= total, "record does not fit");
    let payload_len = (total - RECORD_PREFIX) as u32;
    let mut p = RECORD_PREFIX;
    let mut put = |b: &[u8]| {
        out[p..p + b.len()].copy_from_slice(b);
        p += b.len();
    };
    put(&[flags::PERSISTENT]);
    put(&timestamp_ms.to_le_bytes());
    put(&[msg.exchange().len() as u8]);
    put(msg.exchange());
    put(&[msg.routing_key().len() as u8]);
    put(msg.routing_key());
    put(&(msg.props().len() as u32).to_le_bytes());
    put(msg.props());
    put(msg.body());
    debug_assert_eq!(p, total);
    out[0..4].copy_from_slice(&payload_len.to_le_bytes());
    let crc = checksum(&out[0..4], &out[RECORD_PREFIX..total]);
    out[4..8].copy_from_slice(&crc.to_le_bytes());
    total
}

fn checksum(len: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(len);
    h.update(payload);
    h.finalize()
}

/// The ranges [`encode`] gives `msg`'s parts (no checksum work).
pub fn layout(msg: &Message, timestamp_ms: u64) -> RecordView {
    let mut at = RECORD_PREFIX + 1 + 8;
    let mut take = |len: usize, prefix: usize| {
        let r = at + prefix..at + prefix + len;
        at = r.end;
        r
    };
    let exchange = take(msg.exchange().len(), 1);
    let routing_key = take(msg.routing_key().len(), 1);
    let props = take(msg.props().len(), 4);
    let body = take(msg.body_len(), 0);
    RecordView {
        total: body.end,
        flags: flags::PERSISTENT,
        timestamp_ms,
        exchange,
        routing_key,
        props,
        body,
    }
}

/// Byte ranges of a decoded record's parts, relative to the record start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordView {
    pub total: usize,
    pub flags: u8,
    pub timestamp_ms: u64,
    pub exchange: std::ops::Range<usize>,
    pub routing_key: std::ops::Range<usize>,
    pub props: std::ops::Range<usize>,
    pub body: std::ops::Range<usize>,
}

/// What is at a position in a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scan {
    /// A valid record.
    Record(RecordView),
    /// Zeroes: the end of what was written.
    End,
    /// Not a valid record. `claimed` is the length the header claims, if it
    /// fits in the segment (so the scan may try to continue after it).
    Corrupt { claimed: Option<usize> },
}

/// Reads the record at the start of `buf` (the rest of the segment).
pub fn scan(buf: &[u8]) -> Scan {
    if buf.len() < RECORD_PREFIX {
        return if buf.iter().all(|&b| b == 0) {
            Scan::End
        } else {
            Scan::Corrupt { claimed: None }
        };
    }
    let len = u32::from_le_bytes(buf[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes"));
    if len == 0 && crc == 0 {
        return Scan::End;
    }
    let total = RECORD_PREFIX + len;
    if len < FIXED || total > buf.len() {
        return Scan::Corrupt { claimed: None };
    }
    let payload = &buf[RECORD_PREFIX..total];
    if checksum(&buf[0..4], payload) != crc {
        return Scan::Corrupt { claimed: Some(total) };
    }
    match parse_payload(payload) {
        Some(mut v) => {
            let shift = |r: &mut std::ops::Range<usize>| {
                r.start += RECORD_PREFIX;
                r.end += RECORD_PREFIX;
            };
            shift(&mut v.exchange);
            shift(&mut v.routing_key);
            shift(&mut v.props);
            shift(&mut v.body);
            v.total = total;
            Scan::Record(v)
        }
        None => Scan::Corrupt { claimed: Some(total) },
    }
}

fn parse_payload(p: &[u8]) -> Option<RecordView> {
    let flags = *p.first()?;
    let timestamp_ms = u64::from_le_bytes(p.get(1..9)?.try_into().ok()?);
    let mut at = 9;
    let ex_len = *p.get(at)? as usize;
    let exchange = at + 1..at + 1 + ex_len;
    at = exchange.end;
    let rk_len = *p.get(at)? as usize;
    let routing_key = at + 1..at + 1 + rk_len;
    at = routing_key.end;
    let props_len = u32::from_le_bytes(p.get(at..at + 4)?.try_into().ok()?) as usize;
    let props = at + 4..(at + 4).checked_add(props_len)?;
    if props.end > p.len() {
        return None;
    }
    let body = props.end..p.len();
    Some(RecordView {
        total: 0,
        flags,
        timestamp_ms,
        exchange,
        routing_key,
        props,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn roundtrip(m: &Message) {
        let mut buf = vec![0u8; encoded_len(m) + 16];
        let n = encode(m, 42, &mut buf);
        let Scan::Record(v) = scan(&buf) else {
            panic!("not a record")
        };
        assert_eq!(v.total, n);
        assert_eq!(v.timestamp_ms, 42);
        assert_eq!(&buf[v.exchange.clone()], m.exchange());
        assert_eq!(&buf[v.routing_key.clone()], m.routing_key());
        assert_eq!(&buf[v.props.clone()], m.props());
        assert_eq!(&buf[v.body.clone()], m.body());
        assert_eq!(scan(&buf[n..]), Scan::End);
        assert_eq!(layout(m, 42), v);
    }

    #[test]
    fn encodes_and_scans() {
        roundtrip(&Message::assemble(b"ex", b"key", b"\x10\x00\x02", b"hello"));
        roundtrip(&Message::assemble(b"", b"", b"", b""));
    }

    #[test]
    fn torn_and_flipped_records_are_corrupt() {
        let m = Message::assemble(b"ex", b"key", b"\x00\x00", b"payload");
        let mut buf = vec![0u8; 256];
        let n = encode(&m, 1, &mut buf);
        for cut in 1..n {
            // A record torn at any point (the rest never written).
            let mut t = buf.clone();
            t[cut..].iter_mut().for_each(|b| *b = 0);
            assert!(matches!(scan(&t[..]), Scan::Corrupt { .. }), "cut at {cut}");
        }
        for i in 0..n {
            let mut t = buf.clone();
            t[i] ^= 0x40;
            assert!(matches!(scan(&t), Scan::Corrupt { .. }), "flip at {i}");
        }
    }

    proptest! {
        #[test]
        fn any_message_roundtrips(ex in proptest::collection::vec(any::<u8>(), 0..255),
                                  rk in proptest::collection::vec(any::<u8>(), 0..255),
                                  props in proptest::collection::vec(any::<u8>(), 0..300),
                                  body in proptest::collection::vec(any::<u8>(), 0..3000)) {
            roundtrip(&Message::assemble(&ex, &rk, &props, &body));
        }

        #[test]
        fn garbage_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = scan(&buf);
        }
    }
}
