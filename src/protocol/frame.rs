//! Frames: the 7-byte header, payload and frame-end octet.

use super::error::{AmqpError, Result};
use super::methods::Method;
use bytes::{Buf, BufMut, Bytes, BytesMut};

pub const FRAME_METHOD: u8 = 1;
pub const FRAME_HEADER: u8 = 2;
pub const FRAME_BODY: u8 = 3;
pub const FRAME_HEARTBEAT: u8 = 8;
pub const FRAME_END: u8 = 0xCE;
pub const PROTOCOL_HEADER: [u8; 8] = *b"AMQP\x00\x00\x09\x01";
pub const FRAME_MIN_SIZE: u32 = 4096;
/// Header (7) plus frame-end (1). `frame_max` counts the whole frame, as
/// RabbitMQ does.
pub const FRAME_OVERHEAD: usize = 8;

/// A frame split off the input, payload not yet interpreted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    pub kind: u8,
    pub channel: u16,
    pub payload: Bytes,
}

/// The frame-size rule, RabbitMQ's exactly: `frame_max` counts the whole
/// frame, but since many clients get it wrong by the 8 bytes of framing, a
/// payload of up to `frame_max` bytes is accepted. 0: no limit.
fn check_size(kind: u8, payload: usize, frame_max: u32) -> Result<()> {
    if frame_max != 0 && payload > frame_max as usize {
        return Err(AmqpError::frame(format!(
            "type {kind}, all octets = <<>>: {{frame_too_large,{payload},{}}}",
            frame_max as usize - FRAME_OVERHEAD
        )));
    }
    Ok(())
}

/// The one frame decoder: checks the next frame at the front of `buf`.
/// `Ok(Some((kind, channel, payload_len)))` when it is complete and valid
/// (size within `frame_max`, frame-end octet in place), `Ok(None)` when
/// more bytes are needed, an error (501) when it can never be valid. A
/// frame too large is refused from its header, before its payload is read.
#[inline]
pub fn check_frame(buf: &[u8], frame_max: u32) -> Result<Option<(u8, u16, usize)>> {
    if buf.len() < 7 {
        return Ok(None);
    }
    let kind = buf[0];
    let channel = u16::from_be_bytes([buf[1], buf[2]]);
    let size = u32::from_be_bytes([buf[3], buf[4], buf[5], buf[6]]) as usize;
    check_size(kind, size, frame_max)?;
    let total = size + FRAME_OVERHEAD;
    if buf.len() < total {
        return Ok(None);
    }
    if buf[total - 1] != FRAME_END {
        return Err(AmqpError::frame(format!("type {kind}, invalid frame end marker")));
    }
    Ok(Some((kind, channel, size)))
}

/// Splits one complete frame off the front of `buf`; `Ok(None)` if more
/// bytes are needed (and `buf` is untouched). Unknown frame types are
/// refused here; [`split_frames`] leaves them to its caller.
pub fn decode_frame(buf: &mut BytesMut, frame_max: u32) -> Result<Option<RawFrame>> {
    if let Some(&kind) = buf.first()
        && buf.len() >= 7
        && !matches!(kind, FRAME_METHOD | FRAME_HEADER | FRAME_BODY | FRAME_HEARTBEAT)
    {
        return Err(AmqpError::frame(format!("unknown frame type {kind}")));
    }
    let Some((kind, channel, size)) = check_frame(buf, frame_max)? else {
        return Ok(None);
    };
    let mut f = buf.split_to(size + FRAME_OVERHEAD);
    f.advance(7);
    f.truncate(size);
    Ok(Some(RawFrame {
        kind,
        channel,
        payload: f.freeze(),
    }))
}

/// Splits off the longest prefix of `buf` made of complete, valid frames,
/// frozen so that messages can borrow from it. `Ok(None)`: not one complete
/// frame yet. A bad frame behind good ones is left in `buf`: the good ones
/// come first, and the error with the next call.
pub fn split_frames(buf: &mut BytesMut, frame_max: u32) -> Result<Option<Bytes>> {
    let mut end = 0usize;
    loop {
        match check_frame(&buf[end..], frame_max) {
            Ok(Some((_, _, size))) => end += size + FRAME_OVERHEAD,
            Ok(None) => break,
            Err(e) if end == 0 => return Err(e),
            Err(_) => break,
        }
    }
    if end == 0 {
        return Ok(None);
    }
    Ok(Some(buf.split_to(end).freeze()))
}

