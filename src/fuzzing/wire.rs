//! The wire-format harnesses: [`frame`] and [`field_table`].

use crate::protocol::{
    BasicProperties, ContentHeader, FRAME_HEADER, FRAME_METHOD, FRAME_MIN_SIZE, FRAME_OVERHEAD, Frame,
    Method, RawFrame, Reader, decode_frame, frame_at, header_fields, parse_basic_publish, put_table,
    scan_properties, split_frames,
};
use bytes::{Bytes, BytesMut};

/// Property: the frame decoder splits arbitrary bytes into frames or fails
/// with an error, never panics, and never returns a frame larger than
/// `frame_max`; [`split_frames`] + [`frame_at`] (the session's path) find
/// the same frames; every payload decodes or fails cleanly; whatever
/// decodes re-encodes to bytes that decode to the same value (a fixed
/// point after one round); the zero-copy `basic.publish` parser agrees
/// with the generic decoder; properties that the scanner accepts decode,
/// and the scanner's summary matches the decoded properties.
///
/// Input: one byte choosing `frame_max`, then the byte stream. The whole
/// stream is also tried as a method payload and as raw properties.
pub fn frame(data: &[u8]) {
    let Some((&sel, stream)) = data.split_first() else {
        return;
    };
    let frame_max = [0, FRAME_MIN_SIZE, 131_072][sel as usize % 3];

    // The generic decoder, frame by frame.
    let mut buf = BytesMut::from(stream);
    let mut frames: Vec<RawFrame> = Vec::new();
    loop {
        let before = buf.len();
        match decode_frame(&mut buf, frame_max) {
            Ok(Some(raw)) => {
                assert!(frame_max == 0 || raw.payload.len() <= frame_max as usize);
                assert_eq!(before - buf.len(), raw.payload.len() + FRAME_OVERHEAD);
                frames.push(raw);
            }
            Ok(None) => {
                assert_eq!(buf.len(), before, "an incomplete frame is left in place");
                break;
            }
            Err(e) => {
                assert_eq!(e.code, 501, "frame errors are 501: {e:?}");
                break;
            }
        }
    }

    // The session's path: runs of checked frames, walked in place. It
    // leaves unknown frame types to its caller, so it sees at least the
    // frames the generic decoder returned, in the same order.
    let mut buf = BytesMut::from(stream);
    let mut walked = Vec::new();
    while let Ok(Some(run)) = split_frames(&mut buf, frame_max) {
        let mut pos = 0;
        while let Some((kind, channel, range, next)) = frame_at(&run, pos) {
            walked.push((kind, channel, run.slice(range)));
            pos = next;
        }
        assert_eq!(pos, run.len(), "a run is made of whole frames");
    }
    assert!(walked.len() >= frames.len());
    for (raw, (kind, channel, payload)) in frames.iter().zip(&walked) {
        assert_eq!((raw.kind, raw.channel, &raw.payload), (*kind, *channel, payload));
    }

    for raw in frames {
        check_payload(&raw);
        if let Ok(f) = Frame::decode(raw.clone()) {
            let mut once = BytesMut::new();
            f.encode(&mut once);
            let mut again = once.clone();
            let back = decode_frame(&mut again, 0)
                .expect("an encoded frame decodes")
                .expect("an encoded frame is complete");
            assert!(again.is_empty());
            assert_eq!((back.kind, back.channel), (raw.kind, raw.channel));
            let f2 = Frame::decode(back).expect("an encoded frame's payload decodes");
            let mut twice = BytesMut::new();
            f2.encode(&mut twice);
            assert_eq!(once, twice, "encode(decode(encode(x))) == encode(x)");
        }
    }

    let whole = Bytes::copy_from_slice(stream);
    check_method(&whole);
    check_properties(&whole);
}

/// One payload, by its frame type.
fn check_payload(raw: &RawFrame) {
    match raw.kind {
        FRAME_METHOD => check_method(&raw.payload),
        FRAME_HEADER => {
            let fixed = header_fields(&raw.payload);
            match ContentHeader::decode(raw.payload.clone()) {
                Ok(h) => {
                    let (class_id, weight, body_size) = fixed.expect("a decoded header has its fields");
                    assert_eq!((h.class_id, h.weight, h.body_size), (class_id, weight, body_size));
                    // The header checks its properties with the scanner.
                    assert!(scan_properties(&h.properties).is_ok());
                    check_properties(&h.properties);
                }
                Err(e) => assert_eq!(e.code, 501),
            }
        }
        _ => {}
    }
}

