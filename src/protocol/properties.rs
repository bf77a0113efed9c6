//! The 14 basic-class content properties.
//!
//! The broker forwards properties as raw bytes; [`scan_properties`] reads
//! the few it acts on (persistence, priority, expiration, headers) in one
//! pass without allocating, and validates the rest so a malformed header
//! is refused at publish instead of reaching consumers.

use super::codec::{Reader, put_shortstr, put_table};
use super::error::{AmqpError, Result};
use super::types::{FieldTable, ShortStr};
use bytes::{BufMut, Bytes, BytesMut};

/// Property flag bits, in wire order.
pub mod flag {
    pub const CONTENT_TYPE: u16 = 1 << 15;
    pub const CONTENT_ENCODING: u16 = 1 << 14;
    pub const HEADERS: u16 = 1 << 13;
    pub const DELIVERY_MODE: u16 = 1 << 12;
    pub const PRIORITY: u16 = 1 << 11;
    pub const CORRELATION_ID: u16 = 1 << 10;
    pub const REPLY_TO: u16 = 1 << 9;
    pub const EXPIRATION: u16 = 1 << 8;
    pub const MESSAGE_ID: u16 = 1 << 7;
    pub const TIMESTAMP: u16 = 1 << 6;
    pub const TYPE: u16 = 1 << 5;
    pub const USER_ID: u16 = 1 << 4;
    pub const APP_ID: u16 = 1 << 3;
    pub const CLUSTER_ID: u16 = 1 << 2;
}

/// Decoded basic properties.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BasicProperties {
    pub content_type: Option<ShortStr>,
    pub content_encoding: Option<ShortStr>,
    pub headers: Option<FieldTable>,
    pub delivery_mode: Option<u8>,
    pub priority: Option<u8>,
    pub correlation_id: Option<ShortStr>,
    pub reply_to: Option<ShortStr>,
    pub expiration: Option<ShortStr>,
    pub message_id: Option<ShortStr>,
    pub timestamp: Option<u64>,
    pub kind: Option<ShortStr>,
    pub user_id: Option<ShortStr>,
    pub app_id: Option<ShortStr>,
    pub cluster_id: Option<ShortStr>,
}

fn bad(what: &str) -> AmqpError {
    AmqpError::frame(format!("malformed content properties: {what}"))
}

/// Reads the flag words; returns the first (the only one basic uses).
fn read_flags(r: &mut Reader) -> Result<u16> {
    let first = r.u16().map_err(|_| bad("no property flags"))?;
    let mut w = first;
    // Continuation words would name properties basic does not have.
    while w & 1 != 0 {
        w = r.u16().map_err(|_| bad("truncated property flags"))?;
    }
    Ok(first)
}

impl BasicProperties {
    /// Decodes raw property flags and list.
    pub fn decode(raw: &Bytes) -> Result<Self> {
        let mut r = Reader::new(raw.clone());
        let f = read_flags(&mut r)?;
        let mut p = BasicProperties::default();
        let ss = |r: &mut Reader, on: bool| -> Result<Option<ShortStr>> {
            if on { r.shortstr().map(Some) } else { Ok(None) }
        };
        p.content_type = ss(&mut r, f & flag::CONTENT_TYPE != 0)?;
        p.content_encoding = ss(&mut r, f & flag::CONTENT_ENCODING != 0)?;
        if f & flag::HEADERS != 0 {
            p.headers = Some(r.table()?);
        }
        if f & flag::DELIVERY_MODE != 0 {
            p.delivery_mode = Some(r.u8()?);
        }
        if f & flag::PRIORITY != 0 {
            p.priority = Some(r.u8()?);
        }
        p.correlation_id = ss(&mut r, f & flag::CORRELATION_ID != 0)?;
        p.reply_to = ss(&mut r, f & flag::REPLY_TO != 0)?;
        p.expiration = ss(&mut r, f & flag::EXPIRATION != 0)?;
        p.message_id = ss(&mut r, f & flag::MESSAGE_ID != 0)?;
        if f & flag::TIMESTAMP != 0 {
            p.timestamp = Some(r.u64()?);
        }
        p.kind = ss(&mut r, f & flag::TYPE != 0)?;
        p.user_id = ss(&mut r, f & flag::USER_ID != 0)?;
        p.app_id = ss(&mut r, f & flag::APP_ID != 0)?;
        p.cluster_id = ss(&mut r, f & flag::CLUSTER_ID != 0)?;
        Ok(p)
    }