/// Walks the frames of a run made by [`split_frames`]: the frame at `pos`
/// as (kind, channel, payload range, position of the next frame).
#[inline]
pub fn frame_at(run: &[u8], pos: usize) -> Option<(u8, u16, std::ops::Range<usize>, usize)> {
    let h = run.get(pos..pos + 7)?;
    let size = u32::from_be_bytes([h[3], h[4], h[5], h[6]]) as usize;
    let start = pos + 7;
    let next = start + size + 1;
    (next <= run.len()).then(|| (h[0], u16::from_be_bytes([h[1], h[2]]), start..start + size, next))
}

/// A content header frame's payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentHeader {
    pub class_id: u16,
    pub weight: u16,
    pub body_size: u64,
    /// Raw property flags and list, forwarded verbatim.
    pub properties: Bytes,
}

/// The fixed fields of a content header payload: (class, weight, body
/// size), and where its properties start. Shared by [`ContentHeader`] and
/// the session's zero-copy publish path.
#[inline]
pub fn header_fields(payload: &[u8]) -> Result<(u16, u16, u64)> {
    if payload.len() < CONTENT_HEADER_FIXED {
        return Err(AmqpError::frame("content header frame too short"));
    }
    Ok((
        u16::from_be_bytes([payload[0], payload[1]]),
        u16::from_be_bytes([payload[2], payload[3]]),
        u64::from_be_bytes(payload[4..12].try_into().expect("8 bytes")),
    ))
}

/// Bytes of a content header payload before its properties.
pub const CONTENT_HEADER_FIXED: usize = 12;

impl ContentHeader {
    pub fn decode(mut payload: Bytes) -> Result<ContentHeader> {
        let (class_id, weight, body_size) = header_fields(&payload)?;
        if payload.len() < CONTENT_HEADER_FIXED + 2 {
            return Err(AmqpError::frame("content header frame too short"));
        }
        payload.advance(CONTENT_HEADER_FIXED);
        super::properties::scan_properties(&payload)?;
        Ok(ContentHeader {
            class_id,
            weight,
            body_size,
            properties: payload,
        })
    }
}

/// A decoded frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Method { channel: u16, method: Method },
    Header { channel: u16, header: ContentHeader },
    Body { channel: u16, body: Bytes },
    Heartbeat { channel: u16 },
}

impl Frame {
    pub fn decode(raw: RawFrame) -> Result<Frame> {
        let channel = raw.channel;
        Ok(match raw.kind {
            FRAME_METHOD => Frame::Method {
                channel,
                method: Method::decode(&raw.payload)?,
            },
            FRAME_HEADER => Frame::Header {
                channel,
                header: ContentHeader::decode(raw.payload)?,
            },
            FRAME_BODY => Frame::Body {
                channel,
                body: raw.payload,
            },
            FRAME_HEARTBEAT => {
                if !raw.payload.is_empty() {
                    return Err(AmqpError::frame("heartbeat frame with a payload"));
                }
                Frame::Heartbeat { channel }
            }
            k => return Err(AmqpError::frame(format!("unknown frame type {k}"))),
        })
    }

    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            Frame::Method { channel, method } => write_method_frame(out, *channel, method),
            Frame::Header { channel, header } => {
                let at = begin(out, FRAME_HEADER, *channel);
                out.put_u16(header.class_id);
                out.put_u16(header.weight);
                out.put_u64(header.body_size);
                out.put_slice(&header.properties);
                end(out, at);
            }
            Frame::Body { channel, body } => {
                let at = begin(out, FRAME_BODY, *channel);
                out.put_slice(body);
                end(out, at);
            }
            Frame::Heartbeat { channel } => {
                let at = begin(out, FRAME_HEARTBEAT, *channel);
                end(out, at);
            }
        }
    }
}

/// Starts a frame; returns where its size must be patched.
pub(crate) fn begin(out: &mut BytesMut, kind: u8, channel: u16) -> usize {
    out.put_u8(kind);
    out.put_u16(channel);
    let at = out.len();
    out.put_u32(0);
    at
}

