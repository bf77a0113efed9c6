//! Field tables and arrays with RabbitMQ's type tags
//! (`rabbit_binary_parser` / `rabbit_binary_generator`).

use super::codec::Reader;
use super::error::{AmqpError, Result};
use super::types::{FieldTable, FieldValue, LongStr};
use bytes::{BufMut, BytesMut};

/// Tables nest; malicious input must not overflow the stack.
pub const MAX_DEPTH: usize = 64;

fn bad(what: impl Into<String>) -> AmqpError {
    AmqpError::frame(what.into())
}

pub(crate) fn read_table(r: &mut Reader, depth: usize) -> Result<FieldTable> {
    if depth > MAX_DEPTH {
        return Err(bad("field tables nested too deeply"));
    }
    let len = r.u32()? as usize;
    let mut inner = Reader::new(r.bytes(len)?);
    let mut t = Vec::new();
    while !inner.is_empty() {
        let key = inner.shortstr()?;
        let v = read_value(&mut inner, depth)?;
        t.push((key, v));
    }
    Ok(FieldTable(t))
}

fn read_value(r: &mut Reader, depth: usize) -> Result<FieldValue> {
    let tag = r.u8()?;
    Ok(match tag {
        b't' => FieldValue::Bool(r.u8()? != 0),
        b'b' => FieldValue::I8(r.u8()? as i8),
        b'B' => FieldValue::U8(r.u8()?),
        b's' => FieldValue::I16(r.u16()? as i16),
        b'u' => FieldValue::U16(r.u16()?),
        b'I' => FieldValue::I32(r.u32()? as i32),
        b'i' => FieldValue::U32(r.u32()?),
        b'l' => FieldValue::I64(r.u64()? as i64),
        b'f' => FieldValue::F32(f32::from_bits(r.u32()?)),
        b'd' => FieldValue::F64(f64::from_bits(r.u64()?)),
        b'D' => {
            let scale = r.u8()?;
            FieldValue::Decimal {
                scale,
                value: r.u32()?,
            }
        }
        b'S' => FieldValue::LongStr(r.longstr()?),
        b'A' => {
            if depth >= MAX_DEPTH {
                return Err(bad("field arrays nested too deeply"));
            }
            let len = r.u32()? as usize;
            let mut inner = Reader::new(r.bytes(len)?);
            let mut items = Vec::new();
            while !inner.is_empty() {
                items.push(read_value(&mut inner, depth + 1)?);
            }
            FieldValue::Array(items)
        }
        b'T' => FieldValue::Timestamp(r.u64()?),
        b'F' => FieldValue::Table(read_table(r, depth + 1)?),
        b'V' => FieldValue::Void,
        b'x' => {
            let len = r.u32()? as usize;
            FieldValue::ByteArray(r.bytes(len)?)
        }
        other => return Err(bad(format!("unknown field type {:?}", other as char))),
    })
}

/// Writes a table with its length prefix.
pub fn write_table(out: &mut BytesMut, t: &FieldTable) {
    let at = out.len();
    out.put_u32(0);
    for (k, v) in t.iter() {
        super::codec::put_shortstr(out, k.as_bytes());
        write_value(out, v);
    }
    let len = (out.len() - at - 4) as u32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

/// Writes one tagged value.
pub fn write_value(out: &mut BytesMut, v: &FieldValue) {
    out.put_u8(v.tag());
    match v {
        FieldValue::Bool(b) => out.put_u8(*b as u8),
        FieldValue::I8(x) => out.put_i8(*x),
        FieldValue::U8(x) => out.put_u8(*x),
        FieldValue::I16(x) => out.put_i16(*x),
        FieldValue::U16(x) => out.put_u16(*x),
        FieldValue::I32(x) => out.put_i32(*x),
        FieldValue::U32(x) => out.put_u32(*x),
        FieldValue::I64(x) => out.put_i64(*x),
        FieldValue::F32(x) => out.put_u32(x.to_bits()),
        FieldValue::F64(x) => out.put_u64(x.to_bits()),
        FieldValue::Decimal { scale, value } => {
            out.put_u8(*scale);
            out.put_u32(*value);
        }
        FieldValue::LongStr(s) => super::codec::put_longstr(out, s.as_bytes()),
        FieldValue::Array(items) => {
            let at = out.len();
            out.put_u32(0);
            for i in items {
                write_value(out, i);
            }
            let len = (out.len() - at - 4) as u32;
            out[at..at + 4].copy_from_slice(&len.to_be_bytes());
        }
        FieldValue::Timestamp(t) => out.put_u64(*t),
        FieldValue::Table(t) => write_table(out, t),
        FieldValue::Void => {}
        FieldValue::ByteArray(b) => {
            out.put_u32(b.len() as u32);
            out.put_slice(b);
        }
    }
}

/// Convenience for building string values.
pub fn longstr(s: &str) -> FieldValue {
    FieldValue::LongStr(LongStr::from(s.to_string()))
}

#[cfg(test)]
pub(crate) mod strategies {
    use super::super::types::{FieldTable, FieldValue, LongStr, ShortStr};
    use bytes::Bytes;
    use proptest::prelude::*;

    pub fn short_str() -> impl Strategy<Value = ShortStr> {
        proptest::collection::vec(any::<u8>(), 0..40)
            .prop_map(|v| ShortStr::new(Bytes::from(v)).expect("short"))
    }

    pub fn long_str() -> impl Strategy<Value = LongStr> {
        proptest::collection::vec(any::<u8>(), 0..80).prop_map(|v| LongStr::new(Bytes::from(v)))
    }

    fn leaf() -> impl Strategy<Value = FieldValue> {
        prop_oneof![
            any::<bool>().prop_map(FieldValue::Bool),
            any::<i8>().prop_map(FieldValue::I8),
            any::<u8>().prop_map(FieldValue::U8),
            any::<i16>().prop_map(FieldValue::I16),
            any::<u16>().prop_map(FieldValue::U16),
            any::<i32>().prop_map(FieldValue::I32),
            any::<u32>().prop_map(FieldValue::U32),
            any::<i64>().prop_map(FieldValue::I64),
            // Compare floats by bits: NaN != NaN would fail round-trips.
            any::<u32>().prop_map(|b| FieldValue::F32(f32::from_bits(b & 0x7f7f_ffff))),
            any::<u64>().prop_map(|b| FieldValue::F64(f64::from_bits(b & 0x7fef_ffff_ffff_ffff))),
            (any::<u8>(), any::<u32>()).prop_map(|(scale, value)| FieldValue::Decimal { scale, value }),
            long_str().prop_map(FieldValue::LongStr),
            any::<u64>().prop_map(FieldValue::Timestamp),
            Just(FieldValue::Void),
            proptest::collection::vec(any::<u8>(), 0..30).prop_map(|v| FieldValue::ByteArray(Bytes::from(v))),
        ]
    }

    pub fn field_value() -> impl Strategy<Value = FieldValue> {
        leaf().prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5).prop_map(FieldValue::Array),
                proptest::collection::vec((short_str(), inner), 0..5)
                    .prop_map(|v| FieldValue::Table(FieldTable(v))),
            ]
        })
    }

    pub fn field_table() -> impl Strategy<Value = FieldTable> {
        proptest::collection::vec((short_str(), field_value()), 0..6).prop_map(FieldTable)
    }
}