    /// Writes property flags and list.
    pub fn encode(&self, out: &mut BytesMut) {
        let mut f = 0u16;
        let mut set = |on: bool, bit: u16| {
            if on {
                f |= bit
            }
        };
        set(self.content_type.is_some(), flag::CONTENT_TYPE);
        set(self.content_encoding.is_some(), flag::CONTENT_ENCODING);
        set(self.headers.is_some(), flag::HEADERS);
        set(self.delivery_mode.is_some(), flag::DELIVERY_MODE);
        set(self.priority.is_some(), flag::PRIORITY);
        set(self.correlation_id.is_some(), flag::CORRELATION_ID);
        set(self.reply_to.is_some(), flag::REPLY_TO);
        set(self.expiration.is_some(), flag::EXPIRATION);
        set(self.message_id.is_some(), flag::MESSAGE_ID);
        set(self.timestamp.is_some(), flag::TIMESTAMP);
        set(self.kind.is_some(), flag::TYPE);
        set(self.user_id.is_some(), flag::USER_ID);
        set(self.app_id.is_some(), flag::APP_ID);
        set(self.cluster_id.is_some(), flag::CLUSTER_ID);
        out.put_u16(f);
        let s = |out: &mut BytesMut, v: &Option<ShortStr>| {
            if let Some(v) = v {
                put_shortstr(out, v.as_bytes())
            }
        };
        s(out, &self.content_type);
        s(out, &self.content_encoding);
        if let Some(h) = &self.headers {
            put_table(out, h);
        }
        if let Some(d) = self.delivery_mode {
            out.put_u8(d);
        }
        if let Some(p) = self.priority {
            out.put_u8(p);
        }
        s(out, &self.correlation_id);
        s(out, &self.reply_to);
        s(out, &self.expiration);
        s(out, &self.message_id);
        if let Some(t) = self.timestamp {
            out.put_u64(t);
        }
        s(out, &self.kind);
        s(out, &self.user_id);
        s(out, &self.app_id);
        s(out, &self.cluster_id);
    }

    pub fn to_bytes(&self) -> Bytes {
        let mut b = BytesMut::new();
        self.encode(&mut b);
        b.freeze()
    }
}

/// What the broker needs from a message's properties.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PropsSummary {
    /// 0 when absent.
    pub delivery_mode: u8,
    pub priority: Option<u8>,
    /// Byte range of the expiration string (without its length byte).
    pub expiration: Option<(usize, usize)>,
    /// Byte range of the headers table, including its length prefix.
    pub headers: Option<(usize, usize)>,
    pub timestamp: Option<u64>,
    /// Byte range of the user-id string (without its length byte).
    pub user_id: Option<(usize, usize)>,
}

/// A cursor over a byte slice, for allocation-free validation.
struct Scan<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Scan<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or_else(|| bad("truncated"))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().expect("4")))
    }
    fn shortstr(&mut self) -> Result<(usize, usize)> {
        let n = self.u8()? as usize;
        let start = self.at;
        self.take(n)?;
        Ok((start, start + n))
    }
    /// Validates a table (with length prefix) without building it.
    fn table(&mut self, depth: usize) -> Result<(usize, usize)> {
        if depth > super::table::MAX_DEPTH {
            return Err(bad("field tables nested too deeply"));
        }
        let start = self.at;
        let len = self.u32()? as usize;
        let body = self.take(len)?;
        let mut inner = Scan { b: body, at: 0 };
        while inner.at < body.len() {
            inner.shortstr()?;
            inner.value(depth)?;
        }
        Ok((start, self.at))
    }
    fn value(&mut self, depth: usize) -> Result<()> {
        match self.u8()? {
            b't' | b'b' | b'B' => self.take(1).map(drop),
            b's' | b'u' => self.take(2).map(drop),
            b'I' | b'i' | b'f' => self.take(4).map(drop),
            b'l' | b'd' | b'T' => self.take(8).map(drop),
            b'D' => self.take(5).map(drop),
            b'S' | b'x' => {
                let n = self.u32()? as usize;
                self.take(n).map(drop)
            }
            b'A' => {
                if depth >= super::table::MAX_DEPTH {
                    return Err(bad("field arrays nested too deeply"));
                }
                let n = self.u32()? as usize;
                let body = self.take(n)?;
                let mut inner = Scan { b: body, at: 0 };
                while inner.at < body.len() {
                    inner.value(depth + 1)?;
                }
                Ok(())
            }
            b'F' => self.table(depth + 1).map(drop),
            b'V' => Ok(()),
            _ => Err(bad("unknown field type")),
        }
    }
}

