//! Field values as RabbitMQ's Erlang code sees them.
//!
//! RabbitMQ decodes a field table into `{Key, TypeAtom, Value}` triples
//! (`rabbit_binary_parser:parse_table/1`), where `Value` is a plain Erlang
//! term: every integer type and timestamps become integers, `f` and `d`
//! become floats, `S` and `x` both become binaries, `t` the atoms
//! `true`/`false`, `V` the atom `undefined`, `D` a `{Scale, Value}` tuple,
//! `F` a list of triples and `A` a list of `{TypeAtom, Value}` pairs.
//! The headers exchange compares values with `==` and error texts print them
//! with `~tp`; both are reproduced here.

use crate::protocol::{FieldTable, FieldValue};
use std::fmt::Write;

/// Erlang's `==` between the terms RabbitMQ decodes two field values into.
///
/// The outer type tag plays no part (`I 1 == l 1 == T 1 == d 1.0`,
/// `S "ab" == x "ab"`), but inside tables and arrays it does, because there it
/// is an atom in the compared tuples. All of this was checked against
/// RabbitMQ 3.10.8's headers exchange.
pub(crate) fn erl_eq(a: &FieldValue, b: &FieldValue) -> bool {
    use FieldValue as V;
    if let (Some(x), Some(y)) = (number(a), number(b)) {
        return number_eq(x, y);
    }
    match (a, b) {
        (V::LongStr(_) | V::ByteArray(_), V::LongStr(_) | V::ByteArray(_)) => a.as_bytes() == b.as_bytes(),
        (V::Bool(x), V::Bool(y)) => x == y,
        (V::Void, V::Void) => true,
        (V::Decimal { scale: s1, value: v1 }, V::Decimal { scale: s2, value: v2 }) => s1 == s2 && v1 == v2,
        (V::Table(x), V::Table(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y.iter())
                    .all(|((kx, vx), (ky, vy))| kx.as_bytes() == ky.as_bytes() && tagged_eq(vx, vy))
        }
        (V::Array(x), V::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| tagged_eq(p, q)),
        // Both are Erlang lists: only the empty ones are equal.
        (V::Table(t), V::Array(a)) | (V::Array(a), V::Table(t)) => t.is_empty() && a.is_empty(),
        _ => false,
    }
}

/// `==` between two `{TypeAtom, Value}` tuples: the atoms must be the same.
fn tagged_eq(a: &FieldValue, b: &FieldValue) -> bool {
    a.tag() == b.tag() && erl_eq(a, b)
}

#[derive(Clone, Copy)]
enum Number {
    Int(i128),
    Float(f64),
}

fn number(v: &FieldValue) -> Option<Number> {
    Some(match *v {
        FieldValue::Timestamp(t) => Number::Int(t as i128),
        FieldValue::F32(f) => Number::Float(f as f64),
        FieldValue::F64(f) => Number::Float(f),
        _ => Number::Int(v.as_i64()? as i128),
    })
}

fn number_eq(a: Number, b: Number) -> bool {
    match (a, b) {
        (Number::Int(x), Number::Int(y)) => x == y,
        (Number::Float(x), Number::Float(y)) => x == y,
        (Number::Int(i), Number::Float(f)) | (Number::Float(f), Number::Int(i)) => {
            // Erlang converts the less precise side: the integer to a float
            // while the float's magnitude is within 2^53, else the float to
            // an integer (Erlang reference manual, "Term Comparisons").
            const TWO_53: f64 = 9_007_199_254_740_992.0;
            if f.abs() <= TWO_53 {
                i as f64 == f
            } else {
                f.fract() == 0.0 && f as i128 == i
            }
        }
    }
}

/// The type atom RabbitMQ names a value's type with in error texts.
pub(crate) fn type_name(v: &FieldValue) -> &'static str {
    match v {
        FieldValue::Bool(_) => "bool",
        FieldValue::I8(_) => "byte",
        FieldValue::U8(_) => "unsignedbyte",
        FieldValue::I16(_) => "short",
        FieldValue::U16(_) => "unsignedshort",
        FieldValue::I32(_) => "signedint",
        FieldValue::U32(_) => "unsignedint",
        FieldValue::I64(_) => "long",
        FieldValue::F32(_) => "float",
        FieldValue::F64(_) => "double",
        FieldValue::Decimal { .. } => "decimal",
        FieldValue::LongStr(_) => "longstr",
        FieldValue::Array(_) => "array",
        FieldValue::Timestamp(_) => "timestamp",
        FieldValue::Table(_) => "table",
        FieldValue::Void => "void",
        FieldValue::ByteArray(_) => "binary",
    }
}