/// Patches the size and writes the frame-end octet.
pub(crate) fn end(out: &mut BytesMut, at: usize) {
    let size = (out.len() - at - 4) as u32;
    out[at..at + 4].copy_from_slice(&size.to_be_bytes());
    out.put_u8(FRAME_END);
}

pub fn write_method_frame(out: &mut BytesMut, channel: u16, method: &Method) {
    let at = begin(out, FRAME_METHOD, channel);
    method.encode(out);
    end(out, at);
}

pub fn write_header_frame(out: &mut BytesMut, channel: u16, class_id: u16, body_size: u64, raw_props: &[u8]) {
    out.reserve(7 + 12 + raw_props.len() + 1);
    let at = begin(out, FRAME_HEADER, channel);
    out.put_u16(class_id);
    out.put_u16(0);
    out.put_u64(body_size);
    out.put_slice(raw_props);
    end(out, at);
}

/// Splits `body` into frames of at most `frame_max` bytes each (0: one
/// frame). An empty body has no frame.
pub fn write_body_frames(out: &mut BytesMut, channel: u16, body: &[u8], frame_max: u32) {
    if body.is_empty() {
        return;
    }
    let chunk = if frame_max == 0 {
        body.len()
    } else {
        (frame_max as usize).saturating_sub(FRAME_OVERHEAD).max(1)
    };
    out.reserve(body.len() + body.len().div_ceil(chunk) * FRAME_OVERHEAD);
    for part in body.chunks(chunk) {
        let at = begin(out, FRAME_BODY, channel);
        out.put_slice(part);
        end(out, at);
    }
}

