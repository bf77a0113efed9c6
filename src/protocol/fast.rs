//! Allocation-free encoders and parsers for the per-message methods. Each
//! produces exactly the bytes of the generic [`Method`] path (tested).
//!
//! [`Method`]: super::methods::Method

use super::codec::put_shortstr;
use super::error::{AmqpError, Result};
use super::frame::{FRAME_METHOD, begin, end, write_body_frames, write_header_frame};
use bytes::{BufMut, BytesMut};
use std::ops::Range;

/// `basic.publish` arguments as ranges of the method payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishFields {
    pub exchange: Range<usize>,
    pub routing_key: Range<usize>,
    pub mandatory: bool,
    pub immediate: bool,
}

fn cut() -> AmqpError {
    AmqpError::frame("cannot decode method 60.40: truncated").with_method(60, 40)
}

/// Parses a `basic.publish` payload (starting with class and method ids).
pub fn parse_basic_publish(p: &[u8]) -> Result<PublishFields> {
    // class(2) method(2) ticket(2) exchange(shortstr) routing-key(shortstr) bits(1)
    let mut at = 6;
    let mut short = || -> Result<Range<usize>> {
        let n = *p.get(at).ok_or_else(cut)? as usize;
        let r = at + 1..at + 1 + n;
        if r.end > p.len() {
            return Err(cut());
        }
        at = r.end;
        Ok(r)
    };
    let exchange = short()?;
    let routing_key = short()?;
    let bits = *p.get(routing_key.end).ok_or_else(cut)?;
    Ok(PublishFields {
        exchange,
        routing_key,
        mandatory: bits & 1 != 0,
        immediate: bits & 2 != 0,
    })
}

fn method_start(out: &mut BytesMut, channel: u16, class: u16, method: u16) -> usize {
    let at = begin(out, FRAME_METHOD, channel);
    out.put_u16(class);
    out.put_u16(method);
    at
}

pub fn write_basic_deliver(
    out: &mut BytesMut,
    channel: u16,
    consumer_tag: &[u8],
    delivery_tag: u64,
    redelivered: bool,
    exchange: &[u8],
    routing_key: &[u8],
) {
    let at = method_start(out, channel, 60, 60);
    put_shortstr(out, consumer_tag);
    out.put_u64(delivery_tag);
    out.put_u8(redelivered as u8);
    put_shortstr(out, exchange);
    put_shortstr(out, routing_key);
    end(out, at);
}

pub fn write_basic_get_ok(
    out: &mut BytesMut,
    channel: u16,
    delivery_tag: u64,
    redelivered: bool,
    exchange: &[u8],
    routing_key: &[u8],
    message_count: u32,
) {
    let at = method_start(out, channel, 60, 71);
    out.put_u64(delivery_tag);
    out.put_u8(redelivered as u8);
    put_shortstr(out, exchange);
    put_shortstr(out, routing_key);
    out.put_u32(message_count);
    end(out, at);
}

pub fn write_basic_return(
    out: &mut BytesMut,
    channel: u16,
    reply_code: u16,
    reply_text: &[u8],
    exchange: &[u8],
    routing_key: &[u8],
) {
    let at = method_start(out, channel, 60, 50);
    out.put_u16(reply_code);
    put_shortstr(out, reply_text);
    put_shortstr(out, exchange);
    put_shortstr(out, routing_key);
    end(out, at);
}

pub fn write_basic_ack(out: &mut BytesMut, channel: u16, delivery_tag: u64, multiple: bool) {
    let at = method_start(out, channel, 60, 80);
    out.put_u64(delivery_tag);
    out.put_u8(multiple as u8);
    end(out, at);
}

pub fn write_basic_nack(out: &mut BytesMut, channel: u16, delivery_tag: u64, multiple: bool, requeue: bool) {
    let at = method_start(out, channel, 60, 120);
    out.put_u64(delivery_tag);
    out.put_u8(multiple as u8 | (requeue as u8) << 1);
    end(out, at);
}

/// The content header and body frames of a message.
pub fn write_content(
    out: &mut BytesMut,
    channel: u16,
    class_id: u16,
    raw_props: &[u8],
    body: &[u8],
    frame_max: u32,
) {
    write_header_frame(out, channel, class_id, body.len() as u64, raw_props);
    write_body_frames(out, channel, body, frame_max);
}

#[cfg(test)]
mod tests {
    use super::super::frame::write_method_frame;
    use super::super::methods::*;
    use super::*;
    use crate::protocol::ShortStr;
    use bytes::Bytes;
    use proptest::prelude::*;

    fn s(b: &[u8]) -> ShortStr {
        ShortStr::new(Bytes::copy_from_slice(b)).unwrap()
    }

    fn generic(m: Method) -> BytesMut {
        let mut out = BytesMut::new();
        write_method_frame(&mut out, 7, &m);
        out
    }

    proptest! {
        #[test]
        fn same_bytes_as_generic(tag in proptest::collection::vec(any::<u8>(), 0..40),
                                 ex in proptest::collection::vec(any::<u8>(), 0..40),
                                 rk in proptest::collection::vec(any::<u8>(), 0..40),
                                 dt in any::<u64>(), a in any::<bool>(), b in any::<bool>(), n in any::<u32>()) {
            let mut out = BytesMut::new();
            write_basic_deliver(&mut out, 7, &tag, dt, a, &ex, &rk);
            prop_assert_eq!(out, generic(Method::BasicDeliver(BasicDeliver {
                consumer_tag: s(&tag), delivery_tag: dt, redelivered: a, exchange: s(&ex), routing_key: s(&rk) })));
            let mut out = BytesMut::new();
            write_basic_get_ok(&mut out, 7, dt, a, &ex, &rk, n);
            prop_assert_eq!(out, generic(Method::BasicGetOk(BasicGetOk {
                delivery_tag: dt, redelivered: a, exchange: s(&ex), routing_key: s(&rk), message_count: n })));
            let mut out = BytesMut::new();
            write_basic_return(&mut out, 7, 312, b"NO_ROUTE", &ex, &rk);
            prop_assert_eq!(out, generic(Method::BasicReturn(BasicReturn {
                reply_code: 312, reply_text: s(b"NO_ROUTE"), exchange: s(&ex), routing_key: s(&rk) })));
            let mut out = BytesMut::new();
            write_basic_ack(&mut out, 7, dt, a);
            prop_assert_eq!(out, generic(Method::BasicAck(BasicAck { delivery_tag: dt, multiple: a })));
            let mut out = BytesMut::new();
            write_basic_nack(&mut out, 7, dt, a, b);
            prop_assert_eq!(out, generic(Method::BasicNack(BasicNack { delivery_tag: dt, multiple: a, requeue: b })));

            let mut payload = BytesMut::new();
            Method::BasicPublish(BasicPublish { ticket: 0, exchange: s(&ex), routing_key: s(&rk), mandatory: a, immediate: b })
                .encode(&mut payload);
            let f = parse_basic_publish(&payload).unwrap();
            prop_assert_eq!(&payload[f.exchange.clone()], &ex[..]);
            prop_assert_eq!(&payload[f.routing_key.clone()], &rk[..]);
            prop_assert_eq!((f.mandatory, f.immediate), (a, b));
            for cut in 0..payload.len() {
                // Any truncation is an error, never a panic.
                prop_assert!(parse_basic_publish(&payload[..cut]).is_err());
            }
        }
    }
}