/// Appends the value as `io_lib:format("~tp", [Value])` prints the decoded
/// term, close enough for error texts: binaries print as `<<"text">>` when
/// every byte is printable Latin-1 (Erlang's default printable range) and as
/// `<<1,2>>` otherwise. Not reproduced: `~p`'s line breaking past 80 columns
/// and Erlang's exact float notation.
pub(crate) fn write_term(out: &mut String, v: &FieldValue) {
    match v {
        FieldValue::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        FieldValue::Void => out.push_str("undefined"),
        FieldValue::Timestamp(t) => write!(out, "{t}").unwrap(),
        FieldValue::F32(f) => write_float(out, *f as f64),
        FieldValue::F64(f) => write_float(out, *f),
        FieldValue::Decimal { scale, value } => write!(out, "{{{scale},{value}}}").unwrap(),
        FieldValue::LongStr(_) | FieldValue::ByteArray(_) => {
            write_binary(out, v.as_bytes().unwrap_or_default())
        }
        FieldValue::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write!(out, "{{{},", type_name(item)).unwrap();
                write_term(out, item);
                out.push('}');
            }
            out.push(']');
        }
        FieldValue::Table(t) => write_table(out, t),
        _ => write!(out, "{}", v.as_i64().unwrap_or_default()).unwrap(),
    }
}

fn write_table(out: &mut String, t: &FieldTable) {
    out.push('[');
    for (i, (k, v)) in t.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('{');
        write_binary(out, k.as_bytes());
        write!(out, ",{},", type_name(v)).unwrap();
        write_term(out, v);
        out.push('}');
    }
    out.push(']');
}

fn write_float(out: &mut String, f: f64) {
    // Erlang always prints a fractional part ("1.0", "1.0e20").
    let s = format!("{f:?}");
    match s.split_once('e') {
        Some((m, e)) if !m.contains('.') => write!(out, "{m}.0e{e}").unwrap(),
        _ => out.push_str(&s),
    }
}