#[cfg(test)]
mod tests {
    use super::super::codec::Reader;
    use super::*;
    use proptest::prelude::*;

    fn roundtrip(t: &FieldTable) -> FieldTable {
        let mut out = BytesMut::new();
        write_table(&mut out, t);
        let mut r = Reader::new(out.freeze());
        let back = r.table().unwrap();
        assert!(r.is_empty());
        back
    }

    #[test]
    fn every_type_roundtrips() {
        let t: FieldTable = [
            ("t", FieldValue::Bool(true)),
            ("b", FieldValue::I8(-3)),
            ("B", FieldValue::U8(250)),
            ("s", FieldValue::I16(-300)),
            ("u", FieldValue::U16(60000)),
            ("I", FieldValue::I32(-70000)),
            ("i", FieldValue::U32(4_000_000_000)),
            ("l", FieldValue::I64(-5)),
            ("f", FieldValue::F32(1.5)),
            ("d", FieldValue::F64(2.25)),
            (
                "D",
                FieldValue::Decimal {
                    scale: 2,
                    value: 12345,
                },
            ),
            ("S", longstr("hello")),
            ("A", FieldValue::Array(vec![FieldValue::I32(1), longstr("x")])),
            ("T", FieldValue::Timestamp(1_700_000_000)),
            (
                "F",
                FieldValue::Table(FieldTable(vec![("n".into(), FieldValue::Void)])),
            ),
            ("V", FieldValue::Void),
            ("x", FieldValue::ByteArray(bytes::Bytes::from_static(b"\x00\x01"))),
        ]
        .into_iter()
        .map(|(k, v)| (super::super::types::ShortStr::from_static(k), v))
        .collect();
        assert_eq!(roundtrip(&t), t);
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        // 10 000 nested tables: each is "k" F <len> ...
        let mut inner = BytesMut::new();
        inner.put_u32(0);
        for _ in 0..10_000 {
            let mut outer = BytesMut::new();
            outer.put_u32(0);
            outer.put_u8(1);
            outer.put_u8(b'k');
            outer.put_u8(b'F');
            outer.extend_from_slice(&inner);
            let len = (outer.len() - 4) as u32;
            outer[0..4].copy_from_slice(&len.to_be_bytes());
            inner = outer;
        }
        let e = Reader::new(inner.freeze()).table().unwrap_err();
        assert_eq!(e.code, 501);
    }

    #[test]
    fn unknown_tag_is_frame_error() {
        let raw = [0u8, 0, 0, 3, 1, b'k', b'Z'];
        let e = Reader::new(bytes::Bytes::copy_from_slice(&raw))
            .table()
            .unwrap_err();
        assert_eq!(e.code, 501);
    }

    proptest! {
        #[test]
        fn tables_roundtrip(t in strategies::field_table()) {
            prop_assert_eq!(roundtrip(&t), t);
        }

        #[test]
        fn random_bytes_never_panic(v in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Reader::new(bytes::Bytes::from(v)).table();
        }
    }
}
