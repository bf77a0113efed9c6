//! Binding arguments as a binding's identity sees them.
//!
//! RabbitMQ stores a binding's arguments sorted by key (`rabbit_binding:
//! binding_action/3` runs `rabbit_misc:sort_field_table/1`, a stable
//! `lists:keysort`) and looks bindings up by exact term equality, so
//! `{a:1, b:2}` and `{b:2, a:1}` are the same binding while `{a: int 1}` and
//! `{a: long 1}` are two (the type tag is part of the term). Checked against
//! RabbitMQ 3.10.8: re-binding with reordered arguments lists one binding,
//! unbinding with reordered arguments removes it, `I 1` and `l 1` list two.

use crate::protocol::{FieldTable, FieldValue, LongStr, ShortStr};
use bytes::Bytes;

/// The empty table, for bindings without arguments (the common case, which
/// stores no table at all).
pub(crate) static EMPTY_ARGS: FieldTable = FieldTable(Vec::new());

/// The form a binding's arguments are stored in: sorted by key (stable, so
/// repeated keys keep their order, as `lists:keysort` does) and copied out of
/// the frame they were decoded from. Without the copy, a binding would pin the
/// whole receive buffer its `queue.bind` arrived in for as long as it lives.
pub(crate) fn canonical(args: &FieldTable) -> FieldTable {
    if args.is_empty() {
        return FieldTable::new();
    }
    let mut out: Vec<(ShortStr, FieldValue)> = args.iter().map(|(k, v)| (detach_str(k), detach(v))).collect();
    out.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    FieldTable(out)
}

/// A compact owned copy of a key or routing key (see [`canonical`]).
pub(crate) fn detach_str(s: &ShortStr) -> ShortStr {
    ShortStr::new(Bytes::copy_from_slice(s.as_bytes())).expect("a copy is no longer")
}

fn detach(v: &FieldValue) -> FieldValue {
    match v {
        FieldValue::LongStr(s) => FieldValue::LongStr(LongStr::new(Bytes::copy_from_slice(s.as_bytes()))),
        FieldValue::ByteArray(b) => FieldValue::ByteArray(Bytes::copy_from_slice(b)),
        FieldValue::Array(a) => FieldValue::Array(a.iter().map(detach).collect()),
        // Nested tables are not sorted: RabbitMQ sorts only the top level.
        FieldValue::Table(t) => FieldValue::Table(FieldTable(
            t.iter().map(|(k, v)| (detach_str(k), detach(v))).collect(),
        )),
        other => other.clone(),
    }
}

/// Whether two tables are the same term: same entries in the same order,
/// each with the same type tag and value. Compare canonical tables to get
/// RabbitMQ's binding identity.
pub(crate) fn identical(a: &FieldTable, b: &FieldTable) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b.iter())
            .all(|((ka, va), (kb, vb))| ka.as_bytes() == kb.as_bytes() && value_identical(va, vb))
}

fn value_identical(a: &FieldValue, b: &FieldValue) -> bool {
    use FieldValue as V;
    match (a, b) {
        // Bit equality as well as `==`: a NaN argument must still find itself
        // on unbind (Erlang has no NaN, so RabbitMQ never meets this case).
        (V::F32(x), V::F32(y)) => x == y || x.to_bits() == y.to_bits(),
        (V::F64(x), V::F64(y)) => x == y || x.to_bits() == y.to_bits(),
        (V::Array(x), V::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| value_identical(p, q))
        }
        (V::Table(x), V::Table(y)) => identical(x, y),
        // Every other variant holds plain data whose `==` is exact.
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(entries: &[(&'static str, FieldValue)]) -> FieldTable {
        entries
            .iter()
            .map(|(k, v)| (ShortStr::from(*k), v.clone()))
            .collect()
    }

    #[test]
    fn canonical_sorts_by_key_and_keeps_order_of_repeated_keys() {
        let c = canonical(&t(&[
            ("b", FieldValue::I32(1)),
            ("a", FieldValue::I32(2)),
            ("b", FieldValue::I32(0)),
            ("a", FieldValue::I32(1)),
        ]));
        let got: Vec<_> = c
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_i64().unwrap()))
            .collect();
        let want = [("a", 2), ("a", 1), ("b", 1), ("b", 0)];
        assert_eq!(got, want.map(|(k, v)| (k.to_string(), v)));
    }

    #[test]
    fn canonical_copies_out_of_the_source_buffer() {
        let frame = Bytes::from(b"keyvalue".to_vec());
        let src = FieldTable(vec![(
            ShortStr::new(frame.slice(0..3)).unwrap(),
            FieldValue::LongStr(LongStr::new(frame.slice(3..))),
        )]);
        let c = canonical(&src);
        let (k, v) = &c.0[0];
        let frame_range = frame.as_ptr() as usize..frame.as_ptr() as usize + frame.len();
        assert!(!frame_range.contains(&(k.as_bytes().as_ptr() as usize)));
        assert!(!frame_range.contains(&(v.as_bytes().unwrap().as_ptr() as usize)));
        assert!(identical(&c, &src));
    }

    #[test]
    fn identity_is_order_insensitive_only_after_canonicalisation() {
        let ab = t(&[("a", "1".into()), ("b", "2".into())]);
        let ba = t(&[("b", "2".into()), ("a", "1".into())]);
        assert!(!identical(&ab, &ba));
        assert!(identical(&canonical(&ab), &canonical(&ba)));
    }

    #[test]
    fn identity_includes_the_type_tag() {
        // RabbitMQ 3.10.8 lists `{a: I 1}` and `{a: l 1}` as two bindings.
        let int = t(&[("a", FieldValue::I32(1))]);
        let long = t(&[("a", FieldValue::I64(1))]);
        assert!(!identical(&int, &long));
        let s = t(&[("a", "x".into())]);
        let x = t(&[("a", FieldValue::ByteArray(Bytes::from_static(b"x")))]);
        assert!(!identical(&s, &x));
    }

    #[test]
    fn nan_is_identical_to_itself() {
        let n = t(&[("a", FieldValue::F64(f64::NAN))]);
        assert!(identical(&n, &n.clone()));
        let nested = t(&[("a", FieldValue::Array(vec![FieldValue::F32(f32::NAN)]))]);
        assert!(identical(&nested, &nested.clone()));
    }
}