/// Reads and validates raw properties in one pass, without allocating.
pub fn scan_properties(raw: &[u8]) -> Result<PropsSummary> {
    let mut s = Scan { b: raw, at: 0 };
    let first = u16::from_be_bytes(s.take(2)?.try_into().expect("2"));
    let mut w = first;
    while w & 1 != 0 {
        w = u16::from_be_bytes(s.take(2)?.try_into().expect("2"));
    }
    let f = first;
    let mut p = PropsSummary::default();
    if f & flag::CONTENT_TYPE != 0 {
        s.shortstr()?;
    }
    if f & flag::CONTENT_ENCODING != 0 {
        s.shortstr()?;
    }
    if f & flag::HEADERS != 0 {
        p.headers = Some(s.table(0)?);
    }
    if f & flag::DELIVERY_MODE != 0 {
        p.delivery_mode = s.u8()?;
    }
    if f & flag::PRIORITY != 0 {
        p.priority = Some(s.u8()?);
    }
    if f & flag::CORRELATION_ID != 0 {
        s.shortstr()?;
    }
    if f & flag::REPLY_TO != 0 {
        s.shortstr()?;
    }
    if f & flag::EXPIRATION != 0 {
        p.expiration = Some(s.shortstr()?);
    }
    if f & flag::MESSAGE_ID != 0 {
        s.shortstr()?;
    }
    if f & flag::TIMESTAMP != 0 {
        p.timestamp = Some(u64::from_be_bytes(s.take(8)?.try_into().expect("8")));
    }
    if f & flag::TYPE != 0 {
        s.shortstr()?;
    }
    if f & flag::USER_ID != 0 {
        p.user_id = Some(s.shortstr()?);
    }
    for bit in [flag::APP_ID, flag::CLUSTER_ID] {
        if f & bit != 0 {
            s.shortstr()?;
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::super::table::strategies::{field_table, short_str};
    use super::*;
    use proptest::prelude::*;

    fn props() -> impl Strategy<Value = BasicProperties> {
        use proptest::option::of;
        (
            (
                of(short_str()),
                of(short_str()),
                of(field_table()),
                of(any::<u8>()),
                of(any::<u8>()),
            ),
            (
                of(short_str()),
                of(short_str()),
                of(short_str()),
                of(short_str()),
                of(any::<u64>()),
            ),
            (of(short_str()), of(short_str()), of(short_str()), of(short_str())),
        )
            .prop_map(
                |((a, b, c, d, e), (f, g, h, i, j), (k, l, m, n))| BasicProperties {
                    content_type: a,
                    content_encoding: b,
                    headers: c,
                    delivery_mode: d,
                    priority: e,
                    correlation_id: f,
                    reply_to: g,
                    expiration: h,
                    message_id: i,
                    timestamp: j,
                    kind: k,
                    user_id: l,
                    app_id: m,
                    cluster_id: n,
                },
            )
    }

    proptest! {
        #[test]
        fn roundtrip_and_scan_agree(p in props()) {
            let raw = p.to_bytes();
            prop_assert_eq!(&BasicProperties::decode(&raw).unwrap(), &p);
            let s = scan_properties(&raw).unwrap();
            prop_assert_eq!(s.delivery_mode, p.delivery_mode.unwrap_or(0));
            prop_assert_eq!(s.priority, p.priority);
            prop_assert_eq!(s.timestamp, p.timestamp);
            prop_assert_eq!(s.user_id.map(|(a, b)| raw[a..b].to_vec()), p.user_id.map(|e| e.as_bytes().to_vec()));
            prop_assert_eq!(s.expiration.map(|(a, b)| raw[a..b].to_vec()), p.expiration.map(|e| e.as_bytes().to_vec()));
            if let Some((a, b)) = s.headers {
                let t = Reader::new(raw.slice(a..b)).table().unwrap();
                prop_assert_eq!(Some(t), p.headers);
            } else {
                prop_assert!(p.headers.is_none());
            }
        }

        #[test]
        fn garbage_never_panics(v in proptest::collection::vec(any::<u8>(), 0..200)) {
            let b = Bytes::from(v);
            let a = scan_properties(&b).is_ok();
            let d = BasicProperties::decode(&b).is_ok();
            // The scanner validates as much as the decoder.
            prop_assert!(!a || d);
        }
    }

    #[test]
    fn empty_properties() {
        let s = scan_properties(&[0, 0]).unwrap();
        assert_eq!(s, PropsSummary::default());
        assert!(scan_properties(&[]).is_err());
    }
}