/// A method payload: decodes or fails with 501, re-encodes to a fixed
/// point, and `basic.publish` parses the same on the zero-copy path.
fn check_method(payload: &Bytes) {
    let decoded = Method::decode(payload);
    if payload.len() >= 4 && payload[..4] == [0, 60, 0, 40] {
        let fast = parse_basic_publish(payload);
        match (&decoded, &fast) {
            (Ok(Method::BasicPublish(p)), Ok(f)) => {
                assert_eq!(&payload[f.exchange.clone()], p.exchange.as_bytes());
                assert_eq!(&payload[f.routing_key.clone()], p.routing_key.as_bytes());
                assert_eq!((f.mandatory, f.immediate), (p.mandatory, p.immediate));
            }
            (Err(_), Err(_)) => {}
            other => panic!("the publish parsers disagree: {other:?}"),
        }
    }
    match decoded {
        Ok(m) => {
            let mut once = BytesMut::new();
            m.encode(&mut once);
            let back = Method::decode(&once.clone().freeze()).expect("an encoded method decodes");
            assert_eq!((back.class_id(), back.method_id()), (m.class_id(), m.method_id()));
            let mut twice = BytesMut::new();
            back.encode(&mut twice);
            assert_eq!(once, twice, "encode(decode(encode(m))) == encode(m)");
        }
        Err(e) => assert_eq!(e.code, 501, "method decoding fails with 501: {e:?}"),
    }
}

/// Raw properties: what the scanner accepts decodes, the summary matches,
/// and the decoded properties re-encode to a fixed point.
fn check_properties(raw: &Bytes) {
    let scanned = scan_properties(raw);
    let decoded = BasicProperties::decode(raw);
    let Ok(s) = scanned else { return };
    let p = decoded.expect("properties the scanner accepts decode");
    assert_eq!(s.delivery_mode, p.delivery_mode.unwrap_or(0));
    assert_eq!(s.priority, p.priority);
    assert_eq!(s.timestamp, p.timestamp);
    let slice = |r: Option<(usize, usize)>| r.map(|(a, b)| raw[a..b].to_vec());
    assert_eq!(
        slice(s.expiration),
        p.expiration.as_ref().map(|e| e.as_bytes().to_vec())
    );
    assert_eq!(
        slice(s.user_id),
        p.user_id.as_ref().map(|e| e.as_bytes().to_vec())
    );
    if let Some((a, b)) = s.headers {
        let t = Reader::new(raw.slice(a..b))
            .table()
            .expect("scanned headers decode");
        let mut x = BytesMut::new();
        put_table(&mut x, &t);
        let mut y = BytesMut::new();
        put_table(&mut y, p.headers.as_ref().expect("headers decoded"));
        assert_eq!(x, y);
    } else {
        assert!(p.headers.is_none());
    }
    let once = p.to_bytes();
    let back = BasicProperties::decode(&once).expect("encoded properties decode");
    assert_eq!(once, back.to_bytes(), "encode(decode(encode(p))) == encode(p)");
    assert!(scan_properties(&once).is_ok(), "encoded properties scan");
}

/// Property: a field table decodes from arbitrary bytes or fails with 501,
/// never panics; a decoded table re-encodes to exactly as many bytes as
/// it was read from (every value keeps its width), and that encoding
/// decodes to a table that encodes the same (a fixed point; comparing
/// bytes keeps NaNs comparable); the allocation-free validator used at
/// publish (`scan_properties` with headers) accepts exactly the tables
/// the decoder accepts.
pub fn field_table(data: &[u8]) {
    let input = Bytes::copy_from_slice(data);
    let mut r = Reader::new(input.clone());
    let decoded = r.table();
    let consumed = data.len() - r.remaining();

    // The same bytes as the headers of otherwise empty properties.
    let mut props = vec![0x20, 0x00];
    props.extend_from_slice(data);
    let scanned = scan_properties(&props);
    assert_eq!(
        scanned.is_ok(),
        decoded.is_ok(),
        "the scanner and the decoder disagree: {scanned:?} vs {decoded:?}"
    );

    match decoded {
        Ok(t) => {
            assert_eq!(scanned.expect("checked").headers, Some((2, 2 + consumed)));
            let mut once = BytesMut::new();
            put_table(&mut once, &t);
            assert_eq!(once.len(), consumed, "a table re-encodes to its decoded size");
            let mut r2 = Reader::new(once.clone().freeze());
            let back = r2.table().expect("an encoded table decodes");
            assert!(r2.is_empty());
            let mut twice = BytesMut::new();
            put_table(&mut twice, &back);
            assert_eq!(once, twice, "encode(decode(encode(t))) == encode(t)");
        }
        Err(e) => assert_eq!(e.code, 501, "table decoding fails with 501: {e:?}"),
    }
}