fn write_binary(out: &mut String, b: &[u8]) {
    let printable = |c: u8| matches!(c, 32..=126 | 160..=255 | 8..=13 | 27);
    if b.is_empty() || !b.iter().all(|&c| printable(c)) {
        out.push_str("<<");
        for (i, c) in b.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            write!(out, "{c}").unwrap();
        }
        out.push_str(">>");
        return;
    }
    out.push_str("<<\"");
    // RabbitMQ puts the bytes in the reply text as they are; a String can
    // only do that for UTF-8, so other Latin-1 bytes come out replaced.
    for ch in String::from_utf8_lossy(b).chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{1b}' => out.push_str("\\e"),
            c => out.push(c),
        }
    }
    out.push_str("\">>");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{LongStr, ShortStr};
    use bytes::Bytes;

    fn s(v: &'static str) -> FieldValue {
        FieldValue::LongStr(LongStr::from_static(v))
    }

    #[test]
    fn integers_of_every_width_timestamps_and_floats_compare_by_value() {
        // Live RabbitMQ 3.10.8: a header `l 1` matched bindings on `I 1`,
        // `l 1`, `s 1`, `f 1.0`, `d 1.0`, `T 1` and `B 1`, not `S "1"` nor `t true`.
        let long = FieldValue::I64(1);
        for v in [
            FieldValue::I32(1),
            FieldValue::I64(1),
            FieldValue::I16(1),
            FieldValue::F32(1.0),
            FieldValue::F64(1.0),
            FieldValue::Timestamp(1),
            FieldValue::U8(1),
            FieldValue::I8(1),
            FieldValue::U16(1),
            FieldValue::U32(1),
        ] {
            assert!(erl_eq(&v, &long), "{v:?}");
        }
        assert!(!erl_eq(&s("1"), &long));
        assert!(!erl_eq(&FieldValue::Bool(true), &long));
        assert!(!erl_eq(&FieldValue::F64(1.5), &long));
    }

    #[test]
    fn single_precision_floats_are_widened_exactly() {
        // Live: `f 1.5 == d 1.5`, but `f 0.1 /= d 0.1`.
        assert!(erl_eq(&FieldValue::F32(1.5), &FieldValue::F64(1.5)));
        assert!(!erl_eq(&FieldValue::F32(0.1), &FieldValue::F64(0.1)));
    }

    #[test]
    fn longstr_and_byte_array_are_both_binaries() {
        let x = FieldValue::ByteArray(Bytes::from_static(b"xy"));
        assert!(erl_eq(&s("xy"), &x));
        assert!(!erl_eq(&s("xz"), &x));
    }

    #[test]
    fn nested_values_compare_with_their_type_tags_and_in_order() {
        let t = |entries: Vec<(&'static str, FieldValue)>| {
            FieldValue::Table(entries.into_iter().map(|(k, v)| (ShortStr::from(k), v)).collect())
        };
        let pq = t(vec![("p", FieldValue::I32(1)), ("q", FieldValue::I32(2))]);
        assert!(erl_eq(&pq, &pq.clone()));
        // Live: reordered and retyped nested tables did not match.
        assert!(!erl_eq(
            &pq,
            &t(vec![("q", FieldValue::I32(2)), ("p", FieldValue::I32(1))])
        ));
        assert!(!erl_eq(
            &pq,
            &t(vec![("p", FieldValue::I64(1)), ("q", FieldValue::I32(2))])
        ));
        let a = FieldValue::Array(vec![FieldValue::I32(1), FieldValue::I32(2)]);
        assert!(erl_eq(&a, &a.clone()));
        // Live: `[l 1, I 2]` and `[d 1.0, I 2]` did not match `[I 1, I 2]`.
        assert!(!erl_eq(
            &a,
            &FieldValue::Array(vec![FieldValue::I64(1), FieldValue::I32(2)])
        ));
        assert!(!erl_eq(
            &a,
            &FieldValue::Array(vec![FieldValue::F64(1.0), FieldValue::I32(2)])
        ));
        // Both decode to the empty list.
        assert!(erl_eq(
            &FieldValue::Table(FieldTable::new()),
            &FieldValue::Array(vec![])
        ));
        assert!(!erl_eq(&a, &pq));
    }

    #[test]
    fn other_atoms_and_tuples() {
        assert!(erl_eq(&FieldValue::Void, &FieldValue::Void));
        assert!(!erl_eq(&FieldValue::Void, &FieldValue::Bool(false)));
        assert!(erl_eq(&FieldValue::Bool(false), &FieldValue::Bool(false)));
        let d = |scale, value| FieldValue::Decimal { scale, value };
        assert!(erl_eq(&d(1, 15), &d(1, 15)));
        // `{1,10}` and `{2,100}` are different tuples although both mean 1.0.
        assert!(!erl_eq(&d(1, 10), &d(2, 100)));
        assert!(!erl_eq(&d(0, 1), &FieldValue::I32(1)));
    }

    #[test]
    fn large_integers_against_floats() {
        let big = 1i64 << 60;
        assert!(erl_eq(&FieldValue::I64(big), &FieldValue::F64(big as f64)));
        assert!(!erl_eq(&FieldValue::I64(big + 1), &FieldValue::F64(big as f64)));
        assert!(erl_eq(
            &FieldValue::Timestamp(u64::MAX),
            &FieldValue::Timestamp(u64::MAX)
        ));
        assert!(!erl_eq(&FieldValue::Timestamp(u64::MAX), &FieldValue::I64(-1)));
    }

    fn term(v: &FieldValue) -> String {
        let mut out = String::new();
        write_term(&mut out, v);
        out
    }

    #[test]
    fn terms_print_like_erlang() {
        // Each expectation is a reply text seen from RabbitMQ 3.10.8.
        assert_eq!(term(&s("foo")), r#"<<"foo">>"#);
        assert_eq!(term(&s("")), "<<>>");
        assert_eq!(term(&s(r#"a"b\c"#)), r#"<<"a\"b\\c">>"#);
        assert_eq!(term(&s("café")), r#"<<"café">>"#);
        assert_eq!(
            term(&FieldValue::ByteArray(Bytes::from_static(&[1, 2]))),
            "<<1,2>>"
        );
        assert_eq!(term(&FieldValue::I32(1)), "1");
        assert_eq!(term(&FieldValue::Void), "undefined");
        assert_eq!(term(&FieldValue::Bool(true)), "true");
        assert_eq!(term(&FieldValue::F64(1.5)), "1.5");
        assert_eq!(term(&FieldValue::Timestamp(5)), "5");
        assert_eq!(
            term(&FieldValue::Array(vec![s("all")])),
            r#"[{longstr,<<"all">>}]"#
        );
        let table = FieldValue::Table(FieldTable(vec![(ShortStr::from("k"), s("v"))]));
        assert_eq!(term(&table), r#"[{<<"k">>,longstr,<<"v">>}]"#);
        assert_eq!(term(&FieldValue::Decimal { scale: 2, value: 314 }), "{2,314}");
        assert_eq!(term(&FieldValue::F64(1e20)), "1.0e20");
        assert_eq!(term(&FieldValue::I64(-7)), "-7");
    }
}