pub fn write_heartbeat(out: &mut BytesMut) {
    out.put_slice(&[FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0, FRAME_END]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::methods::strategies;
    use proptest::prelude::*;

    fn frames() -> impl Strategy<Value = Vec<Frame>> {
        let one = prop_oneof![
            (any::<u16>(), strategies::method())
                .prop_map(|(channel, method)| Frame::Method { channel, method }),
            (any::<u16>(), proptest::collection::vec(any::<u8>(), 0..100)).prop_map(|(channel, b)| {
                Frame::Body {
                    channel,
                    body: Bytes::from(b),
                }
            }),
            (any::<u16>(), any::<u64>()).prop_map(|(channel, body_size)| Frame::Header {
                channel,
                header: ContentHeader {
                    class_id: 60,
                    weight: 0,
                    body_size,
                    properties: Bytes::from_static(b"\x90\x00\x0atext/plain\x02"),
                },
            }),
            Just(Frame::Heartbeat { channel: 0 }),
        ];
        proptest::collection::vec(one, 1..12)
    }

    fn decode_all(buf: &mut BytesMut) -> Vec<Frame> {
        let mut v = vec![];
        while let Some(raw) = decode_frame(buf, 0).unwrap() {
            v.push(Frame::decode(raw).unwrap());
        }
        v
    }

    #[test]
    fn errors() {
        let mut b = BytesMut::from(&[1u8, 0, 1, 0, 0, 0, 0, 0xCD][..]);
        assert_eq!(decode_frame(&mut b, 0).unwrap_err().code, 501);
        let mut b = BytesMut::from(&[9u8, 0, 0, 0, 0, 0, 0, 0xCE][..]);
        assert_eq!(decode_frame(&mut b, 0).unwrap_err().code, 501);
        let mut b = BytesMut::from(&[3u8, 0, 1, 0, 0, 0x10, 1, 0][..]);
        assert_eq!(decode_frame(&mut b, 4096).unwrap_err().code, 501);
        let mut b = BytesMut::from(&[1u8, 0, 1, 0, 0, 0, 2, 0, 60, 0xCE][..]);
        let raw = decode_frame(&mut b, 0).unwrap().unwrap();
        assert_eq!(Frame::decode(raw).unwrap_err().code, 501);
        // queue.declare cut short
        let mut b = BytesMut::from(&[1u8, 0, 1, 0, 0, 0, 6, 0, 50, 0, 10, 0, 0, 0xCE][..]);
        let raw = decode_frame(&mut b, 0).unwrap().unwrap();
        let e = Frame::decode(raw).unwrap_err();
        assert_eq!((e.code, e.class_id, e.method_id), (501, 50, 10));
    }

    /// A body frame of `frame_max` + 8 bytes (payload = `frame_max`) is
    /// tolerated, one byte more is not: RabbitMQ's rule.
    #[test]
    fn frame_max_tolerates_the_framing_bytes() {
        let frame = |payload: usize| {
            let mut b = BytesMut::new();
            write_body_frames(&mut b, 1, &vec![7u8; payload], 0);
            b
        };
        let mut ok = frame(4096);
        assert_eq!(decode_frame(&mut ok, 4096).unwrap().unwrap().payload.len(), 4096);
        let mut ok = frame(4096);
        assert_eq!(split_frames(&mut ok, 4096).unwrap().unwrap().len(), 4096 + 8);
        let mut too_big = frame(4097);
        let e = split_frames(&mut too_big, 4096).unwrap_err();
        assert_eq!(e.code, 501);
        assert_eq!(e.text, "type 3, all octets = <<>>: {frame_too_large,4097,4088}");
        // Refused from the header alone.
        let mut header_only = BytesMut::from(&frame(1 << 20)[..7]);
        assert_eq!(decode_frame(&mut header_only, 4096).unwrap_err().code, 501);
    }

    #[test]
    fn split_takes_whole_frames_and_stops_before_a_bad_one() {
        let mut b = BytesMut::new();
        b.extend_from_slice(&[8, 0, 0, 0, 0, 0, 0, 0xCE]);
        b.extend_from_slice(&[1, 0, 1, 0, 0, 0, 4, 1, 2]);
        let run = split_frames(&mut b, 4096).unwrap().unwrap();
        assert_eq!(run.len(), 8);
        assert_eq!(frame_at(&run, 0), Some((8, 0, 7..7, 8)));
        assert_eq!(frame_at(&run, 8), None);
        assert_eq!(b.len(), 9);
        assert!(split_frames(&mut b, 4096).unwrap().is_none());
        // A good frame, then one with a bad end octet: the good one first.
        let mut b = BytesMut::new();
        b.extend_from_slice(&[8, 0, 0, 0, 0, 0, 0, 0xCE, 8, 0, 0, 0, 0, 0, 0, 0xCD]);
        assert_eq!(split_frames(&mut b, 4096).unwrap().unwrap().len(), 8);
        assert_eq!(split_frames(&mut b, 4096).unwrap_err().code, 501);
    }

    #[test]
    fn body_frames_respect_frame_max() {
        let mut out = BytesMut::new();
        write_body_frames(&mut out, 1, &[7u8; 10_000], 4096);
        let f = decode_all(&mut out);
        assert_eq!(f.len(), 3);
        let total: usize = f
            .iter()
            .map(|x| match x {
                Frame::Body { body, .. } => {
                    assert!(body.len() + FRAME_OVERHEAD <= 4096);
                    body.len()
                }
                _ => panic!(),
            })
            .sum();
        assert_eq!(total, 10_000);
    }

    proptest! {
        #[test]
        fn roundtrip_and_every_split(fs in frames(), split_seed in any::<u64>()) {
            let mut wire = BytesMut::new();
            for f in &fs { f.encode(&mut wire); }
            let all = wire.clone().freeze();
            prop_assert_eq!(&decode_all(&mut wire), &fs);
            // Feed the same stream cut at every offset (a stride keeps big
            // streams fast), in two pieces.
            let stride = (all.len() / 64).max(1);
            let mut cut = (split_seed as usize) % stride;
            while cut <= all.len() {
                let mut buf = BytesMut::from(&all[..cut]);
                let mut got = decode_all(&mut buf);
                buf.extend_from_slice(&all[cut..]);
                got.extend(decode_all(&mut buf));
                prop_assert_eq!(&got, &fs);
                prop_assert!(buf.is_empty());
                cut += stride;
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(v in proptest::collection::vec(any::<u8>(), 0..400)) {
            let mut b = BytesMut::from(&v[..]);
            while let Ok(Some(raw)) = decode_frame(&mut b, 0) {
                let _ = Frame::decode(raw);
            }
            let _ = Method::decode(&Bytes::from(v));
        }

        #[test]
        fn methods_roundtrip(m in strategies::method()) {
            let mut out = BytesMut::new();
            m.encode(&mut out);
            prop_assert_eq!(Method::decode(&out.freeze()).unwrap(), m);
        }
    }
}
